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
skips it."""

from __future__ import annotations

import queue
import sys
from collections.abc import Iterator

from pnfsmon.crawler.listing import Listed, WalkStats
from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.xrootd import XRootDUrl, client, raise_for

DIRECTORIES_IN_FLIGHT = 8  # measured best on loopback: more only adds GIL contention
QUERIES_IN_FLIGHT = 256  # a WAN round trip each: 64 reached 5k files/s at 5 ms, 256 12k
SWITCH_INTERVAL = 0.0002  # seconds; see walk()
MAX_WAITING = 20_000  # files listed but not yet asked for their checksum: bounds memory
_UNSUPPORTED = 3013  # kXR_Unsupported: the server keeps no checksums


def parse_checksum_response(response: bytes | None) -> str | None:
    """``b'adler32 bb920cf5\\x00'`` → ``'bb920cf5'``; None for another algorithm."""
    if not response:
        return None
    fields = response.rstrip(b"\0").decode("ascii", "replace").split()
    if len(fields) != 2 or fields[0].lower() != "adler32":
        return None
    value = fields[1].lower()
    if len(value) > 8 or any(ch not in "0123456789abcdef" for ch in value):
        return None
    return value.rjust(8, "0")


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

    def _walk(self, stats: WalkStats) -> Iterator[Listed]:
        client()  # the timeouts, and a clear error if the bindings are missing
        from pyxrootd import client as raw
        from XRootD.client.flags import DirListFlags, QueryCode, StatInfoFlags
        from XRootD.client.responses import XRootDStatus

        fs = raw.FileSystem(self.url.server)
        done: queue.SimpleQueue = queue.SimpleQueue()
        fs.stat(self.url.path, self.timeout,
                lambda status, response, *_: done.put((status, response)))
        status, root = done.get()
        try:
            raise_for(XRootDStatus(status), str(self.url))
        except FileNotFoundError:
            raise ConfigError(f"crawl root {self.url} does not exist on the server") from None
        except OSError as err:
            raise ConfigError(f"crawl root {self.url}: {err.strerror}") from None
        if not root["flags"] & StatInfoFlags.IS_DIR:
            raise ConfigError(f"crawl root {self.url} is not a directory")

        is_dir, other, offline = (StatInfoFlags.IS_DIR, StatInfoFlags.OTHER,
                                  StatInfoFlags.OFFLINE)
        directories = [self.url.path.rstrip("/") or "/"]
        listing = querying = 0
        query = self.checksums == "query"
        waiting: list[tuple[str, Listed]] = []  # (server path, file) not yet queried

        def listed(path):
            return lambda status, response, *_: done.put(("dir", path, status, response))

        def answered(item):
            return lambda status, response, *_: done.put(("sum", item, status, response))

        while directories or waiting or listing or querying:
            while (directories and listing < DIRECTORIES_IN_FLIGHT
                   and len(waiting) < MAX_WAITING):
                path = directories.pop()
                fs.dirlist(path, DirListFlags.STAT, self.timeout, listed(path))
                listing += 1
            while waiting and querying < QUERIES_IN_FLIGHT:
                path, item = waiting.pop()
                fs.query(QueryCode.CHECKSUM, path, self.timeout, answered(item))
                querying += 1
            kind, subject, status, response = done.get()
            if kind == "sum":
                querying -= 1
                if status["ok"]:
                    subject.recorded_adler32 = parse_checksum_response(response)
                    subject.recorded_from = "xrootd" if subject.recorded_adler32 else None
                elif status["errno"] == _UNSUPPORTED:
                    query = False  # ask no more: send the rest without
                    for _path, item in waiting:
                        yield stats.count(item)
                    waiting.clear()
                yield stats.count(subject)
                continue
            listing -= 1
            stats.directories += 1
            entries = response["dirlist"] if response else None
            # code 3 (suPartial): some entries could not be listed; treat as unlisted too.
            if not status["ok"] or status["code"] == 3 or entries is None:
                why = " ".join(str(status.get("message") or "").replace("[ERROR]", "").split())
                if status["code"] == 3:
                    why = "some entries could not be listed"
                stats.unlisted(self.url.child(subject), why or "no listing returned")
                if entries is None:
                    continue
            if not entries:
                stats.empty_directories += 1
            base = subject.rstrip("/")
            prefix = self.url.child(base) + b"/"
            for entry in entries:
                info = entry["statinfo"]
                name = entry["name"]
                if info is None:  # listed without its stat: cannot judge, protect it
                    if stats.unreadable[-1:] != [self.url.child(subject)]:
                        stats.unlisted(self.url.child(subject), f"no stat for {name}")
                    continue
                flags = info["flags"]
                if flags & is_dir:
                    directories.append(f"{base}/{name}")
                elif flags & other:
                    stats.skipped += 1  # neither file nor directory
                else:
                    item = Listed(prefix + name.encode("utf-8", "surrogateescape"),
                                  info["size"], info["mtime"] * 10**9,
                                  nearline=bool(flags & offline))
                    if query:
                        waiting.append((f"{base}/{name}", item))
                    else:
                        yield stats.count(item)
