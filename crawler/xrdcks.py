"""Read the checksum XRootD records in the ``user.XrdCks.adler32`` extended attribute
(written by the XRootD server and by ``xrdadler32``).

Layout (XrdCksData, 96 bytes, big-endian): name[16], file mtime int64 at computation,
csTime int32, 3 reserved bytes, length byte, value[64]. XRootD trusts the value only while the
file's mtime equals the recorded one; so do we."""

from __future__ import annotations

import errno
import os
import struct

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


def read(path: bytes, file_mtime: int) -> str | None:
    """The trusted recorded Adler32 of ``path``, or None where there is none."""
    try:
        data = os.getxattr(path, XATTR_NAME, follow_symlinks=False)
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise XattrUnsupported(str(err)) from None
        return None  # ENODATA (none recorded), or the file just vanished: not ours to judge
    return parse(data, file_mtime)


def encode(adler32_hex: str, file_mtime: int, cs_time: int = 0) -> bytes:
    """The 96-byte record XRootD would store for ``adler32_hex`` (used to build test and
    demo trees; pnfs-monitor never writes it to the storage it checks)."""
    return _LAYOUT.pack(b"adler32", file_mtime, cs_time, b"\0\0\0", 4,
                        bytes.fromhex(adler32_hex))
