"""What the work queue holds that a worker may not take now, and when it comes due: files
waiting out their grace window (read through the lease index), files checked within their
site's ``recheck_after`` (the ``check_ages`` ledger and one read of the claim index), files
leased by other workers. ``pnfsmon check`` says it when it judged nothing or fewer files
than it could have; ``pnfsmon status`` and the report show it per site. No scan of
``statuses``."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from pnfsmon.schema import ages, schedule
from pnfsmon.schema.durations import DEFAULT_RECHECK
from pnfsmon.schema.tables import statuses


@dataclass(frozen=True)
class Backlog:
    in_grace: int = 0  # listed, written too recently to judge
    grace_until: float | None = None  # when the first of them becomes due
    not_due: int = 0  # checked within recheck_after (to the hour: the ledger's unit)
    not_due_until: float | None = None  # when the first of them becomes due again
    leased: int = 0  # being checked by a worker now
    watched: int = 0  # files to be verified at all (not vanished, not only on tape)


def in_grace(conn: sa.Connection, now: float) -> dict[str, tuple[int, float]]:
    """Per site: (files in their grace window, when the first becomes due). Young files
    wait with an expiry and no owner (``crawler.ingest``); only they and leased rows have
    an expiry, so the lease index serves this."""
    s = statuses.c
    return {site: (int(n), first) for site, n, first in conn.execute(
        sa.select(s.site, sa.func.count(), sa.func.min(s.tag_expiry))
        .where(s.tag_expiry > now, s.tag.is_(None)).group_by(s.site))}


def next_due(conn: sa.Connection, now: float, site: str | None = None) -> float | None:
    """When the first file not due at ``now`` becomes due: one read of the claim index (a
    checked file's ``claim_key`` is the time it is next due)."""
    s = statuses.c
    query = sa.select(s.claim_key).where(s.claim_key > now)
    if site is not None:
        query = query.where(s.site == site)
    return conn.execute(query.order_by(s.claim_key).limit(1)).scalar()


def periods_of(conn: sa.Connection, site: str | None = None,
               recheck_after: float | None = None) -> dict[str, float]:
    """The period each site's files wait after a check (``site``: that one only): its
    own (``schema.schedule``), or ``recheck_after`` for all (``check --recheck-after``)."""
    names = {row.site for row in ages.totals(conn) if site in (None, row.site)}
    if site is not None:
        names.add(site)
    if recheck_after is not None:
        return dict.fromkeys(names, recheck_after)
    return schedule.periods(conn, names)


def backlog(conn: sa.Connection, now: float, site: str | None = None,
            recheck_after: float | None = None) -> Backlog:
    """What is not due at ``now`` (of ``site``, or of every site): each site's files by its
    own period, or by ``recheck_after`` (``check --recheck-after``: this run's)."""
    grace = [v for name, v in in_grace(conn, now).items() if site in (None, name)]
    periods = periods_of(conn, site, recheck_after)
    not_due = watched = 0
    for row in ages.totals(conn):
        if site in (None, row.site):
            watched += row.files
            period = periods.get(row.site, DEFAULT_RECHECK)
            if row.verified and row.hour is not None \
                    and row.hour * ages.HOUR >= now - period:
                not_due += row.files
    s = statuses.c
    leased = sa.select(sa.func.count()).where(s.tag_expiry >= now, s.tag.is_not(None))
    if site is not None:
        leased = leased.where(s.site == site)
    return Backlog(in_grace=sum(n for n, _ in grace),
                   grace_until=min((first for _, first in grace), default=None),
                   not_due=not_due,
                   not_due_until=_first_due(conn, now, site, recheck_after, periods)
                   if not_due else None,
                   leased=conn.execute(leased).scalar_one(), watched=watched)


def _first_due(conn: sa.Connection, now: float, site: str | None,
               recheck_after: float | None, periods: dict[str, float]) -> float | None:
    """When the first file not due at ``now`` comes due: by the claim index, or with
    ``recheck_after`` (this run's period), the earliest over the sites of their first due
    time moved by the difference to their own period."""
    if recheck_after is None:
        return next_due(conn, now, site)
    own = schedule.periods(conn, periods)
    times = [key + recheck_after - own[name] for name in periods
             if (key := next_due(conn, now - recheck_after + own[name], name)) is not None]
    return min(times, default=None)
