"""The Chimera namespace (dCache's NFS 4.1 mount): walk the mount like POSIX, and ask dCache
through dot-command files in each file's directory:

- ``.(get)(NAME)(checksums)``: ``TYPE:value`` pairs, one per line or joined by ``", "``
  (e.g. ``ADLER32:f9b03ea3``); the Adler32 one is the recorded checksum;
- ``.(get)(NAME)(locality)``: ``ONLINE``, ``NEARLINE`` (only on tape), ``ONLINE_AND_NEARLINE``
  or ``UNAVAILABLE``. A NEARLINE file is listed, and read only with ``--include-nearline``
  (reading it would stage it from tape)."""

from __future__ import annotations

import os
import re

from pnfsmon.crawler.listing import Listed
from pnfsmon.crawler.pnfs import DcacheMount, MalformedMetadata, magic_name, read_magic, why

_HEX = re.compile(r"[0-9a-fA-F]{1,8}")
LOCALITIES = ("ONLINE", "NEARLINE", "ONLINE_AND_NEARLINE", "UNAVAILABLE", "LOST", "NONE")


def parse_checksums(text: bytes) -> str | None:
    """The Adler32 among the checksums dCache lists, or None if it lists none."""
    try:
        decoded = text.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedMetadata("checksums are not ASCII text") from None
    adler32 = None
    for pair in re.split(r"[,\s]+", decoded.strip()):
        if not pair:
            continue
        kind, sep, value = pair.partition(":")
        if not sep:
            raise MalformedMetadata(f"checksum {pair!r} is not TYPE:value")
        if kind.upper() in ("ADLER32", "1"):
            if not _HEX.fullmatch(value):
                raise MalformedMetadata(f"Adler32 {value!r} is not 1-8 hex digits")
            adler32 = value.lower().rjust(8, "0")
    return adler32


def parse_locality(text: bytes) -> str:
    locality = text.decode("ascii", "replace").strip().upper()
    if locality not in LOCALITIES:
        raise MalformedMetadata(f"unknown locality {locality!r}")
    return locality


class ChimeraNamespace(DcacheMount):
    name = "chimera"

    def _describe(self, fd: int, directory: bytes, name: bytes,
                  st: os.stat_result) -> tuple[Listed, str | None]:
        item = Listed(os.path.join(directory, name), st.st_size, st.st_mtime_ns)
        problems = []
        for what in (b"checksums", b"locality"):
            try:
                text = read_magic(fd, magic_name(b"get", name, what))
                if what == b"checksums":
                    item.recorded_adler32 = parse_checksums(text)
                    item.recorded_from = "chimera" if item.recorded_adler32 else None
                else:
                    item.nearline = parse_locality(text) == "NEARLINE"
            except (OSError, MalformedMetadata) as err:
                problems.append(why(what.decode(), err))
        return item, "; ".join(problems) or None
