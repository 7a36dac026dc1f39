"""A worker never dies on one file: a stat that fails during a check is a verdict on that
file (and the source is closed), a stop request is seen while data flows, and the
database's deadlocks and serialization failures are retried on PostgreSQL as on MariaDB."""

from __future__ import annotations

import errno
import os
import threading
import time

import pytest
import sqlalchemy as sa

from pnfsmon.crawler.crawl import crawl
from pnfsmon.schema import db
from pnfsmon.schema.lease import Lease
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import meta
from pnfsmon.tester.posix_read import PosixFile, PosixReader
from pnfsmon.tester.stream import Streamer
from pnfsmon.tester.worker import CheckOptions, run
from tests.helpers import random_bytes, row, write_file


class FlakyStorage(PosixReader):
    """Real files, with the faults a mount shows: a stale handle on the first stat, a file
    deleted since the claim (ENOENT on stat), a stat that times out after the read, a close
    that fails. Counts the sources it opened and closed."""

    def __init__(self, faults: dict[bytes, str]) -> None:
        self.faults = faults
        self.opened = 0
        self.closed = 0

    def open(self, item):
        source = super().open(item)
        self.opened += 1
        fault = self.faults.get(os.path.basename(item.path))
        stats = {"calls": 0}
        real_current, real_close = source.current, source.close

        def current():
            stats["calls"] += 1
            if fault == "stale" and stats["calls"] == 1:
                raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
            if fault == "deleted" and stats["calls"] == 1:
                os.unlink(item.path)  # really gone: the second stat agrees (missing)
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
            if fault == "stat-timeout" and stats["calls"] == 2:
                raise TimeoutError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))
            return real_current()

        def close():
            self.closed += 1
            real_close()
            if fault == "close-fails":
                raise OSError(errno.EIO, os.strerror(errno.EIO))

        source.current, source.close = current, close
        return source


def test_a_failed_stat_is_a_verdict_and_the_worker_goes_on(engine, tree):
    faults = {b"f1": "stale", b"f2": "deleted", b"f3": "stat-timeout", b"f4": "close-fails"}
    paths = {name: write_file(tree / name, random_bytes(5000 + i, i))
             for i, name in enumerate(["f0", "f1", "f2", "f3", "f4", "f5"])}
    crawl(engine, os.fsencode(tree), "s")
    reader = FlakyStorage(faults)
    tally = run(Lease(engine, lease_seconds=120), reader, CheckOptions(timeout=30))
    assert tally.checked == 6  # every file judged by the one worker, which went on
    assert reader.opened == reader.closed == 6  # every source closed
    got = {name: row(engine, path) for name, path in paths.items()}
    assert got["f1"].status == Status.UNREADABLE and "Stale file handle" in got["f1"].error
    assert got["f1"].error.startswith("stat:")
    assert got["f2"].status == Status.MISSING and got["f2"].error.startswith("stat:")
    assert got["f3"].status == Status.UNREADABLE
    assert got["f3"].error.startswith("stat after reading:")
    for name in ("f0", "f4", "f5"):  # a failed close says nothing about the content
        assert got[name].status == Status.OK, (name, got[name].error)


class Endless:
    """A source that never stalls and never ends: data always flows. After ``stop_after``
    chunks it asks the worker to stop (as SIGTERM's handler would)."""

    def __init__(self, stop: threading.Event, stop_after: int) -> None:
        self.stop, self.stop_after, self.chunks = stop, stop_after, 0

    def readinto(self, buffer: memoryview) -> int:
        self.chunks += 1
        if self.chunks == self.stop_after:
            self.stop.set()
        buffer[:] = b"\0" * len(buffer)
        return len(buffer)

    def close(self) -> None:
        pass


def test_a_stop_request_is_seen_while_data_flows():
    """Today's code looked at the stop flag only when a read stalled: on a file whose data
    keeps coming, a stop waited for the file's end or its deadline."""
    stop = threading.Event()
    chunk = 65536
    streamer = Streamer(chunk)
    result = streamer.checksum(Endless(stop, stop_after=10), time.monotonic() + 20, stop)
    streamer.close()
    assert result.interrupted and not result.timed_out
    # Seen at the next chunk: at most the buffers already filled are checksummed too.
    assert 0 < result.bytes_read <= 14 * chunk, result.bytes_read


def test_a_stop_request_wakes_a_throttled_read(tmp_path):
    path = tmp_path / "big"
    path.write_bytes(os.urandom(4 * 65536))
    stop = threading.Event()
    stop.set()  # asked before the first chunk's pause at 1 kB/s (65 s for a chunk)
    streamer = Streamer(65536, max_rate=1000)
    source = PosixFile(os.fsencode(path))
    result = streamer.checksum(source, time.monotonic() + 600, stop)
    streamer.close()
    assert result.interrupted and result.bytes_read == 65536


def _deadlock(engine) -> tuple[int, list[BaseException]]:
    """Two transactions taking two rows in opposite orders: the server kills one. Both run
    through ``db.retrying``; returns (attempts, errors that escaped)."""
    with engine.begin() as conn:
        conn.execute(meta.delete().where(meta.c.key.in_(["lock_a", "lock_b"])))
        conn.execute(meta.insert(), [{"key": "lock_a", "value": "0"},
                                     {"key": "lock_b", "value": "0"}])
    barrier = threading.Barrier(2, timeout=20)
    attempts = []
    errors: list[BaseException] = []

    def transaction(first: str, second: str) -> None:
        def op() -> None:
            attempts.append(first)
            with db.write_transaction(engine) as conn:
                conn.execute(meta.update().where(meta.c.key == first).values(value=first))
                if len(attempts) <= 2:
                    barrier.wait()  # both hold their first row
                conn.execute(meta.update().where(meta.c.key == second).values(value=first))

        try:
            db.retrying(engine, op, first_delay=0.05)
        except BaseException as err:  # noqa: BLE001 (the test reports it)
            errors.append(err)

    threads = [threading.Thread(target=transaction, args=pair)
               for pair in (("lock_a", "lock_b"), ("lock_b", "lock_a"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(attempts), errors


def test_deadlocks_are_retried(engine):
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer at a time: no deadlock")
    attempts, errors = _deadlock(engine)
    assert errors == [] and attempts == 3  # one of the two was retried, and succeeded


def test_a_serialization_failure_is_transient(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("SERIALIZABLE conflicts as SQLSTATE 40001: PostgreSQL's")
    serializable = engine.execution_options(isolation_level="SERIALIZABLE")
    with serializable.connect() as one, serializable.connect() as two:
        count = sa.select(sa.func.count()).select_from(meta).where(meta.c.key.like("skew%"))
        one.execute(count)
        two.execute(count)
        one.execute(meta.insert().values(key="skew1", value="1"))
        two.execute(meta.insert().values(key="skew2", value="2"))
        one.commit()
        with pytest.raises(sa.exc.OperationalError) as info:
            two.commit()
    assert info.value.orig.sqlstate == "40001"
    assert db.is_transient(info.value)
    with engine.begin() as conn:
        conn.execute(meta.delete().where(meta.c.key.like("skew%")))
