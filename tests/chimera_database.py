"""A Chimera database in the real PostgreSQL, for tests and benchmarks: dCache's tables
(``tests/chimera_schema.sql``) in a fresh database created ``SQL_ASCII`` (so names keep any
bytes, as dCache stores what clients send) with its timestamps in UTC, filled from a
backing tree as dCache would have it: every directory and file of the tree below a
namespace path (the path a mount of it has), sizes and mtimes, Adler32 checksums, pools
and tape copies."""

from __future__ import annotations

import datetime as dt
import os
import uuid
import zlib
from pathlib import Path

import psycopg

SCHEMA = Path(__file__).resolve().parent / "chimera_schema.sql"
ADMIN = os.environ.get("PNFSMON_TEST_CHIMERA_ADMIN",
                       "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
NOW = dt.datetime(2026, 1, 1)


def _adler32(path: Path) -> str:
    value = 1
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            value = zlib.adler32(chunk, value)
    return f"{value & 0xFFFFFFFF:08x}"


class ChimeraDatabase:
    def __init__(self) -> None:
        self.name = f"chimera_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {self.name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' "
                          "LC_CTYPE 'C' TEMPLATE template0")
            admin.execute(f"ALTER DATABASE {self.name} SET timezone TO 'UTC'")
        self.dsn = ADMIN.replace("dbname=postgres", f"dbname={self.name}")
        self.url = f"postgresql://postgres@127.0.0.1:5432/{self.name}"
        with psycopg.connect(self.dsn) as conn:
            conn.execute(SCHEMA.read_text())
        self._pnfsids = 2

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn)

    def _inode(self, cur, itype: int, size: int, mtime_ns: int) -> int:
        self._pnfsids += 1
        mtime = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=mtime_ns // 1000)
        cur.execute(
            "INSERT INTO t_inodes (ipnfsid, itype, imode, inlink, iuid, igid, isize, iio, "
            "ictime, iatime, imtime, icrtime, igeneration) VALUES (%s, %s, 420, 1, 0, 0, %s, 0,"
            " %s, %s, %s, %s, 0) RETURNING inumber",
            (f"0000{self._pnfsids:032X}", itype, size, NOW, NOW, mtime, NOW))
        return cur.fetchone()[0]

    @staticmethod
    def _link(cur, parent: int, child: int, name: bytes) -> None:
        # The connection's encoding is SQL_ASCII: names go as bytes, stored as they are.
        cur.execute("INSERT INTO t_dirs (iparent, ichild, iname) VALUES "
                    "(%s, %s, convert_from(%s, 'SQL_ASCII'))", (parent, child, name))

    def directory(self, cur, path: bytes) -> int:
        """The inode of ``path`` (absolute, in the namespace), made as needed."""
        cur.execute("SELECT inumber FROM t_inodes WHERE ipnfsid = %s", ("0" * 36,))
        inumber = cur.fetchone()[0]
        for part in (p for p in path.split(b"/") if p):
            cur.execute("SELECT ichild FROM t_dirs WHERE iparent = %s AND "
                        "iname = convert_from(%s, 'SQL_ASCII')", (inumber, part))
            row = cur.fetchone()
            if row is None:
                child = self._inode(cur, 16384, 512, 0)
                self._link(cur, inumber, child, part)
                inumber = child
            else:
                inumber = row[0]
        return inumber

    def add_tree(self, backing: Path, namespace_path: bytes, *,
                 pools: dict[bytes, list[str]] | None = None,
                 tape_only: set[bytes] = frozenset(),
                 checksums: dict[bytes, str | None] | None = None) -> int:
        """Every directory and file below ``backing`` as ``namespace_path``; files are on
        pool ``pool_a`` unless ``pools`` says otherwise (keys: paths relative to backing),
        only on tape if in ``tape_only``, with their true Adler32 unless ``checksums``
        says otherwise (None: none recorded). Symlinks become Chimera links (itype
        40960). Returns the number of files."""
        pools, checksums = pools or {}, checksums or {}
        files = 0
        base = os.fsencode(backing)
        with self.connect() as conn, conn.cursor() as cur:
            top = self.directory(cur, namespace_path)
            inodes = {b"": top}
            for dirpath, dirnames, filenames in os.walk(base):
                rel_dir = os.path.relpath(dirpath, base) if dirpath != base else b""
                parent = inodes[rel_dir]
                for name in sorted(dirnames):
                    full = os.path.join(dirpath, name)
                    rel = os.path.join(rel_dir, name) if rel_dir else name
                    if os.path.islink(full):
                        self._link(cur, parent, self._inode(cur, 40960, 0, 0), name)
                        continue
                    child = self._inode(cur, 16384, 512, os.lstat(full).st_mtime_ns)
                    self._link(cur, parent, child, name)
                    inodes[rel] = child
                for name in sorted(filenames):
                    full = os.path.join(dirpath, name)
                    rel = os.path.join(rel_dir, name) if rel_dir else name
                    st = os.lstat(full)
                    if not os.path.isfile(full) or os.path.islink(full):
                        self._link(cur, parent, self._inode(cur, 40960, 0, 0), name)
                        continue
                    inumber = self._inode(cur, 32768, st.st_size, st.st_mtime_ns)
                    self._link(cur, parent, inumber, name)
                    files += 1
                    value = checksums.get(rel, _adler32(Path(os.fsdecode(full))))
                    if value is not None:
                        cur.execute("INSERT INTO t_inodes_checksum VALUES (%s, 1, %s)",
                                    (inumber, value))
                    locations = ([] if rel in tape_only else pools.get(rel, ["pool_a"]))
                    for pool in locations:
                        cur.execute("INSERT INTO t_locationinfo VALUES (%s, 1, 10, %s, %s, 1,"
                                    " %s)", (inumber, NOW, NOW, pool))
                    if rel in tape_only:
                        cur.execute("INSERT INTO t_locationinfo VALUES (%s, 0, 10, %s, %s, 1,"
                                    " %s)", (inumber, NOW, NOW, "osm://osm/?store=cms&bfid=1"))
        return files

    def drop(self) -> None:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                          f"datname = '{self.name}' AND pid <> pg_backend_pid()")
            admin.execute(f"DROP DATABASE IF EXISTS {self.name}")
