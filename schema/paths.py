"""Storage paths are bytes (POSIX names need not be UTF-8). This module gives them a fixed
hash for indexing and the two text forms used everywhere: a readable display form and an
unambiguous, reversible line encoding for list files."""

from __future__ import annotations

import contextlib
import hashlib
import os
import urllib.parse

# Bytes left as they are in list files: printable ASCII except '%' (the escape) and space.
_LIST_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")


def path_hash(path: bytes) -> bytes:
    """16-byte digest used for the unique index: paths may be 4 KB long, hashes are not."""
    return hashlib.blake2b(path, digest_size=16).digest()


def dir_hash(path: bytes) -> bytes:
    """The ``path_hash`` of the directory holding ``path`` (``statuses.dir_hash``)."""
    return path_hash(os.path.dirname(path))


def to_bytes(path: str | bytes | os.PathLike) -> bytes:
    """A path as the bytes the kernel sees (surrogate-escaped str becomes the raw bytes)."""
    return os.fsencode(path)


# Characters of valid UTF-8 text that would make a displayed name ambiguous or break a line.
_ESCAPES = {ord("\\"): "\\\\", ord("\n"): "\\n", ord("\t"): "\\t"}
_ESCAPES.update({c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F] if c not in _ESCAPES})


def display(path: bytes) -> str:
    """Human-readable and unambiguous: UTF-8 shown as is; control characters, backslashes and
    invalid bytes shown as Python-style escapes (``\\n``, ``\\t``, ``\\xff``, ``\\\\``)."""
    out = []
    pos = 0
    while pos < len(path):
        try:
            text, bad, pos = path[pos:].decode("utf-8"), b"", len(path)
        except UnicodeDecodeError as err:
            text = path[pos : pos + err.start].decode("utf-8")
            bad = path[pos + err.start : pos + err.end]
            pos += err.end
        out.append(text.translate(_ESCAPES))
        out.extend(f"\\x{b:02x}" for b in bad)
    return "".join(out)


def _is_hex(digits: str) -> bool:
    return len(digits) == 2 and all(c in "0123456789abcdefABCDEF" for c in digits)


_UNESCAPES = {"\\": b"\\", "n": b"\n", "t": b"\t"}


def undisplay(text: str) -> bytes:
    """The bytes whose :func:`display` form is ``text`` (what a log line or an HTML page
    shows); ValueError if ``text`` has an escape that ``display`` never writes."""
    out = bytearray()
    pos = 0
    while pos < len(text):
        cut = text.find("\\", pos)
        if cut < 0:
            cut = len(text)
        out += text[pos:cut].encode("utf-8", "surrogateescape")
        if cut == len(text):
            break
        code = text[cut + 1 : cut + 2]
        if code in _UNESCAPES:
            out += _UNESCAPES[code]
            pos = cut + 2
        elif code == "x" and _is_hex(text[cut + 2 : cut + 4]):
            out.append(int(text[cut + 2 : cut + 4], 16))
            pos = cut + 4
        else:
            raise ValueError(f"not an escape: {text[cut:cut + 4]!r}")
    return bytes(out)


def spellings(text: str) -> list[bytes]:
    """Every path that ``text`` may stand for, in the forms the tool prints: the raw name,
    the percent-encoded form of the ``.txt`` lists and exports, and the escaped form of the
    logs and HTML pages. Duplicates removed, the raw name first."""
    out = [os.fsencode(text)]
    if "%" in text:
        out.append(urllib.parse.unquote_to_bytes(os.fsencode(text)))
    if "\\" in text:
        # Not an escaped form (ValueError): only the other spellings apply.
        with contextlib.suppress(ValueError):
            out.append(undisplay(text))
    return list(dict.fromkeys(out))


def encode_line(path: bytes) -> str:
    """Percent-encode everything outside printable ASCII, plus '%' and space: one path per
    line, no ambiguity, reversible with :func:`decode_line` (``urllib.parse.unquote_to_bytes``)."""
    return urllib.parse.quote_from_bytes(path, safe=_LIST_SAFE)


def decode_line(line: str) -> bytes:
    return urllib.parse.unquote_to_bytes(line.rstrip("\n"))


def is_utf8(name: bytes) -> bool:
    """Whether ``name`` is UTF-8 text (a Rucio name must be: a path that is not has no
    replica there)."""
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
