"""Retention (``pnfsmon db prune``): what years of operation would otherwise keep for ever.
A site with ten million files on a 30-day cycle writes 120 million ``events`` a year, and
vanished files keep their rows.

- ``events`` older than a retention are deleted, except the last check of every file
  (``statuses.checked`` is its time) and, unless asked otherwise, every check of a file
  that is or was a problem (``statuses.problem_seen``): the evidence stays.
- ``vanished`` files are deleted (with their events) once they have been gone for longer
  than another retention: since the crawl that found them gone (their ``crawl_gen``)
  started.

Both in bounded batches, each one short transaction, so workers claiming and recording
meanwhile wait milliseconds at most: events by primary-key ranges (ids grow with time),
vanished files a batch of ids at a time, with the ``status_counts`` ledger kept exact."""

from __future__ import annotations

import logging
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from pnfsmon.schema import counts
from pnfsmon.schema.db import retrying, write_transaction
from pnfsmon.schema.durations import DAY
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import crawls, events, statuses

log = logging.getLogger(__name__)

BATCH = 5000


@dataclass
class Pruned:
    events: int = 0
    vanished: int = 0
    vanished_events: int = 0


def prune_events(engine: sa.Engine, before: float, *, keep_problem_history: bool = True,
                 batch: int = BATCH, progress: Callable[[int], None] | None = None) -> int:
    """Delete checks recorded before ``before`` (epoch seconds), keeping each file's last
    one and, with ``keep_problem_history``, all checks of files that are or were
    problems. Returns how many were deleted."""
    e, s = events.c, statuses.c
    with engine.connect() as conn:
        # The newest old event (the checked index holds the id too); ids grow with time,
        # so the ranges below it hold every old event.
        top = conn.execute(sa.select(sa.func.max(e.id)).where(e.checked < before)).scalar()
        bottom = conn.execute(sa.select(sa.func.min(e.id))).scalar()
    if top is None:
        return 0
    keep = [s.checked != e.checked]  # not the file's last check
    if keep_problem_history:
        keep.append(s.problem_seen.is_(False))
    prunable = sa.exists().where(s.id == e.file_id, *keep)
    deleted = 0
    for lo in range(bottom, top + 1, batch):
        statement = events.delete().where(e.id >= lo, e.id < min(lo + batch, top + 1),
                                          e.checked < before, prunable)

        def run(statement=statement) -> int:
            with write_transaction(engine) as conn:
                return conn.execute(statement).rowcount

        deleted += retrying(engine, run)
        if progress is not None:
            progress(deleted)
    return deleted


def prune_vanished(engine: sa.Engine, before: float, *, batch: int = BATCH,
                   progress: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Delete files marked vanished by crawls that started before ``before``, and their
    events. Returns (files, events) deleted."""
    s = statuses.c
    old = sa.and_(s.status == int(Status.VANISHED),
                  s.crawl_gen.in_(sa.select(crawls.c.id).where(crawls.c.started < before)))
    # Their ids in one pass over the vanished rows (the (status, site) index), then a batch
    # of ids at a time by primary key. A batch found by a LIMIT would read every vanished
    # row again, the young ones included: at millions of them, seconds to minutes a batch.
    with engine.connect() as conn:  # (streamed: 8 bytes an id here, not a row object)
        ids = array("q", conn.execution_options(stream_results=True, yield_per=10000)
                    .execute(sa.select(s.id).where(old).order_by(s.id)).scalars())
    files = n_events = 0
    for start in range(0, len(ids), batch):
        # (Asked again under lock: a file that came back since is spared.)
        gone = (sa.select(s.id, s.site, s.size, s.reference)
                .where(s.id.in_(ids[start:start + batch].tolist()), old).with_for_update())

        def run(gone=gone) -> tuple[int, int]:
            with write_transaction(engine) as conn:
                rows = conn.execute(gone).all()
                if not rows:
                    return 0, 0
                doomed = [r.id for r in rows]
                removed = conn.execute(events.delete().where(events.c.file_id.in_(doomed))
                                       ).rowcount
                conn.execute(statuses.delete().where(s.id.in_(doomed)))
                deltas = counts.Deltas()
                for r in rows:
                    deltas.remove(r.site, int(Status.VANISHED), r.reference, r.size)
                deltas.write(conn)
                return len(rows), removed

        done, removed = retrying(engine, run)
        files += done
        n_events += removed
        if progress is not None:
            progress(files)
    return files, n_events


def prune(engine: sa.Engine, *, events_days: float | None, vanished_days: float | None,
          keep_problem_history: bool = True, now: float | None = None) -> Pruned:
    """Both retentions (None: that one is not applied), then a fold of the ledger."""
    now = time.time() if now is None else now
    result = Pruned()
    if vanished_days is not None:
        result.vanished, result.vanished_events = prune_vanished(
            engine, now - vanished_days * DAY)
    if events_days is not None:
        result.events = prune_events(engine, now - events_days * DAY,
                                     keep_problem_history=keep_problem_history)
    with write_transaction(engine) as conn:
        counts.fold(conn)
    return result
