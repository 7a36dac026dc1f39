"""Local worker processes: ``run_workers`` forks N workers (``tester.worker``), gathers
their tallies and turns every way they can end into one result or one error. The unit
``pnfsmon check``, the demo and HTCondor jobs share; ``due_now`` counts what a sweep has
to do, for the ETA."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import queue
import signal
import threading
import time

import sqlalchemy as sa

from pnfsmon.schema import outcome, schedule
from pnfsmon.schema.db import create_engine
from pnfsmon.schema.errors import Interrupted, PnfsmonError, WorkerLost
from pnfsmon.schema.lease import Lease, due_condition
from pnfsmon.schema.progress import Progress, count, human_bytes, stopped_by
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import statuses
from pnfsmon.tester.readers import make_reader
from pnfsmon.tester.worker import CheckOptions, Tally, run


def _worker_main(settings, options: CheckOptions, lease_seconds: float, results,
                 reading) -> None:
    """Body of one worker process: its own engine, its own lease tag. SIGTERM and SIGINT
    ask it to stop at a safe point (see ``tester.worker``). ``reading`` counts the files
    and bytes it has read (shared with the parent, for progress between batches)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    def on_file(verdict) -> None:
        with reading.get_lock():
            reading[0] += 1
            reading[1] += verdict.bytes_read

    engine = create_engine(settings)
    try:
        lease = Lease(engine, lease_seconds=lease_seconds)
        reader = make_reader(options.reader, options.timeout)
        run(lease, reader, options, on_batch=results.put, stop=stop, on_file=on_file)
    except PnfsmonError as err:
        results.put(err)
    except BaseException as err:  # noqa: BLE001 (a worker reports every end; main exits 4)
        results.put(outcome.as_error(err))
    finally:
        engine.dispose()


def run_workers(settings, options: CheckOptions, workers: int, lease_seconds: float,
                progress: Progress | None = None) -> Tally:
    """Run ``workers`` processes to completion; the unit shared by the CLI and the demo."""
    if options.sweep_start is None:  # one sweep for all the workers
        options = dataclasses.replace(options, sweep_start=time.time())
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    reading = ctx.Array("q", 2)  # files, bytes read by every worker so far
    procs = [ctx.Process(target=_worker_main,
                         args=(settings, options, lease_seconds, results, reading),
                         name=f"pnfsmon-worker-{i}") for i in range(workers)]
    for p in procs:
        p.start()
    total = Tally()
    started = time.monotonic()
    error: PnfsmonError | None = None
    try:
        while any(p.is_alive() for p in procs) or not results.empty():
            try:
                item = results.get(timeout=0.5)
            except queue.Empty:
                item = None
            if isinstance(item, PnfsmonError):
                error = item
            elif item is not None:
                total.merge(item)
            if progress is not None:
                # Every tick, not only when a batch is recorded: a batch may take minutes.
                files, read = reading[:]
                elapsed = time.monotonic() - started
                progress.update(files, f"{human_bytes(read)} read, "
                                       f"{human_bytes(read / elapsed)}/s, "
                                       f"{total.problems:,} problems recorded")
    except (KeyboardInterrupt, Interrupted) as err:
        # Ctrl-C, or SIGTERM (condor_rm, systemd): each worker records what it checked,
        # releases the rest of its batch and exits; then we say what was kept.
        _stop(procs)
        _drain(results, total)
        raise Interrupted(
            f"stopped by {stopped_by(err)}: {count(total.checked, 'file')} checked and "
            f"recorded before stopping ({total.problems:,} problems), the rest released "
            "for the next run") from None
    except BaseException:
        _stop(procs)
        raise
    finally:
        for p in procs:
            p.join()
        if progress is not None:
            progress.done()
    if error is not None:
        raise error
    failed = [p for p in procs if p.exitcode not in (0, None)]
    if failed:
        raise WorkerLost(f"{len(failed)} worker(s) died (exit codes "
                           f"{', '.join(str(p.exitcode) for p in failed)}); their leases "
                           "will expire and the files come back")
    return total


def _stop(procs) -> None:
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGTERM)
    for p in procs:
        p.join()


def _drain(results, total: Tally) -> None:
    """The tallies the stopped workers sent after their last recorded batch."""
    while True:
        try:
            item = results.get(timeout=0.2)
        except queue.Empty:
            return
        if isinstance(item, Tally):
            total.merge(item)


def summary(tally: Tally, seconds: float) -> str:
    by_status = ", ".join(f"{s.label} {tally.statuses[s]:,}" for s in Status
                          if tally.statuses[s])
    line = (f"checked {count(tally.checked, 'file')} in {seconds:.1f} s "
            f"({tally.checked / max(seconds, 1e-9):,.0f} files/s, "
            f"{human_bytes(tally.bytes_read / max(seconds, 1e-9))}/s)")
    if by_status:
        line += f": {by_status}"
    if tally.dropped:
        line += f"; {tally.dropped} verdicts dropped (lease lost)"
    return line


def due_now(engine, options: CheckOptions) -> int:
    """How many files a sweep starting now has to check (leased ones included): what its
    workers' claims take (``schema.lease.due_condition``)."""
    c = statuses.c
    with engine.connect() as conn:
        periods = schedule.periods(conn) if options.recheck_after is not None else None
        query = sa.select(sa.func.count()).where(sa.or_(
            due_condition(time.time(), options.recheck_after, periods), c.tag.is_not(None)))
        if options.site is not None:
            query = query.where(c.site == options.site)
        return conn.execute(query).scalar_one()
