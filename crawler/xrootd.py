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
``_walk`` only hands each event to the one it belongs to."""

from __future__ import annotations

import logging
import queue
import sys
from collections.abc import Callable, Iterator

from pnfsmon.crawler.listing import Listed, WalkStats
from pnfsmon.crawler.xrootd_queries import QUERY_TIMEOUT, ChecksumQueries, Query
from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.xrootd import XRootDUrl, client, parse_checksum_response, raise_for

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
log = logging.getLogger(__name__)


class _Listing:
    """The listing path: directories waiting and in flight; ``send`` lists while there is
    room, ``listed`` takes one directory's answer and returns its files."""

    def __init__(self, url: XRootDUrl, fs, timeout: int, post, stats: WalkStats) -> None:
        from XRootD.client.flags import DirListFlags, StatInfoFlags

        self.url, self.fs, self.timeout, self.post, self.stats = url, fs, timeout, post, stats
        self.stat_flag = DirListFlags.STAT
        self.is_dir, self.other, self.offline = (StatInfoFlags.IS_DIR, StatInfoFlags.OTHER,
                                                 StatInfoFlags.OFFLINE)
        self.directories = [url.path.rstrip("/") or "/"]
        self.in_flight = 0
        self.entries = 0  # listed so far, for the mean size of a directory

    @property
    def busy(self) -> bool:
        return bool(self.directories or self.in_flight)

    @property
    def room(self) -> int:
        """How many directories may be in flight: ``DIRECTORIES_IN_FLIGHT``, fewer when
        those listed so far held more than ``ENTRIES_IN_FLIGHT`` among them."""
        mean = self.entries / self.stats.directories if self.stats.directories else 1
        return max(1, min(DIRECTORIES_IN_FLIGHT, int(ENTRIES_IN_FLIGHT / max(mean, 1))))

    def send(self) -> None:
        room = self.room
        while self.directories and self.in_flight < room:
            path = self.directories.pop()
            self.fs.dirlist(path, self.stat_flag, self.timeout, self.post("dir", path))
            self.in_flight += 1

    def listed(self, directory: str, status: dict, response: dict | None
               ) -> list[tuple[str, Listed]]:
        """One directory's answer: (server path, file) for each file in it; its
        subdirectories wait to be listed; a failed or partial listing is counted unlisted."""
        self.in_flight -= 1
        stats = self.stats
        stats.directories += 1
        here = self.url.child(directory)
        entries = response["dirlist"] if response else None
        # A partial listing is treated as unlisted too: its missing files are not vanished.
        if not status["ok"] or status["code"] == _PARTIAL or entries is None:
            why = " ".join(str(status.get("message") or "").replace("[ERROR]", "").split())
            if status["code"] == _PARTIAL:
                why = "some entries could not be listed"
            stats.unlisted(here, why or "no listing returned")
            if entries is None:
                return []
        if not entries:
            stats.empty_directories += 1
        self.entries += len(entries)
        base = directory.rstrip("/")
        prefix = self.url.child(base) + b"/"
        files = []
        for entry in entries:
            info, name = entry["statinfo"], entry["name"]
            if info is None:  # listed without its stat: cannot judge, protect it
                if stats.unreadable[-1:] != [here]:
                    stats.unlisted(here, f"no stat for {name}")
                continue
            flags = info["flags"]
            if flags & self.is_dir:
                self.directories.append(f"{base}/{name}")
            elif flags & self.other:
                stats.skipped += 1  # neither file nor directory
            else:
                files.append((f"{base}/{name}", Listed(
                    prefix + name.encode("utf-8", "surrogateescape"), info["size"],
                    info["mtime"] * 10**9, nearline=bool(flags & self.offline))))
        return files


class XRootDNamespace:
    name = "xrootd"

    def __init__(self, url: bytes | str, *, checksums: str = "query",
                 timeout: float = 60.0) -> None:
        if checksums not in ("query", "none"):
            raise ConfigError(f"--checksums must be query or none, not {checksums!r}")
        self.url = XRootDUrl.parse(url)
        self.root = self.url.child(self.url.path.rstrip("/") or "/")
        self.checksums = checksums
        self.timeout = max(1, int(timeout))

    def walk(self, stats: WalkStats) -> Iterator[Listed]:
        # Issuing a request releases the GIL, and getting it back from the client's thread
        # (busy building the previous answer's dicts) waits for the switch interval: at the
        # default 5 ms that wait was most of the listing time (bench/xrootd.py).
        interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        try:
            yield from self._walk(stats)
        finally:
            sys.setswitchinterval(interval)

    def _open(self, first: Callable[[object], None]):
        """The raw client's file system object, once the crawl root is known to be a
        directory on the server (ConfigError if not). ``first(fs)`` is called while the
        root's stat is on its way (the root's listing goes out beside it: a round trip
        less; its answer waits in the loop's queue, unread if the root is refused)."""
        client()  # the timeouts, and a clear error if the bindings are missing
        from pyxrootd import client as raw
        from XRootD.client.flags import StatInfoFlags
        from XRootD.client.responses import XRootDStatus

        fs = raw.FileSystem(self.url.server)
        done: queue.SimpleQueue = queue.SimpleQueue()
        fs.stat(self.url.path, self.timeout,
                lambda status, response, *_: done.put((status, response)))
        first(fs)
        status, root = done.get()
        try:
            raise_for(XRootDStatus(status), str(self.url))
        except FileNotFoundError:
            raise ConfigError(f"crawl root {self.url} does not exist on the server") from None
        except OSError as err:
            raise ConfigError(f"crawl root {self.url}: {err.strerror}") from None
        if not root["flags"] & StatInfoFlags.IS_DIR:
            raise ConfigError(f"crawl root {self.url} is not a directory")
        return fs

    def _walk(self, stats: WalkStats) -> Iterator[Listed]:
        from XRootD.client.flags import QueryCode

        events: queue.SimpleQueue = queue.SimpleQueue()

        def post(kind: str, subject):
            """The callback that turns the client's answer into an event of the loop."""
            return lambda status, response, *_: events.put((kind, subject, status, response))

        listing = _Listing(self.url, None, self.timeout, post, stats)

        def first(fs) -> None:
            listing.fs = fs
            listing.send()

        fs = self._open(first)
        query_timeout = min(self.timeout, QUERY_TIMEOUT)

        def ask(query: Query) -> None:
            fs.query(QueryCode.CHECKSUM, query.path, query_timeout, post("sum", query))

        queries = ChecksumQueries(ask, enabled=self.checksums == "query")
        while listing.busy or queries.busy:
            if queries.waiting < MAX_WAITING:
                listing.send()
            queries.send()
            try:
                kind, subject, status, response = events.get(
                    timeout=queries.seconds_to_next())
            except queue.Empty:
                continue  # a retry fell due
            if kind == "dir":
                for path, item in listing.listed(subject, status, response):
                    for done in queries.add(path, item):
                        yield stats.count(done)
            else:
                for done in queries.answered(subject, status, response):
                    yield stats.count(done)
        if queries.retries:
            log.info("%s checksum queries asked again after an error (%d in flight at the "
                     "lowest)", f"{queries.retries:,}", queries.smallest_window)
