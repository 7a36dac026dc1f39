"""Dark data to Rucio's quarantine: which of a site's orphans (files on storage that the
catalog does not know, found by ``pnfsmon compare``) may go (``plan_dark``), and sending
them with ``quarantine_replicas`` and recording Rucio's answer (``quarantine``).

The rule is CMS's: an orphan is quarantined only when the site's published compares found
it without a break for at least ``dark_after`` (from the first of them to the latest). A
flagged compare (more orphans than ``max_orphan_fraction``) restarts that clock and, when it
is the latest, holds everything back, as does a refused or failed latest compare. A file
rewritten or gone since it was first found dark, or registered in the catalog since, is not
sent. Rucio's dark reaper deletes what is quarantined, so a file is sent once, recorded only
once Rucio answered; one that Rucio holds as a replica on the RSE is not sent (Rucio would
drop it silently) and is recorded with Rucio's answer."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import sqlalchemy as sa

from pnfsmon.catalog.inventory import current_load
from pnfsmon.declare.apply import _first_line, require_rucio_settings, rucio_failure
from pnfsmon.schema import db
from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.paths import is_utf8
from pnfsmon.schema.sites import Site
from pnfsmon.schema.status import GONE
from pnfsmon.schema.tables import compares, discrepancies, inventory, meta, quarantines, statuses

log = logging.getLogger(__name__)

#: Files per call (Rucio's client sends its own chunks of the same size).
BATCH = 500

QUARANTINED = "quarantined"
REGISTERED = "registered replica"  # Rucio holds it on the RSE: not dark, not sent
UNCLEAR = "unclear"  # Rucio refused the file alone with a database error: see the answer
#: Rucio 41.5 answers DatabaseException when a call leaves it nothing to insert: every
#: path of the call already in its quarantine (a re-send after a lost answer) or held as
#: a replica. It says nothing else about such a path.
NOTHING_TO_INSERT = ("Rucio answered DatabaseException for this path alone, as it does for "
                     "a path already in its quarantine (sent before, its answer lost): "
                     "not sent again")


@dataclass(frozen=True)
class Dark:
    path: bytes
    path_hash: bytes
    lfn: bytes
    size: int | None
    since: float  # the start of the first compare of the unbroken run that found it


@dataclass
class DarkPlan:
    site: str
    compare_id: int | None = None  # the latest compare, the one everything is read from
    compare_started: float | None = None
    # why nothing is quarantined at all (the latest compare is not published), or None
    withheld: str | None = None
    due: list[Dark] = field(default_factory=list)
    waiting: list[Dark] = field(default_factory=list)  # dark for less than dark_after
    changed: int = 0  # rewritten or gone since first found dark
    registered: int = 0  # in the catalog's current dump, loaded after the compare
    unmapped: int = 0  # an LFN that is not UTF-8: no Rucio name
    quarantined_before: int = 0
    # every confirmed orphan of the latest published compare still on storage (the CMS
    # scanner's D.list: the dark list of one run; CMS's tools apply their own rule)
    orphans: list[bytes] = field(default_factory=list)


def _latest(conn: sa.Connection, site: str):
    """The site's newest compare that is over (published, refused, flagged, failed)."""
    return conn.execute(
        sa.select(compares).where(compares.c.site == site, compares.c.state != "running")
        .order_by(compares.c.id.desc()).limit(1)).first()


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t or 0))


def plan_dark(engine: sa.Engine, site: Site) -> DarkPlan:
    """Read which of ``site``'s dark files are due for quarantine now (changes nothing)."""
    result = DarkPlan(site.name)
    d, s, i = discrepancies.c, statuses.c, inventory.c
    with engine.connect() as conn:
        latest = _latest(conn, site.name)
        if latest is None:
            raise ConfigError(
                f"no compare of site {site.name} yet: dark data comes from `pnfsmon compare` "
                "(after `pnfsmon inventory load --site SITE DUMP`)")
        result.compare_id, result.compare_started = latest.id, latest.started
        if latest.state != "published":
            result.withheld = (f"the latest compare (#{latest.id}, {_when(latest.started)}) "
                               f"was {latest.state}: {latest.reason or 'no reason kept'}; "
                               "nothing is quarantined until a compare is published")
            return result
        load = current_load(conn, site.name)
        newer_dump = load is not None and load.id != latest.load_id
        before = {bytes(h) for (h,) in conn.execute(
            sa.select(quarantines.c.path_hash).where(quarantines.c.site == site.name))}
        joined = discrepancies.outerjoin(
            statuses, sa.and_(s.site == site.name, s.path_hash == d.path_hash))
        if newer_dump:  # the catalog may have registered an orphan since the compare
            joined = joined.outerjoin(inventory, sa.and_(i.load_id == load.id,
                                                         i.path_hash == d.path_hash))
        query = (
            sa.select(d.path, d.path_hash, d.lfn, d.size, d.since, s.status, s.mtime_ns,
                      (i.id.is_not(None) if newer_dump else sa.false()).label("in_dump"))
            .select_from(joined)
            .where(d.compare_id == latest.id, d.kind == "orphan", d.confirmed == sa.true())
            .order_by(d.path))
        for r in conn.execution_options(stream_results=True, yield_per=BATCH).execute(query):
            since = r.since if r.since is not None else latest.started
            dark = Dark(bytes(r.path), bytes(r.path_hash), bytes(r.lfn), r.size, since)
            if r.status is None or r.status in [int(g) for g in GONE] or (
                    r.mtime_ns is not None and r.mtime_ns / 1e9 > since):
                # Written again after it was first found dark: maybe a new file, in
                # transfer; Rucio's dark reaper must not delete it on old evidence.
                result.changed += 1
            elif r.in_dump:
                result.registered += 1
            else:
                result.orphans.append(dark.lfn)
                if dark.path_hash in before:
                    result.quarantined_before += 1
                elif not is_utf8(dark.lfn):
                    result.unmapped += 1
                elif latest.started - since >= site.dark_after:
                    result.due.append(dark)
                else:
                    result.waiting.append(dark)
    return result


def _registered(client, site: Site, names: list[str]) -> dict[str, str]:
    """The names among ``names`` that Rucio holds as a replica on the site's RSE, each with
    the replica's state."""
    found = {}
    dids = [{"scope": site.rucio_scope, "name": n} for n in names]
    for replica in client.list_replicas(dids, all_states=True, ignore_availability=True):
        state = (replica.get("states") or {}).get(site.rucio_rse)
        if state is not None or site.rucio_rse in (replica.get("rses") or {}):
            found[replica["name"]] = state or "listed"
    return found


def _send(client, site: Site, names: list[str]) -> dict[str, str]:
    """Quarantine ``names`` on the site's RSE; returns those Rucio refused one by one with
    a database error (see ``NOTHING_TO_INSERT``), with its words."""
    from rucio.common.exception import DatabaseException

    def call(chunk: list[str]) -> None:
        client.quarantine_replicas([{"scope": site.rucio_scope, "name": n, "path": n}
                                    for n in chunk], rse=site.rucio_rse)

    if not names:
        return {}
    try:
        call(names)
        return {}
    except DatabaseException:
        log.info("Rucio answered DatabaseException for %d dark files: sending them one "
                 "by one", len(names))
    unclear = {}
    for name in names:
        try:
            call([name])
        except DatabaseException as err:
            unclear[name] = f"{NOTHING_TO_INSERT} ({_first_line(err)})"[:1024]
    return unclear


def _record(engine: sa.Engine, site: Site, rows: list[dict]) -> int:
    """Record answered files, except those another run recorded meanwhile (serialised by
    the meta lock, like declarations); returns how many were recorded."""

    def run() -> int:
        with db.write_transaction(engine) as conn:
            conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")
                         .with_for_update())
            taken = {bytes(h) for (h,) in conn.execute(
                sa.select(quarantines.c.path_hash).where(
                    quarantines.c.site == site.name,
                    quarantines.c.path_hash.in_([r["path_hash"] for r in rows])))}
            fresh = [r for r in rows if r["path_hash"] not in taken]
            if taken:
                log.info("%d dark files were recorded by another run meanwhile", len(taken))
            if fresh:
                conn.execute(quarantines.insert(), fresh)
            return len(fresh)

    return db.retrying(engine, run)


def quarantine(engine: sa.Engine, site: Site, plan: DarkPlan, client) -> Counter:
    """Send ``plan.due`` to the quarantine of the site's RSE; returns how many got each
    outcome. A batch is recorded only after Rucio answered both calls."""

    require_rucio_settings(site)
    tally: Counter = Counter()
    for start in range(0, len(plan.due), BATCH):
        batch = plan.due[start:start + BATCH]
        names = [os.fsdecode(f.lfn) for f in batch]
        try:
            # Rucio itself drops a quarantined file it holds as a replica, without a word:
            # asked first, so that the record says what happened.
            held = _registered(client, site, names)
            unclear = _send(client, site, [n for n in names if n not in held])
        except Exception as err:  # noqa: BLE001 (sorted by rucio_failure)
            failure = rucio_failure(err, "quarantine", sum(tally.values()), len(plan.due),
                                    "dark files")
            if failure is None:
                raise
            raise failure from None
        when = time.time()
        rows = []
        for f, name in zip(batch, names, strict=True):
            outcome, answer = QUARANTINED, None
            if name in unclear:
                outcome, answer = UNCLEAR, unclear[name]
            elif name in held:
                outcome = REGISTERED
                answer = (f"Rucio holds {site.rucio_scope}:{name} as a replica on "
                          f"{site.rucio_rse} (state {held[name]}): not dark; not "
                          "quarantined (check the catalog dump)")
            rows.append(dict(site=site.name, path_hash=f.path_hash, path=f.path,
                             rse=site.rucio_rse, scope=site.rucio_scope, name=f.lfn,
                             size=f.size, since=f.since, compare_id=plan.compare_id,
                             quarantined=when, outcome=outcome, answer=answer))
            tally[outcome] += 1
        _record(engine, site, rows)
    return tally
