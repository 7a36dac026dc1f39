"""The PNFS namespace (dCache's old ``/pnfs`` mount): walk the mount like POSIX, and take each
file's recorded Adler32 and pools from its layer 2, read as the magic file
``.(use)(2)(NAME)`` in the file's directory (parsed by ``schema.dcache``, which a check
uses too)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from pnfsmon.crawler.directories import DirectoryPlan
from pnfsmon.crawler.listing import Listed, WalkStats
from pnfsmon.crawler.walk import DEFAULT_TIMEOUT, ParallelWalk
from pnfsmon.schema.dcache import Layer2, MalformedMetadata, magic_name, parse_layer2, read_magic

__all__ = ["Layer2", "MalformedMetadata", "PnfsNamespace", "magic_name", "parse_layer2",
           "read_magic"]

MAX_POOLS_TEXT = 255  # the width of statuses.pool


def pools_text(pools: tuple[str, ...]) -> str | None:
    """Pool names as stored in ``statuses.pool``: space-separated, cut at a name boundary
    to fit the column."""
    text = ""
    for pool in pools:
        candidate = f"{text} {pool}" if text else pool
        if len(candidate) > MAX_POOLS_TEXT:
            break
        text = candidate
    return text or None


def is_magic(name: bytes) -> bool:
    """A dot-command name. A real mount never lists them; a tree copied from one may."""
    return name.startswith(b".(")


def why(what: str, err: Exception) -> str:
    """What could not be read about a file, and why, for the crawl's warning."""
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return f"{what}: {reason}"


class DcacheMount:
    """A dCache namespace mount, walked like POSIX without the dot-command names (a real
    mount never lists them; a tree copied from one may); subclasses describe each file
    from its dot-commands (``_describe``), returning what could not be read."""

    name = "dcache"

    def __init__(self, root: bytes, *, parallel: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.root = root
        self.parallel = parallel
        self.timeout = timeout

    def walk(self, stats: WalkStats, plan: DirectoryPlan | None = None) -> Iterator[Listed]:
        return ParallelWalk(self.root, self._describe, parallel=self.parallel,
                            timeout=self.timeout, hidden=is_magic).walk(stats, plan)

    def _describe(self, fd: int, directory: bytes, name: bytes,
                  st: os.stat_result) -> tuple[Listed, str | None]:
        raise NotImplementedError


class PnfsNamespace(DcacheMount):
    name = "pnfs"

    def _describe(self, fd: int, directory: bytes, name: bytes,
                  st: os.stat_result) -> tuple[Listed, str | None]:
        item = Listed(os.path.join(directory, name), st.st_size, st.st_mtime_ns)
        try:
            layer = parse_layer2(read_magic(fd, magic_name(b"use", b"2", name)))
        except (OSError, MalformedMetadata) as err:
            item.not_read("pnfs", why("layer 2", err))
            return item, why("layer 2", err)
        item.recorded("pnfs", layer.adler32)
        item.pool = pools_text(layer.pools)
        return item, None
