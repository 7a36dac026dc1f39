"""The PNFS namespace (dCache's old ``/pnfs`` mount): walk the mount like POSIX, and take each
file's recorded Adler32 and pools from its layer 2, read as the magic file
``.(use)(2)(NAME)`` in the file's directory.

Layer 2 as dCache writes it: a statistics line (``2,0,0,0.0,0.0``), flags as ``;``-separated
``key=value`` pairs after a ``:`` (``c=1:f9b03ea3`` is Adler32, ``l=`` the size, ``h=`` the
HSM state), wrapped at about 70 characters, then the names of the pools holding a copy.
Where the line breaks fall varies, so the parser classifies tokens rather than lines."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from pnfsmon.crawler.listing import Listed, WalkStats
from pnfsmon.crawler.walk import DEFAULT_TIMEOUT, ParallelWalk

_STATISTICS = re.compile(rb"\d+(,[\d.]+)+")
_HEX = re.compile(r"[0-9a-fA-F]{1,8}")
MAX_POOLS_TEXT = 255  # the width of statuses.pool


class MalformedMetadata(ValueError):
    """A magic file that does not say what it should; the message says what is wrong."""


@dataclass(frozen=True)
class Layer2:
    adler32: str | None
    pools: tuple[str, ...]
    flags: dict[str, str]


def parse_layer2(text: bytes) -> Layer2:
    """Parse the content of ``.(use)(2)(NAME)``; an empty layer (a file not yet written to
    any pool) has neither checksum nor pools."""
    flag_text = b""
    pools: list[str] = []
    tokens = [t for t in text.split() if not _STATISTICS.fullmatch(t)]
    # The flags come before the pools, wrapped at any character (even between a key and
    # its '='): every token up to the last one that carries flag syntax is flags text.
    last_flag = max((i for i, t in enumerate(tokens)
                     if t.startswith(b":") or b"=" in t or b";" in t), default=-1)
    for index, token in enumerate(tokens):
        if index <= last_flag:
            flag_text += token  # a wrapped flags line continues without a separator
            continue
        try:
            pools.append(token.decode("ascii"))
        except UnicodeDecodeError:
            raise MalformedMetadata(f"pool name {token!r} is not ASCII") from None
    flags: dict[str, str] = {}
    for pair in flag_text.lstrip(b":").split(b";"):
        pair = pair.strip(b":")
        if not pair:
            continue
        key, sep, value = pair.partition(b"=")
        if not sep or not key:
            raise MalformedMetadata(f"flag {pair.decode('latin-1')!r} is not key=value")
        flags[key.decode("latin-1")] = value.decode("latin-1")
    adler32 = None
    if "c" in flags:
        kind, _, value = flags["c"].partition(":")
        if kind == "1":  # checksum type 1 is Adler32
            if not _HEX.fullmatch(value):
                raise MalformedMetadata(f"Adler32 {value!r} is not 1-8 hex digits")
            adler32 = value.lower().rjust(8, "0")  # stored without leading zeros at times
    return Layer2(adler32, tuple(pools), flags)


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


def magic_name(*parts: bytes) -> bytes:
    """``.(use)(2)(NAME)``, ``.(get)(NAME)(checksums)``: a dot-command as a file name."""
    return b".(" + b")(".join(parts) + b")"


def is_magic(name: bytes) -> bool:
    """A dot-command name. A real mount never lists them; a tree copied from one may."""
    return name.startswith(b".(")


def read_magic(dir_fd: int, name: bytes) -> bytes:
    """The content of a dot-command file in the directory open as ``dir_fd`` (read-only;
    an ordinary open and read, one name looked up)."""
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return os.read(fd, 64 * 1024)
    finally:
        os.close(fd)


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

    def walk(self, stats: WalkStats) -> Iterator[Listed]:
        return ParallelWalk(self.root, self._describe, parallel=self.parallel,
                            timeout=self.timeout, hidden=is_magic).walk(stats)

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
            return item, why("layer 2", err)
        if layer.adler32 is not None:
            item.recorded_adler32, item.recorded_from = layer.adler32, "pnfs"
        item.pool = pools_text(layer.pools)
        return item, None
