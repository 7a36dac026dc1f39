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

from crawler.cli import crawl
from schema import db
from schema.config import Settings
from schema.status import Status
from schema.tables import events, statuses
from tests.conftest import SERVERS
from tests.helpers import write_file

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
        r = subprocess.run([sys.executable, "-m", "pnfsmon", "check", "--workers", "2"],
                           env=_env(db_url), capture_output=True, text=True, timeout=300)
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
    r = subprocess.run([sys.executable, "-m", "pnfsmon", "check", "--workers", "2"],
                       env=_env(db_url), capture_output=True, text=True, timeout=300)
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
