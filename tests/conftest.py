"""Test fixtures. Every DB-touching test runs against each available real backend:
SQLite always, MariaDB (127.0.0.1:3306) and PostgreSQL (127.0.0.1:5432) in a fresh database
created for the test session and dropped after it. Set PNFSMON_TEST_BACKENDS (e.g.
"sqlite,mariadb") to choose; a backend that was asked for and is down fails the run."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import BACKENDS, DB_SECRET, SERVERS, drop_all

from pnfsmon.schema import db, migrate
from pnfsmon.schema.config import Settings


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path):
    """Keep the operator's settings out of the tests (borg's conftest does the same)."""
    for name in list(os.environ):
        if name.startswith("PNFSMON_") and not name.startswith("PNFSMON_TEST"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="session")
def server_databases():
    """One fresh database per server backend for the whole session; dropped at the end."""
    created: dict[str, str] = {}
    engines = {}
    for backend in SERVERS:
        if backend not in BACKENDS:
            continue
        name = f"pnfsmon_test_{uuid.uuid4().hex[:10]}"
        admin_url = SERVERS[backend] + ("" if backend == "mariadb" else "postgres")
        engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
        except sa.exc.OperationalError as err:
            pytest.exit(f"{backend} is not reachable ({err.orig}); start it (.ci/run does) "
                        "or leave it out of PNFSMON_TEST_BACKENDS", returncode=3)
        engines[backend] = engine
        created[backend] = SERVERS[backend] + name
    yield created
    for backend, engine in engines.items():
        name = created[backend].rsplit("/", 1)[1]
        with engine.connect() as conn:
            if backend == "postgresql":
                conn.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
            if backend == "mariadb":  # the crawls' staging database (crawler.staging)
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}_stage")
        engine.dispose()


def pytest_xdist_auto_num_workers(config):
    """Two test processes per core: a test spends most of its time waiting on a process it
    started, a database server or a FUSE mount, not on the CPU (on 2 cores: 6 min 46 s with
    2 workers, 5 min 21 s with 4, the same tests passing)."""
    return 2 * (os.cpu_count() or 1)


def pytest_report_header(config):
    return f"pnfs-monitor database backends: {', '.join(BACKENDS)}"


def pytest_collection_modifyitems(config, items):
    """Tests that need a server through a fixture of their own carry its marker too."""
    for item in items:
        if "mariadb_with_password" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.mariadb)


def pytest_generate_tests(metafunc):
    if "db_url" in metafunc.fixturenames:
        # Each server case carries its marker: `-m "not mariadb"` deselects exactly those.
        metafunc.parametrize("db_url", [
            pytest.param(b, marks=getattr(pytest.mark, b)) if b in SERVERS else b
            for b in BACKENDS], indirect=True)


@pytest.fixture
def db_url(request, tmp_path, server_databases):
    """A URL to an empty, initialised database of the parametrised backend."""
    backend = request.param
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'pnfsmon.sqlite'}"
    else:
        url = server_databases[backend]
        drop_all(url)
    engine = db.create_engine(Settings(url))
    migrate.upgrade(engine)
    engine.dispose()
    yield url


@pytest.fixture
def engine(request, db_url):
    eng = db.create_engine(Settings(db_url))
    yield eng
    if "hand_written_rows" not in request.keywords:
        assert_ledger_exact(eng)
    eng.dispose()


def assert_ledger_exact(engine) -> None:
    """The status_counts and check_ages ledgers say what a scan of statuses says: every
    test that writes through pnfs-monitor's code checks this on its way out."""
    from pnfsmon.schema import ages, counts

    with engine.connect() as conn:
        assert counts.totals(conn).as_dict() == counts.scan(conn).as_dict()
        assert ages.as_dict(ages.totals(conn)) == ages.as_dict(ages.scan(conn))


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "storage"
    root.mkdir()
    return root


@pytest.fixture(scope="session")
def xrootd(tmp_path_factory):
    """A real XRootD server for the session, exporting ``xrootd.data``. CI must have one
    (``.ci/run`` installs it), so there a missing server fails instead of skipping."""
    import xrootd_server

    why = xrootd_server.available()
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    base = tmp_path_factory.mktemp("xrootd")
    server = xrootd_server.XRootDServer(base / "data", base / "work").start()
    yield server
    server.stop()


@pytest.fixture
def served(xrootd, request):
    """A fresh directory on the session's XRootD server, for one test; removed after it."""
    top = xrootd.data / request.node.name.replace("[", "_").replace("]", "")
    top.mkdir()
    yield top
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def dcache(tmp_path):
    """Mount the FUSE dCache emulator (``tests/dcache_fuse.py``) over a backing tree:
    ``dcache(backing, delay=..., overrides=..., hang=..., name=...)`` returns the started
    mount (``name``: its directory, to mount the same tree at the same place again); every
    mount is unmounted when the test ends, whatever happened. CI must have FUSE (.ci/run
    installs it): there a missing FUSE fails instead of skipping."""
    import dcache_fuse

    why = dcache_fuse.available()
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    mounts = []

    def mount(backing, *, name: str | None = None, **options):
        where = tmp_path / (name or f"mnt{len(mounts)}")
        m = dcache_fuse.DcacheMount(backing, where, **options)
        mounts.append(m)
        return m.start()

    yield mount
    for m in mounts:
        m.stop()
        assert not os.path.ismount(m.root)


@pytest.fixture
def sqlite_engine(tmp_path):
    """An initialised SQLite database, for tests about storage rather than the database."""
    eng = db.create_engine(Settings(f"sqlite:///{tmp_path / 'pnfsmon.sqlite'}"))
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def mariadb_with_password(server_databases):
    """A fresh MariaDB database and a user that needs a password, as a site would have."""
    if "mariadb" not in server_databases:
        pytest.skip("MariaDB not among the test backends")
    name = f"pnfsmon_job_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(SERVERS["mariadb"], isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
        conn.exec_driver_sql(f"CREATE USER '{name}'@'%%' IDENTIFIED BY '{DB_SECRET}'")
        conn.exec_driver_sql(f"GRANT ALL ON {name}.* TO '{name}'@'%%'")
    host = sa.make_url(SERVERS["mariadb"]).host
    yield f"mysql+pymysql://{name}@{host}/{name}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE {name}")
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}_stage")  # a re-crawl's
        conn.exec_driver_sql(f"DROP USER '{name}'@'%%'")
    admin.dispose()


@pytest.fixture(scope="session")
def rucio(tmp_path_factory):
    """A real Rucio server for the session (``tests/rucio_server.py``). CI must have one
    (``.ci/run`` builds its virtualenv), so there a missing server fails instead of
    skipping."""
    import rucio_server

    why = rucio_server.available()
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    server = rucio_server.RucioServer(tmp_path_factory.mktemp("rucio")).start()
    yield server
    server.stop()
