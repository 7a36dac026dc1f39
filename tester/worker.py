"""One worker: claim a batch, check it, record it (``run_once``), and the loop around it
(``run``). A worker holds a DB connection only to claim, renew or record, never while it
reads a file.

Stopping: signal handlers only set a ``stop`` event. The worker looks at it between files
(and the stream while reading), records what it has checked, releases the rest of its batch
and returns; a claim or a record is never cut in half. Killed outright (SIGKILL), it leaves
leases that expire, and the rows come back."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pnfsmon.schema.lease import URGENT, Claimed, Lease, Verdict
from pnfsmon.schema.paths import display
from pnfsmon.schema.sites import DEFAULT_CONFIRM_AFTER
from pnfsmon.schema.status import PROBLEMS, Status
from pnfsmon.tester import confirm
from pnfsmon.tester.checker import check_file
from pnfsmon.tester.reading import Reader
from pnfsmon.tester.stream import Streamer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckOptions:
    timeout: float = 500.0  # seconds allowed to read one file
    # Seconds after its last check before a file is due again, for this run only (``check
    # --recheck-after``); None: each site's own recheck_after (``schema.schedule``).
    recheck_after: float | None = None
    forever: bool = False  # keep polling when nothing is due
    poll: float = 60.0  # seconds between polls in --forever mode
    max_batch: int = 500
    max_rate: float = 0.0  # bytes/s each worker may read; 0 for no limit
    max_per_pool: int = 0  # concurrent readers per pool over all workers; 0 for no limit
    # When the sweep started (epoch seconds): files checked after it are not due again in it.
    # All workers of one sweep must share it, or a late starter re-checks what an early one
    # just did. None: when this worker starts.
    sweep_start: float | None = None
    reader: str = "auto"  # see tester.readers.READERS
    urgent_only: bool = False  # only files an operator asked for (check --prefix/--paths)
    site: str | None = None  # only this site's files
    # seconds from a corrupted first read to its second (tester.confirm), and per site
    # where the configuration sets it otherwise
    confirm_after: float = DEFAULT_CONFIRM_AFTER
    confirm_after_sites: tuple[tuple[str, float], ...] = ()

    def confirm_after_for(self, site: str) -> float:
        return dict(self.confirm_after_sites).get(site, self.confirm_after)


@dataclass
class Tally:
    """What a worker did: verdicts by status, bytes read, verdicts dropped (lease lost)."""

    statuses: Counter = field(default_factory=Counter)
    bytes_read: int = 0
    dropped: int = 0

    def add(self, verdicts: list[Verdict], recorded: list[int]) -> None:
        kept = set(recorded)
        for v in verdicts:
            if v.file_id in kept:
                self.statuses[v.status] += 1
                self.bytes_read += v.bytes_read
        self.dropped += len(verdicts) - len(kept)

    def merge(self, other: Tally) -> None:
        self.statuses.update(other.statuses)
        self.bytes_read += other.bytes_read
        self.dropped += other.dropped

    @property
    def checked(self) -> int:
        return sum(self.statuses.values())

    @property
    def problems(self) -> int:
        return sum(self.statuses[s] for s in PROBLEMS)


class BatchSizer:
    """Claim as many files as take about a quarter of the lease to check, so a batch ends
    well inside its lease and a crashed worker strands few rows."""

    def __init__(self, lease_seconds: float, max_batch: int, start: int = 8) -> None:
        self.budget = lease_seconds / 4
        self.max_batch = max_batch
        self.size = min(start, max_batch)

    def observe(self, files: int, seconds: float) -> None:
        if files:
            per_file = max(seconds / files, 1e-4)
            self.size = max(1, min(self.max_batch, int(self.budget / per_file)))


def run_once(lease: Lease, reader: Reader, options: CheckOptions, batch: int,
             sweep_start: float, streamer: Streamer | None = None,
             stop: threading.Event | None = None,
             on_file: Callable[[Verdict], None] | None = None) -> Tally | None:
    """Claim up to ``batch`` files due at ``sweep_start`` (with ``options.recheck_after``:
    last checked that long before it), check and record them. None if
    nothing was due. ``on_file`` hears of each verdict as it is made (not yet recorded):
    progress between batches, which may take a quarter of the lease."""
    due_before = URGENT if options.urgent_only else sweep_start
    claimed = lease.claim(batch, due_before=due_before, max_per_pool=options.max_per_pool,
                          site=options.site, recheck_after=options.recheck_after,
                          confirm=not options.urgent_only)
    lease.hang_up()  # no DB connection while reading
    if not claimed:
        return None
    log.debug("claimed %d files (lease %s)", len(claimed), lease.owner)
    verdicts: list[Verdict] = []
    renew_at = time.monotonic() + lease.lease_seconds / 2
    try:
        for i, item in enumerate(claimed):
            if stop is not None and stop.is_set():
                break
            if time.monotonic() >= renew_at:
                lease.renew([c.id for c in claimed[i:]])
                lease.hang_up()
                renew_at = time.monotonic() + lease.lease_seconds / 2
            verdict = check_file(item, reader, options.timeout, streamer, stop)
            if verdict is None:
                break
            verdict = confirm.settle(item, verdict, options.confirm_after_for(item.site))
            verdicts.append(verdict)
            if on_file is not None:
                on_file(verdict)
    finally:
        # Normal end, stop requested, or an error: keep what was checked, give back the
        # rest at once (rather than waiting for the lease to expire).
        try:
            recorded = lease.record(verdicts)
        except BaseException:
            lease.release(c.id for c in claimed)  # nothing was recorded: all go back
            raise
        lease.release(c.id for c in claimed[len(verdicts):])
        log.debug("recorded %d verdicts, released %d files", len(recorded),
                  len(claimed) - len(verdicts))
    tally = Tally()
    tally.add(verdicts, recorded)
    _say_problems(claimed, verdicts, recorded)
    return tally


def _say_problems(claimed: list[Claimed], verdicts: list[Verdict], recorded: list[int]) -> None:
    """One WARNING line per problem found, and per file read but not judged (its recorded
    checksum could not be read), once it is recorded (cron mail, a condor job's log and
    journald show them as they come)."""
    paths = {c.id: c.path for c in claimed}
    kept = set(recorded)
    for v in verdicts:
        if (v.status in PROBLEMS or v.status == Status.UNCHECKED) and v.file_id in kept:
            log.warning("%s %s: %s", v.status.label, display(paths[v.file_id]), v.error or "")


def run(lease: Lease, reader: Reader, options: CheckOptions,
        on_batch: Callable[[Tally], None] | None = None,
        stop: threading.Event | None = None,
        on_file: Callable[[Verdict], None] | None = None) -> Tally:
    """Check until nothing is due (or forever, polling), or until ``stop`` is set.
    Returns the worker's totals."""
    if options.timeout >= lease.lease_seconds:
        raise ValueError("the lease must be longer than the per-file timeout")
    sizer = BatchSizer(lease.lease_seconds, options.max_batch)
    total = Tally()
    streamer = Streamer(max_rate=options.max_rate)
    sweep_start = options.sweep_start or time.time()
    try:
        while stop is None or not stop.is_set():
            started = time.monotonic()
            tally = run_once(lease, reader, options, sizer.size, sweep_start, streamer, stop,
                             on_file)
            if tally is None:
                if not options.forever:
                    return total
                if stop is not None:
                    stop.wait(options.poll)
                else:
                    time.sleep(options.poll)
                sweep_start = time.time()  # the next sweep: what has come due since
                continue
            sizer.observe(tally.checked + tally.dropped, time.monotonic() - started)
            total.merge(tally)
            if on_batch is not None:
                on_batch(tally)
        return total
    finally:
        streamer.close()

