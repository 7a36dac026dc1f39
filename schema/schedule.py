"""Each site's checking period, as the work queue holds it. A checked file's
``statuses.claim_key`` is the time it is next due: its last check plus its site's
``recheck_after``. Workers read the period from ``site_schedule`` when they record a verdict
(HTCondor jobs may run without the configuration file); a site without a row has the
default. ``apply`` brings the rows to the configuration's ``recheck_after``, at the start of
``crawl``, ``check`` and ``condor submit``/``dag``: a site whose period changed has every due
time moved by the difference in one statement, so the change takes effect at once and the
claim stays one range of the claim index (``claim_key <= now``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import sqlalchemy as sa

from pnfsmon.schema.config import Settings
from pnfsmon.schema.db import retrying, write_transaction
from pnfsmon.schema.durations import DAY, DEFAULT_RECHECK
from pnfsmon.schema.tables import crawls, site_schedule, statuses

log = logging.getLogger(__name__)


def periods(conn: sa.Connection, sites: Iterable[str] | None = None, *,
            lock: bool = False) -> dict[str, float]:
    """The period (seconds) of each site in ``sites`` (all with a row, if None); sites
    without a row get the default. ``lock``: a shared lock on the rows, so a change of
    period (``apply``) waits for the recording transaction or the other way round, and no
    due time is computed with a period being replaced."""
    c = site_schedule.c
    query = sa.select(c.site, c.recheck_after)
    wanted = None if sites is None else sorted(set(sites))
    if wanted is not None:
        if not wanted:
            return {}
        query = query.where(c.site.in_(wanted))
    if lock:
        query = query.with_for_update(read=True)
    found = {site: float(period) for site, period in conn.execute(query)}
    if wanted is not None:
        return {site: found.get(site, DEFAULT_RECHECK) for site in wanted}
    return found


def due_after(period_of: dict[str, float], now: float) -> sa.ColumnElement:
    """``now`` plus each row's site period (for an UPDATE of ``statuses``)."""
    if len(set(period_of.values())) == 1:
        return sa.literal(now + next(iter(period_of.values())), sa.Double)
    return sa.case({site: now + p for site, p in period_of.items()},
                   value=statuses.c.site, else_=now + DEFAULT_RECHECK)


def days(seconds: float) -> str:
    return f"{seconds / DAY:g} days"


def apply(engine: sa.Engine, settings: Settings, sites: Iterable[str] | None = None
          ) -> list[str]:
    """Bring ``site_schedule`` to the configuration file's ``recheck_after`` of ``sites``
    (by default every site configured or in the database). Without a configuration file,
    nothing: a worker job without one must not put every site back to the default. Returns
    one line per site whose period changed (also logged)."""
    if settings.config_file is None:
        return []
    with engine.connect() as conn:
        stored = periods(conn)
        if sites is None:
            known = set(conn.execute(sa.select(crawls.c.site).distinct()).scalars())
            sites = known | set(stored) | set(settings.sites)
    said = []
    for site in sorted(set(sites)):
        wanted = settings.site(site).recheck_after
        if stored.get(site) == wanted:
            continue
        try:
            moved = retrying(engine, lambda site=site, wanted=wanted: _set(engine, site, wanted))
        except sa.exc.IntegrityError:  # another command inserted the row first: it is there now
            moved = retrying(engine, lambda site=site, wanted=wanted: _set(engine, site, wanted))
        if moved is not None:
            old, files = moved
            line = (f"site {site}: recheck_after {days(old)} -> {days(wanted)} "
                    f"({settings.config_file}); due times of {files:,} files moved")
            log.info("%s", line)
            said.append(line)
    return said


def _set(engine: sa.Engine, site: str, wanted: float) -> tuple[float, int] | None:
    """One transaction: the site's row first (an exclusive lock: a worker recording a
    verdict waits, see ``periods``), then its due times. (old period, files moved), or None
    if the keys already held ``wanted``."""
    c = site_schedule.c
    with write_transaction(engine) as conn:
        row = conn.execute(sa.select(c.recheck_after).where(c.site == site)
                           .with_for_update()).first()
        old = DEFAULT_RECHECK if row is None else float(row.recheck_after)
        if row is None:
            conn.execute(site_schedule.insert().values(site=site, recheck_after=wanted))
        elif old != wanted:
            conn.execute(site_schedule.update().where(c.site == site)
                         .values(recheck_after=wanted))
        if old == wanted:
            return None
        # Only due times: 0 (due at once), -1 (asked for) and NULL keep their meaning.
        s = statuses.c
        files = conn.execute(statuses.update().where(s.site == site, s.claim_key > 0)
                             .values(claim_key=s.claim_key + (wanted - old))).rowcount
        return old, files
