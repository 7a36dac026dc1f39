"""Directory digests: a full crawl compares an unchanged directory's files with
``statuses`` as a whole, not one by one.

A full re-crawl still lists and stats every file: that is what it is for. But on a usual
night almost every directory lists exactly what the last complete crawl listed there, and
merging such a listing changes nothing. So the ingest (``crawler.ingest``) cuts the listing
into directories and digests each one: every file's path, size, mtime, recorded checksum,
pool and whether it is parked as nearline (what the merge compares), sorted, through
SHA-256. A directory whose digest equals the one saved for it (``crawl_directories.digest``)
and whose present rows in ``statuses`` are as many as it lists is not staged: it counts as
listed and compared, and its files are spared from the vanish step by the directory.
Anything else (a digest that differs, no digest, a count that differs) is staged and
merged file by file, as before.

The digest saved for a directory stands for "merging this listing against the rows
changes nothing". It holds because:
- it is written only by a complete crawl (``crawler.directories.save``), after that
  crawl's merge made the rows match the listing; a directory where the rows keep a
  difference on purpose (a file the crawl judged truncated keeps its old size) gets none;
- a merge that writes a file's row forgets its directory's digest in the same transaction
  (``forget``), so a crawl that dies or ends incomplete, having merged part of its
  listing, leaves no digest that no longer stands for the rows (the vanish step needs no
  such care: a file it marks vanished is missing from the next listing, or back in it
  with one present row fewer than listed);
- other writers of ``statuses`` (verdicts, leases, the schedule, incidents,
  acknowledgements) change nothing the merge compares: they set a status, a checked
  file's first reference where the storage recorded none, a due time;
- the present rows are counted by directory in the merge's transaction: a row deleted,
  added, or written without its directory (by hand) makes the count differ;
- a crawl that another crawl of its site ran beside (a night's crawl that outlasted the
  next one's start, an operator's crawl of a subdirectory) saves none (``overlapped``):
  the other's merge may have forgotten a digest that this one's older listing would
  write back.
A directory whose files come in more than one run of the listing (a slow mount's slices
interleaved) gets no digest this time: the next full crawl stages it."""

from __future__ import annotations

import marshal
import os
from collections.abc import Iterable
from hashlib import sha256

import sqlalchemy as sa

from pnfsmon.crawler.listing import Listed
from pnfsmon.crawler.staging import STALE_AFTER
from pnfsmon.schema.paths import path_hash
from pnfsmon.schema.tables import crawl_directories, crawls

DIGEST_SIZE = 16


def directory_of(path: bytes) -> bytes:
    """The name of the directory holding ``path``, as digests are kept by (no trailing
    slash, ``crawler.directories``)."""
    return path[:path.rfind(b"/")].rstrip(b"/") or b"/"  # (as os.path.dirname: "//")


def digest(items: list[Listed], include_nearline: bool = False) -> bytes:
    """The digest of one directory's listed files (in any order), as a crawl that parks
    nearline files unless ``include_nearline`` stages them."""
    parks = not include_nearline
    rows = [(i.path, i.size, i.mtime_ns, i.recorded_adler32, i.pool, i.nearline and parks)
            for i in items]
    rows.sort()
    # marshal and SHA-256 (in the CPU's SHA instructions) cost a third of a text format
    # and BLAKE2b. marshal's format may change with Python's version: a digest that
    # changes with it only makes each directory staged once more.
    return sha256(marshal.dumps(rows)).digest()[:DIGEST_SIZE]


def forget(conn: sa.Connection, site: str, paths: Iterable[bytes]) -> None:
    """In the transaction that writes the rows of ``paths`` (files): their directories'
    digests no longer stand for what ``statuses`` holds, until a complete crawl saves
    them again."""
    # (By the paths' heads first: a chunk holds a few directories' files, each a call.)
    names = {os.path.dirname(h) for h in {p[:p.rfind(b"/") + 1] for p in paths}}
    if not names:
        return
    # As the directory state names them: a crawl root may be kept with a trailing slash.
    hashes = [path_hash(n) for n in names] + [path_hash(n + b"/") for n in names
                                              if not n.endswith(b"/")]
    d = crawl_directories.c
    conn.execute(crawl_directories.update()
                 .where(d.site == site, d.path_hash.in_(hashes), d.digest.is_not(None))
                 .values(digest=None))


def overlapped(conn: sa.Connection, site: str, crawl_id: int, started: float) -> int | None:
    """Another crawl of ``site`` that may have run while crawl ``crawl_id`` (started at
    ``started``) did: finished after that, or not finished and not a day old (a crawl
    that has not finished in a day has died, ``crawler.staging``). Its id, or None."""
    c = crawls.c
    return conn.execute(
        sa.select(c.id).where(
            c.site == site, c.id != crawl_id,
            sa.or_(c.finished > started,
                   sa.and_(c.finished.is_(None), c.started > started - STALE_AFTER)))
        .limit(1)).scalar()
