"""The POSIX namespace: walk a local or mounted tree with ``os.scandir``.

Never follows symlinks (a link to a directory is not descended, a link to a file is not a
file), never opens anything (FIFOs and devices are skipped on their type alone), and counts
what it cannot list instead of failing."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from crawler import xrdcks
from crawler.listing import Listed, WalkStats


def walk(root: bytes, stats: WalkStats, *, read_xattrs: bool = True) -> Iterator[Listed]:
    """Yield every regular file below ``root`` (depth first, constant memory per level)."""
    pending = [root]
    while pending:
        directory = pending.pop()
        stats.directories += 1
        entries = 0
        try:
            with os.scandir(directory) as it:
                for entry in it:
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
                    recorded = None
                    if read_xattrs:
                        try:
                            recorded = xrdcks.read(entry.path, int(st.st_mtime))
                        except xrdcks.XattrUnsupported:
                            read_xattrs = False
                    stats.files += 1
                    stats.bytes += st.st_size
                    yield Listed(entry.path, st.st_size, st.st_mtime_ns, recorded,
                                 "xrdcks" if recorded else None)
        except OSError:
            # Unreadable (EACCES), vanished, or an I/O error while listing: counted, and
            # its subtree is protected from being called vanished by this crawl.
            stats.unreadable.append(directory)
            continue
        if entries == 0:
            stats.empty_directories += 1
