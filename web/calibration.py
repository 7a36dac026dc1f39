"""Calibration from ``events``, as the original PNFS monitor's events table was for: how fast
each pool and each worker node reads (MB/s), and where timeouts and corruption cluster.
One GROUP BY per dimension, computed in the database (events grow to millions of rows)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa

from pnfsmon.schema.durations import DAY
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import events


@dataclass(frozen=True)
class Throughput:
    name: str  # pool or node; "(none)" where it is not known
    checks: int
    bytes_read: int
    seconds: float
    timeouts: int
    corrupted: int
    missing: int

    @property
    def mb_per_s(self) -> float:
        return self.bytes_read / self.seconds / 1e6 if self.seconds > 0 else 0.0


def throughput(conn: sa.Connection, by: str, days: float = 30, now: float | None = None
               ) -> list[Throughput]:
    """Per ``source_pool`` or ``worker_node`` over the last ``days``, busiest first."""
    if by not in ("source_pool", "worker_node", "source_node"):
        raise ValueError(f"cannot group events by {by!r}")
    now = time.time() if now is None else now
    e = events.c
    key = e[by]

    def count(status: Status):
        return sa.func.sum(sa.case((e.status == int(status), 1), else_=0))

    rows = conn.execute(
        sa.select(key, sa.func.count(), sa.func.coalesce(sa.func.sum(e.bytes_read), 0),
                  sa.func.coalesce(sa.func.sum(e.seconds), 0.0), count(Status.TIMEOUT),
                  count(Status.CORRUPTED), count(Status.MISSING))
        .where(e.checked >= now - days * DAY)
        .group_by(key)
    ).all()
    out = [Throughput(name or "(none)", int(n), int(b), float(s), int(t or 0), int(c or 0),
                      int(m or 0)) for name, n, b, s, t, c, m in rows]
    return sorted(out, key=lambda r: (-r.checks, r.name))
