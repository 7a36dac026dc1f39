"""How the tester opens a file for reading, one small class per access method: POSIX here,
XRootD in ``tester.xrootd_read``, dccp in ``tester.dccp_read``, all with the same ``open``.
``make_reader`` picks one by name; the default (``auto``) reads ``root://`` paths (an XRootD
crawl) through XRootD and everything else through POSIX.

A reader's ``open`` raises FileNotFoundError when the file is gone (verdict ``missing``) and
another OSError when it cannot be opened (``unreadable``); the returned source can say what
the file looks like now (``current``), so the checker can tell a rewrite from corruption."""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from typing import Protocol

from schema.errors import ConfigError
from schema.lease import Claimed
from schema.xrootd import is_xrootd_url
from tester.stream import Source


@dataclass(frozen=True)
class Current:
    """What the storage says about the file (its size and mtime)."""

    size: int
    mtime_ns: int | None  # None where the access method cannot tell


class OpenFile(Source, Protocol):
    source_node: str | None

    def current(self) -> Current:
        """Size and mtime now (while the file is open)."""
        ...


class Reader(Protocol):
    name: str

    def open(self, item: Claimed) -> OpenFile: ...


class PosixFile:
    """A local or mounted file, opened read-only without updating its atime."""

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


READERS = ("auto", "posix", "xrootd", "dccp")


class AutoReader:
    """Each file by the namespace it was listed from: XRootD URLs through XRootD, local
    and mounted paths (posix, pnfs, chimera) through POSIX."""

    name = "auto"

    def __init__(self, timeout: float) -> None:
        self.posix = PosixReader()
        self.timeout = timeout
        self.xrootd: Reader | None = None

    def open(self, item: Claimed) -> OpenFile:
        if not is_xrootd_url(item.path):
            return self.posix.open(item)
        if self.xrootd is None:
            from tester.xrootd_read import XRootDReader

            self.xrootd = XRootDReader(self.timeout)
        return self.xrootd.open(item)


def make_reader(name: str, timeout: float) -> Reader:
    """The reader called ``name`` (see ``READERS``); ``timeout`` is the per-file one."""
    if name == "auto":
        return AutoReader(timeout)
    if name == "posix":
        return PosixReader()
    if name == "xrootd":
        from tester.xrootd_read import XRootDReader

        return XRootDReader(timeout)
    if name == "dccp":
        from tester.dccp_read import DccpReader

        return DccpReader()
    raise ConfigError(f"unknown reader {name!r}; known: {', '.join(READERS)}")
