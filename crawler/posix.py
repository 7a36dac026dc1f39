"""The POSIX namespace: walk a local or mounted tree with ``os.scandir``.

Never follows symlinks (a link to a directory is not descended, a link to a file is not a
file), never opens a listed file (FIFOs and devices are skipped on their type alone), and
counts what it cannot list instead of failing. The dCache namespaces (``crawler.pnfs``,
``crawler.chimera``) walk their mounts with the same ``scan``, describing each file their
own way."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator

from crawler import xrdcks
from crawler.listing import Listed, WalkStats

#: Builds the record of one regular file: (directory, name, full path, its lstat).
Describe = Callable[[bytes, bytes, bytes, os.stat_result], Listed]


def scan(root: bytes, stats: WalkStats, describe: Describe,
         hidden: Callable[[bytes], bool] | None = None) -> Iterator[Listed]:
    """Yield ``describe(...)`` for every regular file below ``root`` (depth first, constant
    memory per level). Names for which ``hidden(name)`` is true are not listed."""
    pending = [root]
    while pending:
        directory = pending.pop()
        stats.directories += 1
        entries = 0
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    if hidden is not None and hidden(entry.name):
                        continue
                    entries += 1
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        stats.skipped += 1  # vanished between listing and stat
                        continue
                    if not stat.S_ISREG(st.st_mode):
                        stats.skipped += 1  # symlink, FIFO, socket, device: never opened
                        continue
                    yield stats.count(describe(directory, entry.name, entry.path, st))
        except OSError as err:
            # Unreadable (EACCES), vanished, or an I/O error while listing: counted, and
            # its subtree is protected from being called vanished by this crawl.
            stats.unlisted(directory, err.strerror or str(err))
            continue
        if entries == 0:
            stats.empty_directories += 1


class PosixNamespace:
    """Plain files; the recorded checksum, where there is one, from XRootD's xattr."""

    name = "posix"

    def __init__(self, root: bytes, *, read_xattrs: bool = True) -> None:
        self.root = root
        self.read_xattrs = read_xattrs

    def walk(self, stats: WalkStats) -> Iterator[Listed]:
        return scan(self.root, stats, self._describe)

    def _describe(self, _directory: bytes, _name: bytes, path: bytes,
                  st: os.stat_result) -> Listed:
        recorded = None
        if self.read_xattrs:
            try:
                recorded = xrdcks.read(path, int(st.st_mtime))
            except xrdcks.XattrUnsupported:
                self.read_xattrs = False
        return Listed(path, st.st_size, st.st_mtime_ns, recorded,
                      "xrdcks" if recorded else None)
