"""Faults the monitor must survive without losing or inventing results: a database whose
connections are killed mid-check, and a check killed outright (SIGKILL) whose leases must
expire so that the next run finishes the sweep with every file judged exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from pnfsmon.crawler.crawl import crawl
from pnfsmon.schema import db, migrate
from pnfsmon.schema.config import Settings
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import events, statuses
from tests.helpers import (
    SERVERS,
    create_database_when_up,
    free_port,
    open_path_to,
    pnfsmon,
    write_file,
)

FILES = 6000


def _env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")}
    env["PNFSMON_DB"] = url
    return env


def _counts(engine) -> tuple[int, int, int]:
    """(files ok, events, rows still leased)."""
    with engine.connect() as conn:
        ok = conn.execute(sa.select(sa.func.count()).where(
            statuses.c.status == int(Status.OK))).scalar()
        n_events = conn.execute(sa.select(sa.func.count()).select_from(events)).scalar()
        leased = conn.execute(sa.select(sa.func.count()).where(
            statuses.c.tag.is_not(None))).scalar()
    return ok, n_events, leased


@pytest.fixture
def small_files(engine, tree):
    for i in range(FILES):
        write_file(tree / f"d{i // 500}" / f"f{i}", b"%d" % i * 100)
    crawl(engine, os.fsencode(tree), "s")
    return tree


def test_database_connections_killed_mid_check(db_url, engine, small_files):
    """KILL CONNECTION on every worker connection, repeatedly, while a check runs. Workers
    reconnect with bounded backoff; if the kills outlast the backoff, the check exits 3
    (retry later) and, once its leases expire, the next run finishes. Either way no result
    is lost and none is recorded twice."""
    if engine.dialect.name not in ("mysql", "mariadb"):
        pytest.skip("KILL CONNECTION is MariaDB's")
    database = engine.url.database
    admin = sa.create_engine(SERVERS["mariadb"], isolation_level="AUTOCOMMIT")
    proc = subprocess.Popen([sys.executable, "-m", "pnfsmon", "check", "--workers", "2",
                             "--lease", "4", "--timeout", "2"],
                            env=_env(db_url), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    killed = 0
    stop = threading.Event()

    def killer() -> None:
        nonlocal killed
        with admin.connect() as conn:
            while not stop.is_set():
                ids = conn.exec_driver_sql(
                    "SELECT id FROM information_schema.processlist WHERE db = %s "
                    "AND id <> CONNECTION_ID()", (database,)).scalars().all()
                for pid in ids:
                    try:
                        conn.exec_driver_sql(f"KILL CONNECTION {int(pid)}")
                        killed += 1
                    except sa.exc.DBAPIError:
                        pass  # it ended by itself in the meantime
                time.sleep(0.4)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        stop.set()
        thread.join()
        admin.dispose()
    assert killed > 0
    assert proc.returncode in (0, 3), err
    if proc.returncode == 3:  # gave up: one clear line, and the rest is only delayed
        assert "unavailable" in err.strip().splitlines()[-1] and "Traceback" not in err
        ok, n_events, _ = _counts(engine)
        assert n_events == ok  # what was recorded, was recorded once
        time.sleep(4.5)  # its leases expire
        r = pnfsmon("check", "--workers", "2", env={"PNFSMON_DB": db_url})
        assert r.returncode == 0, r.stderr
    assert _counts(engine) == (FILES, FILES, 0)


def test_sigkill_loses_nothing_once_leases_expire(db_url, engine, small_files):
    """SIGKILL the whole check part-way (no handler runs); after the leases expire a new
    check finishes the sweep: every file ok, exactly one recorded check per file."""
    proc = subprocess.Popen([sys.executable, "-m", "pnfsmon", "check", "--workers", "2",
                             "--lease", "3", "--timeout", "2"],
                            env=_env(db_url), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _counts(engine)[1] < 200:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # parent and workers, mid-batch
    proc.wait(timeout=30)
    ok, n_events, leased = _counts(engine)
    assert 0 < ok < FILES and n_events == ok
    time.sleep(3.5)  # the dead workers' leases expire
    r = pnfsmon("check", "--workers", "2", env={"PNFSMON_DB": db_url})
    assert r.returncode == 0, r.stderr
    assert _counts(engine) == (FILES, FILES, 0)
    engine.dispose()


def test_retrying_gives_up_with_the_transient_exit_code():
    """A database that stays away ends the work with exit code 3 (retry later)."""
    engine = db.create_engine(Settings("mysql+pymysql://root@127.0.0.1:1/none"))
    calls = []

    def attempt():
        calls.append(1)
        with engine.connect():
            pass

    with pytest.raises(db.DatabaseUnavailable) as info:
        db.retrying(engine, attempt, attempts=3, first_delay=0.01)
    assert len(calls) == 3 and info.value.exit_code == 3


class PrivateMariaDB:
    """A MariaDB server of the test's own (temporary datadir and port), so it can be
    stopped and started without disturbing the server the other tests use."""

    def __init__(self, base) -> None:
        self.base = base
        # (Outside the ephemeral range: its restarts bind the port again, which a database
        # client's outgoing connection could take meanwhile.)
        self.port = free_port()
        self.url = f"mysql+pymysql://root@127.0.0.1:{self.port}/pnfsmon"
        self.proc: subprocess.Popen | None = None
        base.mkdir(parents=True, exist_ok=True)
        os.chown(base, *_mysql_ids())
        open_path_to(base)
        subprocess.run(["mariadb-install-db", "--no-defaults", "--user=mysql",
                        f"--datadir={base / 'data'}", "--skip-test-db",
                        "--auth-root-authentication-method=normal"],
                       check=True, capture_output=True)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["/usr/sbin/mariadbd", "--no-defaults", "--user=mysql",
             f"--datadir={self.base / 'data'}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.base / 'sock'}",
             "--skip-grant-tables", "--innodb-buffer-pool-size=64M",
             f"--log-error={self.base / 'error.log'}"])
        create_database_when_up(self.url.rsplit("/", 1)[0] + "/", "pnfsmon")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # a clean shutdown, as a restart by an admin does
            self.proc.wait(timeout=60)
            self.proc = None


def _mysql_ids() -> tuple[int, int]:
    import pwd

    user = pwd.getpwnam("mysql")
    return user.pw_uid, user.pw_gid


@pytest.fixture
def private_mariadb(tmp_path):
    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/mariadbd"):
        if os.environ.get("CI"):
            pytest.fail("needs root and mariadb-server to run a private MariaDB")
        pytest.skip("needs root and mariadb-server to run a private MariaDB")
    server = PrivateMariaDB(tmp_path / "mariadb")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_mariadb_restarted_mid_check(private_mariadb, tree):
    """The database server itself goes down for a few seconds and comes back while a check
    runs: workers reconnect with bounded backoff and finish; every file is judged exactly
    once and nothing stays leased."""
    engine = db.create_engine(Settings(private_mariadb.url))
    migrate.upgrade(engine)
    for i in range(3000):
        write_file(tree / f"d{i // 500}" / f"f{i}", b"%d" % i * 100)
    crawl(engine, os.fsencode(tree), "s")
    proc = subprocess.Popen([sys.executable, "-m", "pnfsmon", "check", "--workers", "2",
                             "--lease", "20", "--timeout", "2"],
                            env=_env(private_mariadb.url), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _counts(engine)[1] < 300:  # really working
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        engine.dispose()
        private_mariadb.stop()
        time.sleep(3)
        private_mariadb.start()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert _counts(engine) == (3000, 3000, 0)
    engine.dispose()
