"""The Chimera namespace (dCache's NFS 4.1 mount): walk the mount like POSIX, and ask dCache
through dot-command files in each file's directory:

- ``.(get)(NAME)(checksums)``: ``TYPE:value`` pairs, one per line or joined by ``", "``
  (e.g. ``ADLER32:f9b03ea3``); the Adler32 one is the recorded checksum;
- ``.(get)(NAME)(locality)``: ``ONLINE``, ``NEARLINE`` (only on tape), ``ONLINE_AND_NEARLINE``
  or ``UNAVAILABLE``. A NEARLINE file is listed, and read only with ``--include-nearline``
  (reading it would stage it from tape)."""

from __future__ import annotations

import os

from pnfsmon.crawler.listing import Listed
from pnfsmon.crawler.pnfs import DcacheMount, why
from pnfsmon.schema.dcache import MalformedMetadata, magic_name, parse_checksums, read_magic

__all__ = ["ChimeraNamespace", "parse_checksums", "parse_locality"]

LOCALITIES = ("ONLINE", "NEARLINE", "ONLINE_AND_NEARLINE", "UNAVAILABLE", "LOST", "NONE")


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
                    item.recorded("chimera", parse_checksums(text))
                else:
                    item.nearline = parse_locality(text) == "NEARLINE"
            except (OSError, MalformedMetadata) as err:
                problems.append(why(what.decode(), err))
                if what == b"checksums":
                    item.not_read("chimera", problems[-1])
        return item, "; ".join(problems) or None
