"""The POSIX namespace: a local or mounted tree, walked by ``crawler.walk`` (many calls
in flight), each file's recorded checksum from XRootD's xattr where there is one.

Never follows symlinks (a link to a directory is not descended, a link to a file is not a
file), never opens a listed file (FIFOs and devices are skipped on their type alone), and
counts what it cannot list instead of failing. The dCache namespaces (``crawler.pnfs``,
``crawler.chimera``) walk their mounts the same way, describing each file their own way."""

from __future__ import annotations

import os
from collections.abc import Iterator

from pnfsmon.crawler import xrdcks
from pnfsmon.crawler.listing import Listed, WalkStats
from pnfsmon.crawler.walk import DEFAULT_TIMEOUT, ParallelWalk


class PosixNamespace:
    """Plain files; the recorded checksum, where there is one, from XRootD's xattr."""

    name = "posix"

    def __init__(self, root: bytes, *, read_xattrs: bool = True,
                 parallel: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.root = root
        self.read_xattrs = read_xattrs
        self.parallel = parallel
        self.timeout = timeout

    def walk(self, stats: WalkStats) -> Iterator[Listed]:
        return ParallelWalk(self.root, self._describe, parallel=self.parallel,
                            timeout=self.timeout).walk(stats)

    def _describe(self, _fd: int, directory: bytes, name: bytes,
                  st: os.stat_result) -> tuple[Listed, None]:
        path = os.path.join(directory, name)
        recorded = None
        if self.read_xattrs:
            try:
                recorded = xrdcks.read(path, int(st.st_mtime))
            except xrdcks.XattrUnsupported:
                self.read_xattrs = False
        return Listed(path, st.st_size, st.st_mtime_ns, recorded,
                      "xrdcks" if recorded else None), None
