"""Walk a local tree on several cores, for a full re-crawl (``crawler.crawl``).

A full re-crawl of a local filesystem spends most of its time walking: a stat and an xattr
read a file, and a Python object for each, in one process whose threads share the
interpreter's lock. Here walker processes, forked from the crawl (so they share its
namespace, plan and saved digests), take directories from one queue, each list one and
describe its files one call at a time (``ParallelWalk.list_whole``), digest them
(``crawler.digests``) and pack them (``listing.Packed``). The crawl's process counts each
directory's outcome as its own walk would (``ParallelWalk.account``: the same counters,
unlisted directories and directory state), queues its subdirectories and hands its files to
the ingest. A directory whose digest is the saved one stays packed: the ingest unpacks it
only if the rows' count does not confirm it. On an unchanged night the crawl's process
does next to nothing a file, and the walk runs on every core.

Used for a full crawl of a local filesystem walked one call at a time, when more than one
CPU is the crawl's and the last complete crawl saved digests (``PosixNamespace.processes``);
anything else is walked in the crawl's own process (``crawler.walk``). Directories arrive
in another order; the rows, counters and directory state are the same. Walkers run at a
lower CPU priority (``NICE``) than the crawl, the database and the checks beside them.

Failures stay loud:
- a walker that dies (killed, out of memory) ends the crawl with ``WorkerLost`` (exit 3):
  incomplete, nothing marked vanished, the next crawl lists everything again;
- an exception in a walker ends the crawl with its line and exit code (its traceback in
  the log, as any bug's);
- SIGINT and SIGTERM are the crawl's to handle: walkers ignore them, and are killed when
  the crawl's walk ends, however it ends. A crawl killed outright (SIGKILL, the OOM
  killer) takes its walkers with it: on Linux the kernel kills them
  (PR_SET_PDEATHSIG), elsewhere each exits at its next wait."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import queue
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait

from pnfsmon.crawler.digests import digest, directory_of
from pnfsmon.crawler.directories import DirectoryPlan
from pnfsmon.crawler.listing import Listed, Packed, WalkStats
from pnfsmon.crawler.walk import Outcome, ParallelWalk
from pnfsmon.schema import outcome as ending
from pnfsmon.schema.errors import PnfsmonError, WorkerLost
from pnfsmon.schema.reference import Reference

MAX_PROCESSES = 4  # (the crawl's host has other work: the database, checks)
NICE = 10  # the walkers' CPU priority, below the crawl's own
_POLL = 1.0  # seconds between looks at the walkers (and, in a walker, at its crawl)
_UNREADABLE = Reference.UNREADABLE
_PR_SET_PDEATHSIG = 1


def cpus() -> int:
    """Walker processes to use: one a CPU this process may run on (its affinity, and its
    cgroup's CPU quota where one is set), at most ``MAX_PROCESSES``; 0 where that is one
    (the walk stays in the crawl)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    quota = cgroup_cpus()
    if quota is not None:
        n = min(n, max(1, int(quota)))
    return min(n, MAX_PROCESSES) if n > 1 else 0


def cgroup_cpus(proc: str = "/proc/self/cgroup", mount: str = "/sys/fs/cgroup"
                ) -> float | None:
    """The CPUs this process's cgroup quota allows (v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us``), or None where none is set or none can be read (then the
    affinity alone counts)."""
    try:
        with open(proc, encoding="ascii") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            _, controllers, path = line.split(":", 2)
            if controllers == "":  # v2: "QUOTA PERIOD", or "max PERIOD"
                with open(f"{mount}{path}/cpu.max", encoding="ascii") as fh:
                    quota, period = fh.read().split()
            elif "cpu" in controllers.split(","):
                base = f"{mount}/{controllers}{path}"
                with open(f"{base}/cpu.cfs_quota_us", encoding="ascii") as fh:
                    quota = fh.read().strip()
                with open(f"{base}/cpu.cfs_period_us", encoding="ascii") as fh:
                    period = fh.read().strip()
            else:
                continue
            if quota not in ("max", "-1"):
                return int(quota) / int(period)
        except (OSError, ValueError):  # (a hierarchy not mounted where it says)
            continue
    return None


@dataclass
class _Found:
    """One directory, as a walker hands it to the crawl."""

    outcome: Outcome  # without its files, which are packed
    name: bytes = b""  # as ``digests.directory_of`` names it
    packed: Packed | None = None  # its files (None: it holds none)
    digest: bytes | None = None
    # The digest is the saved one, and nothing about its files needs the crawl's eye (a
    # problem, a checksum that could not be read): it may stay packed.
    held: bool = False
    problems: list[tuple[bytes, str]] = field(default_factory=list)
    size: int = 0  # its files' bytes
    may_change: bool = False  # a file in it may still change (``DirectoryPlan.files``)


@dataclass
class _Finished:
    pid: int
    unsupported: int  # files found on a filesystem without user xattrs
    example: tuple[bytes, str] | None  # the first of them, and why


def _found(outcome: Outcome, saved: dict[bytes, bytes], include_nearline: bool,
           plan: DirectoryPlan) -> _Found:
    items = [item for item, _ in outcome.files]
    found = _Found(outcome, problems=[(item.path, problem) for item, problem in outcome.files
                                      if problem is not None])
    outcome.files, outcome.names = [], []  # (the files cross packed; their names not at all)
    if not items:
        return found
    found.name = directory_of(items[0].path)
    found.packed = Packed(items)
    found.digest = digest(items, include_nearline)
    found.held = (outcome.error is None and not found.problems
                  and saved.get(found.name) == found.digest
                  and not any(item.reference is _UNREADABLE for item in items))
    found.size = sum([item.size for item in items])
    found.may_change = any(map(plan.may_change, items))
    return found


def _walker(namespace, tasks, results, others: list, saved: dict[bytes, bytes],
            include_nearline: bool, plan: DirectoryPlan, parent: int) -> None:
    """Body of one walker process: directories from ``tasks`` until None, each outcome
    sent on its own pipe ``results`` (``others``: the ends it inherited and must close,
    so that the crawl sees its pipe end when it does)."""
    for signum in (signal.SIGINT, signal.SIGTERM):  # the crawl's: it ends us
        signal.signal(signum, signal.SIG_IGN)
    for connection in others:
        connection.close()
    namespace.say_first = False  # the crawl says it, once for all its walkers
    before = namespace.unsupported
    try:
        _die_with_crawl(parent)
        # Below the crawl, the database and the checks on the same machine: a walk takes
        # every core it can get.
        os.nice(NICE)
        walk: ParallelWalk = namespace.parallel_walk()
        while (path := _wait(tasks.get, parent)) is not None:
            # Sent here, not by a thread: a message that cannot be sent is this walker's
            # failure, and a full pipe holds the walk back (the memory stays bounded).
            results.send(_found(walk.list_whole(path), saved, include_nearline, plan))
        results.send(_Finished(os.getpid(), namespace.unsupported - before,
                               namespace.unsupported_example))
    except BaseException as err:  # noqa: BLE001 (every end reaches the crawl)
        with contextlib.suppress(OSError):  # (the crawl may be gone)
            results.send(ending.as_error(err))


def _die_with_crawl(parent: int) -> None:
    """Linux: the kernel kills this walker when its crawl dies, even in a call that hangs
    (PR_SET_PDEATHSIG); elsewhere it notices at its next wait (``_wait``) or send."""
    if sys.platform.startswith("linux"):
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        # (every argument as the kernel's unsigned long: prctl is variadic)
        if prctl(ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL),
                 ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it died before that
        os._exit(1)


def _wait(call, parent: int):
    """``call(timeout=…)`` until it answers; the walker exits if its crawl is gone."""
    while True:
        try:
            return call(timeout=_POLL)
        except queue.Empty:
            if os.getppid() != parent:
                os._exit(1)


class _Walkers:
    """The walker processes seen from the crawl: one queue of directories to list, and a
    pipe from each walker. The crawl holds no copy of a pipe's sending end, so a walker
    that dies, even in the middle of a message, ends its pipe at once."""

    def __init__(self) -> None:
        self.ctx = multiprocessing.get_context("fork")  # (shares the plan and the digests)
        self.tasks = self.ctx.Queue()
        self.pipes: dict = {}  # receiving end -> its walker
        self.procs: list = []
        self.finished: dict[int, _Finished] = {}  # by pid

    def start(self, processes: int, namespace, saved: dict[bytes, bytes],
              include_nearline: bool, plan: DirectoryPlan) -> None:
        pipes = [self.ctx.Pipe(duplex=False) for _ in range(processes)]
        ends = [end for pipe in pipes for end in pipe]
        try:
            for n, (receiving, sending) in enumerate(pipes):
                proc = self.ctx.Process(
                    target=_walker, name=f"pnfsmon-walker-{n}", daemon=True,
                    args=(namespace, self.tasks, sending, [e for e in ends if e is not sending],
                          saved, include_nearline, plan, os.getpid()))
                proc.start()
                self.procs.append(proc)
                self.pipes[receiving] = proc
        except OSError as err:  # no process to be had: a pids limit, memory
            raise WorkerLost(f"could not start walker process {len(self.procs) + 1} of "
                             f"{processes}: {err.strerror or err}; the crawl stays incomplete "
                             "(parallel = 1 in the site's section walks in the crawl's own "
                             "process)") from None
        finally:
            for _, sending in pipes:
                sending.close()

    def next(self) -> _Found | _Finished:
        """The next message from any walker; raises what a walker ended with, or
        ``WorkerLost`` as soon as one dies without a word."""
        while True:
            for receiving in wait(list(self.pipes), timeout=_POLL):
                try:
                    message = receiving.recv()
                except (EOFError, OSError):  # its walker has ended (OSError: mid-message)
                    proc = self.pipes.pop(receiving)
                    receiving.close()
                    proc.join(_POLL)
                    if proc.pid not in self.finished:
                        raise WorkerLost(_lost(proc)) from None
                    continue
                if isinstance(message, PnfsmonError):
                    raise message
                if isinstance(message, _Finished):
                    self.finished[message.pid] = message
                return message
            if not self.pipes:
                raise WorkerLost("every walker process has ended before the walk did")

    def stop(self) -> None:
        """Every walker ended (killed if it still runs), every pipe and queue closed."""
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
        for proc in self.procs:
            proc.join()
        for receiving in self.pipes:
            receiving.close()
        self.tasks.cancel_join_thread()  # (what a killed walker never read is dropped)
        self.tasks.close()


def _lost(proc) -> str:
    code = proc.exitcode
    how = ("still running" if code is None else f"killed by signal {-code}" if code < 0
           else f"exit code {code}")
    return (f"walker process {proc.pid} died ({how}) while the crawl was listing; the crawl "
            "stays incomplete and marks nothing vanished (the next crawl lists everything "
            "again)")


def walk(namespace, stats: WalkStats, plan: DirectoryPlan, processes: int,
         saved: dict[bytes, bytes], include_nearline: bool
         ) -> Iterator[tuple[bytes, Packed | list[Listed], bytes]]:
    """Walk ``namespace`` (a ``PosixNamespace``) in ``processes`` walker processes, as
    ``ParallelWalk.walk`` would, yielding each directory's files at once for
    ``Ingest.add_directories``: (its name, its files, their digest). ``saved``: the
    digests the last complete crawl saved; ``include_nearline`` as the ingest's."""
    walkers = _Walkers()
    try:
        walkers.start(processes, namespace, saved, include_nearline, plan)
        walkers.tasks.put(namespace.root)
        waiting = 1
        while waiting:
            found = walkers.next()
            if isinstance(found, _Finished):  # (only after None: never here)
                raise WorkerLost(f"walker process {found.pid} ended before the walk did")
            waiting -= 1
            following, files = _take(found, stats, plan)
            for directory in following:
                walkers.tasks.put(directory)
            waiting += len(following)
            if files:
                yield found.name, files, found.digest
        for _ in walkers.procs:
            walkers.tasks.put(None)
        while len(walkers.finished) < len(walkers.procs):
            walkers.next()
        for finished in walkers.finished.values():
            namespace.counted_unsupported(finished.unsupported, finished.example)
    finally:
        walkers.stop()
    for directory, why in plan.settle():
        stats.unlisted(directory, why)


def _take(found: _Found, stats: WalkStats, plan: DirectoryPlan
          ) -> tuple[list[bytes], Packed | list[Listed] | None]:
    """Count one directory as the crawl's own walk would: the directories to list because
    of it, and its files for the ingest (packed, if they may stay so)."""
    outcome, packed = found.outcome, found.packed
    if packed is not None and not found.held:
        problems = dict(found.problems)
        outcome.files = [(item, problems.get(item.path)) for item in packed]
    items, following = ParallelWalk.account(outcome, stats, plan)
    if packed is None or not found.held:
        return following, items
    stats.files += len(packed)
    stats.bytes += found.size
    if found.may_change:
        plan.unsettled(outcome.task.directory.path)
    return following, packed
