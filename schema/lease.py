"""The work queue on ``statuses``: claim a batch of due rows under a lease, renew it, record
verdicts, release what was not done.

Rules (the borg ``storelocking`` discipline applied to rows):
- a lease is a tag naming its owner (``host:pid:random``) and an expiry time;
- ``claim_key`` is the time a row is next due (``schema.tables``): a claim takes the range
  ``claim_key <= now``, in index order, whatever the sites' periods;
- a claimed row leaves the claimable index range (``claim_key`` NULL), so claims never scan
  leased rows; an expired lease puts the row back at the head of the queue;
- a verdict is written only if the row still carries our tag: if the lease expired and
  another worker took the row, or the crawler saw the file change, the verdict is dropped,
  so no file is judged twice by two live workers;
- every operation is one short transaction, retried on transient errors; no connection is
  held between them (workers read files without holding a DB connection).
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from pnfsmon.schema import ages, counts, schedule
from pnfsmon.schema.counts import FIRST_CHECK
from pnfsmon.schema.db import retrying, write_transaction
from pnfsmon.schema.durations import DEFAULT_RECHECK
from pnfsmon.schema.paths import path_hash
from pnfsmon.schema.reference import Reference
from pnfsmon.schema.status import PROBLEMS, Status
from pnfsmon.schema.tables import crawls, events, statuses

# claim_key of files an operator asked to check now (``check --prefix/--paths``): below every
# other key, so they come first, and a claim for ``due_before=URGENT`` takes only them.
URGENT = -1.0
_REQUEST_BATCH = 1000


@dataclass(frozen=True)
class Claimed:
    """A file a worker holds a lease on, with what it needs to check it."""

    id: int
    site: str
    path: bytes
    size: int
    mtime_ns: int
    recorded_adler32: str | None
    recorded_from: str | None
    pool: str | None
    reference: Reference = Reference.UNKNOWN
    # The verdict the row holds (a second read is judged against it: ``tester.confirm``).
    status: Status = Status.UNCHECKED
    computed_adler32: str | None = None
    confirm_due: float | None = None  # set: a corrupted verdict awaiting its second read
    confirm_from: str | None = None  # the worker of that first read

    @property
    def unconfirmed(self) -> bool:
        """A corrupted verdict that a second read has yet to confirm."""
        return self.status == Status.CORRUPTED and self.confirm_due is not None


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check, recorded in ``statuses`` and as one ``events`` row.
    ``reference`` (with ``recorded_adler32`` and ``recorded_from``): what the storage said
    when the check asked it again for the file's recorded checksum; None if not asked."""

    file_id: int
    status: Status
    seconds: float
    size: int
    bytes_read: int
    computed_adler32: str | None = None
    source_node: str | None = None
    source_pool: str | None = None
    error: str | None = None
    reference: Reference | None = None
    recorded_adler32: str | None = None
    recorded_from: str | None = None
    # A corrupted first read: seconds until its second read is due (the verdict stays
    # unconfirmed until then); None for every other verdict.
    confirm_after: float | None = None
    second_read: bool = False  # the second read of an unconfirmed corrupted verdict


def due_condition(due_before: float, recheck_after: float | None = None,
                  periods: Mapping[str, float] | None = None) -> sa.ColumnElement[bool]:
    """Rows due at ``due_before``: ``claim_key <= due_before``, one range of the claim index.

    ``recheck_after`` (``check --recheck-after``, seconds): instead of each site's own
    period, rows whose last check is that long before ``due_before``. A due time is the last
    check plus the site's period (``periods``, from ``schema.schedule``), so each site's
    bound moves by the difference; the index is still read in order, up to the widest
    bound, and rows of other sites' narrower bounds are passed over."""
    key = statuses.c.claim_key
    if recheck_after is None or due_before <= URGENT:
        return key <= due_before
    periods = periods or {}
    other = due_before - recheck_after + DEFAULT_RECHECK  # a site without a row
    bounds = {site: due_before - recheck_after + p for site, p in periods.items()}
    widest = max([other, *bounds.values()])
    if not bounds:
        return key <= other
    return sa.and_(key <= widest,
                   key <= sa.case(bounds, value=statuses.c.site, else_=other))


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


_CLAIM_COLUMNS = (
    statuses.c.id, statuses.c.site, statuses.c.path, statuses.c.size, statuses.c.mtime_ns,
    statuses.c.recorded_adler32, statuses.c.recorded_from, statuses.c.pool,
    statuses.c.reference, statuses.c.status, statuses.c.computed_adler32,
    statuses.c.confirm_due, statuses.c.confirm_from,
)


class Lease:
    """One worker's view of the queue. ``owner`` is its tag; one per worker process."""

    def __init__(self, engine: sa.Engine, *, lease_seconds: float = 3600.0,
                 owner: str | None = None, node: str | None = None) -> None:
        if lease_seconds <= 0:
            raise ValueError("the lease must be positive")
        self.engine = engine
        self.lease_seconds = lease_seconds
        self.owner = owner or default_owner()
        self.node = node or socket.gethostname()
        self._last_expiry = -math.inf

    def hang_up(self) -> None:
        """Close this worker's idle DB connection: called after a claim, so no connection is
        held while files are read (a thousand jobs must not need a thousand connections).
        The record that ends a batch and the next claim then share one connection."""
        self.engine.dispose()

    def claim(self, limit: int, *, due_before: float, now: float | None = None,
              max_per_pool: int = 0, site: str | None = None,
              recheck_after: float | None = None, confirm: bool = True) -> list[Claimed]:
        """Lease up to ``limit`` due rows: never checked (or changed) first, then the ones
        due at or before ``due_before`` (a sweep fixes it when it starts, so files it
        checks itself are not due again in it). ``recheck_after``: see ``due_condition``.

        ``max_per_pool`` (0: no cap) spares the storage: a worker reads one file at a time,
        so a pool's concurrent readers are the live lease owners holding its files; pools
        that already have that many other readers are skipped. Two claims at the same
        instant may both take the last place (the cap is approximate by one or two).

        ``site``: only that site's files (many sites can share one database). The claim
        still reads ``ix_statuses_claim_key`` in order and skips other sites' rows.

        ``confirm``: first take the unconfirmed corrupted verdicts whose second read is
        due (``ix_statuses_confirm_due``), leaving those this worker read first to the
        others while any other worker holds a lease (see ``_confirmations``)."""
        now = time.time() if now is None else now
        # Each claim of this worker gets its own expiry, which identifies its rows to a
        # retry (see run() below): a step later if the clock (or a caller) repeats itself.
        expiry = max(now + self.lease_seconds, math.nextafter(self._last_expiry, math.inf))
        self._last_expiry = expiry
        cutoff = min(due_before, now)
        spared = self._spared(now, max_per_pool)
        attempts = 0

        def run() -> list[Claimed]:
            nonlocal attempts
            attempts += 1
            with write_transaction(self.engine) as conn:
                # A retry after an error whose commit did reach the server (the connection
                # died on the way back) finds its rows by this exact tag and expiry: take
                # them, rather than strand them for a lease and claim more.
                if attempts > 1:
                    mine = conn.execute(
                        sa.select(*_CLAIM_COLUMNS)
                        .where(statuses.c.tag_expiry == expiry, statuses.c.tag == self.owner)
                    ).all()
                    if mine:
                        return [Claimed(*row) for row in mine]
                # Rows whose lease expired (their worker died) go back to the queue's head.
                conn.execute(statuses.update().where(statuses.c.tag_expiry < now)
                             .values(tag=None, tag_expiry=None, claim_key=0.0))
                rows = (self._confirmations(conn, limit, now, site, spared) if confirm
                        else [])
                self._take(conn, rows, expiry)  # out of both ranges before the regular claim
                if len(rows) < limit:
                    periods = (schedule.periods(conn) if recheck_after is not None else None)
                    regular = [Claimed(*row) for row in conn.execute(self.claim_query(
                        limit - len(rows), cutoff, now=now, max_per_pool=max_per_pool,
                        site=site, recheck_after=recheck_after, periods=periods))]
                    self._take(conn, regular, expiry)
                    rows += regular
                return rows

        return retrying(self.engine, run)

    def _take(self, conn: sa.Connection, rows: list[Claimed], expiry: float) -> None:
        if rows:
            conn.execute(statuses.update().where(statuses.c.id.in_([r.id for r in rows]))
                         .values(tag=self.owner, tag_expiry=expiry, claim_key=None))

    def claim_query(self, limit: int, cutoff: float, *, now: float, max_per_pool: int = 0,
                    site: str | None = None, recheck_after: float | None = None,
                    periods: Mapping[str, float] | None = None) -> sa.Select:
        """The statement ``claim`` runs to pick its rows (the EXPLAIN test reads its plan)."""
        query = (
            sa.select(*_CLAIM_COLUMNS)
            .where(due_condition(cutoff, recheck_after, periods))
            .order_by(statuses.c.claim_key)
            .limit(limit)
            # SKIP LOCKED lets concurrent claimers pass each other on MariaDB/PostgreSQL;
            # it is served by ix_statuses_claim_key alone (no filesort). SQLite has no row
            # locks: its BEGIN IMMEDIATE serialises claims instead.
            .with_for_update(skip_locked=True)
        )
        if site is not None:
            query = query.where(statuses.c.site == site)
        spared = self._spared(now, max_per_pool)
        if spared is not None:
            query = query.where(spared)
        return query

    def _spared(self, now: float, max_per_pool: int) -> sa.ColumnElement[bool] | None:
        """Rows not on a pool that already has ``max_per_pool`` other readers (0: no cap)."""
        if max_per_pool <= 0:
            return None
        c = statuses.c
        busy = (
            sa.select(c.pool)
            .where(c.tag_expiry >= now, c.tag != self.owner, c.pool.is_not(None))
            .group_by(c.pool)
            .having(sa.func.count(sa.distinct(c.tag)) >= max_per_pool)
        )
        return sa.or_(c.pool.is_(None), c.pool.not_in(busy))

    def _confirmations(self, conn: sa.Connection, limit: int, now: float, site: str | None,
                       spared) -> list[Claimed]:
        """Unconfirmed corrupted verdicts whose second read is due, oldest due first. The
        second read should be independent of the first: a worker leaves the ones it read
        first to the others while another worker holds a lease (best effort: a lone
        worker, or one whose peers are between batches, reads them itself)."""
        c = statuses.c
        query = (
            sa.select(*_CLAIM_COLUMNS)
            .where(c.confirm_due <= now, c.status == int(Status.CORRUPTED), c.tag.is_(None))
            .order_by(c.confirm_due)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        # SKIP LOCKED needs one index to serve both WHERE and ORDER BY on MariaDB (see the
        # regular claim); left to itself its optimizer picks (status, site) and sorts.
        for dialect in ("mysql", "mariadb"):
            query = query.with_hint(statuses, "FORCE INDEX (ix_statuses_confirm_due)",
                                    dialect)
        if site is not None:
            query = query.where(c.site == site)
        if spared is not None:
            query = query.where(spared)
        rows = [Claimed(*row) for row in conn.execute(query)]
        if any(r.confirm_from == self.owner for r in rows):
            others = conn.execute(
                sa.select(sa.literal(1))
                .where(c.tag_expiry >= now, c.tag.is_not(None), c.tag != self.owner)
                .limit(1)).first()
            if others is not None:
                rows = [r for r in rows if r.confirm_from != self.owner]
        return rows

    def renew(self, ids: Sequence[int], now: float | None = None) -> None:
        """Extend the lease on rows still being worked on (call at half the lease)."""
        if not ids:
            return
        now = time.time() if now is None else now

        def run() -> None:
            with write_transaction(self.engine) as conn:
                conn.execute(
                    statuses.update()
                    .where(statuses.c.id.in_(list(ids)), statuses.c.tag == self.owner)
                    .values(tag_expiry=now + self.lease_seconds)
                )

        retrying(self.engine, run)

    def release(self, ids: Iterable[int]) -> None:
        """Give back rows not checked (on shutdown): they go to the head of the queue."""
        ids = list(ids)
        if not ids:
            return

        def run() -> None:
            with write_transaction(self.engine) as conn:
                conn.execute(
                    statuses.update()
                    .where(statuses.c.id.in_(ids), statuses.c.tag == self.owner)
                    .values(tag=None, tag_expiry=None, claim_key=0.0)
                )

        retrying(self.engine, run)

    def record(self, verdicts: Sequence[Verdict], now: float | None = None) -> list[int]:
        """Write verdicts for rows we still hold; returns the ids recorded. A verdict for a
        row we lost (lease expired and re-claimed, or the crawler saw it change) is dropped.

        Two statements whatever the batch size: the ``events`` rows (one multi-row INSERT),
        then one UPDATE of ``statuses`` joined to them."""
        if not verdicts:
            return []
        now = time.time() if now is None else now
        by_id = {v.file_id: v for v in verdicts}

        def run() -> list[int]:
            with write_transaction(self.engine) as conn:
                held = conn.execute(
                    sa.select(statuses.c.id, statuses.c.site, statuses.c.status,
                              statuses.c.size, statuses.c.recorded_adler32,
                              statuses.c.recorded_from, statuses.c.reference,
                              statuses.c.checked, statuses.c.crawl_gen)
                    .where(statuses.c.id.in_(list(by_id)), statuses.c.tag == self.owner)
                    .with_for_update()
                ).all()
                if not held:
                    return []
                ids = [row.id for row in held]
                asked = [{"b_id": i, "b_recorded": by_id[i].recorded_adler32,
                          "b_from": by_id[i].recorded_from,
                          "b_reference": int(by_id[i].reference)}
                         for i in ids if by_id[i].reference is not None]
                if asked:  # what the storage said when asked again: before the verdicts
                    conn.execute(statuses.update().where(statuses.c.id == sa.bindparam("b_id"))
                                 .values(recorded_adler32=sa.bindparam("b_recorded"),
                                         recorded_from=sa.bindparam("b_from"),
                                         reference=sa.bindparam("b_reference")), asked)
                conn.execute(events.insert(), [self._event_row(by_id[i], now) for i in ids])
                # Each file is next due its site's period from now (read under a shared
                # lock: a change of period waits for this, or this for it).
                period_of = schedule.periods(conn, (row.site for row in held), lock=True)
                conn.execute(self._update_from_events(ids, now, period_of))
                pending = [{"b_id": i, "b_due": now + by_id[i].confirm_after}
                           for i in ids if by_id[i].confirm_after is not None]
                if pending:  # out of the regular queue until the second read is due
                    conn.execute(statuses.update().where(statuses.c.id == sa.bindparam("b_id"))
                                 .values(confirm_due=sa.bindparam("b_due"),
                                         confirm_from=self.owner, claim_key=None), pending)
                counts_of(held, by_id).write(conn)
                ages_of(held, by_id, now, ages.listing_starts(
                    conn, (r.crawl_gen for r in held))).write(conn, recorded=now)
                return ids

        return retrying(self.engine, run)

    def _update_from_events(self, ids: list[int], now: float,
                            period_of: dict[str, float]) -> sa.Update:
        s, e = statuses.c, events.c
        # No reference recorded and the content was read completely: the first computed
        # value becomes the reference (fixity) — said so in the reports. Never where the
        # storage keeps one that could not be read (the checker judges no such file).
        first_reference = sa.and_(s.recorded_adler32.is_(None), e.status == int(Status.OK),
                                  s.reference != int(Reference.UNREADABLE))
        return (
            statuses.update()
            .where(s.id == e.file_id, e.file_id.in_(ids), e.checked == now,
                   e.worker_node == self.node, s.tag == self.owner)
            # MySQL assigns left to right and later assignments see earlier ones: the three
            # reference columns come first, while recorded_adler32 still holds its old value.
            .ordered_values(
                (s.recorded_from, sa.case((first_reference, FIRST_CHECK),
                                          else_=s.recorded_from)),
                (s.reference, sa.case((first_reference, int(Reference.FIRST_READ)),
                                      else_=s.reference)),
                (s.recorded_adler32, sa.case((first_reference, e.computed_adler32),
                                             else_=s.recorded_adler32)),
                (s.status, e.status),
                (s.computed_adler32, e.computed_adler32),
                # A changed file waits for the next crawl to re-list it; everything else
                # is due again its site's ``recheck_after`` after this check.
                (s.claim_key, sa.case((e.status == int(Status.CHANGED), None),
                                      else_=schedule.due_after(period_of, now))),
                (s.source_node, e.source_node),
                (s.bytes_read, e.bytes_read),
                (s.error, e.error),
                (s.problem_seen, sa.case((e.status.in_([int(p) for p in PROBLEMS]), True),
                                         else_=s.problem_seen)),
                (s.checked, now),
                (s.confirm_due, None),  # set again below for a first corrupted read
                (s.confirm_from, None),
                (s.worker_node, self.node),
                (s.tag, None),
                (s.tag_expiry, None),
            )
        )

    def _event_row(self, v: Verdict, now: float) -> dict:
        return {
            "file_id": v.file_id, "checked": now, "worker_node": self.node,
            "seconds": v.seconds, "source_node": v.source_node, "source_pool": v.source_pool,
            "size": v.size, "bytes_read": v.bytes_read, "status": int(v.status),
            "computed_adler32": v.computed_adler32,
            "error": (v.error or None) and v.error[:1024],
            "reader": self.owner if v.confirm_after is not None or v.second_read else None,
        }


def counts_of(held, by_id: dict[int, Verdict]) -> counts.Deltas:
    """The ledger's differences for recording ``by_id`` on the ``held`` rows (their values
    before, read under lock), as ``Lease._update_from_events`` changes them."""
    deltas = counts.Deltas()
    for row in held:
        verdict = by_id[row.id]
        reference, recorded = row.reference, row.recorded_adler32
        if verdict.reference is not None:
            reference, recorded = verdict.reference, verdict.recorded_adler32
        if (recorded is None and verdict.status == Status.OK
                and reference != Reference.UNREADABLE):
            reference = Reference.FIRST_READ
        deltas.remove(row.site, row.status, row.reference, row.size)
        deltas.add(row.site, verdict.status, reference, row.size)
    return deltas


def ages_of(held, by_id: dict[int, Verdict], now: float, listed: dict[int, float]
            ) -> ages.Deltas:
    """The ``check_ages`` ledger's differences for the same verdicts (``listed``: when
    each crawl_gen started)."""
    deltas = ages.Deltas()
    for row in held:
        deltas.remove(row.site, row.status, row.checked, listed.get(row.crawl_gen))
        deltas.add(row.site, by_id[row.id].status, now, listed.get(row.crawl_gen))
    return deltas


def request_now(engine: sa.Engine, *, prefix: bytes | None = None,
                paths: Iterable[bytes] = ()) -> tuple[int, list[bytes]]:
    """Mark files below ``prefix`` (or that exact file) and the exact ``paths`` as urgent.
    Only files waiting in the queue are marked: not those being checked right now, parked
    (nearline), vanished, or changed and waiting for the next crawl; an unconfirmed
    corruption waiting for its second read is marked too (its second read is then now).
    Returns how many were marked and which of ``paths`` the database does not know."""
    c = statuses.c
    marked = 0

    def mark(condition) -> int:
        def run() -> int:
            with write_transaction(engine) as conn:
                return conn.execute(
                    statuses.update().where(condition, sa.or_(
                        c.claim_key.is_not(None),
                        # an unconfirmed corruption waiting for its second read: now
                        sa.and_(c.confirm_due.is_not(None), c.tag.is_(None),
                                c.status == int(Status.CORRUPTED))))
                    .values(claim_key=URGENT)
                ).rowcount

        return retrying(engine, run)

    if prefix is not None:
        base = prefix.rstrip(b"/")
        marked += mark(sa.or_(c.path == base,
                              sa.and_(c.path >= base + b"/", c.path < base + b"0")))
    unknown: list[bytes] = []
    with engine.connect() as conn:
        # The unique index is (site, path_hash): naming the sites lets it serve the lookup.
        sites = conn.execute(sa.select(crawls.c.site).distinct()).scalars().all()
    batch: dict[bytes, bytes] = {}

    def flush() -> None:
        nonlocal marked
        with engine.connect() as conn:
            known = {bytes(p) for p in conn.execute(
                sa.select(c.path).where(c.site.in_(sites), c.path_hash.in_(list(batch)))
            ).scalars()}
        unknown.extend(p for p in batch.values() if p not in known)
        if known:
            marked += mark(sa.and_(c.site.in_(sites), c.path_hash.in_(list(batch)),
                                   c.path.in_(list(known))))
        batch.clear()

    for path in paths:
        batch[path_hash(path)] = path
        if len(batch) >= _REQUEST_BATCH:
            flush()
    if batch:
        flush()
    return marked, unknown
