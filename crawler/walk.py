"""Walk a mounted tree (POSIX, dCache's PNFS and Chimera mounts) with many calls in flight.

On NFS, Lustre, CephFS, GPFS or a dCache mount every readdir, stat and dot-command read is
a round trip to a server; one at a time, a crawl of ten million files takes a day. Here
``parallel`` threads list directories and describe files (a stat, an xattr, dot-commands)
at once; the calls release the GIL while they wait. Files are stat'ed and dot-commands
opened relative to their directory's descriptor (``fstatat``, ``openat``), so each call
looks up one name, not the whole path again.

What it yields is exactly what a walk with ``parallel = 1`` yields (in another order), and
the counters are the same: directories, empty ones, unlisted ones, files, bytes, skipped,
malformed metadata. Memory stays bounded: directories wait on a stack, and no new
directory is listed while many described files wait to be consumed.

A mount that stops answering (a hung NFS server) cannot hang the crawl: a directory whose
listing or whose files' calls take longer than ``timeout`` seconds is counted *unlisted*
(its subtree is spared from "vanished", the crawl exits 1 and says which), its thread is
given up (it ends, and its results are dropped, if the call ever returns) and a fresh one
takes its place. Given-up calls are capped (``max_hung``, by default as many as calls in
flight, at least ``MIN_HUNG``): each holds a thread and a directory descriptor until the
mount answers. At the cap the mount is taken for dead: the walk stops (what it found so far
is yielded, and ``stats.stopped`` says why) and the crawl ends with exit 3 naming the mount,
keeping what it listed and marking nothing vanished."""

from __future__ import annotations

import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pnfsmon.crawler.listing import Listed, WalkStats
from pnfsmon.schema.paths import display
from pnfsmon.schema.sites import DEFAULT_PARALLEL

#: Describes one regular file: (directory fd, directory, name, its lstat) → the record,
#: and what could not be read about it (None if all was well).
Describe = Callable[[int, bytes, bytes, os.stat_result], tuple[Listed, str | None]]

DEFAULT_TIMEOUT = 300.0  # seconds one call may take before its directory is given up
SLICE = 64  # files described per task
MAX_WAITING = 20_000  # described files not yet consumed: no new directory is listed
_POLL = 0.5  # seconds between looks for calls that take too long
MIN_HUNG = 4  # given-up calls that may hang before the mount is taken for dead


@dataclass(eq=False)
class _Directory:
    path: bytes
    fd: int = -1
    pending: int = 0  # tasks still to run on its descriptor
    failed: bool = False  # unlisted: its remaining work is dropped
    hung: int = 0  # threads given up on that may still use its descriptor


@dataclass(eq=False)
class _Task:
    directory: _Directory
    names: list[bytes] | None = None  # None: list the directory; else describe these
    started: float = 0.0
    abandoned: bool = False


@dataclass
class _Outcome:
    task: _Task
    files: list[tuple[Listed, str | None]] = field(default_factory=list)
    subdirectories: list[bytes] = field(default_factory=list)
    names: list[bytes] = field(default_factory=list)  # files to describe (a listing)
    entries: int = 0
    skipped: int = 0
    error: str | None = None


# Filesystems whose calls are round trips to a server (or to a FUSE daemon, as dCache's
# emulator and many site tools are): walked in parallel, each call under the timeout.
REMOTE = ("nfs", "nfs4", "lustre", "ceph", "gpfs", "cifs", "smb3", "smbfs", "beegfs",
          "glusterfs", "panfs", "9p", "afs", "orangefs", "fuse")


def filesystem_type(path: bytes) -> str | None:
    """The type of the filesystem holding ``path`` (from /proc/self/mountinfo)."""
    try:
        device = os.stat(path).st_dev
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split()
                major, minor = fields[2].split(":")
                if os.makedev(int(major), int(minor)) == device:
                    return fields[fields.index("-") + 1]
    except (OSError, ValueError, IndexError):
        return None
    return None


def is_remote(path: bytes) -> bool:
    kind = filesystem_type(path) or ""
    return kind.split(".")[0] in REMOTE


class ParallelWalk:
    """``parallel`` None: 32 calls in flight on a network or FUSE filesystem, one on a local
    one. A local filesystem walked with one call at a time is walked in the consumer's own
    thread (threads only add GIL handovers there); everywhere else threads do the calls and
    each call has the timeout."""

    def __init__(self, root: bytes, describe: Describe, *, parallel: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT,
                 hidden: Callable[[bytes], bool] | None = None,
                 max_hung: int | None = None) -> None:
        if (parallel is not None and parallel < 1) or timeout <= 0:
            raise ValueError("parallel must be at least 1 and timeout positive")
        self.root = root
        self.describe = describe
        self.remote = is_remote(root)
        self.parallel = parallel or (DEFAULT_PARALLEL if self.remote else 1)
        self.timeout = timeout
        self.hidden = hidden
        self.max_hung = max_hung or max(MIN_HUNG, self.parallel)

    def walk(self, stats: WalkStats) -> Iterator[Listed]:
        if self.parallel == 1 and not self.remote:
            return self._walk_here(stats)
        return self._walk_threads(stats)

    def _walk_here(self, stats: WalkStats) -> Iterator[Listed]:
        """The same walk, one call at a time, in this thread."""
        pending = [_Directory(self.root)]
        while pending:
            directory = pending.pop()
            outcome = _Outcome(_Task(directory))
            self._list(directory, outcome)
            if outcome.error is None and outcome.names:
                self._describe_slice(directory, outcome.names, outcome)
            self._close(directory)
            pending.extend(_Directory(path) for path in reversed(outcome.subdirectories))
            yield from self._account(outcome, stats)

    def _walk_threads(self, stats: WalkStats) -> Iterator[Listed]:
        lock = threading.Condition()
        directories: list[_Directory] = [_Directory(self.root)]
        slices: list[_Task] = []  # describe tasks: run before listing more directories
        running: set[_Task] = set()
        done: queue.SimpleQueue = queue.SimpleQueue()
        state = {"waiting": 0, "stop": False, "threads": 0, "hung": 0}

        def next_task() -> _Task | None:
            with lock:
                while True:
                    if state["stop"]:
                        return None
                    while slices and slices[-1].directory.failed:
                        self._finish_slice(slices.pop())
                    if slices:
                        task = slices.pop()
                    elif directories and state["waiting"] < MAX_WAITING:
                        task = _Task(directories.pop())
                    else:
                        lock.wait()
                        continue
                    task.started = time.monotonic()
                    running.add(task)
                    return task

        def worker() -> None:
            while (task := next_task()) is not None:
                outcome = self._run(task)
                with lock:
                    if task.abandoned:  # a fresh thread has taken this one's place
                        state["hung"] -= 1
                        directory = task.directory
                        directory.hung -= 1
                        if not any(t.directory is directory for t in running):
                            self._close(directory)  # its last user: the descriptor goes
                        return
                    # Handed over before it leaves ``running``: the walk is over only when
                    # nothing runs and nothing waits to be consumed.
                    done.put(outcome)
                    running.discard(task)
                    if task.names is not None:
                        self._finish_slice(task)
                    state["waiting"] += len(outcome.files)

        def start_thread() -> None:
            state["threads"] += 1
            threading.Thread(target=worker, name=f"pnfsmon-walk-{state['threads']}",
                             daemon=True).start()

        for _ in range(self.parallel):
            start_thread()
        looked = time.monotonic()
        try:
            while True:
                with lock:
                    idle = not slices and not directories and not running
                if idle and done.empty():
                    return
                if time.monotonic() - looked >= _POLL:  # even while others keep answering
                    self._give_up_slow(lock, running, stats, start_thread, state)
                    looked = time.monotonic()
                    if stats.stopped is not None:  # the mount is taken for dead
                        while not done.empty():  # what was found is kept
                            yield from self._account(done.get(), stats)
                        return
                try:
                    outcome = done.get(timeout=_POLL)
                except queue.Empty:
                    continue
                task = outcome.task
                with lock:
                    state["waiting"] -= len(outcome.files)
                    for path in reversed(outcome.subdirectories):
                        directories.append(_Directory(path))
                    directory = task.directory
                    if task.names is None and outcome.error is None:
                        names = outcome.names
                        for start in range(0, len(names), SLICE):
                            directory.pending += 1
                            slices.append(_Task(directory, names[start:start + SLICE]))
                        if not directory.pending:
                            self._close(directory)
                    lock.notify_all()
                yield from self._account(outcome, stats)
        finally:
            with lock:
                state["stop"] = True
                lock.notify_all()

    @staticmethod
    def _account(outcome: _Outcome, stats: WalkStats) -> Iterator[Listed]:
        """Count what one task found, then yield its files (either walk)."""
        task = outcome.task
        if task.names is None:
            stats.directories += 1
        if outcome.error is not None and not task.directory.failed:
            # Not listed, or a file in it could not even be stat'ed (so it cannot be told
            # from a deleted one): the directory is unlisted.
            task.directory.failed = True
            stats.unlisted(task.directory.path, outcome.error)
        if task.names is None and outcome.error is None and outcome.entries == 0:
            stats.empty_directories += 1
        stats.skipped += outcome.skipped
        for item, problem in outcome.files:
            if problem is not None:
                stats.bad_metadata(item.path, problem)
            yield stats.count(item)

    def _give_up_slow(self, lock, running: set[_Task], stats: WalkStats,
                      start_thread: Callable[[], None], state: dict) -> None:
        """Calls running longer than the timeout: their directory is unlisted, their
        thread replaced; at ``max_hung`` calls given up and still hanging, the walk stops
        (``stats.stopped``) instead of piling up threads and descriptors."""
        now = time.monotonic()
        with lock:
            slow = [t for t in running if now - t.started > self.timeout]
            for task in slow:
                running.discard(task)
                task.abandoned = True
                state["hung"] += 1
                directory = task.directory
                directory.hung += 1
                if not directory.failed:
                    directory.failed = True
                    stats.unlisted(directory.path,
                                   f"no answer within {self.timeout:g} s (hung mount?)")
                if task.names is None:
                    stats.directories += 1
                if state["hung"] < self.max_hung:
                    start_thread()
            if state["hung"] >= self.max_hung:
                stats.stopped = (
                    f"mount {display(self.root)} stopped answering: {state['hung']} calls "
                    f"given up after {self.timeout:g} s each (at most {self.max_hung} are "
                    "left hanging); the crawl stops here, keeping what it listed and "
                    "marking nothing vanished")
                state["stop"] = True
            if slow:
                lock.notify_all()

    @staticmethod
    def _close(directory: _Directory) -> None:
        if directory.fd >= 0 and not directory.hung:
            fd, directory.fd = directory.fd, -1
            os.close(fd)

    def _finish_slice(self, task: _Task) -> None:
        directory = task.directory
        directory.pending -= 1
        if directory.pending == 0:
            self._close(directory)

    def _run(self, task: _Task) -> _Outcome:
        outcome = _Outcome(task)
        if task.names is None:
            self._list(task.directory, outcome)
        else:
            self._describe_slice(task.directory, task.names, outcome)
        return outcome

    def _list(self, directory: _Directory, outcome: _Outcome) -> None:
        names: list[bytes] = []
        try:
            directory.fd = os.open(directory.path,
                                   os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            # By path (bytes in, bytes out, no decoding); the descriptor serves the calls
            # on each file.
            with os.scandir(directory.path) as it:
                for entry in it:
                    name = entry.name
                    if self.hidden is not None and self.hidden(name):
                        continue
                    outcome.entries += 1
                    if entry.is_dir(follow_symlinks=False):
                        outcome.subdirectories.append(entry.path)
                    else:
                        names.append(name)
        except OSError as err:
            # Unreadable (EACCES), vanished, or an I/O error while listing: counted, and
            # its subtree is protected from being called vanished by this crawl.
            outcome.error = err.strerror or str(err)
            outcome.subdirectories = []
            self._close(directory)
            return
        outcome.names = names

    def _describe_slice(self, directory: _Directory, names: list[bytes],
                        outcome: _Outcome) -> None:
        for name in names:
            if directory.failed:
                return
            try:
                st = os.stat(name, dir_fd=directory.fd, follow_symlinks=False)
            except FileNotFoundError:
                outcome.skipped += 1  # vanished between listing and stat
                continue
            except OSError as err:
                outcome.error = f"{os.fsdecode(name)}: {err.strerror or err}"
                return
            if not stat.S_ISREG(st.st_mode):
                outcome.skipped += 1  # symlink, FIFO, socket, device: never opened
                continue
            outcome.files.append(self.describe(directory.fd, directory.path, name, st))
