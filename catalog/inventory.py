"""``pnfsmon inventory load``: the catalog's view of a site (a Rucio or DBS dump) into the
``inventory`` table, streamed in batches.

Formats: a plain list of logical file names (one per line), CSV with a header naming at
least the LFN column (``lfn``, ``name`` or ``path``; optional ``size``/``bytes``,
``adler32``/``checksum``, ``created``), or JSON Lines with the same keys; compressed with
gzip or bzip2 if the file name ends so. Each LFN is mapped to the site's storage path
(``schema.sites``); LFNs outside the mapping are counted, not stored.

The load is atomic: rows go in under a new load id, which becomes the site's current
inventory only when the whole file has been read; older loads are deleted after that. A
malformed line stops the load with its line number and leaves the previous inventory in
place — an entry silently dropped would come back as an "orphan", a deletion candidate."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import math
import re
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from pnfsmon.schema.db import insert_batch, retrying, write_transaction
from pnfsmon.schema.durations import DAY
from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.paths import display, path_hash
from pnfsmon.schema.sites import Site
from pnfsmon.schema.tables import inventory, inventory_loads

BATCH = 5000
FORMATS = ("auto", "lines", "csv", "jsonl")
_HEX = re.compile(r"[0-9a-f]{1,8}")
_DIGITS = re.compile(r"[0-9]{1,19}")
_KEYS = {"lfn": ("lfn", "name", "path", "logical_file_name"),
         "size": ("size", "bytes", "filesize", "file_size"),
         "adler32": ("adler32", "checksum"),
         "created": ("created", "created_at", "creation_date", "mtime")}


@dataclass(frozen=True)
class Entry:
    lfn: bytes
    size: int | None = None
    adler32: str | None = None
    created: float | None = None


class BadDump(ConfigError):
    """A line of the dump that cannot be read."""


def _open(path: Path) -> io.BufferedIOBase:
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rb")
        if path.suffix == ".bz2":
            return bz2.open(path, "rb")
        return open(path, "rb")
    except OSError as err:
        raise ConfigError(f"cannot read inventory {path}: {err.strerror}") from None


def detect_format(path: Path) -> str:
    name = path.name.removesuffix(".gz").removesuffix(".bz2")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    return "lines"


MAX_SIZE = 2**63 - 1  # inventory.size is a BIGINT


def _adler32(value, line: int) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):  # a JSON number: decimal or hex digits? Not ours to guess
        raise BadDump(f"line {line}: Adler32 {value!r} is not a string of 1-8 hex digits")
    text = value.strip().lower()
    for prefix in ("adler32:", "ad:"):
        text = text.removeprefix(prefix)
    if not _HEX.fullmatch(text):
        raise BadDump(f"line {line}: Adler32 {value!r} is not 1-8 hex digits")
    return text.rjust(8, "0")


def _int(value, what: str, line: int) -> int | None:
    if value in (None, ""):
        return None
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        number = int(value.strip())
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:  # 1.5, true, "1_000", "١٢", Infinity: not a size as the catalog wrote it
        raise BadDump(f"line {line}: {what} {value!r} is not a whole number")
    if number < 0:
        raise BadDump(f"line {line}: {what} {value!r} is negative")
    if number > MAX_SIZE:
        raise BadDump(f"line {line}: {what} {value!r} is too large")
    return number


def _float(value, line: int) -> float | None:
    if value in (None, ""):
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number):
        raise BadDump(f"line {line}: created {value!r} is not epoch seconds")
    return number


def _field(record: dict, key: str):
    for name in _KEYS[key]:
        if name in record:
            return record[name]
    return None


def _entry(record: dict, line: int) -> Entry:
    lfn = _field(record, "lfn")
    if not lfn:
        raise BadDump(f"line {line}: no LFN (one of {', '.join(_KEYS['lfn'])})")
    if not isinstance(lfn, str):
        raise BadDump(f"line {line}: the LFN {lfn!r} is not a string")
    return Entry(lfn.encode("utf-8", "surrogateescape"),
                 _int(_field(record, "size"), "size", line),
                 _adler32(_field(record, "adler32"), line),
                 _float(_field(record, "created"), line))


def read_entries(path: Path, fmt: str = "auto") -> Iterator[Entry]:
    """Stream the entries of a dump; BadDump names the first line that cannot be read, or
    the file when it cannot be read to its end (cut short, not really compressed)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown inventory format {fmt!r}; known: {', '.join(FORMATS)}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    try:
        yield from _read(path, fmt)
    except (OSError, EOFError, zlib.error) as err:
        raise BadDump(f"{path}: the dump cannot be read to its end ({err}); a copy cut "
                      "short, or not the compression its name says?") from None


def _read(path: Path, fmt: str) -> Iterator[Entry]:
    with _open(path) as raw:
        if fmt == "lines":
            for number, line in enumerate(raw, start=1):
                lfn = line.rstrip(b"\r\n")
                if b"\0" in lfn:
                    raise BadDump(f"line {number}: a NUL byte, which no file name holds")
                if lfn.strip():
                    yield Entry(lfn)
            return
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        if fmt == "csv":
            reader = csv.DictReader(text)
            try:
                if not reader.fieldnames or not any(k in reader.fieldnames
                                                    for k in _KEYS["lfn"]):
                    raise BadDump(f"{path}: the CSV header names no LFN column "
                                  f"({', '.join(_KEYS['lfn'])})")
                for record in reader:
                    if any(record.get(None) or ()):  # more fields than the header names
                        raise BadDump(f"line {reader.line_num}: more fields than the "
                                      "header names")
                    yield _entry(record, reader.line_num)
            except csv.Error as err:  # a field over csv.field_size_limit(), say
                raise BadDump(f"line {reader.line_num}: not CSV ({err})") from None
            return
        for number, line in enumerate(text, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise BadDump(f"line {number}: not JSON ({err.msg})") from None
            except RecursionError:
                raise BadDump(f"line {number}: JSON nested too deep") from None
            if not isinstance(record, dict):
                raise BadDump(f"line {number}: not a JSON object")
            yield _entry(record, number)


@dataclass
class LoadResult:
    load_id: int
    entries: int = 0
    unmapped: int = 0
    replaced: int = 0  # rows of earlier loads deleted


def load(engine: sa.Engine, site: Site, path: Path, fmt: str = "auto") -> LoadResult:
    """Load ``path`` as ``site``'s inventory, replacing the previous one when complete."""
    with write_transaction(engine) as conn:
        load_id = conn.execute(inventory_loads.insert().values(
            site=site.name, source=str(path)[:1024], started=time.time(), complete=False,
        )).inserted_primary_key[0]
    result = LoadResult(load_id)
    try:
        batch: dict[bytes, dict] = {}
        for entry in read_entries(path, fmt):
            storage = site.to_path(entry.lfn)
            if storage is None:
                result.unmapped += 1
                continue
            digest = path_hash(storage)
            if digest in batch:  # the same refusal as for a repeat in another batch
                raise _twice(entry.lfn)
            batch[digest] = {
                "load_id": load_id, "lfn": entry.lfn, "path": storage,
                "path_hash": digest, "size": entry.size,
                "adler32": entry.adler32, "created": entry.created}
            if len(batch) >= BATCH:
                result.entries += _insert(engine, load_id, batch, result.entries)
                batch = {}
        if batch:
            result.entries += _insert(engine, load_id, batch, result.entries)
    except BaseException:
        _forget(engine, load_id)
        raise

    def switch() -> int:
        with write_transaction(engine) as conn:
            conn.execute(inventory_loads.update().where(inventory_loads.c.id == load_id)
                         .values(complete=True, finished=time.time(), entries=result.entries,
                                 unmapped=result.unmapped))
            # What this load replaces: the site's loads before it, and loads that died
            # (a day old, never finished). Never a load still in progress, nor a newer one.
            loads = inventory_loads.c
            older = sa.select(loads.id).where(
                loads.site == site.name, loads.id != load_id,
                sa.or_(sa.and_(loads.id < load_id, loads.complete == sa.true()),
                       sa.and_(loads.complete == sa.false(),
                               loads.started < time.time() - DAY)))
            old_ids = conn.execute(older).scalars().all()
            replaced = 0
            if old_ids:
                replaced = conn.execute(
                    inventory.delete().where(inventory.c.load_id.in_(old_ids))).rowcount
                conn.execute(inventory_loads.delete().where(inventory_loads.c.id.in_(old_ids)))
            return replaced

    result.replaced = retrying(engine, switch)
    return result


def _twice(lfn: bytes) -> BadDump:
    return BadDump(f"the dump lists {display(lfn)} twice (or two LFNs that map to one "
                   "path)")


def _insert(engine: sa.Engine, load_id: int, batch: dict[bytes, dict], stored: int
            ) -> int:
    """Store a batch of the load, ``stored`` entries of which are in already."""
    try:
        insert_batch(engine, inventory, list(batch.values()),
                     inventory.c.load_id == load_id, stored)
    except sa.exc.IntegrityError:
        with engine.connect() as conn:  # which one: it is in an earlier batch of the load
            twice = conn.execute(sa.select(inventory.c.lfn).where(
                inventory.c.load_id == load_id,
                inventory.c.path_hash.in_(list(batch))).limit(1)).scalar()
        raise _twice(bytes(twice) if twice is not None else b"a file") from None
    return len(batch)


def _forget(engine: sa.Engine, load_id: int) -> None:
    """Remove an unfinished load's rows; the site keeps its previous inventory."""
    with write_transaction(engine) as conn:
        conn.execute(inventory.delete().where(inventory.c.load_id == load_id))
        conn.execute(inventory_loads.delete().where(inventory_loads.c.id == load_id))


def current_load(conn: sa.Connection, site: str):
    """The site's current (latest complete) load row, or None."""
    return conn.execute(
        sa.select(inventory_loads).where(inventory_loads.c.site == site,
                                         inventory_loads.c.complete == sa.true())
        .order_by(inventory_loads.c.id.desc()).limit(1)
    ).first()
