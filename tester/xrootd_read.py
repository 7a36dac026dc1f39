"""The XRootD reader: ``XRootD.client.File`` with explicit, large chunked reads, each under
the per-file timeout. Connections are the client's: it keeps one per server for the whole
process, so a worker reuses them across files. The data server that actually served the
file (after any redirect) is recorded as the source node."""

from __future__ import annotations

import errno

from schema.errors import ConfigError
from schema.lease import Claimed
from schema.paths import display
from schema.xrootd import client, is_xrootd_url, raise_for
from tester.readers import Current


class XRootDFile:
    def __init__(self, url: str, timeout: int) -> None:
        from XRootD.client.flags import OpenFlags

        self.url = url
        self.timeout = timeout
        self.offset = 0
        self.file = client().File()
        status, _ = self.file.open(url, OpenFlags.READ, timeout=timeout)
        raise_for(status, url)
        self.source_node = self.file.get_property("DataServer") or None

    def readinto(self, buffer: memoryview) -> int:
        status, data = self.file.read(self.offset, len(buffer), timeout=self.timeout)
        raise_for(status, self.url, transient=False)
        n = len(data)
        buffer[:n] = data
        self.offset += n
        return n

    def current(self) -> Current:
        status, info = self.file.stat(force=True, timeout=self.timeout)
        raise_for(status, self.url, transient=False)
        return Current(info.size, info.modtime * 10**9)

    def close(self) -> None:
        if self.file is not None:
            file, self.file = self.file, None
            if file.is_open():
                file.close(timeout=self.timeout)


class XRootDReader:
    name = "xrootd"

    def __init__(self, timeout: float) -> None:
        # A request may take the whole per-file time; the stream's deadline ends it sooner.
        self.timeout = max(1, int(timeout + 0.999))

    def open(self, item: Claimed) -> XRootDFile:
        if not is_xrootd_url(item.path):
            raise ConfigError(f"--reader xrootd needs root:// paths; {display(item.path)} is "
                              "local (crawl the site through XRootD, or use another reader)")
        try:
            return XRootDFile(item.path.decode("utf-8", "surrogateescape"), self.timeout)
        except UnicodeEncodeError as err:  # a name the client cannot send
            raise OSError(errno.EINVAL, f"name not representable: {err}") from None
