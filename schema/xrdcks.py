"""Read the checksum XRootD records in the ``user.XrdCks.adler32`` extended attribute
(written by the XRootD server and by ``xrdadler32``): the crawl reads it for each file, and
a check reads it again before its own reading may become a file's reference.

Layout (XrdCksData, 96 bytes, big-endian): name[16], file mtime int64 at computation,
csTime int32, 3 reserved bytes, length byte, value[64]. XRootD trusts the value only while the
file's mtime equals the recorded one; so do we."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import threading
import time

XATTR_NAME = "user.XrdCks.adler32"
_LAYOUT = struct.Struct(">16sqi3sB64s")


class XattrUnsupported(Exception):
    """The filesystem keeps no user extended attributes."""


def parse(data: bytes, file_mtime: int) -> str | None:
    """The recorded Adler32 as 8 lower-case hex digits, or None if the record is stale
    (mtime differs) or malformed."""
    if len(data) != _LAYOUT.size:
        return None
    name, mtime, _cs_time, _reserved, length, value = _LAYOUT.unpack(data)
    if name.rstrip(b"\0") != b"adler32" or length != 4 or mtime != file_mtime:
        return None
    return value[:4].hex()


ATTEMPTS = 3  # reads of one file's xattr before its error stands
RETRY_DELAY = 0.05  # seconds before the second read, doubled for each further one
_NONE = (errno.ENODATA, errno.ENOENT)  # none recorded; or the file vanished (a check says)


def read(path: bytes, file_mtime: int) -> str | None:
    """The trusted recorded Adler32 of ``path``, or None where there is none (or only a
    stale one). Raises XattrUnsupported where the filesystem keeps no user xattrs, and
    OSError when the read failed another way (after ``ATTEMPTS`` tries): then the file may
    well have a recorded checksum that could not be read."""
    delay = RETRY_DELAY
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return parse(os.getxattr(path, XATTR_NAME, follow_symlinks=False), file_mtime)
        except OSError as err:
            if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise XattrUnsupported(err.strerror or str(err)) from None
            if err.errno in _NONE:
                return None
            if attempt == ATTEMPTS:
                raise
        time.sleep(delay)
        delay *= 2
    return None  # not reached: the last attempt returns or raises


# getxattrat(2) (Linux 6.13+) reads an xattr by a name relative to a directory descriptor,
# as the walk's stat does: by full path the kernel resolves every component again for each
# file, which for a 120-byte path was the largest cost of a local re-crawl (bench/crawl.py).
# Its number is the same on every architecture (the unified syscall table).
_GETXATTRAT = 464
_AT_SYMLINK_NOFOLLOW = 0x100
_BUFFER = 256  # more than XrdCksData: a longer value is not one we trust (``parse``)


class _XattrArgs(ctypes.Structure):
    _fields_ = [("value", ctypes.c_uint64), ("size", ctypes.c_uint32),
                ("flags", ctypes.c_uint32)]


class _At:
    """getxattrat through libc's ``syscall``, one buffer per thread (the walk's threads
    describe files at once). ``available`` is False where the kernel lacks it (or a
    seccomp filter refuses it): then every read goes by path, with the same answers."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.available = False
        if platform.system() != "Linux":
            return
        try:
            self.syscall = ctypes.CDLL(None, use_errno=True).syscall
        except (OSError, AttributeError):
            return
        self.syscall.restype = ctypes.c_long
        # The arguments ctypes cannot guess (a Python int goes to a variadic function as a
        # 32-bit int, and the kernel would read garbage above the size_t's low half),
        # converted once: declaring ``argtypes`` instead costs 0.6 us a call.
        self.constants = (ctypes.c_long(_GETXATTRAT), ctypes.c_uint(_AT_SYMLINK_NOFOLLOW),
                          ctypes.c_char_p(XATTR_NAME.encode()))
        self.args_size = ctypes.c_size_t(ctypes.sizeof(_XattrArgs))
        probe = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            answer = self.get(probe, b".")
        finally:
            os.close(probe)
        self.available = isinstance(answer, bytes) or answer in (
            *_NONE, errno.ERANGE, errno.ENOTSUP, errno.EOPNOTSUPP)

    def get(self, dir_fd: int, name: bytes) -> bytes | int:
        """The attribute's value, or getxattr's errno (no exception: most files have no
        recorded checksum, and raising costs more than the call)."""
        local = self.local
        args = getattr(local, "args", None)
        if args is None:  # this thread's first: its buffer
            local.buffer = ctypes.create_string_buffer(_BUFFER)
            local.struct = _XattrArgs(ctypes.addressof(local.buffer), _BUFFER, 0)
            args = local.args = ctypes.c_void_p(ctypes.addressof(local.struct))
        number, flags, attribute = self.constants
        size = self.syscall(number, dir_fd, name, flags, attribute, args, self.args_size)
        return local.buffer.raw[:size] if size >= 0 else ctypes.get_errno()


_at = _At()


def read_at(dir_fd: int, name: bytes, path: bytes, file_mtime: int) -> str | None:
    """``read(path, file_mtime)`` for the file ``name`` in the directory open as
    ``dir_fd`` (``path``: its full path): the same answers and errors, with one name
    looked up where the kernel can (getxattrat). An error other than "none recorded" is
    read again by path, where ``read`` classifies and retries it."""
    if _at.available:
        got = _at.get(dir_fd, name)
        if got.__class__ is bytes:
            return parse(got, file_mtime)
        if got in _NONE or got == errno.ERANGE:  # ERANGE: longer than any record we trust
            return None
    return read(path, file_mtime)


def encode(adler32_hex: str, file_mtime: int, cs_time: int = 0) -> bytes:
    """The 96-byte record XRootD would store for ``adler32_hex`` (used to build test and
    demo trees; pnfs-monitor never writes it to the storage it checks)."""
    return _LAYOUT.pack(b"adler32", file_mtime, cs_time, b"\0\0\0", 4,
                        bytes.fromhex(adler32_hex))
