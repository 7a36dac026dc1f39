"""``pnfsmon compare``: the site's last crawl against its catalog inventory, as CMS's
dynamo-consistency and Rucio's auditor do:

- in the catalog, not on storage → **missing** at the site (candidates to re-transfer);
- on storage (in the mapped area), not in the catalog → **orphan** (candidates to delete);
- in both, with a different size or Adler32 → **mismatch**.

Database joins on the path hash do the work (both sides are indexed on it), streamed, so
memory stays flat at millions of files. Guards, as the tools that delete data learned:

- files younger than the site's grace window, on either side, are left out;
- if the crawl looks incomplete (unlisted directories, or far fewer files than the crawl
  before), nothing is called missing or orphan: the compare is *refused* and says why;
- a file is listed as missing or orphan only if the previous compare found it too;
- above ``max_missing_fraction`` of the inventory (or ``max_orphan_fraction`` of the
  crawl) the result is *flagged* for a person instead of published as lists."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from pnfsmon.catalog.inventory import current_load
from pnfsmon.schema.db import insert_batch, retrying, write_transaction
from pnfsmon.schema.discrepancies import CompareState, Discrepancy
from pnfsmon.schema.durations import DAY
from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.sites import Site
from pnfsmon.schema.status import GONE
from pnfsmon.schema.tables import compares, crawls, discrepancies, inventory, statuses

log = logging.getLogger(__name__)

BATCH = 5000
#: Compares that looked for missing and orphan files: the ones a later compare confirms
#: its candidates against.
LOOKED = (CompareState.PUBLISHED, CompareState.FLAGGED)
#: Kinds listed only when two compares in a row found the file; a mismatch is listed at once.
CONFIRMED_TWICE = (Discrepancy.MISSING, Discrepancy.ORPHAN)


@dataclass
class CompareResult:
    id: int
    site: str
    state: CompareState  # published, refused or flagged
    reason: str | None
    counts: dict[Discrepancy, int] = field(default_factory=dict)  # confirmed, per kind
    sizes: dict[Discrepancy, int] = field(default_factory=dict)
    candidates: dict[Discrepancy, int] = field(default_factory=dict)  # this compare
    young: int = 0
    ignored: int = 0
    lists: list[Path] = field(default_factory=list)


def _crawl_guard(conn: sa.Connection, site: Site):
    """(last crawl, why it cannot be trusted for missing/orphan, or None)."""
    rows = conn.execute(
        sa.select(crawls).where(crawls.c.site == site.name, crawls.c.finished.is_not(None))
        .order_by(crawls.c.id.desc()).limit(2)
    ).all()
    if not rows:
        return None, "no finished crawl of the site"
    last = rows[0]
    if not last.complete and last.withheld:
        return last, (f"the last crawl refused to mark {last.withheld:,} files vanished "
                      "(too many at once: max_crawl_drop)")
    if not last.complete:
        return last, (f"the last crawl could not list {last.unreadable_directories} "
                      "directories")
    if len(rows) > 1 and rows[1].files and last.files < rows[1].files * (
            1 - site.max_crawl_drop):
        return last, (f"the last crawl listed {last.files:,} files, "
                      f"{rows[1].files - last.files:,} fewer than the one before "
                      f"(more than {site.max_crawl_drop:.0%})")
    return last, None


def _catalog_side(conn, site: Site, load_id: int) -> Iterator[tuple]:
    """Every catalog file that is missing on storage or differs from it: one pass over the
    inventory joined to the crawl (the missing and the mismatched are told apart here)."""
    s, i = statuses.c, inventory.c
    gone = sa.or_(s.id.is_(None), s.status.in_([int(g) for g in GONE]))
    differs = sa.or_(i.size != s.size,
                     sa.and_(i.adler32.is_not(None), s.recorded_adler32.is_not(None),
                             i.adler32 != s.recorded_adler32))
    return conn.execution_options(stream_results=True, yield_per=BATCH).execute(
        sa.select(i.lfn, i.path, i.path_hash, i.size, i.adler32, i.created, gone,
                  s.size, s.recorded_adler32, s.mtime_ns)
        .select_from(inventory.outerjoin(
            statuses, sa.and_(s.site == site.name, s.path_hash == i.path_hash)))
        .where(i.load_id == load_id, sa.or_(gone, differs))
    )


def _orphans(conn, site: Site, load_id: int) -> Iterator[tuple]:
    s, i = statuses.c, inventory.c
    query = (
        sa.select(s.path, s.path_hash, s.size, s.mtime_ns)
        .select_from(statuses.outerjoin(
            inventory, sa.and_(i.load_id == load_id, i.path_hash == s.path_hash)))
        .where(s.site == site.name, s.status.not_in([int(g) for g in GONE]), i.id.is_(None))
    )
    if site.path_prefix:
        query = query.where(s.path >= site.path_prefix)
        after = _successor(site.path_prefix)
        if after is not None:
            query = query.where(s.path < after)
    return conn.execution_options(stream_results=True, yield_per=BATCH).execute(query)


def _successor(prefix: bytes) -> bytes | None:
    """The smallest byte string after every string that starts with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


class _Writer:
    """Candidates of one compare into ``discrepancies``, in batches, on its own
    connection (the reading connection is busy streaming)."""

    def __init__(self, engine: sa.Engine, compare_id: int, started: float) -> None:
        self.engine = engine
        self.compare_id = compare_id
        self.started = started
        self.rows: list[dict] = []
        self.stored = 0
        self.counts = dict.fromkeys(Discrepancy, 0)

    def add(self, kind: Discrepancy, path_hash: bytes, lfn: bytes | None, path: bytes,
            size: int | None, detail: str | None = None) -> None:
        self.rows.append({"compare_id": self.compare_id, "kind": kind.value,
                          "path_hash": bytes(path_hash), "lfn": lfn, "path": bytes(path),
                          "size": size, "detail": detail,
                          "confirmed": kind not in CONFIRMED_TWICE, "since": self.started})
        self.counts[kind] += 1
        if len(self.rows) >= BATCH:
            self.flush()

    def flush(self) -> None:
        rows, self.rows = self.rows, []
        if rows:
            insert_batch(self.engine, discrepancies, rows,
                         discrepancies.c.compare_id == self.compare_id, self.stored)
            self.stored += len(rows)


def compare(engine: sa.Engine, site: Site, now: float | None = None) -> CompareResult:
    """Compare ``site``'s last crawl with its current inventory and record the result."""
    now = time.time() if now is None else now
    with engine.connect() as conn:
        load = current_load(conn, site.name)
        if load is None:
            raise ConfigError(f"no inventory loaded for site {site.name}: "
                              "run pnfsmon inventory load --site SITE FILE first")
        crawl, refusal = _crawl_guard(conn, site)
    with write_transaction(engine) as conn:
        _mark_dead(conn, site.name, now)
        compare_id = conn.execute(compares.insert().values(
            site=site.name, started=now, load_id=load.id,
            crawl_id=crawl.id if crawl is not None else None,
            state=CompareState.RUNNING.value,
        )).inserted_primary_key[0]
    try:
        return _compare(engine, site, now, compare_id, load, crawl, refusal)
    except BaseException as err:
        _mark_failed(engine, compare_id, err)
        raise


#: A compare still running this long after it started has died with its process.
DEAD_AFTER = DAY


def _mark_dead(conn: sa.Connection, site: str, now: float) -> None:
    """Compares of ``site`` left running by a process that died (killed, the machine
    lost): failed, so that no one waits for them or reads them as results."""
    conn.execute(compares.update().where(
        compares.c.site == site, compares.c.state == CompareState.RUNNING.value,
        compares.c.started < now - DEAD_AFTER).values(
        state=CompareState.FAILED.value, reason="its process died before it finished"))


def _mark_failed(engine: sa.Engine, compare_id: int, err: BaseException) -> None:
    """Record that this compare ended in an error, if the database still answers (if
    not, the next compare marks it, a day on)."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    try:
        with write_transaction(engine) as conn:
            conn.execute(compares.update().where(compares.c.id == compare_id).values(
                finished=time.time(), state=CompareState.FAILED.value,
                reason=f"failed: {type(err).__name__}: {first}"[:1000]))
    except sa.exc.DBAPIError:
        log.warning("compare %d failed and could not be marked failed", compare_id)


def _compare(engine: sa.Engine, site: Site, now: float, compare_id: int, load, crawl,
             refusal: str | None) -> CompareResult:
    young_before = now - site.grace
    result = CompareResult(compare_id, site.name, CompareState.PUBLISHED, refusal)
    writer = _Writer(engine, compare_id, now)
    with engine.connect() as conn:
        for (lfn, path, digest, cat_size, cat_adler, created, gone, size, adler,
             mtime_ns) in _catalog_side(conn, site, load.id):
            lfn = bytes(lfn)
            if gone and refusal is not None:
                continue  # an incomplete crawl cannot tell what is missing
            if site.ignored(lfn):
                result.ignored += 1
            elif (created is not None and created > young_before) or (
                    not gone and mtime_ns / 1e9 > young_before):
                result.young += 1
            elif gone:
                writer.add(Discrepancy.MISSING, digest, lfn, path, cat_size)
            else:
                detail = (f"size {size} on storage, {cat_size} in the catalog"
                          if cat_size is not None and cat_size != size else
                          f"adler32 {adler} on storage, {cat_adler} in the catalog")
                writer.add(Discrepancy.MISMATCH, digest, lfn, path, size, detail)
        if refusal is None:
            for path, digest, size, mtime_ns in _orphans(conn, site, load.id):
                lfn = site.to_lfn(bytes(path))
                if lfn is None:
                    continue  # outside the area the catalog describes
                if site.ignored(lfn):
                    result.ignored += 1
                elif mtime_ns / 1e9 > young_before:
                    result.young += 1
                else:
                    writer.add(Discrepancy.ORPHAN, digest, lfn, path, size)
    writer.flush()
    result.candidates = dict(writer.counts)
    _confirm(engine, site, compare_id, skip=refusal is not None)
    _finish(engine, site, result, load.entries, crawl.files if crawl is not None else 0)
    return result


def _previous(conn: sa.Connection, site: str, compare_id: int) -> int | None:
    """The compare before this one that looked for missing and orphan files."""
    return conn.execute(
        sa.select(sa.func.max(compares.c.id))
        .where(compares.c.site == site, compares.c.id < compare_id,
               compares.c.state.in_([state.value for state in LOOKED]))
    ).scalar()


def _confirm(engine: sa.Engine, site: Site, compare_id: int, skip: bool) -> None:
    """Missing and orphan candidates that the previous compare found too become confirmed;
    rows of compares before that one are deleted."""
    d = discrepancies.c

    def run() -> None:
        with write_transaction(engine) as conn:
            previous = _previous(conn, site.name, compare_id)
            if previous is not None and not skip:
                for kind in CONFIRMED_TWICE:
                    conn.execute(_confirm_statement(compare_id, previous, kind))
                _carry_since(conn, compare_id, previous)
            keep = [compare_id] + ([previous] if previous is not None else [])
            older = sa.select(compares.c.id).where(compares.c.site == site.name,
                                                   compares.c.id.not_in(keep))
            old_ids = conn.execute(older).scalars().all()
            if old_ids:
                conn.execute(discrepancies.delete().where(d.compare_id.in_(old_ids)))

    retrying(engine, run)


def _confirm_statement(compare_id: int, previous: int, kind: Discrepancy) -> sa.Update:
    """The UPDATE that confirms ``compare_id``'s candidates of ``kind`` which ``previous``
    found too: for each candidate, one look-up of its path hash among the previous
    compare's rows (the unique (compare_id, kind, path_hash) index), linear whatever the
    planner knows. Not ``path_hash IN (...)``, ``EXISTS`` nor ``UPDATE ... FROM``:
    PostgreSQL turns those into a join, and with no statistics on the rows just written
    it estimates one row a side and picks a nested loop that scans the previous compare's
    rows once per candidate (10-20 s for 5,000 orphans; hours at 100,000). A scalar subquery
    in the WHERE clause cannot become a join there; MariaDB and SQLite run it as a keyed
    look-up too (bench/compare_confirm.py)."""
    d = discrepancies.c
    # A derived table: MySQL cannot read the table an UPDATE writes.
    seen = (sa.select(d.path_hash)
            .where(d.compare_id == previous, d.kind == kind.value).subquery())
    found = sa.select(sa.literal_column("1")).where(seen.c.path_hash == d.path_hash)
    return (discrepancies.update()
            .where(d.compare_id == compare_id, d.kind == kind.value,
                   found.scalar_subquery().is_not(None))
            .values(confirmed=True))


def _carry_since(conn: sa.Connection, compare_id: int, previous: int) -> None:
    """An orphan the previous compare found too has been dark since that one's ``since``,
    if that compare was published: a flagged compare (too many orphans: something may be
    wrong with the crawl or the dump) never counts as evidence, so the clock of dark data
    restarts after one (``declare --dark`` waits ``dark_after`` from ``since``)."""
    state, started = conn.execute(sa.select(compares.c.state, compares.c.started)
                                  .where(compares.c.id == previous)).one()
    if state != CompareState.PUBLISHED.value:
        return
    conn.execute(_carry_statement(compare_id, previous, started))


def _carry_statement(compare_id: int, previous: int, started: float) -> sa.Update:
    """The UPDATE of ``_carry_since``: a correlated scalar subquery, one keyed look-up
    per confirmed orphan, as in ``_confirm_statement`` (and for the same reason)."""
    d = discrepancies.c
    orphan = Discrepancy.ORPHAN.value
    # A derived table: MySQL cannot read the table an UPDATE writes.
    before = (sa.select(d.path_hash, sa.func.coalesce(d.since, started).label("since"))
              .where(d.compare_id == previous, d.kind == orphan).subquery())
    return (discrepancies.update()
            .where(d.compare_id == compare_id, d.kind == orphan, d.confirmed == sa.true())
            .values(since=sa.select(sa.func.min(before.c.since))
                    .where(before.c.path_hash == d.path_hash).scalar_subquery()))


def _finish(engine: sa.Engine, site: Site, result: CompareResult, inventory_entries: int,
            crawl_files: int) -> None:
    d = discrepancies.c
    with engine.connect() as conn:
        for kind, n, size in conn.execute(
            sa.select(d.kind, sa.func.count(), sa.func.coalesce(sa.func.sum(d.size), 0))
            .where(d.compare_id == result.id, d.confirmed == sa.true()).group_by(d.kind)
        ):
            kind = Discrepancy(kind)
            result.counts[kind], result.sizes[kind] = int(n), int(size)
    for kind in Discrepancy:
        result.counts.setdefault(kind, 0)
        result.sizes.setdefault(kind, 0)
    if result.reason is not None:
        result.state = CompareState.REFUSED
    else:
        too_many = []
        lost = result.candidates[Discrepancy.MISSING]
        dark = result.candidates[Discrepancy.ORPHAN]
        if lost > site.max_missing_fraction * max(inventory_entries, 1):
            too_many.append(f"{lost:,} of {inventory_entries:,} catalog files missing")
        if dark > site.max_orphan_fraction * max(crawl_files, 1):
            too_many.append(f"{dark:,} of {crawl_files:,} files on storage orphaned")
        if too_many:
            result.state = CompareState.FLAGGED
            result.reason = ("more than the configured fraction: " + "; ".join(too_many)
                             + " — check the dump and the crawl before acting")

    counts, sizes = result.counts, result.sizes
    missing, orphan = Discrepancy.MISSING, Discrepancy.ORPHAN

    def run() -> None:
        with write_transaction(engine) as conn:
            conn.execute(compares.update().where(compares.c.id == result.id).values(
                finished=time.time(), state=result.state.value, reason=result.reason,
                missing=counts[missing], missing_bytes=sizes[missing],
                orphan=counts[orphan], orphan_bytes=sizes[orphan],
                mismatch=counts[Discrepancy.MISMATCH], young=result.young,
                ignored=result.ignored))

    retrying(engine, run)
