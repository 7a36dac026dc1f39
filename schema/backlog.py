"""What the work queue holds that a worker may not take now, and when it comes due: files
waiting out their grace window (read through the lease index), files checked within
``recheck_after`` (the ``check_ages`` ledger and one read of the claim index), files
leased by other workers. ``pnfsmon check`` says it when it judged nothing or fewer files
than it could have; ``pnfsmon status`` and the report show it per site. No scan of
``statuses``."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from pnfsmon.schema import ages
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


def next_due(conn: sa.Connection, now: float, recheck_after: float,
             site: str | None = None) -> float | None:
    """When the first file checked within ``recheck_after`` becomes due again: one read of
    the claim index (a checked file's ``claim_key`` is the time of its last check)."""
    s = statuses.c
    query = sa.select(s.claim_key).where(s.claim_key > now - recheck_after)
    if site is not None:
        query = query.where(s.site == site)
    key = conn.execute(query.order_by(s.claim_key).limit(1)).scalar()
    return None if key is None else key + recheck_after


def backlog(conn: sa.Connection, now: float, recheck_after: float,
            site: str | None = None) -> Backlog:
    """What is not due at ``now`` for a check with this ``recheck_after`` (of ``site``, or
    of every site)."""
    grace = [v for name, v in in_grace(conn, now).items() if site in (None, name)]
    not_due = watched = 0
    for row in ages.totals(conn):
        if site in (None, row.site):
            watched += row.files
            if row.verified and row.hour is not None \
                    and row.hour * ages.HOUR >= now - recheck_after:
                not_due += row.files
    s = statuses.c
    leased = sa.select(sa.func.count()).where(s.tag_expiry >= now, s.tag.is_not(None))
    if site is not None:
        leased = leased.where(s.site == site)
    return Backlog(in_grace=sum(n for n, _ in grace),
                   grace_until=min((first for _, first in grace), default=None),
                   not_due=not_due,
                   not_due_until=next_due(conn, now, recheck_after, site) if not_due else None,
                   leased=conn.execute(leased).scalar_one(), watched=watched)
