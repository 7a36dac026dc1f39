"""The XRootD namespace: list ``root://host:port//path`` directory by directory with the
client's asynchronous ``dirlist`` (with stat), many directories in flight at once.

Why not one recursive ``dirlist``: it leaves out a subdirectory it cannot read while
reporting success, so a crawl could not tell an unlisted directory from a deleted one.
Here every directory is its own request; one that fails or times out is counted as
unlisted, and its subtree is protected from being called vanished.

Requests go through ``pyxrootd``, the compiled layer under ``XRootD.client`` that hands
callbacks plain dicts: the wrapper classes (``DirectoryList``, ``ListEntry``, ``StatInfo``)
roughly double the cost per entry, which made a listing half as fast as ``xrdfs ls -R``
(bench/xrootd.py).

The recorded checksum comes from ``query checksum`` (``--checksums query``, the default),
which the server answers from its cached ``user.XrdCks.adler32``; on some servers a query
for a file without one computes it (a full read on the server), so ``--checksums none``
skips it. The queries have their own scheduler (``crawler.xrootd_queries``: retries with
backoff, a window that adapts to the server); the listing's is ``_Listing`` below, and
``_walk`` only hands each event to the one it belongs to.

Every request has a deadline (``_Deadlines``): pyxrootd drops an answer it cannot turn into
Python objects without calling back (a listing that holds a name that is not UTF-8: a
``UnicodeDecodeError`` printed in the client's thread), and a crawl waiting for it would
wait for ever. A listing or stat given up is counted unlisted; a late answer is ignored.

An incremental crawl (``crawler.directories``, a site with ``incremental = yes``) first
stats every directory the last complete crawl saw, in flight beside the listings, and
lists those the plan says changed and, in their listings, the subdirectories it did not
know; only the files listed are queried for their checksum (the others are carried over
with theirs). The mtime kept for a listed directory is read before its listing is asked
for: its own stat, or its entry in its parent's listing. XRootD gives mtimes in whole
seconds, so the plan is told when each listing was asked for (an mtime of that very
second is not trusted). Safe where files are written once: a file rewritten in place
does not move its directory's mtime."""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pnfsmon.crawler.directories import DirectoryPlan
from pnfsmon.crawler.listing import Listed, WalkStats
from pnfsmon.crawler.xrootd_queries import QUERY_TIMEOUT, ChecksumQueries, Query
from pnfsmon.schema.errors import ConfigError, StorageUnavailable
from pnfsmon.schema.xrootd import (
    NOT_FOUND,
    XRootDUrl,
    client,
    parse_checksum_response,
    raise_for,
)

__all__ = ["XRootDNamespace", "parse_checksum_response"]

# A round trip each: at 5 ms each way 8 in flight listed 10,000 files in 100 directories
# in 0.20 s (0.68 of ``xrdfs ls -R``), 64 in 0.10 s; on loopback 8 to 256 measured the same
# within the noise (bench/xrootd.py).
DIRECTORIES_IN_FLIGHT = 64
# Answers that arrive faster than they are read wait as the client's dicts (2.3 KB an
# entry, measured): fewer directories go out at once when those listed so far are large,
# so that what waits stays near 50,000 entries (about 115 MB), whatever the directories.
ENTRIES_IN_FLIGHT = 50_000
SWITCH_INTERVAL = 0.0002  # seconds; see walk()
MAX_WAITING = 20_000  # files listed but not yet answered for: bounds memory
_PARTIAL = 3  # suPartial: some entries of a directory could not be listed
_EXPIRED = 206  # errOperationExpired: what the client's own timeout answers
TICK = 1.0  # seconds between looks for requests past their deadline
log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Directory:
    """A directory to list, and the mtime the next crawl keeps of it."""

    path: str  # on the server
    mtime_ns: int | None  # read before its listing: its own stat, or its parent's entry
    asked: float = 0.0  # when its listing was asked for (the clock)


def _slack(timeout: float) -> float:
    """Seconds past a request's timeout before its answer is given up. The client checks
    its timeouts every ``TimeoutResolution`` seconds (1 here, unless the operator's
    ``XRD_TIMEOUTRESOLUTION`` says otherwise) and turns a listing into dicts only once all
    of it is in (200,000 entries: 1 s of the 2.4 s listing, measured on loopback): a
    quarter of the timeout covers millions, so an answer on its way is not given up."""
    return client().EnvGetInt("TimeoutResolution") + max(5.0, timeout / 4)


class _Deadlines:
    """The requests in flight by kind ("dir": a listing, "stat": a known directory's,
    "sum": a checksum query) and subject (its _Directory, path or Query), each given up
    ``seconds[kind]`` after it was sent. The client's own timeout normally ends a request
    first, with an error; this is for an answer that never comes. One kind's requests
    share a timeout, so each kind's oldest is the first of its ordered dict. A subject is
    in flight once at a time (a Query is asked again only after its answer or deadline;
    the late answer of one given up stands for the one asked again, the same question)."""

    def __init__(self, seconds: dict[str, float],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.clock = seconds, clock
        self.waiting: dict[str, OrderedDict[object, float]] = {
            kind: OrderedDict() for kind in seconds}

    def sent(self, kind: str, subject: object) -> None:
        self.waiting[kind][subject] = self.clock() + self.seconds[kind]

    def answered(self, kind: str, subject: object) -> bool:
        """Its answer came: False if it was given up already (the answer is ignored)."""
        return self.waiting[kind].pop(subject, None) is not None

    def overdue(self) -> list[tuple[str, object]]:
        """(kind, subject) of the requests whose deadline has passed, given up now."""
        now, gone = self.clock(), []
        for kind, waiting in self.waiting.items():
            while waiting and next(iter(waiting.values())) <= now:
                gone.append((kind, waiting.popitem(last=False)[0]))
        return gone

    def no_answer(self, kind: str) -> dict:
        """The status a given-up request is answered with: the client's timeout error."""
        why = f"no answer within {self.seconds[kind]:g} s"
        if kind == "dir":
            why += ": the server's answer could not be read (a name in it that is not UTF-8?)"
        return {"ok": False, "code": _EXPIRED, "errno": 0, "message": why}


def _ticking(events: queue.SimpleQueue, stop: threading.Event) -> None:
    """Put a tick (None) in the loop's queue every ``TICK`` seconds until ``stop``: the
    loop looks for overdue requests then, and waits for answers without a timeout, as it
    did before deadlines (a timed wait on each of 50,000 answers measured more of the
    loop's CPU, though within the noise of a loaded machine)."""
    while not stop.wait(TICK):
        events.put(None)


def _reason(status: dict) -> str:
    return " ".join(str(status.get("message") or "").replace("[ERROR]", "").split())


class _Listing:
    """The listing path: directories waiting and in flight, and (an incremental crawl)
    known directories to stat; ``send`` asks while there is room, ``listed`` takes one
    directory's answer and returns its files, ``stated`` one stat's answer."""

    def __init__(self, url: XRootDUrl, fs, timeout: int, post, stats: WalkStats,
                 plan: DirectoryPlan, clock: Callable[[], float]) -> None:
        from XRootD.client.flags import DirListFlags, StatInfoFlags

        self.url, self.fs, self.timeout, self.post, self.stats = url, fs, timeout, post, stats
        self.plan, self.clock = plan, clock
        self.stat_flag = DirListFlags.STAT
        self.is_dir, self.other, self.offline = (StatInfoFlags.IS_DIR, StatInfoFlags.OTHER,
                                                 StatInfoFlags.OFFLINE)
        self.directories: list[_Directory] = []
        self.to_stat: list[str] = []
        self.unstated = 0  # stats not answered yet
        self.stat_failures: list[tuple[bytes, str]] = []
        self.in_flight = 0
        self.entries = 0  # listed so far, for the mean size of a directory

    def key(self, path: str) -> bytes:
        """A directory's name in the plan: what ``schema.paths.dir_hash`` takes from the
        names of the files in it (``root://host:port`` for the server's ``/``)."""
        return self.url.child(path).rstrip(b"/")

    def path(self, key: bytes) -> str:
        return os.fsdecode(key)[len(self.url.server) + 1:] or "/"

    @property
    def busy(self) -> bool:
        return bool(self.directories or self.to_stat or self.in_flight)

    @property
    def room(self) -> int:
        """How many requests may be in flight: ``DIRECTORIES_IN_FLIGHT``, fewer when the
        directories listed so far held more than ``ENTRIES_IN_FLIGHT`` among them."""
        mean = self.entries / self.stats.directories if self.stats.directories else 1
        return max(1, min(DIRECTORIES_IN_FLIGHT, int(ENTRIES_IN_FLIGHT / max(mean, 1))))

    def send(self) -> None:
        room = self.room
        while (self.directories or self.to_stat) and self.in_flight < room:
            if self.directories:
                directory = self.directories.pop()
                directory.asked = self.clock()
                self.fs.dirlist(directory.path, self.stat_flag, self.timeout,
                                self.post("dir", directory))
            else:
                path = self.to_stat.pop()
                self.fs.stat(path, self.timeout, self.post("stat", path))
            self.in_flight += 1

    def stat(self, keys: list[bytes]) -> None:
        """Known directories to stat (in the order the plan gives, the last first)."""
        self.to_stat = [self.path(k) for k in keys]
        self.unstated = len(keys)

    def stated(self, path: str, status: dict, response: dict | None) -> None:
        """A known directory's stat: listed if the plan says it changed; gone if nothing,
        or no directory, is there now; unlisted if the server could not say."""
        self.in_flight -= 1
        self.unstated -= 1
        key = self.key(path)
        if status["ok"]:
            if not response["flags"] & self.is_dir:
                self.plan.gone(key)
            elif self.plan.must_list(key, mtime := response["mtime"] * 10**9):
                self.directories.append(_Directory(path, mtime))
        elif status["errno"] == NOT_FOUND:
            self.plan.gone(key)
        else:
            self.stat_failures.append((key, _reason(status) or "no answer"))
        if not self.unstated:
            self._settle_failures()

    def _settle_failures(self) -> None:
        """Once every stat is in: a directory that could not be stat'ed below one found
        gone is gone with it (its parent turned into a file: the server says "not a
        directory"); any other is unlisted, neither carried over nor vanished."""
        gone = [g + b"/" for g in self.plan.candidates]
        for key, why in self.stat_failures:
            if any(key.startswith(g) for g in gone):
                self.plan.gone(key)
            else:
                self.stats.unlisted(key, f"stat: {why}")
        self.stat_failures = []

    def listed(self, directory: _Directory, status: dict, response: dict | None
               ) -> tuple[bytes, list[tuple[str, Listed]]]:
        """One directory's answer: its name in the plan, and (server path, file) for each
        file in it; its subdirectories the plan does not know wait to be listed; a failed
        or partial listing is counted unlisted."""
        self.in_flight -= 1
        stats, plan = self.stats, self.plan
        stats.directories += 1
        here = self.key(directory.path)
        entries = response["dirlist"] if response else None
        # A partial listing is treated as unlisted too: its missing files are not vanished.
        if not status["ok"] or status["code"] == _PARTIAL or entries is None:
            why = _reason(status)
            if status["code"] == _PARTIAL:
                why = "some entries could not be listed"
            stats.unlisted(here, why or "no listing returned")
            if entries is None:
                return here, []
        complete = status["ok"] and status["code"] != _PARTIAL
        subdirectories = []
        if not entries:
            stats.empty_directories += 1
        self.entries += len(entries)
        base = directory.path.rstrip("/")
        prefix = self.url.child(base) + b"/"
        files = []
        for entry in entries:
            info, name = entry["statinfo"], entry["name"]
            if info is None:  # listed without its stat: cannot judge, protect it
                if stats.unreadable[-1:] != [here]:
                    stats.unlisted(here, f"no stat for {name}")
                complete = False
                continue
            flags = info["flags"]
            if flags & self.is_dir:
                path = f"{base}/{name}"
                subdirectories.append(key := self.key(path))
                if plan.is_new(key):  # a known one is stat'ed on its own
                    # Its mtime as this listing saw it: read before its own listing.
                    self.directories.append(_Directory(path, info["mtime"] * 10**9))
            elif flags & self.other:
                stats.skipped += 1  # neither file nor directory
            else:
                files.append((f"{base}/{name}", Listed(
                    prefix + name.encode("utf-8", "surrogateescape"), info["size"],
                    info["mtime"] * 10**9, nearline=bool(flags & self.offline))))
        if complete:  # its files' checks (``plan.file``) come after: their queries
            plan.listing(here, directory.mtime_ns, asked=directory.asked,
                         subdirectories=subdirectories)
        return here, files


class XRootDNamespace:
    name = "xrootd"

    def __init__(self, url: bytes | str, *, checksums: str = "query",
                 timeout: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        if checksums not in ("query", "none"):
            raise ConfigError(f"--checksums must be query or none, not {checksums!r}")
        self.url = XRootDUrl.parse(url)
        self.root = self.url.child(self.url.path.rstrip("/") or "/")
        self.checksums = checksums
        self.timeout = max(1, int(timeout))
        self.clock = clock  # when a listing is asked for, beside the server's mtimes

    def walk(self, stats: WalkStats, plan: DirectoryPlan | None = None) -> Iterator[Listed]:
        """Every file below the root; with an incremental ``plan``, only those of the
        directories it says to list (the others are stat'ed, and the plan records which
        were skipped or are gone)."""
        # Issuing a request releases the GIL, and getting it back from the client's thread
        # (busy building the previous answer's dicts) waits for the switch interval: at the
        # default 5 ms that wait was most of the listing time (bench/xrootd.py).
        interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        try:
            yield from self._walk(stats, plan if plan is not None
                                  else DirectoryPlan(self.root, None))
        finally:
            sys.setswitchinterval(interval)

    def _open(self, first: Callable[[object], None]) -> tuple[object, dict]:
        """The raw client's file system object and the root's stat, once the crawl root is
        known to be a directory on the server (ConfigError if not). ``first(fs)`` is called
        while the root's stat is on its way (a full crawl's root listing goes out beside
        it: a round trip less; its answer waits in the loop's queue, unread if the root is
        refused)."""
        client()  # the timeouts, and a clear error if the bindings are missing
        from pyxrootd import client as raw
        from XRootD.client.flags import StatInfoFlags
        from XRootD.client.responses import XRootDStatus

        fs = raw.FileSystem(self.url.server)
        done: queue.SimpleQueue = queue.SimpleQueue()
        fs.stat(self.url.path, self.timeout,
                lambda status, response, *_: done.put((status, response)))
        first(fs)
        wait = self.timeout + _slack(self.timeout)
        try:
            status, root = done.get(timeout=wait)
        except queue.Empty:
            raise StorageUnavailable(f"XRootD server for {self.url} unreachable: no answer "
                                     f"to the stat of the crawl root within {wait:g} s"
                                     ) from None
        try:
            raise_for(XRootDStatus(status), str(self.url))
        except FileNotFoundError:
            raise ConfigError(f"crawl root {self.url} does not exist on the server") from None
        except OSError as err:
            raise ConfigError(f"crawl root {self.url}: {err.strerror}") from None
        if not root["flags"] & StatInfoFlags.IS_DIR:
            raise ConfigError(f"crawl root {self.url} is not a directory")
        return fs, root

    def _walk(self, stats: WalkStats, plan: DirectoryPlan) -> Iterator[Listed]:
        from XRootD.client.flags import QueryCode

        events: queue.SimpleQueue = queue.SimpleQueue()
        query_timeout = min(self.timeout, QUERY_TIMEOUT)
        deadlines = _Deadlines({
            kind: timeout + _slack(timeout) for kind, timeout in (
                ("dir", self.timeout), ("stat", self.timeout), ("sum", query_timeout))})

        def post(kind: str, subject):
            """The callback that turns the client's answer into an event of the loop."""
            deadlines.sent(kind, subject)
            return lambda status, response, *_: events.put((kind, subject, status, response))

        listing = _Listing(self.url, None, self.timeout, post, stats, plan, self.clock)
        root = _Directory(self.url.path.rstrip("/") or "/", None)
        incremental = plan.known is not None

        def first(fs) -> None:
            listing.fs = fs
            if not incremental:
                listing.directories.append(root)
                listing.send()

        fs, info = self._open(first)
        root.mtime_ns = info["mtime"] * 10**9
        # A full crawl's root: its stat went out just before its listing, on the same
        # connection, which the server serves in order; were they answered the other way
        # round, the plan's whole-second rule (an mtime of the second the listing was
        # asked in is not trusted) still catches a change made between the two.
        if incremental:
            key = listing.key(root.path)
            if plan.is_new(key) or plan.must_list(key, root.mtime_ns):
                listing.directories.append(root)
            listing.stat([k for k in plan.to_stat() if k != key])

        def ask(query: Query) -> None:
            fs.query(QueryCode.CHECKSUM, query.path, query_timeout, post("sum", query))

        def done(item: Listed, directory: bytes | None = None) -> Listed:
            # Once its checksum is known: a file that may still change leaves its directory
            # unsettled. Its directory is found from its name only then (splitting every
            # name would cost a tenth of a loopback listing).
            if plan.may_change(item):
                plan.file(directory or os.path.dirname(item.path), item)
            return stats.count(item)

        queries = ChecksumQueries(ask, enabled=self.checksums == "query")
        stop = threading.Event()
        threading.Thread(target=_ticking, args=(events, stop), name="xrootd-deadlines",
                         daemon=True).start()
        try:
            while listing.busy or queries.busy:
                if queries.waiting < MAX_WAITING:
                    listing.send()
                queries.send()
                try:
                    event = events.get(timeout=queries.seconds_to_next())
                except queue.Empty:
                    continue  # a retry fell due
                if event is None:  # a tick: what is overdue is answered with an error
                    answers = [(kind, subject, deadlines.no_answer(kind), None)
                               for kind, subject in deadlines.overdue()]
                elif deadlines.answered(event[0], event[1]):
                    answers = (event,)
                else:
                    continue  # given up already: its late answer is ignored
                for kind, subject, status, response in answers:
                    if kind == "dir":
                        here, files = listing.listed(subject, status, response)
                        for path, item in files:
                            for each in queries.add(path, item):  # the item, when not asked
                                yield done(each, here)
                    elif kind == "stat":
                        listing.stated(subject, status, response)
                    else:
                        for each in queries.answered(subject, status, response):
                            yield done(each)
        finally:
            stop.set()
        for directory, why in plan.settle():
            stats.unlisted(directory, why)
        if queries.retries:
            log.info("%s checksum queries asked again after an error (%d in flight at the "
                     "lowest)", f"{queries.retries:,}", queries.smallest_window)
