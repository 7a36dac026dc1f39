"""The tester against real files and real databases: every verdict, the events it writes,
first-check references, rewrites that are not corruption, and crashed workers' leases."""

from __future__ import annotations

import os
import threading
import time
import zlib

import pytest
import sqlalchemy as sa

from pnfsmon.crawler.crawl import crawl
from pnfsmon.schema import counts, xrdcks
from pnfsmon.schema.config import Settings
from pnfsmon.schema.lease import Claimed, Lease
from pnfsmon.schema.reference import Reference
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import events, statuses
from pnfsmon.tester.checker import check_file
from pnfsmon.tester.pool import run_workers
from pnfsmon.tester.posix_read import PosixReader
from pnfsmon.tester.stream import Streamer, adler32_hex
from pnfsmon.tester.worker import CheckOptions, run
from tests.helpers import as_nobody, flip_bit, random_bytes, row, verdicts, write_file

NOW_DUE = CheckOptions(timeout=30, recheck_after=0.0)


def sweep(engine, **kw) -> None:
    run(Lease(engine, lease_seconds=120), PosixReader(), CheckOptions(**{
        "timeout": 30, "recheck_after": 0.0, **kw}))


def test_every_verdict_end_to_end(engine, tree):
    data = random_bytes(300_000, seed=1)
    good = write_file(tree / "good.dat", data, record=True)
    rotten = write_file(tree / "rotten.dat", data, record=True)
    truncated = write_file(tree / "truncated.dat", data, record=True)
    gone = write_file(tree / "gone.dat", data, record=True)
    rewritten = write_file(tree / "rewritten.dat", data, record=True)
    wrong = write_file(tree / "wrong-record.dat", data, record=True, record_value="00000001")
    fresh = write_file(tree / "no-record.dat", data)
    crawl(engine, os.fsencode(tree), "s")

    flip_bit(rotten, 123_456)
    st = os.stat(truncated)
    os.truncate(truncated, 1000)
    os.utime(truncated, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.unlink(gone)
    write_file(rewritten, b"new content")  # a legitimate rewrite: a later mtime
    # XrdCks records whole seconds; a rewrite in the same second as the record would look
    # valid to XRootD too. Real rewrites come later: put the mtime a few seconds on.
    st = os.stat(rewritten)
    os.utime(rewritten, ns=(st.st_atime_ns, st.st_mtime_ns + 3_000_000_000))
    sweep(engine)

    assert verdicts(engine) == {
        good: Status.OK, rotten: Status.CORRUPTED, truncated: Status.CORRUPTED,
        gone: Status.MISSING, rewritten: Status.CHANGED, wrong: Status.CORRUPTED,
        fresh: Status.OK,
    }
    r = row(engine, rotten)
    assert r.computed_adler32 != r.recorded_adler32 and r.bytes_read == len(data)
    assert "recorded" in r.error
    assert row(engine, fresh).recorded_from == "first_check"
    assert row(engine, good).worker_node and row(engine, good).checked
    assert row(engine, rewritten).claim_key is None  # waits for the next crawl
    with engine.connect() as conn:
        ev = conn.execute(sa.select(events)).all()
    assert len(ev) == 7
    by_file = {e.file_id: e for e in ev}
    e = by_file[row(engine, good).id]
    assert (e.size, e.bytes_read, e.status) == (len(data), len(data), int(Status.OK))
    assert e.seconds > 0 and e.worker_node

    # The next crawl re-lists the rewritten file and the next check judges its new content.
    crawl(engine, os.fsencode(tree), "s")
    assert row(engine, rewritten).status == Status.UNCHECKED
    sweep(engine)
    assert row(engine, rewritten).status == Status.OK  # the stale xattr was not trusted


def test_first_check_reference_catches_later_rot(engine, tree):
    p = write_file(tree / "f.dat", random_bytes(50_000))
    crawl(engine, os.fsencode(tree), "s")
    sweep(engine)
    reference = row(engine, p).recorded_adler32
    assert row(engine, p).status == Status.OK and reference
    flip_bit(p, 10)
    sweep(engine)
    r = row(engine, p)
    assert r.status == Status.CORRUPTED and r.recorded_adler32 == reference


def test_the_storage_is_asked_again_before_a_first_reading_becomes_the_reference(engine,
                                                                                tree):
    """Listed before the storage recorded its checksum, a file is asked again at its first
    check: the checksum recorded since is the reference, and damage done after it was
    recorded is found. Only a file the storage truly keeps none for takes its first
    reading as reference; and the ledger counts each provenance."""
    late = write_file(tree / "late.dat", random_bytes(20_000, 1))
    never = write_file(tree / "never.dat", random_bytes(20_000, 2))
    crawl(engine, os.fsencode(tree), "s")
    assert {Reference(row(engine, p).reference) for p in (late, never)} == {
        Reference.NONE_KEPT}
    st = os.stat(late)  # the storage computes and records it now (xrdadler32 would)
    os.setxattr(late, xrdcks.XATTR_NAME, xrdcks.encode(adler32_hex(zlib.adler32(
        random_bytes(20_000, 1))), int(st.st_mtime)))
    flip_bit(late, 500)
    sweep(engine)
    r = row(engine, late)
    assert (r.status, r.recorded_from, Reference(r.reference)) == (
        Status.CORRUPTED, "xrdcks", Reference.STORAGE)
    r = row(engine, never)
    assert (r.status, r.recorded_from, Reference(r.reference)) == (
        Status.OK, "first_check", Reference.FIRST_READ)
    assert r.recorded_adler32 == r.computed_adler32
    with engine.connect() as conn:
        references = counts.totals(conn).references
    assert {k: v for k, v in references.items() if v} == {
        ("s", Reference.STORAGE): 1, ("s", Reference.FIRST_READ): 1}


def test_recheck_after_is_respected(engine, tree):
    p = write_file(tree / "f.dat", b"x" * 10)
    crawl(engine, os.fsencode(tree), "s")
    sweep(engine, recheck_after=86400.0)
    checked = row(engine, p).checked
    sweep(engine, recheck_after=86400.0)  # checked moments ago: not due
    assert row(engine, p).checked == checked
    sweep(engine, recheck_after=0.0)
    assert row(engine, p).checked > checked


def test_a_crashed_workers_rows_come_back_after_the_lease(engine, tree):
    for i in range(5):
        write_file(tree / f"f{i}.dat", b"y" * 100)
    crawl(engine, os.fsencode(tree), "s")
    dead = Lease(engine, lease_seconds=1.5, owner="crashed-worker")
    assert len(dead.claim(3, due_before=time.time())) == 3  # and then it died
    sweep(engine)
    assert sorted(verdicts(engine).values()) == [Status.UNCHECKED] * 3 + [Status.OK] * 2
    time.sleep(1.6)
    sweep(engine, recheck_after=3600.0)  # only the expired leases are due, not the others
    assert set(verdicts(engine).values()) == {Status.OK}
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(
            statuses.c.tag.is_not(None))).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar() == 5


def test_local_worker_processes_check_everything_once(db_url, engine, tree):
    files = [write_file(tree / f"d{i % 7}" / f"f{i}.dat", random_bytes(i * 37, seed=i),
                        record=i % 2 == 0) for i in range(120)]
    crawl(engine, os.fsencode(tree), "s")
    tally = run_workers(Settings(db_url), NOW_DUE, 3, 120.0)
    assert tally.checked == 120 and tally.statuses[Status.OK] == 120 and not tally.dropped
    assert verdicts(engine) == dict.fromkeys(files, Status.OK)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar() == 120


def _item(path: bytes, size: int | None = None) -> Claimed:
    st = os.stat(path)
    return Claimed(1, "s", path, st.st_size if size is None else size, st.st_mtime_ns,
                   None, None, "pool-a")


def test_a_read_that_hangs_times_out_with_the_bytes_read(tmp_path):
    fifo = os.fsencode(tmp_path / "stuck")
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)  # keeps the pipe open: reads block, never EOF
    os.write(writer, b"z" * 4096)
    started = time.monotonic()
    v = check_file(_item(fifo, size=0), PosixReader(), timeout=0.5)
    assert v.status == Status.TIMEOUT and v.bytes_read == 4096
    assert time.monotonic() - started < 5
    assert v.source_pool == "pool-a"
    os.close(writer)


def test_a_file_changed_while_being_read_is_not_corrupted(tmp_path):
    path = write_file(tmp_path / "growing.dat", random_bytes(8 * 1024 * 1024))
    item = _item(path)

    def rewrite_soon():
        time.sleep(0.01)
        with open(path, "ab") as fh:
            fh.write(b"appended")

    class SlowReader(PosixReader):
        def open(self, it):
            f = super().open(it)
            real = f.readinto

            def slow(buf):
                time.sleep(0.05)
                return real(buf)

            f.readinto = slow
            return f

    t = threading.Thread(target=rewrite_soon)
    t.start()
    v = check_file(item, SlowReader(), timeout=30)
    t.join()
    assert v.status == Status.CHANGED


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_permission_denied_is_unreadable(tmp_path):
    path = write_file(tmp_path / "secret.dat", b"s" * 100)
    item = _item(path)
    os.chmod(path, 0)
    v = as_nobody(check_file, item, PosixReader(), 5)
    assert v.status == Status.UNREADABLE and "Permission denied" in v.error


def test_a_huge_sparse_file_times_out_and_the_read_stops(tmp_path):
    path = os.fsencode(tmp_path / "sparse")
    with open(path, "wb") as fh:
        fh.truncate(1 << 40)  # 1 TiB of holes: reading it all would take minutes

    def readers() -> int:
        return sum(t.name == "pnfsmon-read" and t.is_alive() for t in threading.enumerate())

    before = readers()
    streamer = Streamer()
    v = check_file(_item(path), PosixReader(), 0.5, streamer)
    assert v.status == Status.TIMEOUT and 0 < v.bytes_read < 1 << 40
    streamer.close()
    # The abandoned read stops after its current chunk instead of reading the terabyte.
    deadline = time.monotonic() + 10
    while readers() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert readers() <= before


def test_workers_of_one_sweep_never_recheck_each_others_files(engine, tree):
    """With --recheck-after 0, a worker that starts after another has recorded files must
    not check them again: all workers of a sweep share its start."""
    for i in range(20):
        write_file(tree / f"f{i}", b"z" * i)
    crawl(engine, os.fsencode(tree), "s")
    shared = CheckOptions(timeout=30, recheck_after=0.0, sweep_start=time.time())
    early = run(Lease(engine, lease_seconds=120), PosixReader(), shared)
    time.sleep(0.05)
    late = run(Lease(engine, lease_seconds=120), PosixReader(), shared)
    assert (early.checked, late.checked) == (20, 0)
    # A new sweep (a later start) does check them again.
    again = run(Lease(engine, lease_seconds=120), PosixReader(),
                CheckOptions(timeout=30, recheck_after=0.0))
    assert again.checked == 20
