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
directory is listed while many described files wait to be consumed. The threads' shared
state is one scheduler (``_Schedule``) with one method per event.

An incremental crawl (``crawler.directories``) gives it a plan: the walk then begins by
stat'ing every directory the last complete crawl saw (the same threads and timeout), lists
those the plan says changed, and, in their listings, the subdirectories it did not know.
Each listed directory's mtime is read before its entries, for the next crawl.

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

from pnfsmon.crawler.directories import DirectoryPlan
from pnfsmon.crawler.listing import Listed, WalkStats
from pnfsmon.schema.paths import display
from pnfsmon.schema.sites import DEFAULT_PARALLEL

#: Describes one regular file: (directory fd, directory, name, its lstat) → the record,
#: and what could not be read about it (None if all was well).
Describe = Callable[[int, bytes, bytes, os.stat_result], tuple[Listed, str | None]]

DEFAULT_TIMEOUT = 300.0  # seconds one call may take before its directory is given up
SLICE = 64  # files described per task, at most...
MIN_SLICE = 4  # ...and at least: a few directories' files still fill every thread
WHOLE_SLICE = 1000  # files described between two calls of ``list_whole``'s ``between``
MAX_WAITING = 20_000  # described files not yet consumed: no new directory is listed
_POLL = 0.5  # seconds between looks for calls that take too long
MIN_HUNG = 4  # given-up calls that may hang before the mount is taken for dead


LIST, DESCRIBE, STAT = "list", "describe", "stat"  # what a task does to its directory


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
    kind: str = LIST
    names: list[bytes] | None = None  # the files a DESCRIBE task describes
    started: float = 0.0
    abandoned: bool = False


@dataclass
class Outcome:
    """What one task found (handed from the thread that ran it to the one that counts
    it, ``ParallelWalk.account``; or from a walker process, ``crawler.walkers``)."""

    task: _Task
    files: list[tuple[Listed, str | None]] = field(default_factory=list)
    subdirectories: list[bytes] = field(default_factory=list)
    names: list[bytes] = field(default_factory=list)  # files to describe (a listing)
    entries: int = 0
    skipped: int = 0
    error: str | None = None
    mtime_ns: int | None = None  # the directory's, read before listing it, or by a STAT
    gone: bool = False  # a STAT found no directory there


class _Schedule:
    """The threaded walk's state, one method per event, each under the one lock: a worker
    thread asks for a task (``next_task``) and hands its outcome over (``ran``); the
    consuming thread takes outcomes (``done``), queues the work they lead to
    (``consumed``) and gives up calls that take too long (``give_up_slow``).

    Describe tasks run before anything else, so described files do not pile up; no new
    directory is listed while ``MAX_WAITING`` described files wait to be consumed."""

    def __init__(self, walk: ParallelWalk, to_list: list[bytes], to_stat: list[bytes]
                 ) -> None:
        self.walk = walk
        self.lock = threading.Condition()
        self.to_list = [_Directory(p) for p in to_list]
        self.to_stat = [_Directory(p) for p in to_stat]
        self.slices: list[_Task] = []
        self.running: set[_Task] = set()
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        self.waiting = 0  # described files handed over, not yet consumed
        self.stopped = False
        self.threads = 0
        self.hung = 0  # given-up calls that may still hang

    @property
    def idle(self) -> bool:
        """Nothing to run, nothing running, nothing left to consume."""
        with self.lock:
            return (not self.slices and not self.to_list and not self.to_stat
                    and not self.running and self.done.empty())

    def next_task(self) -> _Task | None:
        """A worker thread is free: its next task, or None when the walk is over."""
        with self.lock:
            while True:
                if self.stopped:
                    return None
                while self.slices and self.slices[-1].directory.failed:
                    self.walk.finish_slice(self.slices.pop())
                if self.slices:
                    task = self.slices.pop()
                elif self.to_list and self.waiting < MAX_WAITING:
                    task = _Task(self.to_list.pop())
                elif self.to_stat:
                    task = _Task(self.to_stat.pop(), STAT)
                else:
                    self.lock.wait()
                    continue
                task.started = time.monotonic()
                self.running.add(task)
                return task

    def ran(self, task: _Task, outcome: Outcome) -> bool:
        """A worker finished ``task``; False if it had been given up (the thread ends)."""
        with self.lock:
            if task.abandoned:  # a fresh thread has taken this one's place
                self.hung -= 1
                directory = task.directory
                directory.hung -= 1
                if not any(t.directory is directory for t in self.running):
                    self.walk.close(directory)  # its last user: the descriptor goes
                return False
            # Handed over before it leaves ``running``: the walk is over only when nothing
            # runs and nothing waits to be consumed.
            self.done.put(outcome)
            self.running.discard(task)
            if task.kind == DESCRIBE:
                self.walk.finish_slice(task)
            self.waiting += len(outcome.files)
            return True

    def consumed(self, outcome: Outcome, to_list: list[bytes]) -> None:
        """The consumer took ``outcome``: list ``to_list`` next, and describe a listing's
        files in slices on the directory's descriptor."""
        with self.lock:
            self.waiting -= len(outcome.files)
            self.to_list.extend(_Directory(p) for p in reversed(to_list))
            task = outcome.task
            directory = task.directory
            if task.kind == LIST and outcome.error is None:
                names = outcome.names
                # Spread over the threads (an incremental crawl lists few directories).
                size = max(MIN_SLICE, min(SLICE, -(-len(names) // self.walk.parallel)))
                for start in range(0, len(names), size):
                    directory.pending += 1
                    self.slices.append(_Task(directory, DESCRIBE, names[start:start + size]))
                if not directory.pending:
                    self.walk.close(directory)
            self.lock.notify_all()

    def give_up_slow(self, timeout: float) -> list[_Task]:
        """Tasks running longer than ``timeout``: taken out, marked abandoned."""
        now = time.monotonic()
        with self.lock:
            slow = [t for t in self.running if now - t.started > timeout]
            for task in slow:
                self.running.discard(task)
                task.abandoned = True
                task.directory.hung += 1
                self.hung += 1
            if slow:
                self.lock.notify_all()
            return slow

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            self.lock.notify_all()


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

    def walk(self, stats: WalkStats, plan: DirectoryPlan | None = None) -> Iterator[Listed]:
        """Every regular file below the root; with an incremental ``plan``, only those of
        the directories it says to list (the others are stat'ed, and the plan records
        which were skipped or are gone)."""
        plan = plan if plan is not None else DirectoryPlan(self.root, None)
        to_stat = plan.to_stat()
        to_list = [] if to_stat else [self.root]
        if self.parallel == 1 and not self.remote:
            yield from self._walk_here(stats, plan, to_list, to_stat)
        else:
            yield from self._walk_threads(stats, plan, to_list, to_stat)
        for directory, why in plan.settle():
            stats.unlisted(directory, why)

    def _walk_here(self, stats: WalkStats, plan: DirectoryPlan, to_list: list[bytes],
                   to_stat: list[bytes]) -> Iterator[Listed]:
        """The same walk, one call at a time, in this thread."""
        pending = [_Task(_Directory(p), STAT) for p in to_stat]
        pending += [_Task(_Directory(p)) for p in to_list]
        while pending:
            task = pending.pop()
            outcome = self._run_whole(task)
            items, following = self.account(outcome, stats, plan)
            pending.extend(_Task(_Directory(p)) for p in reversed(following))
            yield from items

    def list_whole(self, directory: bytes, most: int | None = None,
                   between: Callable[[], None] | None = None) -> Outcome:
        """List ``directory`` and describe its files, in this thread; one that lists more
        than ``most`` names is only listed (its ``names`` left undescribed). ``between``
        is called between slices of its files (it may raise, to stop the describing)."""
        return self._run_whole(_Task(_Directory(directory)), most, between)

    def _run_whole(self, task: _Task, most: int | None = None,
                   between: Callable[[], None] | None = None) -> Outcome:
        """Run ``task`` to its end in this thread: a listing with its files described
        (one call at a time, its descriptor closed after, however it ends), unless it
        lists more than ``most`` names."""
        try:
            outcome = self._run(task)
            names = outcome.names
            if (task.kind == LIST and outcome.error is None and names
                    and (most is None or len(names) <= most)):
                step = len(names) if between is None else WHOLE_SLICE
                for start in range(0, len(names), step):
                    if start:
                        if outcome.error is not None:  # (a file could not be stat'ed)
                            break
                        between()
                    self._describe_slice(task.directory, names[start:start + step], outcome)
        finally:
            self.close(task.directory)
        return outcome

    def _walk_threads(self, stats: WalkStats, plan: DirectoryPlan, to_list: list[bytes],
                      to_stat: list[bytes]) -> Iterator[Listed]:
        schedule = _Schedule(self, to_list, to_stat)

        def worker() -> None:
            while (task := schedule.next_task()) is not None:
                if not schedule.ran(task, self._run(task)):
                    return

        def start_thread() -> None:
            schedule.threads += 1
            threading.Thread(target=worker, name=f"pnfsmon-walk-{schedule.threads}",
                             daemon=True).start()

        for _ in range(self.parallel):
            start_thread()
        looked = time.monotonic()
        try:
            while not schedule.idle:
                if time.monotonic() - looked >= _POLL:  # even while others keep answering
                    self._give_up_slow(schedule, stats, start_thread)
                    looked = time.monotonic()
                    if stats.stopped is not None:  # the mount is taken for dead
                        while not schedule.done.empty():  # what was found is kept
                            yield from self.account(schedule.done.get(), stats, plan)[0]
                        return
                try:
                    outcome = schedule.done.get(timeout=_POLL)
                except queue.Empty:
                    continue
                items, following = self.account(outcome, stats, plan)
                schedule.consumed(outcome, following)
                yield from items
        finally:
            schedule.stop()

    @staticmethod
    def account(outcome: Outcome, stats: WalkStats, plan: DirectoryPlan
                ) -> tuple[list[Listed], list[bytes]]:
        """Count what one task found (either walk, in the consuming thread): its files, and
        the directories to list because of it."""
        task = outcome.task
        path = task.directory.path
        if task.kind == STAT:
            if outcome.error is not None:
                task.directory.failed = True
                stats.unlisted(path, f"stat: {outcome.error}")
                return [], []
            if outcome.gone:
                plan.gone(path)
                return [], []
            return [], [path] if plan.must_list(path, outcome.mtime_ns) else []
        if task.kind == LIST:
            stats.directories += 1
        if outcome.error is not None and not task.directory.failed:
            # Not listed, or a file in it could not even be stat'ed (so it cannot be told
            # from a deleted one): the directory is unlisted.
            task.directory.failed = True
            stats.unlisted(path, outcome.error)
            plan.failed(path)
        following = []
        if task.kind == LIST and outcome.error is None:
            plan.listing(path, outcome.mtime_ns, subdirectories=outcome.subdirectories)
            if outcome.entries == 0:
                stats.empty_directories += 1
            following = [d for d in outcome.subdirectories if plan.is_new(d)]
        stats.skipped += outcome.skipped
        items = [item for item, _ in outcome.files]
        for item, problem in outcome.files:
            if problem is not None:
                stats.bad_metadata(item.path, problem)
        plan.files(path, items)
        stats.count_all(items)
        return items, following

    def _give_up_slow(self, schedule: _Schedule, stats: WalkStats,
                      start_thread: Callable[[], None]) -> None:
        """Calls running longer than the timeout: their directory is unlisted, their
        thread replaced; at ``max_hung`` calls given up and still hanging, the walk stops
        (``stats.stopped``) instead of piling up threads and descriptors."""
        for task in schedule.give_up_slow(self.timeout):
            directory = task.directory
            if not directory.failed:
                directory.failed = True
                stats.unlisted(directory.path,
                               f"no answer within {self.timeout:g} s (hung mount?)")
            if task.kind == LIST:
                stats.directories += 1
            if schedule.hung < self.max_hung:
                start_thread()
        if schedule.hung >= self.max_hung:
            stats.stopped = (
                f"mount {display(self.root)} stopped answering: {schedule.hung} calls "
                f"given up after {self.timeout:g} s each (at most {self.max_hung} are "
                "left hanging); the crawl stops here, keeping what it listed and "
                "marking nothing vanished")
            schedule.stop()

    @staticmethod
    def close(directory: _Directory) -> None:
        if directory.fd >= 0 and not directory.hung:
            fd, directory.fd = directory.fd, -1
            os.close(fd)

    def finish_slice(self, task: _Task) -> None:
        directory = task.directory
        directory.pending -= 1
        if directory.pending == 0:
            self.close(directory)

    def _run(self, task: _Task) -> Outcome:
        outcome = Outcome(task)
        if task.kind == LIST:
            self._list(task.directory, outcome)
        elif task.kind == STAT:
            self._stat(task.directory, outcome)
        else:
            self._describe_slice(task.directory, task.names or [], outcome)
        return outcome

    @staticmethod
    def _stat(directory: _Directory, outcome: Outcome) -> None:
        """A known directory's mtime; gone if nothing, or no directory, is there now."""
        try:
            st = os.stat(directory.path, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            outcome.gone = True
            return
        except OSError as err:
            outcome.error = err.strerror or str(err)
            return
        if stat.S_ISDIR(st.st_mode):
            outcome.mtime_ns = st.st_mtime_ns
        else:
            outcome.gone = True

    def _list(self, directory: _Directory, outcome: Outcome) -> None:
        names: list[bytes] = []
        try:
            directory.fd = os.open(directory.path,
                                   os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            # Before the entries: a change made while listing moves it past what is kept.
            outcome.mtime_ns = os.fstat(directory.fd).st_mtime_ns
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
            self.close(directory)
            return
        outcome.names = names

    def _describe_slice(self, directory: _Directory, names: list[bytes],
                        outcome: Outcome) -> None:
        # Every listed file passes here: what the loop uses, looked up once.
        fd, path, describe, append = (directory.fd, directory.path, self.describe,
                                      outcome.files.append)
        lstat, regular = os.stat, stat.S_ISREG
        for name in names:
            if directory.failed:  # (another thread gave it up)
                return
            try:
                st = lstat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                outcome.skipped += 1  # vanished between listing and stat
                continue
            except OSError as err:
                outcome.error = f"{os.fsdecode(name)}: {err.strerror or err}"
                return
            if not regular(st.st_mode):
                outcome.skipped += 1  # symlink, FIFO, socket, device: never opened
                continue
            append(describe(fd, path, name, st))
