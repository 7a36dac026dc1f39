"""The POSIX reader: a local or mounted file (posix, pnfs and chimera namespaces), opened
read-only without updating its atime."""

from __future__ import annotations

import contextlib
import errno
import os

from pnfsmon.schema.lease import Claimed
from pnfsmon.tester.reading import Current


class PosixFile:
    source_node = None

    def __init__(self, path: bytes) -> None:
        flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0)
        try:
            self.fd = os.open(path, flags)
        except PermissionError as err:
            # O_NOATIME is refused (EPERM) unless we own the file or are root.
            if err.errno != errno.EPERM or not flags & getattr(os, "O_NOATIME", 0):
                raise
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        # A read-ahead hint only: some sources (pipes, some FUSE mounts) refuse it.
        with contextlib.suppress(OSError, AttributeError):
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)

    def readinto(self, buffer: memoryview) -> int:
        return os.readv(self.fd, [buffer])

    def current(self) -> Current:
        st = os.fstat(self.fd)
        return Current(st.st_size, st.st_mtime_ns)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


class PosixReader:
    name = "posix"

    def open(self, item: Claimed) -> PosixFile:
        return PosixFile(item.path)
