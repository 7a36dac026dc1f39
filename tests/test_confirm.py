"""Confirm before acting (``tester.confirm``): a corrupted verdict is final only when a second,
independent read agrees (``confirm_after`` later, by another worker where one runs); two
reads that disagree are an unstable read; a missing verdict needs a second stat through the
namespace. Real files, corrupted on disk; real databases; the clock moved with
``faketime``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading

import pytest
import sqlalchemy as sa
from helpers import flip_bit, random_bytes, row, write_file

from pnfsmon.crawler.crawl import crawl
from pnfsmon.schema import db
from pnfsmon.schema.config import Settings
from pnfsmon.schema.lease import Claimed, Lease, Verdict, request_now
from pnfsmon.schema.sites import Site
from pnfsmon.schema.status import PROBLEMS, Status
from pnfsmon.schema.tables import events, statuses
from pnfsmon.tester import confirm
from pnfsmon.tester.checker import check_file
from pnfsmon.tester.posix_read import PosixReader
from pnfsmon.tester.readers import make_reader
from pnfsmon.tester.worker import CheckOptions, run
from pnfsmon.web.report import write_report

SITE = "T2_Test"


def sweep(engine, confirm_after: float, lease: Lease | None = None) -> None:
    run(lease or Lease(engine, lease_seconds=120), PosixReader(),
        CheckOptions(timeout=30, recheck_after=0.0, confirm_after=confirm_after))


def reads(engine, path: bytes) -> list:
    """The file's checks, oldest first."""
    with engine.connect() as conn:
        return conn.execute(
            sa.select(events.c.status, events.c.computed_adler32, events.c.reader,
                      events.c.worker_node, events.c.error)
            .join(statuses, statuses.c.id == events.c.file_id)
            .where(statuses.c.path == path).order_by(events.c.id)).all()


@pytest.fixture
def site(engine, tree):
    """Three files with the storage's checksum, crawled: (rot, good, other)."""
    paths = [write_file(tree / "d" / f"f{i}.dat", random_bytes(6000, i), record=True)
             for i in range(3)]
    crawl(engine, os.fsencode(tree), SITE)
    return paths


def test_confirm_after_zero_reads_again_at_once_and_confirms(engine, site):
    rot, good, _ = site
    flip_bit(rot, 1234)
    sweep(engine, confirm_after=0)
    r = row(engine, rot)
    assert r.status == Status.CORRUPTED and r.confirm_due is None and r.confirm_from is None
    first, second = reads(engine, rot)
    assert first.status == second.status == Status.CORRUPTED
    assert first.computed_adler32 == second.computed_adler32 == r.computed_adler32
    assert "unconfirmed: a second read is due at once" in first.error
    assert "confirmed by a second read" in second.error and "confirmed by" in r.error
    assert first.reader and second.reader and first.worker_node == second.worker_node
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")}
    env["PNFSMON_DB"] = engine.url.render_as_string(hide_password=False)
    shown = subprocess.run([sys.executable, "-m", "pnfsmon", "history", os.fsdecode(rot)],
                           env=env, capture_output=True, text=True, timeout=120)
    assert shown.stdout.count(f"(worker {first.reader})") == 2, shown.stdout
    # An ok file is read once, and no reader is recorded for it.
    (only,) = reads(engine, good)
    assert only.status == Status.OK and only.reader is None


def test_an_unconfirmed_corruption_waits_out_of_the_queue(engine, site):
    rot, good, _ = site
    flip_bit(rot, 99)
    sweep(engine, confirm_after=600)
    r = row(engine, rot)
    assert r.status == Status.CORRUPTED and r.claim_key is None
    assert r.confirm_due == pytest.approx(r.checked + 600)
    sweep(engine, confirm_after=600)  # everything else is due again: not the unconfirmed one
    assert len(reads(engine, rot)) == 1 and len(reads(engine, good)) == 2


def test_two_reads_that_disagree_are_an_unstable_read(engine, site):
    """The second read finds other bytes than the first, size and mtime unchanged (a file
    rewritten between the reads, its mtime put back: what a flaky disk, controller or
    network makes a read look like): unstable read, with both reads kept."""
    rot, other, _ = site
    flip_bit(rot, 10)
    flip_bit(other, 10)
    sweep(engine, confirm_after=600)
    flip_bit(rot, 10)  # back as it was: the second read finds it ok
    flip_bit(other, 20)  # another bit: the second read finds another wrong checksum
    request_now(engine, paths=[rot, other])  # the operator asks for the second read now
    sweep(engine, confirm_after=600)
    for path, what in ((rot, "found it ok"), (other, "found it corrupted")):
        r = row(engine, path)
        assert r.status == Status.UNSTABLE_READ and r.confirm_due is None, path
        first, second = reads(engine, path)
        assert first.status == Status.CORRUPTED and second.status == Status.UNSTABLE_READ
        assert first.computed_adler32 != second.computed_adler32
        assert f"adler32 {first.computed_adler32}" in r.error and what in r.error
        assert second.reader and first.reader
    assert Status.UNSTABLE_READ in PROBLEMS


def test_the_second_read_is_left_to_another_worker_while_one_runs(engine, site):
    """Best effort: a worker leaves the second read of its own first read to another one
    while another holds a lease; alone, it reads it itself (next test)."""
    rot = site[0]
    flip_bit(rot, 500)
    a, b = Lease(engine, lease_seconds=120), Lease(engine, lease_seconds=120)
    claimed = a.claim(10, due_before=1e12)
    item = next(c for c in claimed if c.path == rot)
    a.release(c.id for c in claimed if c.path != rot)
    v = confirm.settle(item, check_file(item, PosixReader(), 30), 0.0)
    assert v.confirm_after == 0.0 and v.status == Status.CORRUPTED
    assert a.record([v]) == [item.id]
    held = b.claim(1, due_before=1e12, confirm=False)  # b is busy with another file
    assert len(held) == 1 and held[0].path != rot
    again = a.claim(10, due_before=1e12)
    assert rot not in [c.path for c in again]  # not a's own, while b runs
    a.release(c.id for c in again)
    mine = b.claim(10, due_before=1e12)
    second = next(c for c in mine if c.path == rot)  # b takes it
    assert second.unconfirmed and second.confirm_from == a.owner
    b.release(c.id for c in mine + held)


def test_alone_a_worker_reads_its_own_again(engine, site):
    rot = site[0]
    flip_bit(rot, 500)
    lease = Lease(engine, lease_seconds=120)
    sweep(engine, confirm_after=0, lease=lease)
    first, second = reads(engine, rot)
    assert first.reader == second.reader == lease.owner


def test_a_missing_file_is_confirmed_by_a_second_stat(engine, site):
    gone = site[0]
    os.unlink(gone)
    sweep(engine, confirm_after=600)
    r = row(engine, gone)
    assert r.status == Status.MISSING and "a second stat did not find it either" in r.error


class DoorSaysGone(PosixReader):
    """A door that answers "no such file" for a file the namespace still lists (a flaky
    dCache door, an NFS mount's stale lookup); ``rewrite`` also rewrites the file between
    the read and the second stat."""

    def __init__(self, rewrite: bool = False) -> None:
        self.rewrite = rewrite

    def open(self, item):
        if self.rewrite:
            with open(item.path, "ab") as fh:
                fh.write(b"appended")
            os.utime(item.path, ns=(item.mtime_ns, item.mtime_ns + 5 * 10**9))
        raise FileNotFoundError(2, "No such file or directory")


def test_a_file_the_read_found_gone_and_the_second_stat_finds(engine, site):
    there, rewritten, _ = site
    lease = Lease(engine, lease_seconds=120)
    claimed = {c.path: c for c in lease.claim(10, due_before=1e12)}
    v = check_file(claimed[there], DoorSaysGone(), 30)
    assert v.status == Status.UNSTABLE_READ
    assert "no such file" in v.error and "a second stat through the namespace found it" \
        in v.error
    w = check_file(claimed[rewritten], DoorSaysGone(rewrite=True), 30)
    assert w.status == Status.CHANGED and "modified since listed" in w.error
    assert sorted(lease.record([v, w])) == sorted([v.file_id, w.file_id])
    lease.release(c.id for c in claimed.values())
    assert row(engine, there).status == Status.UNSTABLE_READ


def test_a_truncation_the_crawl_found_is_confirmed_by_a_read(engine, tree, site):
    cut = site[0]
    st = os.stat(cut)
    sweep(engine, confirm_after=600)
    os.truncate(cut, 3000)
    os.utime(cut, ns=(st.st_atime_ns, st.st_mtime_ns))
    crawl(engine, os.fsencode(tree), SITE)
    r = row(engine, cut)
    assert r.status == Status.CORRUPTED and r.confirm_due is not None
    sweep(engine, confirm_after=600)  # due at once: the listing was the first look
    r = row(engine, cut)
    assert r.status == Status.CORRUPTED and r.confirm_due is None
    assert "confirmed by a second read (the first by the crawl's listing)" in r.error


def test_the_report_and_status_show_unconfirmed_corruptions(engine, site, tmp_path,
                                                            db_url):
    flip_bit(site[0], 7)
    sweep(engine, confirm_after=600)
    out = tmp_path / "report"
    write_report(engine, out, site_settings=lambda name: Site(name))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["corrupted"] == 1 and summary["unconfirmed"] == 1
    assert summary["sites"][0]["unconfirmed"] == 1
    assert "1 unconfirmed</span> of the corrupted files" in (out / "index.html").read_text()
    assert "unconfirmed: a second read is due in 10 min" in (
        out / "corrupted.html").read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")}
    env["PNFSMON_DB"] = engine.url.render_as_string(hide_password=False)
    r = subprocess.run([sys.executable, "-m", "pnfsmon", "status"], env=env,
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 1 and "(1 unconfirmed: a second read is due" in r.stdout


@pytest.mark.skipif(shutil.which("faketime") is None and not os.environ.get("CI"),
                    reason="needs faketime (Debian package faketime)")
def test_confirm_after_makes_the_second_read_wait(engine, site, tmp_path):
    """``pnfsmon check`` with the site's ``confirm_after = 10``: the second read is not
    made at once, nor 5 minutes later, but 11 minutes later (the clock moved by
    ``faketime``) it is, and confirms."""
    rot = site[0]
    flip_bit(rot, 2000)
    conf = tmp_path / "pnfsmon.conf"
    conf.write_text(f"[site {SITE}]\nconfirm_after = 10\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")}
    env.update(PNFSMON_DB=engine.url.render_as_string(hide_password=False),
               PNFSMON_CONFIG=str(conf))

    def check(offset: str | None) -> None:
        clock = ["faketime", "-f", offset] if offset else []
        r = subprocess.run([*clock, sys.executable, "-m", "pnfsmon", "check", "--site", SITE],
                           env=env, capture_output=True, text=True, timeout=120,
                           cwd=tmp_path)
        assert r.returncode in (0, 1), r.stderr
        return r

    check(None)
    assert [e.status for e in reads(engine, rot)] == [Status.CORRUPTED]
    assert row(engine, rot).confirm_due is not None
    r = check(None)  # nothing due, and the summary line says why
    assert "nothing was due: 1 corrupted files wait for the second read that confirms " \
        "them (the first is due at" in r.stderr + r.stdout
    check("+5m")
    assert len(reads(engine, rot)) == 1
    check("+11m")
    assert [e.status for e in reads(engine, rot)] == [Status.CORRUPTED, Status.CORRUPTED]
    r = row(engine, rot)
    assert r.confirm_due is None and "confirmed by a second read" in r.error


def test_a_verdict_without_confirmation_fields_is_recorded_as_before(engine, site):
    """A verdict made outside the worker's loop (no ``settle``) keeps the old meaning."""
    lease = Lease(engine, lease_seconds=120)
    (item, *rest) = lease.claim(10, due_before=1e12)
    lease.release(c.id for c in rest)
    v = Verdict(item.id, Status.OK, 0.1, item.size, item.size, computed_adler32="00000001")
    assert lease.record([v]) == [item.id]
    assert row(engine, item.path).confirm_due is None


@pytest.mark.hand_written_rows
def test_concurrent_workers_claim_each_second_read_once(engine, db_url, tree):
    """Four workers claim 150 due second reads at once (among 1,500 files, the others ok
    and not due): each exactly once, none missed (on MariaDB the claim must be served by
    ix_statuses_confirm_due alone: a sort would let the first claimer lock every row and
    the others see no work)."""
    for i in range(1500):
        write_file(tree / f"d{i % 10}" / f"f{i}", b"x")
    crawl(engine, os.fsencode(tree), SITE)
    with engine.begin() as conn:
        conn.execute(statuses.update().values(status=int(Status.OK), claim_key=1e12))
        conn.execute(statuses.update().where(statuses.c.id % 10 == 0).values(
            status=int(Status.CORRUPTED), claim_key=None, confirm_due=statuses.c.id * 1.0))
    statements: list = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "confirm_due <=" in statement:
            statements.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    claimed: list[list[int]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        eng = db.create_engine(Settings(db_url))
        sa.event.listen(eng, "before_cursor_execute", capture)
        lease, mine = Lease(eng, lease_seconds=120), []
        try:
            while batch := lease.claim(7, due_before=0.0):
                mine.extend(c.id for c in batch)
                assert all(c.unconfirmed for c in batch)
        except BaseException as err:  # noqa: BLE001 (reported below)
            errors.append(err)
        claimed.append(mine)
        eng.dispose()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ids = [i for mine in claimed for i in mine]
    assert len(ids) == 150 and len(set(ids)) == 150
    if engine.dialect.name in ("mysql", "mariadb"):
        statement, parameters = statements[0]
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE TABLE statuses")
            plan = conn.exec_driver_sql("EXPLAIN " + statement, parameters).mappings().all()
        assert plan[0]["key"] == "ix_statuses_confirm_due", plan
        assert "filesort" not in (plan[0]["Extra"] or "")


@pytest.mark.parametrize("bindings", [True, False])
def test_the_second_stat_of_a_root_file_asks_the_server(xrootd, served, bindings):
    """Through the bindings, or ``xrdfs stat`` on a worker node without them: there (with
    its size), or not there; a check of a file deleted on the server is missing, confirmed
    by the second stat."""
    write_file(served / "here", b"payload")
    xrootd.give(served)
    url = os.fsencode(f"{xrootd.url}//{served.name}")
    ask = confirm._xrootd_stat if bindings else (
        lambda u, t: confirm._xrdfs_stat(confirm.XRootDUrl.parse(u), t))
    here = ask(url + b"/here", 10)
    assert here.size == 7
    assert (here.mtime_ns is not None) == bindings
    assert isinstance(ask(url + b"/gone", 10), FileNotFoundError)
    if bindings:
        item = Claimed(1, "s", url + b"/gone", 7, here.mtime_ns, None, "xrootd", None)
        v = check_file(item, make_reader("xrootd", 10), 10)
        assert v.status == Status.MISSING
        assert "a second stat did not find it either" in v.error
