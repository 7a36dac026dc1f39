"""What dCache's namespace says about a file through its dot-command files, as read on a
mounted namespace: the recorded Adler32 in PNFS layer 2 (``.(use)(2)(NAME)``) or in
Chimera's ``.(get)(NAME)(checksums)``. The crawl's dCache namespaces (``crawler.pnfs``,
``crawler.chimera``) read every file's; a check asks again through ``recorded_adler32``
before its own reading becomes a file's reference.

Layer 2 as dCache writes it: a statistics line (``2,0,0,0.0,0.0``), flags as ``;``-separated
``key=value`` pairs after a ``:`` (``c=1:f9b03ea3`` is Adler32, ``l=`` the size, ``h=`` the
HSM state), wrapped at about 70 characters, then the names of the pools holding a copy.
Where the line breaks fall varies, so the parser classifies tokens rather than lines."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

_STATISTICS = re.compile(rb"\d+(,[\d.]+)+")
_HEX = re.compile(r"[0-9a-fA-F]{1,8}")


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


def magic_name(*parts: bytes) -> bytes:
    """``.(use)(2)(NAME)``, ``.(get)(NAME)(checksums)``: a dot-command as a file name."""
    return b".(" + b")(".join(parts) + b")"


def read_magic(dir_fd: int, name: bytes) -> bytes:
    """The content of a dot-command file in the directory open as ``dir_fd`` (read-only;
    an ordinary open and read, one name looked up)."""
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return os.read(fd, 64 * 1024)
    finally:
        os.close(fd)


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


def recorded_adler32(path: bytes, source: str) -> str | None:
    """The Adler32 dCache records for the file at ``path`` on a mounted namespace, asked
    through ``source``'s dot-command (``pnfs``: layer 2, ``chimera``: checksums); None if
    it records none. OSError or MalformedMetadata if it could not be read."""
    directory, name = os.path.split(path)
    fd = os.open(directory or b".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if source == "pnfs":
            return parse_layer2(read_magic(fd, magic_name(b"use", b"2", name))).adler32
        return parse_checksums(read_magic(fd, magic_name(b"get", name, b"checksums")))
    finally:
        os.close(fd)
