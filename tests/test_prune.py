"""Retention on every backend: old checks pruned except each file's last one and every
check of a file that is or was a problem; long-vanished files deleted with their checks;
the status_counts ledger exact afterwards (conftest's engine fixture checks it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import zlib

import pytest
import sqlalchemy as sa

from pnfsmon.crawler.crawl import crawl
from pnfsmon.schema import prune
from pnfsmon.schema.lease import Lease, Verdict
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import events, statuses
from pnfsmon.tester.stream import adler32_hex
from tests.helpers import pnfsmon, row, write_file

DAY = 86400.0


def check_at(engine, when: float, status_of) -> None:
    """One sweep recorded at ``when``: every file gets ``status_of(path)``."""
    lease = Lease(engine, lease_seconds=60)
    # every file last checked before ``when`` (whatever its due time)
    while claimed := lease.claim(1000, due_before=when - 1, now=when, recheck_after=0.0):
        lease.record([Verdict(c.id, status_of(c.path), seconds=0.1, size=c.size,
                              bytes_read=c.size, computed_adler32=adler32_of(c.path))
                      for c in claimed], now=when)


def adler32_of(path: bytes) -> str:
    with open(path, "rb") as fh:
        return adler32_hex(zlib.adler32(fh.read()))


def history(engine) -> dict[bytes, list[float]]:
    with engine.connect() as conn:
        out: dict[bytes, list[float]] = {}
        for path, checked in conn.execute(
                sa.select(statuses.c.path, events.c.checked)
                .join(statuses, statuses.c.id == events.c.file_id)
                .order_by(events.c.checked)):
            out.setdefault(bytes(path), []).append(checked)
        return out


def test_old_checks_are_pruned_keeping_last_checks_and_problem_histories(engine, tree):
    plain = [write_file(tree / f"p{i}", b"p%d" % i) for i in range(5)]
    flaky = write_file(tree / "flaky", b"f")  # unreadable once, fine since
    bad = write_file(tree / "bad", b"b")  # corrupted now
    crawl(engine, os.fsencode(tree), "s")
    now = time.time()
    days = [now - 400 * DAY, now - 300 * DAY, now - 200 * DAY, now - 10 * DAY]
    for i, when in enumerate(days):
        check_at(engine, when, lambda p, i=i: (
            Status.UNREADABLE if p == flaky and i == 1 else
            Status.CORRUPTED if p == bad and i == 3 else Status.OK))
    before = history(engine)
    assert all(len(v) == 4 for v in before.values())
    assert row(engine, flaky).problem_seen and row(engine, bad).problem_seen
    assert not row(engine, plain[0]).problem_seen

    pruned = prune.prune(engine, events_days=100, vanished_days=None, now=now)
    after = history(engine)
    assert pruned.events == 5 * 3  # the plain files' three old checks
    for p in plain:
        assert after[p] == [days[3]]
    assert after[flaky] == before[flaky] and after[bad] == before[bad]

    # Asked to: problem histories go too, their last check stays.
    pruned = prune.prune(engine, events_days=100, vanished_days=None, now=now,
                         keep_problem_history=False)
    assert pruned.events == 6
    assert history(engine)[flaky] == [days[3]] == history(engine)[bad]
    # Every file's last check, even one older than the retention, is kept.
    assert prune.prune(engine, events_days=0, vanished_days=None,
                       now=now + DAY).events == 0


def test_long_vanished_files_are_deleted_with_their_checks(engine, tree):
    keep = write_file(tree / "keep", b"k")
    gone = write_file(tree / "gone", b"g")
    crawl(engine, os.fsencode(tree), "s")
    check_at(engine, time.time(), lambda p: Status.OK)
    os.unlink(gone)
    crawl(engine, os.fsencode(tree), "s")
    assert row(engine, gone).status == Status.VANISHED
    assert prune.prune(engine, events_days=None, vanished_days=90).vanished == 0  # too young
    later = time.time() + 91 * DAY
    pruned = prune.prune(engine, events_days=None, vanished_days=90, now=later)
    assert (pruned.vanished, pruned.vanished_events) == (1, 1)
    with engine.connect() as conn:
        paths = {bytes(p) for p in conn.execute(sa.select(statuses.c.path)).scalars()}
        assert paths == {keep}
        assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar() == 1


def test_vanished_files_are_pruned_by_when_they_went_batch_by_batch(engine, tmp_path):
    """Files that went before the retention's start are deleted, with their checks, a
    batch at a time; files that went after it, present files and another site's young
    ones stay."""
    trees = {site: tmp_path / site for site in ("s", "t")}
    files = {site: [write_file(tree / f"f{i}", b"x%d" % i) for i in range(7)]
             for site, tree in trees.items()}
    for site, tree in trees.items():
        crawl(engine, os.fsencode(tree), site)
    check_at(engine, time.time(), lambda p: Status.OK)
    for path in files["s"][:5] + files["t"][:1]:  # gone long ago
        os.unlink(path)
    for site, tree in trees.items():
        crawl(engine, os.fsencode(tree), site)
    time.sleep(0.05)
    cut = time.time()
    time.sleep(0.05)
    for path in files["s"][5:6] + files["t"][1:3]:  # gone just now
        os.unlink(path)
    for site, tree in trees.items():
        crawl(engine, os.fsencode(tree), site)
    batches = []
    assert prune.prune_vanished(engine, cut, batch=2, progress=batches.append) == (6, 6)
    assert batches == [2, 4, 6]
    with engine.connect() as conn:
        left = {bytes(p): Status(st) for p, st in conn.execute(
            sa.select(statuses.c.path, statuses.c.status))}
        checked = {r for r in conn.execute(sa.select(events.c.file_id)).scalars()}
    assert left == {**{files["s"][5]: Status.VANISHED, files["s"][6]: Status.OK},
                    **dict.fromkeys(files["t"][1:3], Status.VANISHED),
                    **dict.fromkeys(files["t"][3:], Status.OK)}
    assert len(checked) == len(left)  # the deleted files' checks went with them


def test_a_nightly_prune_over_months_deletes_each_vanished_file_once_its_time_has_come(
        engine, tree):
    """The clock moved by months (faketime), as a site runs ``db prune`` every night: a
    file gone for longer than the retention goes, with its checks, once; a file that went
    later stays until its own time has come; present files stay."""
    # (30 files: losing 2, then 1, stays below max_crawl_drop)
    paths = [write_file(tree / f"f{n:02d}", b"%d" % n) for n in range(30)]
    env = {"PNFSMON_DB": engine.url.render_as_string(hide_password=False)}

    def at(days: float, *args: str) -> str:
        r = pnfsmon(*args, env=env, under=["faketime", "-f", f"+{days}d"])
        assert r.returncode == 0, r.stderr
        return r.stdout

    at(0, "crawl", str(tree), "--site", "s", "--grace", "0")
    check_at(engine, time.time(), lambda p: Status.OK)
    for path in paths[:2]:
        os.unlink(path)
    at(1, "crawl", str(tree), "--site", "s", "--grace", "0")  # two gone on day 1
    os.unlink(paths[2])
    at(60, "crawl", str(tree), "--site", "s", "--grace", "0")  # one on day 60
    said = [at(day, "db", "prune", "--vanished-older-than", "90")
            for day in (30, 100, 101, 149, 152, 153)]
    gone = [int(re.search(r"and ([\d,]+) files vanished", line).group(1)) for line in said]
    assert gone == [0, 2, 0, 0, 1, 0]
    with engine.connect() as conn:
        left = sorted(bytes(p) for p in conn.execute(sa.select(statuses.c.path)).scalars())
        checks = conn.execute(sa.select(sa.func.count()).select_from(events)).scalar()
    assert left == paths[3:] and checks == 27


def test_prune_command_and_its_configured_defaults(engine, tree, tmp_path):
    write_file(tree / "a", b"a")
    crawl(engine, os.fsencode(tree), "s")
    now = time.time()
    for when in (now - 50 * DAY, now - 40 * DAY, now):
        check_at(engine, when, lambda p: Status.OK)
    conf = tmp_path / "pnfsmon.conf"
    conf.write_text("[pnfsmon]\nprune_events_after = 45\n")
    env = {"PNFSMON_CONFIG": str(conf),
           "PNFSMON_DB": engine.url.render_as_string(hide_password=False)}
    r = pnfsmon("db", "prune", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("pruned 1 checks older than 45 days")
    r = pnfsmon("db", "prune", "--events-older-than", "1", env=env)
    assert r.returncode == 0 and r.stdout.startswith("pruned 1 checks older than 1 days")
    r = pnfsmon("db", "prune", "--vanished-older-than", "-1", env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    conf.write_text("[pnfsmon]\nprune_vanished_after = soon\n")
    r = pnfsmon("db", "prune", env=env)
    assert r.returncode == 2 and "prune_vanished_after = 'soon'" in r.stderr


@pytest.mark.slow
def test_prune_while_workers_check(db_url, engine, tree):
    """Workers claim and record while a prune deletes old checks in batches: neither
    fails, every file is checked once more, the ledger stays exact."""
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer at a time: nothing runs concurrently")
    for i in range(3000):
        write_file(tree / f"d{i // 300}" / f"f{i}", b"%d" % i)
    crawl(engine, os.fsencode(tree), "s")
    now = time.time()
    for k in range(4):
        check_at(engine, now - (100 - k) * DAY, lambda p: Status.OK)
    workers = subprocess.Popen(
        [sys.executable, "-m", "pnfsmon", "check", "--workers", "2", "--recheck-after", "1",
         "--db", db_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pruned = prune.prune(engine, events_days=30, vanished_days=None, now=now)
    out, err = workers.communicate(timeout=300)
    assert workers.returncode == 0, err
    assert "checked 3,000 files" in out
    # Three old checks of each file go; the fourth too where the workers' check came first.
    assert 3 * 3000 <= pruned.events <= 4 * 3000
    with engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(events)).scalar()
        assert n == 5 * 3000 - pruned.events
        # Every file still has its last check, the one statuses points to.
        last = conn.execute(sa.select(sa.func.count()).select_from(
            events.join(statuses, sa.and_(statuses.c.id == events.c.file_id,
                                          statuses.c.checked == events.c.checked)))).scalar()
    assert last == 3000
