"""The XRootD reader: ``XRootD.client.File`` with explicit, large chunked reads, each under
the per-file timeout, several of them in flight (read-ahead): one read at a time waits a
round trip per chunk, which over a WAN is most of the time (``bench/xrootd.py`` at 5 ms
each way). Connections are the client's: it keeps one per server for the whole process,
so a worker reuses them across files. The data server that actually served the file
(after any redirect) is recorded as the source node."""

from __future__ import annotations

import collections
import errno
import queue

from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.lease import Claimed
from pnfsmon.schema.paths import display
from pnfsmon.schema.xrootd import client, is_xrootd_url, raise_for
from pnfsmon.tester.reading import Current

READS_IN_FLIGHT = 4  # chunks (of the checksummer's buffer size) requested ahead


class XRootDFile:
    def __init__(self, url: str, timeout: int) -> None:
        from XRootD.client.flags import OpenFlags

        self.url = url
        self.timeout = timeout
        self.requested = 0  # where the next read-ahead starts
        self.pending: collections.deque = collections.deque()  # reads in flight, in order
        self.eof = False
        self.file = client().File()
        status, _ = self.file.open(url, OpenFlags.READ, timeout=timeout)
        raise_for(status, url)
        self.source_node = self.file.get_property("DataServer") or None

    def _read_ahead(self, size: int) -> None:
        while not self.eof and len(self.pending) < READS_IN_FLIGHT:
            answer: queue.SimpleQueue = queue.SimpleQueue()
            status = self.file.read(self.requested, size, timeout=self.timeout,
                                    callback=lambda s, r, _hosts, a=answer: a.put((s, r)))
            raise_for(status, self.url, transient=False)
            self.pending.append((size, answer))
            self.requested += size

    def readinto(self, buffer: memoryview) -> int:
        self._read_ahead(len(buffer))
        if not self.pending:
            return 0
        size, answer = self.pending.popleft()
        status, data = answer.get()
        raise_for(status, self.url, transient=False)
        n = len(data or b"")
        if n < size:  # the end of the file: the reads beyond it answer nothing
            self.eof = True
        buffer[:n] = data or b""
        return n

    def current(self) -> Current:
        status, info = self.file.stat(force=True, timeout=self.timeout)
        raise_for(status, self.url, transient=False)
        return Current(info.size, info.modtime * 10**9)

    def close(self) -> None:
        if self.file is not None:
            file, self.file = self.file, None
            for _size, answer in self.pending:  # let reads in flight end before closing
                answer.get()
            self.pending.clear()
            if file.is_open():
                file.close(timeout=self.timeout)


class XRootDReader:
    name = "xrootd"

    def __init__(self, timeout: float) -> None:
        # A request may take the whole per-file time; the stream's deadline ends it sooner.
        self.timeout = max(1, int(timeout + 0.999))
        client()  # a missing extra is a configuration error before any file is claimed

    def open(self, item: Claimed) -> XRootDFile:
        if not is_xrootd_url(item.path):
            raise ConfigError(f"--reader xrootd needs root:// paths; {display(item.path)} is "
                              "local (crawl the site through XRootD, or use another reader)")
        try:
            return XRootDFile(item.path.decode("utf-8", "surrogateescape"), self.timeout)
        except UnicodeEncodeError as err:  # a name the client cannot send
            raise OSError(errno.EINVAL, f"name not representable: {err}") from None
