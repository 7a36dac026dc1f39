"""The per-crawl staging table: a crawl streams its listing into ``crawl_stage_<crawl id>``
(no secondary index while it loads) by each backend's fastest bulk path, so that the
database, not Python, compares it with ``statuses`` (``crawler.ingest``).

Bulk paths: PostgreSQL ``COPY``; MariaDB/MySQL ``LOAD DATA LOCAL INFILE`` from a small
temporary file per chunk where the server allows it (and the configuration does not say
``mysql_local_infile = no``), else multi-row INSERTs with hex literals (PyMySQL's
per-value escaping costs more than the statement); SQLite ``executemany``.

A staging table belongs to its crawl only: named by the crawl's id, it is dropped when the
crawl ends; one left by a crawl that died is ignored by every later crawl and dropped by
the next crawl or ``pnfsmon db prune`` once it is old.

Where staging tables live is a matter of privileges (``schema.grants``): the crawler's
account creates and drops them, and must not be able to drop anything else. On
MariaDB/MySQL a DROP privilege covers a whole database, so they live in a database of their
own beside the monitor's, ``<database>_stage`` (the crawler creates it if it is missing).
On PostgreSQL only a table's owner may drop it, so they stay in the monitor's schema."""

from __future__ import annotations

import logging
import re
import tempfile
import time
from binascii import hexlify

import sqlalchemy as sa

from pnfsmon.schema.durations import DAY
from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.grants import STAGE_SUFFIX
from pnfsmon.schema.tables import HashBytes, crawls

log = logging.getLogger(__name__)

PREFIX = "crawl_stage_"
STALE_AFTER = DAY  # a crawl that has not finished in a day has died
_HEX8 = re.compile(r"[0-9a-f]{8}")
# The server's or client's refusal of LOAD DATA LOCAL INFILE: not allowed with this
# version/configuration (1148), local_infile off (3948, 4166), client side (2068).
_LOCAL_INFILE_REFUSED = {1148, 2068, 3948, 4166}
COLUMNS = ("seq", "path_hash", "size", "mtime_ns", "recorded_adler32", "pool", "nearline")
_TSV_NULL = b"\\N"  # LOAD DATA's NULL


def stage_schema(engine: sa.Engine) -> str | None:
    """The database (MariaDB/MySQL) that holds the staging tables; None: the monitor's own."""
    if engine.dialect.name in ("mysql", "mariadb") and engine.url.database:
        return f"{engine.url.database}{STAGE_SUFFIX}"
    return None


def stage_table(crawl_id: int, schema: str | None = None) -> sa.Table:
    """The staging table of crawl ``crawl_id``: one row per listed file, ``seq`` its place
    in the listing, with what the comparison with ``statuses`` needs (no path: the few new
    files are inserted with theirs by the crawler, which holds them)."""
    return sa.Table(
        f"{PREFIX}{int(crawl_id)}", sa.MetaData(schema=schema),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("path_hash", HashBytes, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("recorded_adler32", sa.String(8)),
        sa.Column("pool", sa.String(255)),
        sa.Column("nearline", sa.Boolean, nullable=False),  # to be parked as nearline
    )


#: One staged row, in ``COLUMNS`` order.
Row = tuple


class Stage:
    def __init__(self, engine: sa.Engine, crawl_id: int, *, local_infile: bool = False
                 ) -> None:
        self.engine = engine
        self.schema = stage_schema(engine)
        self.table = stage_table(crawl_id, self.schema)
        self.name = self.table.name
        # As raw SQL names it (schema-qualified and quoted where needed).
        self.qualified = engine.dialect.identifier_preparer.format_table(self.table)
        self.local_infile = local_infile  # the connections may LOAD DATA LOCAL INFILE

    def create(self) -> None:
        with self.engine.begin() as conn:
            if self.schema is not None:
                quoted = conn.dialect.identifier_preparer.quote_identifier(self.schema)
                conn.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS {quoted}")
            self.table.create(conn)

    def index(self) -> None:
        """Index the hashes once everything is loaded (a sorted bulk build, not row by
        row), for the anti-join that finds vanished files; with the size, which tells an
        unchanged directory's row (-1) from a file's without reading the row."""
        with self.engine.begin() as conn:
            sa.Index(f"ix_{self.name}_hash", self.table.c.path_hash,
                     self.table.c.size).create(conn)

    def drop(self) -> None:
        with self.engine.begin() as conn:
            self.table.drop(conn, checkfirst=True)

    def load(self, conn: sa.Connection, rows: list[Row]) -> None:
        """Add ``rows`` in ``conn``'s transaction."""
        dialect = conn.dialect.name
        if dialect == "postgresql":
            self._copy(conn, rows)
        elif dialect in ("mysql", "mariadb"):
            if not (self.local_infile and self._load_data(conn, rows)):
                self._insert_hex(conn, rows)
        else:
            conn.execute(self.table.insert(), [dict(zip(COLUMNS, r, strict=True)) for r in rows])

    def _copy(self, conn: sa.Connection, rows: list[Row]) -> None:
        cursor = conn.connection.dbapi_connection.cursor()
        with cursor.copy(f"COPY {self.qualified} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def _load_data(self, conn: sa.Connection, rows: list[Row]) -> bool:
        """LOAD DATA LOCAL INFILE; False (and not tried again) if the server refuses."""
        # Every staged file passes here (a re-crawl's writers share the walk's GIL): no
        # call for what is absent, hex digits straight as bytes (half the time of before).
        text = b"".join(
            b"%d\t%s\t%d\t%d\t%s\t%s\t%d\n" % (
                seq, hexlify(digest), size, mtime,
                _TSV_NULL if recorded is None else _tsv_checksum(recorded),
                _TSV_NULL if pool is None else _tsv_text(pool), bool(nearline))
            for seq, digest, size, mtime, recorded, pool, nearline in rows)
        try:
            staged = tempfile.NamedTemporaryFile(prefix="pnfsmon-stage-", suffix=".tsv")  # noqa: SIM115
        except OSError as err:  # a read-only /tmp (systemd ProtectSystem without PrivateTmp)
            raise ConfigError(
                f"no writable temporary directory to stage the listing in ({err}): set "
                "TMPDIR to one, or PrivateTmp=yes in the systemd unit") from None
        with staged as fh:
            fh.write(text)
            fh.flush()
            try:
                conn.exec_driver_sql(
                    f"LOAD DATA LOCAL INFILE %s INTO TABLE {self.qualified} CHARACTER SET binary "
                    "(seq, @hash, size, mtime_ns, recorded_adler32, pool, nearline) "
                    "SET path_hash = UNHEX(@hash)", (fh.name,))
            except sa.exc.DBAPIError as err:
                code = getattr(err.orig, "args", (None,))[0]
                if code not in _LOCAL_INFILE_REFUSED:
                    raise
                log.info("the database refuses LOAD DATA LOCAL INFILE (%s): staging with "
                         "INSERTs instead", err.orig.args[1] if len(err.orig.args) > 1
                         else code)
                self.local_infile = False
                return False
        return True

    def _insert_hex(self, conn: sa.Connection, rows: list[Row]) -> None:
        conn.exec_driver_sql(
            f"INSERT INTO {self.qualified} ({', '.join(COLUMNS)}) VALUES "
            + ",".join(_mysql_values(row) for row in rows))


def mysql_text(value: str | None) -> str:
    """A string as a MariaDB literal, exact whatever it holds (hex, no escaping)."""
    if value is None:
        return "NULL"
    return "X'" + value.encode("utf-8").hex() + "'"


def mysql_checksum(value: str | None) -> str:
    if value is None:
        return "NULL"
    if not _HEX8.fullmatch(value):
        raise ValueError(f"not an Adler32 hex value: {value!r}")
    return f"'{value}'"


def _tsv_checksum(value: str | None) -> bytes:
    return b"\\N" if value is None else mysql_checksum(value)[1:-1].encode()


def _tsv_text(value: str | None) -> bytes:
    if value is None:
        return b"\\N"
    data = value.encode("utf-8")
    for special, escaped in ((b"\\", b"\\\\"), (b"\t", b"\\t"), (b"\n", b"\\n")):
        data = data.replace(special, escaped)
    return data


def _mysql_values(row: Row) -> str:
    seq, digest, size, mtime, recorded, pool, nearline = row
    return (f"({int(seq)},X'{digest.hex()}',{int(size)},{int(mtime)},"
            f"{mysql_checksum(recorded)},{mysql_text(pool)},{int(bool(nearline))})")


def drop_stale(engine: sa.Engine, now: float | None = None) -> list[str]:
    """Drop the staging tables of crawls that finished (their drop failed) or that started
    more than a day ago and never finished (they died). Returns their names."""
    now = time.time() if now is None else now
    schema = stage_schema(engine)
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        if schema is not None and schema not in inspector.get_schema_names():
            return []
        names = [n for n in inspector.get_table_names(schema=schema) if n.startswith(PREFIX)]
        if not names:
            return []
        ids = {int(n[len(PREFIX):]): n for n in names if n[len(PREFIX):].isdigit()}
        alive = set(conn.execute(
            sa.select(crawls.c.id).where(crawls.c.id.in_(list(ids)),
                                         crawls.c.finished.is_(None),
                                         crawls.c.started > now - STALE_AFTER)).scalars())
    dropped = []
    for crawl_id, name in ids.items():
        if crawl_id not in alive:
            with engine.begin() as conn:
                stage_table(crawl_id, schema).drop(conn, checkfirst=True)
            log.info("dropped %s, the staging table of crawl %d, which ended or died",
                     name, crawl_id)
            dropped.append(name)
    return dropped

