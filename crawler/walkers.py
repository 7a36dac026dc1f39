"""Walk a local tree on several cores, for a full re-crawl (``crawler.crawl``).

A full re-crawl of a local filesystem spends most of its time walking: a stat and an xattr
read a file, and a Python object for each, in one process whose threads share the
interpreter's lock. Here walker processes, forked from the crawl (so they share its
namespace, plan and saved digests), take directories from the crawl, each list one and
describe its files one call at a time (``ParallelWalk.list_whole``), digest them
(``crawler.digests``) and pack them (``listing.Packed``). The crawl's process counts each
directory's outcome as its own walk would (``ParallelWalk.account``: the same counters,
unlisted directories and directory state), queues its subdirectories and hands its files to
the ingest. A directory whose digest is the saved one stays packed: the ingest unpacks it
only if the rows' count does not confirm it. On an unchanged night the crawl's process
does next to nothing a file, and the walk runs on every core.

Used for a full crawl of a local filesystem walked one call at a time, when more than one
CPU is the crawl's and the last complete crawl saved digests (``PosixNamespace.processes``);
anything else is walked in the crawl's own process (``crawler.walk``), and so is a directory
of more than ``WHOLE`` names (its walker only lists it). Directories arrive
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

import atexit
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from pnfsmon.crawler.digests import digest, directory_of
from pnfsmon.crawler.directories import DirectoryPlan
from pnfsmon.crawler.listing import Listed, Packed, WalkStats
from pnfsmon.crawler.walk import Outcome, ParallelWalk
from pnfsmon.schema import outcome as ending
from pnfsmon.schema.errors import PnfsmonError, WorkerLost
from pnfsmon.schema.reference import Reference

MAX_PROCESSES = 4  # (the crawl's host has other work: the database, checks)
NICE = 10  # the walkers' CPU priority, below the crawl's own
IN_FLIGHT = 2  # directories a walker holds: one it lists, one to take next
# Names a walker describes at most in one directory: a larger one is described by the
# crawl's own process, as without walkers. A directory crosses whole, its files in two
# processes while it crosses, and every walker may hold one: this bounds what the walkers
# hold beyond a walk in one process to a few such directories (one of 300,000 files cost
# 2.3x; production layouts hold hundreds to thousands a directory).
WHOLE = 10_000
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
    ``cpu.cfs_quota_us``): the smallest set on its cgroup or any above it (a systemd
    slice's), or None where none is set or none can be read (then the affinity alone
    counts). Inside a container the named cgroup may be mounted as the root itself: the
    walk up finds it there."""
    try:
        with open(proc, encoding="ascii") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        try:
            _, controllers, path = line.split(":", 2)
        except ValueError:
            continue
        if controllers == "":
            base, read = mount, _cpu_max
        elif "cpu" in controllers.split(","):
            base, read = f"{mount}/{controllers}", _cfs_quota
        else:
            continue
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), -1, -1):
            quota = read("/".join([base, *parts[:depth]]))
            if quota is not None:
                quotas.append(quota)
    return min(quotas) if quotas else None


def _cpu_max(directory: str) -> float | None:
    """cgroup v2: "QUOTA PERIOD", or "max PERIOD"."""
    try:
        with open(f"{directory}/cpu.max", encoding="ascii") as fh:
            quota, period = fh.read().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _cfs_quota(directory: str) -> float | None:
    """cgroup v1: a quota of -1 is none."""
    try:
        with open(f"{directory}/cpu.cfs_quota_us", encoding="ascii") as fh:
            quota = int(fh.read())
        with open(f"{directory}/cpu.cfs_period_us", encoding="ascii") as fh:
            period = int(fh.read())
        return None if quota < 0 else quota / period
    except (OSError, ValueError):
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
    size: int = 0  # its files' bytes (held only)
    may_change: bool = False  # a file in it may still change (held only; ``DirectoryPlan.files``)
    too_large: bool = False  # more than ``WHOLE`` names: the crawl lists it itself


@dataclass
class _Finished:
    pid: int
    unsupported: int  # files found on a filesystem without user xattrs
    example: tuple[bytes, str] | None  # the first of them, and why


def _found(outcome: Outcome, saved: dict[bytes, bytes], include_nearline: bool,
           plan: DirectoryPlan) -> _Found:
    items = [item for item, _ in outcome.files]
    found = _Found(outcome, problems=[(item.path, problem) for item, problem in outcome.files
                                      if problem is not None],
                   too_large=outcome.error is None and len(outcome.names) > WHOLE)
    outcome.files, outcome.names = [], []  # (the files cross packed; their names not at all)
    if not items:
        return found
    found.name = directory_of(items[0].path)
    found.packed = Packed(items)
    found.digest = digest(items, include_nearline)
    found.held = (outcome.error is None and not found.problems
                  and saved.get(found.name) == found.digest
                  and not any(item.reference is _UNREADABLE for item in items))
    if found.held:  # (the crawl counts the others' files itself, once unpacked)
        found.size = sum([item.size for item in items])
        found.may_change = any(map(plan.may_change, items))
    return found


def _walker(namespace, tasks, results, others: list, saved: dict[bytes, bytes],
            include_nearline: bool, plan: DirectoryPlan, parent: int) -> None:
    """Body of one walker process: directories from its pipe ``tasks`` until None, each
    outcome sent on its pipe ``results`` (``others``: the pipes' ends it inherited and
    must close, so that the crawl sees its pipe end when it does)."""
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
        while (path := _receive(tasks, parent)) is not None:
            # Sent here, not by a thread: a message that cannot be sent is this walker's
            # failure, and a full pipe holds the walk back.
            results.send(_found(walk.list_whole(path, WHOLE), saved, include_nearline,
                                plan))
        results.send(_Finished(os.getpid(), namespace.unsupported - before,
                               namespace.unsupported_example))
    except BaseException as err:  # noqa: BLE001 (every end reaches the crawl)
        with contextlib.suppress(OSError):  # (the crawl may be gone)
            results.send(ending.as_error(err))


def _die_with_crawl(parent: int) -> None:
    """Linux: the kernel kills this walker when its crawl dies, even in a call that hangs
    (PR_SET_PDEATHSIG); elsewhere it notices at its next wait (``_receive``) or send."""
    if sys.platform.startswith("linux"):
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        # (every argument as the kernel's unsigned long: prctl is variadic)
        if prctl(ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL),
                 ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it died before that
        os._exit(1)


def _receive(tasks, parent: int) -> bytes | None:
    """The next directory to list (None: the walk is over); the walker exits if its crawl
    is gone."""
    while not tasks.poll(_POLL):
        if os.getppid() != parent:
            os._exit(1)
    return tasks.recv()


@dataclass(eq=False)
class _Walker:
    """One walker process seen from the crawl: the pipe it takes directories from, the
    one it answers on, and how many directories it holds."""

    proc: multiprocessing.Process
    tasks: Connection
    results: Connection
    busy: int = 0
    open: bool = True  # its answers' pipe has not ended


class _Walkers:
    """The walker processes seen from the crawl. The directories to list wait here, on a
    stack (depth first, as the walk in one process: few wait at once), and go out to
    each walker ``IN_FLIGHT`` at a time, each on its own pipe; each answers on its own
    pipe. The crawl holds no copy of a walker's sending end, so a walker that dies, even
    in the middle of a message, ends its pipe at once."""

    def __init__(self) -> None:
        self.ctx = multiprocessing.get_context("fork")  # (shares the plan and the digests)
        self.walkers: list[_Walker] = []
        self.to_list: list[bytes] = []
        self.finished: dict[int, _Finished] = {}  # by pid

    def start(self, processes: int, namespace, saved: dict[bytes, bytes],
              include_nearline: bool, plan: DirectoryPlan) -> None:
        _kill_walkers_at_exit()
        pipes = [(self.ctx.Pipe(duplex=False), self.ctx.Pipe(duplex=False))
                 for _ in range(processes)]
        theirs = [(take, answer) for (take, _), (_, answer) in pipes]
        ends = [end for pair in pipes for pipe in pair for end in pipe]
        try:
            for n, ((take, give), (hear, answer)) in enumerate(pipes):
                proc = self.ctx.Process(
                    target=_walker, name=f"{WALKER}-{n}", daemon=True,
                    args=(namespace, take, answer,
                          [e for e in ends if e is not take and e is not answer],
                          saved, include_nearline, plan, os.getpid()))
                # Known before it starts: ``stop`` ends it however the start ends.
                self.walkers.append(_Walker(proc, give, hear))
                proc.start()
        except OSError as err:  # no process to be had: a pids limit, memory
            raise WorkerLost(f"could not start walker process {len(self.walkers)} of "
                             f"{processes}: {err.strerror or err}; the crawl stays incomplete "
                             "(parallel = 1 in the site's section walks in the crawl's own "
                             "process)") from None
        finally:
            for take, answer in theirs:  # (the walkers' own ends)
                take.close()
                answer.close()

    def dispatch(self) -> None:
        """Hand the walkers directories to list, the deepest first."""
        for walker in self.walkers:
            while walker.busy < IN_FLIGHT and self.to_list:
                self._send(walker, self.to_list.pop())
                walker.busy += 1

    def finish(self) -> None:
        """The walk is over: each walker ends, with its tally."""
        for walker in self.walkers:
            self._send(walker, None)
        while len(self.finished) < len(self.walkers):
            self.next()

    def _send(self, walker: _Walker, path: bytes | None) -> None:
        try:
            walker.tasks.send(path)
        except OSError:  # it is gone
            walker.proc.join(_POLL)
            raise WorkerLost(_lost(walker.proc)) from None

    def next(self) -> _Found | _Finished:
        """The next answer from any walker; raises what a walker ended with, or
        ``WorkerLost`` as soon as one dies without a word."""
        while True:
            listening = {w.results: w for w in self.walkers if w.open}
            if not listening:
                raise WorkerLost("every walker process has ended before the walk did")
            for receiving in wait(list(listening), timeout=_POLL):
                walker = listening[receiving]
                try:
                    message = receiving.recv()
                except (EOFError, OSError):  # its walker has ended (OSError: mid-message)
                    walker.open = False
                    walker.proc.join(_POLL)
                    if walker.proc.pid not in self.finished:
                        raise WorkerLost(_lost(walker.proc)) from None
                    continue
                if isinstance(message, PnfsmonError):
                    raise message
                if isinstance(message, _Finished):
                    self.finished[message.pid] = message
                else:
                    walker.busy -= 1
                return message

    def check(self) -> None:
        """While the crawl describes a directory itself and reads no pipe: end the crawl
        as ``next`` would if a walker has ended, with its error if it sent one, else
        ``WorkerLost`` (no walker ends before the walk does)."""
        for walker in self.walkers:
            if walker.open and not walker.proc.is_alive():
                with contextlib.suppress(EOFError, OSError):
                    while True:  # what it sent before it ended; its pipe ends after
                        if isinstance(message := walker.results.recv(), PnfsmonError):
                            raise message
                raise WorkerLost(_lost(walker.proc))

    def stop(self) -> None:
        """Every walker ended (killed if it still runs), every pipe closed."""
        started = [w.proc for w in self.walkers if w.proc.pid is not None]
        for proc in started:
            if proc.is_alive():
                proc.kill()
        for proc in started:
            proc.join()
        for walker in self.walkers:
            walker.tasks.close()
            walker.results.close()


WALKER = "pnfsmon-walker"  # the walkers' process names
_at_exit: list[bool] = []


def _kill_walkers_at_exit() -> None:
    """Once, after multiprocessing's own: at exit, before it joins its children, kill
    any walker left (one a second signal kept ``stop`` from ending). It would wait for
    ever for a walker, which ignores the SIGTERM it sends."""
    if not _at_exit:
        _at_exit.append(True)
        atexit.register(_kill_walkers)


def _kill_walkers() -> None:
    for proc in multiprocessing.active_children():
        if proc.name.startswith(WALKER):
            proc.kill()


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
    here = namespace.parallel_walk()  # (for the directories too large to cross)
    try:
        walkers.start(processes, namespace, saved, include_nearline, plan)
        walkers.to_list.append(namespace.root)
        waiting = 1  # directories to list, or being listed
        while waiting:
            walkers.dispatch()
            found = walkers.next()
            if isinstance(found, _Finished):  # (only after None: never here)
                raise WorkerLost(f"walker process {found.pid} ended before the walk did")
            waiting -= 1
            if found.too_large:  # listed again, and described, in this process
                found = _Found(here.list_whole(found.outcome.task.directory.path,
                                               between=walkers.check))
            following, files = _take(found, stats, plan)
            walkers.to_list.extend(reversed(following))  # (the first listed comes first)
            waiting += len(following)
            if files:
                yield found.name or directory_of(files[0].path), files, found.digest
        walkers.finish()
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
    outcome.files, outcome.names = [], []  # (not kept while the ingest takes the files)
    if packed is None or not found.held:
        return following, items
    stats.files += len(packed)
    stats.bytes += found.size
    if found.may_change:
        plan.unsettled(outcome.task.directory.path)
    return following, packed
