"""Where the checking cycle stands: files due, leased, checked in the cycle, and the ETA.
A read model shared by the report (web/) and ``condor status`` (condor/)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa

from pnfsmon.schema import counts
from pnfsmon.schema.durations import DAY
from pnfsmon.schema.status import GONE, Status
from pnfsmon.schema.tables import events, statuses


@dataclass
class SweepProgress:
    """Where the checking cycle stands. A site's cycle is its ``recheck_after``: every listed
    file is due once in it."""

    checked_last_hour: int
    due: int
    leased: int
    checked_last_day: int = 0
    checked_in_cycle: int = 0  # files checked within their site's cycle (not due yet)
    checkable: int = 0  # listed files that are to be checked (not vanished, not nearline)

    @property
    def rate_per_hour(self) -> float:
        """Checks per hour: the last day's average, or the last hour's if that is all."""
        return max(self.checked_last_day / 24.0, float(self.checked_last_hour))

    @property
    def eta_hours(self) -> float | None:
        if not self.rate_per_hour:
            return None
        return (self.due + self.leased) / self.rate_per_hour


#: Statuses of files a sweep is to check (not gone, not tape-only).
CHECKABLE = tuple(s for s in Status if s not in (*GONE, Status.NEARLINE))


def leases(conn: sa.Connection) -> tuple[int, int]:
    """(files being checked now, files waiting out their grace window), from the lease
    index: only those rows have an expiry (a young file waits with an expiry and no
    owner: see crawler.ingest)."""
    s = statuses.c
    total, leased = conn.execute(
        sa.select(sa.func.count(), sa.func.sum(sa.case((s.tag.is_not(None), 1), else_=0)))
        .where(s.tag_expiry.is_not(None))).one()
    return int(leased or 0), int(total) - int(leased or 0)


def sweep_progress(conn: sa.Connection, now: float | None = None,
                   totals: counts.Totals | None = None) -> SweepProgress:
    """Where the checking cycle stands, each file by its own site's period: the files due
    are exactly what a check starting at ``now`` claims (``claim_key <= now``, the claim
    index), the files checked in the cycle those due later. Two index ranges that together
    cover the claim index, so the report and ``condor status`` ask for it, not
    ``status``."""
    now = time.time() if now is None else now
    totals = totals if totals is not None else counts.totals(conn)
    s = statuses.c
    count = sa.select(sa.func.count())
    checks = count.select_from(events)
    checkable = [int(st) for st in CHECKABLE]
    return SweepProgress(
        checked_last_hour=conn.execute(
            checks.where(events.c.checked >= now - 3600)).scalar_one(),
        due=conn.execute(count.where(s.claim_key <= now)).scalar_one(),
        leased=leases(conn)[0],
        checked_last_day=conn.execute(checks.where(events.c.checked >= now - DAY)).scalar_one(),
        # A due time in the future: checked, not due again yet (to be checked: leased
        # rows and those waiting for the next crawl or out of their grace window have none).
        checked_in_cycle=conn.execute(count.where(s.claim_key > now,
                                                  s.status.in_(checkable))).scalar_one(),
        checkable=sum(n for (_, st), n in totals.files.items() if st in CHECKABLE),
    )


