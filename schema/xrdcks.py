"""Read the checksum XRootD records in the ``user.XrdCks.adler32`` extended attribute
(written by the XRootD server and by ``xrdadler32``): the crawl reads it for each file, and
a check reads it again before its own reading may become a file's reference.

Layout (XrdCksData, 96 bytes, big-endian): name[16], file mtime int64 at computation,
csTime int32, 3 reserved bytes, length byte, value[64]. XRootD trusts the value only while the
file's mtime equals the recorded one; so do we."""

from __future__ import annotations

import errno
import os
import struct
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


def encode(adler32_hex: str, file_mtime: int, cs_time: int = 0) -> bytes:
    """The 96-byte record XRootD would store for ``adler32_hex`` (used to build test and
    demo trees; pnfs-monitor never writes it to the storage it checks)."""
    return _LAYOUT.pack(b"adler32", file_mtime, cs_time, b"\0\0\0", 4,
                        bytes.fromhex(adler32_hex))
