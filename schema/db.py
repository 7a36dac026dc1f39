"""The database connection: engines tuned per backend (SQLite embedded default, MariaDB/MySQL
in production, PostgreSQL where dCache already runs it), schema creation and version checks,
and the classification of errors into "fix your config" and "try again later"."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy import event, exc

from pnfsmon.schema import migrate
from pnfsmon.schema.config import Settings
from pnfsmon.schema.errors import (
    ConfigError,
    DatabaseUnavailable,
    PrivilegeError,
    SchemaError,
)
from pnfsmon.schema.secrets import scrub

T = TypeVar("T")

# MySQL/MariaDB client and server codes after which retrying makes sense: server gone,
# connection lost or refused, lock wait timeout, deadlock, too many connections.
_TRANSIENT_MYSQL_CODES = {1040, 1205, 1213, 2002, 2003, 2006, 2013, 2055, 1927, 4031}
# PostgreSQL SQLSTATEs after which the whole transaction may be run again: deadlock
# detected, serialization failure (the server rolled the transaction back).
_TRANSIENT_SQLSTATES = {"40P01", "40001"}
#: Seconds to connect (and, for MySQL, to read the server's greeting); ?connect_timeout=S
#: in the URL overrides it.
CONNECT_TIMEOUT = 10
URL_FORMS = ("sqlite:///FILE, mysql+pymysql://USER@HOST/DB or "
             "postgresql+psycopg://USER@HOST/DB")


def parse_url(text: str) -> sa.URL:
    """A database URL, or ConfigError saying what one looks like."""
    try:
        return sa.make_url(text)
    except (exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(
            f"not a database URL: {scrub(text)!r} "
            "(expected e.g. sqlite:///pnfsmon.sqlite or mysql+pymysql://user@host/db)"
        ) from None


#: The URL parameters each driver takes for TLS (SQLAlchemy passes them on): the CA, the
#: client certificate and key. PyMySQL verifies the server and its name once a CA is given.
_TLS_PARAMETERS = {
    "mysql": {"ca": "ssl_ca", "cert": "ssl_cert", "key": "ssl_key"},
    "postgresql": {"ca": "sslrootcert", "cert": "sslcert", "key": "sslkey"},
}
TLS_FILE_PARAMETERS = tuple(p for names in _TLS_PARAMETERS.values() for p in names.values())


def with_tls(url: sa.URL, tls: dict[str, str]) -> sa.URL:
    """``url`` with the configuration's TLS files (``db_ssl_ca`` ...) as its parameters,
    where the URL does not set them itself; PostgreSQL then verifies the server in full."""
    backend = "mysql" if url.get_backend_name() in ("mysql", "mariadb") else \
        url.get_backend_name()
    names = _TLS_PARAMETERS.get(backend)
    if not tls or names is None:
        return url
    query = dict(url.query)
    for key, path in tls.items():
        query.setdefault(names[key], path)
    if backend == "postgresql":
        query.setdefault("sslmode", "verify-full")
    return url.set(query=query)


def _make_url(settings: Settings) -> sa.URL:
    url = with_tls(parse_url(settings.db_url), settings.tls)
    if (settings.db_password is not None and url.password is None
            and url.get_backend_name() != "sqlite"):
        url = url.set(password=settings.db_password)
    return url


def _tune_sqlite(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy's "begin" event (below) issue BEGIN, so writers can ask for
        # BEGIN IMMEDIATE and never hit a lock upgrade deadlock between processes.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get("write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_engine(settings: Settings) -> sa.Engine:
    """An engine for the configured database; raises ConfigError for a bad URL or driver."""
    url = _make_url(settings)
    try:
        return _engine(url)
    except exc.ArgumentError as err:
        raise ConfigError(f"bad database URL {scrub(settings.db_url)!r}: {err}") from None


def bulk_loading(engine: sa.Engine) -> sa.Engine:
    """For MariaDB/MySQL, a second engine to the same database whose connections may send
    ``LOAD DATA LOCAL INFILE`` (the crawl's staging loads); the same engine elsewhere.
    Only the crawler's writer connections get this: with it, the server may ask the
    client for a local file, so the workers' and reports' connections never have it."""
    if engine.url.get_backend_name() not in ("mysql", "mariadb"):
        return engine
    return _engine(engine.url, local_infile=True)


def _engine(url: sa.URL, *, local_infile: bool = False) -> sa.Engine:
    backend = url.get_backend_name()
    kwargs: dict = {"pool_pre_ping": True}
    # A URL's own ?connect_timeout=S wins (connect_args would override it).
    timeout = {} if "connect_timeout" in url.query else {"connect_timeout": CONNECT_TIMEOUT}
    if backend in ("mysql", "mariadb"):
        kwargs.update(
            pool_recycle=3600,
            isolation_level="READ COMMITTED",
            connect_args={**timeout, "charset": "utf8mb4",
                          **({"local_infile": True} if local_infile else {})},
        )
    elif backend == "postgresql":
        kwargs.update(isolation_level="READ COMMITTED", connect_args=timeout)
    elif backend != "sqlite":
        raise ConfigError(f"unsupported database {backend!r}: use {URL_FORMS}")
    try:
        engine = sa.create_engine(url, **kwargs)
    except ImportError as err:
        raise ConfigError(_driver_hint(url, err.name)) from None
    if backend == "sqlite":
        _tune_sqlite(engine)
    elif backend in ("mysql", "mariadb") and url.get_driver_name() == "pymysql":
        _bound_mysql_handshake(engine)
    return engine


def _driver_hint(url: sa.URL, module: str | None) -> str:
    """What to write instead, when a URL names a driver that is not installed: the drivers
    pnfs-monitor installs are PyMySQL, and psycopg with the ``postgresql`` extra."""
    missing = f"the driver for {url.drivername} is not installed ({module})"
    if url.get_backend_name() == "postgresql":
        if url.get_driver_name() == "psycopg":
            return f"{missing}: pip install 'pnfs-monitor[postgresql]'"
        return f"{missing}: write postgresql+psycopg://USER@HOST/DB (pip install " \
               "'pnfs-monitor[postgresql]')"
    return f"{missing}: write mysql+pymysql://USER@HOST/DB (PyMySQL comes with pnfs-monitor)"


def _bound_mysql_handshake(engine: sa.Engine) -> None:
    """PyMySQL's ``connect_timeout`` bounds only the TCP connect; the server's greeting is
    then awaited with the read timeout, which is unbounded (so that long queries may run).
    A port that accepts and never speaks MySQL would hang the command for ever: read the
    handshake under the connect timeout, and lift it once connected."""

    @event.listens_for(engine, "do_connect")
    def _connect(dialect, _record, cargs, cparams):
        handshake = cparams.get("connect_timeout", CONNECT_TIMEOUT)
        conn = dialect.loaded_dbapi.connect(*cargs, **{**cparams, "read_timeout": handshake})
        conn._read_timeout = cparams.get("read_timeout")  # re-read before every packet
        return conn


def is_transient(err: BaseException) -> bool:
    """True for errors that a later retry may not see: lost connections, lock timeouts,
    deadlocks and serialization failures (MariaDB 1213, PostgreSQL 40P01 and 40001)."""
    if "certificate verify failed" in str(err).lower():
        return False  # the server is not who the CA says: a retry will not change that
    if isinstance(err, exc.DBAPIError) and err.connection_invalidated:
        return True
    if not isinstance(err, exc.OperationalError | exc.InterfaceError):
        return False
    orig = getattr(err, "orig", None)
    if getattr(orig, "sqlstate", None) in _TRANSIENT_SQLSTATES:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in _TRANSIENT_MYSQL_CODES
    text = str(orig).lower()
    return any(
        s in text
        for s in ("database is locked", "could not connect", "connection refused",
                  "server closed the connection", "terminating connection", "timeout")
    )


def is_refused(err: BaseException) -> bool:
    """True when the database refused an operation for want of privileges."""
    if not isinstance(err, exc.DBAPIError):
        return False
    args = getattr(err.orig, "args", ())
    if args and isinstance(args[0], int):
        # MariaDB/MySQL: database, table, column or command denied; "needs the X privilege"
        return args[0] in (1044, 1142, 1143, 1227, 1370)
    return getattr(err.orig, "sqlstate", None) == "42501"  # PostgreSQL insufficient_privilege


def describe(err: BaseException) -> str:
    """One line from a DB error, never including the URL's password."""
    orig = getattr(err, "orig", None) or err
    line = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return scrub(line)


def unavailable(engine: sa.Engine, err: BaseException) -> DatabaseUnavailable:
    where = engine.url.render_as_string(hide_password=True)
    return DatabaseUnavailable(f"database {where} unavailable: {describe(err)}")


def retrying(
    engine: sa.Engine,
    operation: Callable[[], T],
    *,
    attempts: int = 6,
    first_delay: float = 0.5,
    max_delay: float = 30.0,
) -> T:
    """Run ``operation`` (a whole transaction), retrying transient DB errors with bounded
    exponential backoff; raise DatabaseUnavailable (exit code 3) when they persist."""
    delay = first_delay
    for attempt in range(attempts):
        try:
            return operation()
        except exc.DBAPIError as err:
            if not is_transient(err):
                raise
            if attempt == attempts - 1:
                raise unavailable(engine, err) from None
            time.sleep(delay)
            delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A read-write transaction; on SQLite it takes the write lock up front."""
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        yield conn


def insert_batch(engine: sa.Engine, table: sa.Table, rows: list[dict],
                 batch_of: sa.ColumnElement[bool], stored: int) -> None:
    """Insert ``rows`` into ``table`` in one transaction, retried as ``retrying`` does.
    ``batch_of`` selects the rows of their load (or compare), ``stored`` of which are
    there before this batch. A retry after a commit whose answer was lost finds them all
    there and stops: the batch is stored once, not twice, nor refused as its own copy."""
    attempts = 0

    def run() -> None:
        nonlocal attempts
        attempts += 1
        with write_transaction(engine) as conn:
            if attempts > 1 and conn.execute(
                    sa.select(sa.func.count()).select_from(table).where(batch_of)
            ).scalar() == stored + len(rows):
                return
            conn.execute(table.insert(), rows)

    retrying(engine, run)


def open_database(settings: Settings, *, check: bool = True) -> sa.Engine:
    """An engine that has connected once (so a bad host fails here, clearly) and whose
    schema has been checked."""
    engine = create_engine(settings)
    database = engine.url.database
    # Which database, and why this one: a misspelt configuration that falls back to the
    # default SQLite file must not look like a missing schema to create there.
    from_where = f" [database from {settings.db_source}]"
    if (check and engine.url.get_backend_name() == "sqlite" and database
            and database != ":memory:" and not os.path.exists(database)):
        raise SchemaError(f"no database file {database}{from_where}: run `pnfsmon db init` "
                          "to create it")
    try:
        if check:
            with engine.connect() as conn:
                try:
                    migrate.check(conn)
                except SchemaError as err:
                    raise SchemaError(f"{err}{from_where}") from None
        else:
            with engine.connect():
                pass
    except exc.DBAPIError as err:
        if is_transient(err):
            raise unavailable(engine, err) from None
        if is_refused(err):
            raise PrivilegeError(describe(err)) from None
        where = engine.url.render_as_string(hide_password=True)
        why = describe(err)
        if is_login_refused(err) and settings.password_source:
            why += f" (the password came from {settings.password_source})"
        if (is_login_refused(err) and engine.dialect.name in ("mysql", "mariadb")
                and "ssl_ca" not in engine.url.query):
            # MariaDB refuses a plain login to a TLS-only server as "access denied".
            why += ("; if the server accepts only encrypted connections, name its CA "
                    "(ssl_ca= in the URL, or db_ssl_ca = in the configuration)")
        raise ConfigError(f"cannot use database {where}: {why}") from None
    return engine


def is_login_refused(err: BaseException) -> bool:
    """True when the server refused the login (wrong user or password)."""
    orig = getattr(err, "orig", None)
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0] == 1045  # MariaDB/MySQL: access denied for user
    return getattr(orig, "sqlstate", None) in ("28P01", "28000") or (
        "password authentication failed" in str(orig))
