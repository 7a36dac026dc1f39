"""The Chimera database as a namespace: dCache keeps its namespace in PostgreSQL, and one
streamed query lists a site of ten million files in minutes where a mount needs millions
of round trips.

The layout is dCache's own (``FsSqlDriver.java`` and the chimera changelog):
``t_inodes (inumber, ipnfsid, itype, isize, imtime, ...)`` (itype 32768 a file, 16384 a
directory, anything else not a file), ``t_dirs (iparent, ichild, iname)`` under the root
whose pnfsid is ``000000000000000000000000000000000000``, ``t_inodes_checksum (inumber,
itype, isum)`` (itype 1 is Adler32) and ``t_locationinfo (inumber, itype, ilocation)``
(itype 1 a disk copy on pool ``ilocation``, 0 a tape copy). A file with tape copies and
no disk copy is NEARLINE, as the mount's ``.(get)(NAME)(locality)`` says.

Read-only and consistent: everything is read in one ``READ ONLY, REPEATABLE READ``
transaction, so the listing is one snapshot while dCache keeps writing, and nothing is
ever written. The password follows libpq's conventions (``PGPASSFILE``, ``~/.pgpass``) or
comes from a file (``chimera_db_password_file`` in the site's section,
``PNFSMON_CHIMERA_DB_PASSWORD_FILE``); never from the command line.

Names are returned as dCache stored them: a database in ``SQL_ASCII`` keeps any bytes,
and psycopg hands them over as bytes; a UTF-8 database's names are encoded back."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from decimal import Decimal

import sqlalchemy as sa

from pnfsmon.crawler.listing import Listed, WalkStats
from pnfsmon.crawler.pnfs import pools_text
from pnfsmon.schema import secrets
from pnfsmon.schema.config import read_password_file
from pnfsmon.schema.errors import ConfigError, StorageUnavailable
from pnfsmon.schema.paths import display

log = logging.getLogger(__name__)

ROOT_ID = "000000000000000000000000000000000000"
FILE, DIRECTORY = 32768, 16384
ADLER32, DISK, TAPE = 1, 1, 0
TABLES = ("t_inodes", "t_dirs", "t_inodes_checksum", "t_locationinfo")
FETCH = 10_000

# Every directory below the root with its path relative to it, then every entry that is
# not a directory with what a crawl needs. One statement: one snapshot.
_DIRECTORIES = """
WITH RECURSIVE dirs(inumber, path) AS (
    SELECT CAST(%(root)s AS bigint), CAST('' AS varchar)
  UNION ALL
    SELECT d.ichild, CAST(dirs.path || '/' || d.iname AS varchar)
    FROM dirs JOIN t_dirs d ON d.iparent = dirs.inumber
    JOIN t_inodes i ON i.inumber = d.ichild
    WHERE i.itype = 16384 AND d.iname NOT IN ('.', '..')
)"""
_COUNTS = _DIRECTORIES + """
SELECT count(*), count(*) FILTER (WHERE NOT EXISTS (
    SELECT 1 FROM t_dirs e WHERE e.iparent = dirs.inumber AND e.iname NOT IN ('.', '..')))
FROM dirs"""
_ENTRIES = _DIRECTORIES + """
SELECT dirs.path || '/' || d.iname, i.itype, i.isize,
       EXTRACT(EPOCH FROM i.imtime AT TIME ZONE %(zone)s),
       (SELECT c.isum FROM t_inodes_checksum c WHERE c.inumber = i.inumber AND c.itype = 1),
       (SELECT string_agg(l.ilocation, ' ' ORDER BY l.ilocation) FROM t_locationinfo l
        WHERE l.inumber = i.inumber AND l.itype = 1),
       EXISTS (SELECT 1 FROM t_locationinfo l WHERE l.inumber = i.inumber AND l.itype = 0)
FROM dirs JOIN t_dirs d ON d.iparent = dirs.inumber
JOIN t_inodes i ON i.inumber = d.ichild
WHERE i.itype <> 16384 AND d.iname NOT IN ('.', '..')"""


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def adler32_of(isum: str | bytes | None) -> str | None:
    """Chimera's Adler32 (8 hex digits, sometimes without leading zeros)."""
    if isum is None:
        return None
    text = _bytes(isum).decode("ascii", "replace").strip().lower()
    if not text or len(text) > 8 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"Adler32 {text!r} is not 1-8 hex digits")
    return text.rjust(8, "0")


MAX_SIZE = 2**63 - 1  # statuses.size is a BIGINT


def listed_from_row(prefix: bytes, row: tuple, stats: WalkStats) -> Listed | None:
    """One row of the listing query as a listed file; None for what is not a file (counted
    as skipped). A row that cannot be a file's (no size, no mtime, a negative size) stops
    the crawl with BadChimeraRow naming the path: leaving the file out would mark it
    vanished. A checksum that cannot be read is reported, and the file listed without."""
    rel, itype, size, mtime, isum, pools, on_tape = row
    if itype != FILE:
        stats.skipped += 1  # symlink, FIFO, device: not a file
        return None
    path = prefix + _bytes(rel)
    try:
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_SIZE:
            raise ValueError(f"size {size!r} is not a file size")
        when = Decimal(mtime) * 10**9
        if not when.is_finite():
            raise ValueError(f"mtime {mtime!r} is not a time")
        mtime_ns = int(when)
        if abs(mtime_ns) > MAX_SIZE:
            raise ValueError(f"mtime {mtime!r} is out of range")
    except (TypeError, ValueError, ArithmeticError) as err:
        raise BadChimeraRow(f"Chimera row for {display(path)}: {err}") from None
    item = Listed(path, size, mtime_ns, nearline=bool(on_tape) and pools is None)
    try:
        item.recorded("chimera", adler32_of(isum))
    except ValueError as err:
        stats.bad_metadata(path, f"checksum: {err}")
        item.not_read("chimera", f"checksum: {err}")
    item.pool = pools_text(tuple(_bytes(pools).decode("ascii", "replace")
                                 .split())) if pools else None
    return item


class BadChimeraRow(ConfigError):
    """A row of the Chimera database that cannot describe a file: the crawl stops and
    nothing is marked vanished."""


class ChimeraDbNamespace:
    """``root``: the path inside the namespace (``/pnfs/example.org/data/cms``), which is
    also where the site mounts it, so checks read the same paths through the mount."""

    name = "chimera-db"

    def __init__(self, root: bytes, url: str, *, password: str | None = None,
                 timezone: str | None = None) -> None:
        if not root.startswith(b"/"):
            raise ConfigError(f"the crawl root {display(root)} must be an absolute path "
                              "inside the Chimera namespace")
        self.root = b"/" + root.strip(b"/") if root.strip(b"/") else b"/"
        self.url = _make_url(url, password)
        self.timezone = timezone

    def _where(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def _connect(self):
        try:
            import psycopg
        except ImportError as err:
            raise ConfigError(f"the Chimera database needs psycopg ({err.name}): pip install "
                              "'psycopg[binary]'") from None
        url = self.url
        conn = psycopg.connect(host=url.host, port=url.port, dbname=url.database,
                               user=url.username, password=url.password,
                               connect_timeout=10, **dict(url.query))
        # One snapshot, and never a write, whatever the role could do.
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        return conn

    def walk(self, stats: WalkStats) -> Iterator[Listed]:
        import psycopg

        try:
            conn = self._connect()
        except psycopg.OperationalError as err:
            raise self._failure(err, "unavailable") from None
        try:
            yield from self._walk(conn, stats)
        except psycopg.Error as err:
            raise self._failure(err, "lost mid-listing") from None
        finally:
            conn.close()

    def _failure(self, err: Exception, what: str) -> Exception:
        """Exit 3 (a later crawl may succeed) unless the server said no to who we are or
        what we asked: then it is the configuration (exit 2)."""
        import psycopg

        text = secrets.scrub(" ".join(str(err).split()))
        refused = any(s in text for s in ("authentication failed", "does not exist",
                                          "permission denied", "no password supplied",
                                          "no pg_hba.conf entry"))
        if isinstance(err, psycopg.OperationalError) and not refused:
            return StorageUnavailable(f"Chimera database {self._where()} {what}: {text} "
                                      "(nothing was marked vanished)")
        return ConfigError(f"cannot read the Chimera database {self._where()}: {text}")

    def _walk(self, conn, stats: WalkStats) -> Iterator[Listed]:
        cur = conn.cursor()
        cur.execute("SELECT relname FROM pg_class WHERE relname = ANY(%s) "
                    "AND relkind IN ('r', 'p')", (list(TABLES),))
        found = {_bytes(r[0]).decode() for r in cur.fetchall()}
        missing = [t for t in TABLES if t not in found]
        if missing:
            raise ConfigError(f"{self._where()} is not a Chimera database: no "
                              f"{', '.join(missing)}")
        root = self._resolve(cur)
        cur.execute("SHOW TimeZone")
        zone = self.timezone or _bytes(cur.fetchone()[0]).decode()
        cur.execute(_COUNTS, {"root": root})
        directories, empty = cur.fetchone()
        stats.directories += directories
        stats.empty_directories += empty
        prefix = self.root.rstrip(b"/")
        # A server-side cursor: rows stream in batches, memory stays flat.
        with conn.cursor(name="pnfsmon_chimera_listing") as rows:
            rows.itersize = FETCH
            rows.execute(_ENTRIES, {"root": root, "zone": zone})
            for row in rows:
                item = listed_from_row(prefix, row, stats)
                if item is not None:
                    yield stats.count(item)
        conn.rollback()  # read only: nothing to commit

    def _resolve(self, cur) -> int:
        """The inode number of the crawl root, from the namespace root down its path."""
        cur.execute("SELECT inumber FROM t_inodes WHERE ipnfsid = %s", (ROOT_ID,))
        found = cur.fetchone()
        if found is None:
            raise ConfigError(f"{self._where()} has no namespace root ({ROOT_ID})")
        inumber = found[0]
        for part in (p for p in self.root.split(b"/") if p):
            if part.isascii():
                cur.execute("SELECT d.ichild, i.itype FROM t_dirs d JOIN t_inodes i ON "
                            "i.inumber = d.ichild WHERE d.iparent = %s AND d.iname = %s",
                            (inumber, part.decode()))
                found = cur.fetchone()
            else:  # a name the connection may not send as text: compared here, as bytes
                cur.execute("SELECT d.ichild, i.itype, d.iname FROM t_dirs d JOIN t_inodes i "
                            "ON i.inumber = d.ichild WHERE d.iparent = %s", (inumber,))
                found = next((r[:2] for r in cur if _bytes(r[2]) == part), None)
            if found is None:
                raise ConfigError(f"{display(self.root)} is not in the Chimera namespace "
                                  f"({display(part)} not found)")
            inumber, itype = found
            if itype != DIRECTORY:
                raise ConfigError(f"{display(self.root)} is not a directory in the Chimera "
                                  "namespace")
        return inumber


def _make_url(text: str, password: str | None) -> sa.URL:
    try:
        url = sa.make_url(text)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(f"not a Chimera database URL: {secrets.scrub(text)!r} (expected "
                          "postgresql://ROLE@HOST/chimera)") from None
    if url.get_backend_name() != "postgresql":
        raise ConfigError("the Chimera database is PostgreSQL: use "
                          "postgresql://ROLE@HOST/chimera")
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    secrets.register(url.password)
    if password is not None and url.password is None:
        url = url.set(password=password)
    return url


def password_from(path: str | None) -> str | None:
    """The Chimera password from a file (mode 600), if one is named."""
    path = path or os.environ.get("PNFSMON_CHIMERA_DB_PASSWORD_FILE")
    if not path:
        return None
    password = read_password_file(path, "Chimera")
    secrets.register(password)
    return password
