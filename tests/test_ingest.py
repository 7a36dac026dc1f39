"""The set-based ingest (staging table, merge, anti-join) on every backend: a re-crawl
writes only what changed, with exact counts; a crawl killed in the middle leaves nothing
that confuses the next one; workers checking while a crawl merges are neither blocked
nor miscounted (the status_counts ledger stays exact: see conftest's engine fixture)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from pnfsmon.crawler import staging
from pnfsmon.crawler.crawl import crawl
from pnfsmon.schema.lease import Lease
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import crawls, statuses
from pnfsmon.tester.readers import make_reader
from pnfsmon.tester.worker import CheckOptions, run
from tests.helpers import random_bytes, row, verdicts, write_file


def stage_tables(engine) -> list[str]:
    """The staging tables, where the crawler keeps them (MariaDB: a database of their own)."""
    schema = staging.stage_schema(engine)
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        if schema is not None and schema not in inspector.get_schema_names():
            return []
        return [n for n in inspector.get_table_names(schema=schema)
                if n.startswith(staging.PREFIX)]


def generations(engine) -> dict[bytes, int]:
    with engine.connect() as conn:
        return {bytes(p): g for p, g in conn.execute(
            sa.select(statuses.c.path, statuses.c.crawl_gen))}


def check_all(engine) -> None:
    run(Lease(engine, lease_seconds=60), make_reader("auto", 10),
        CheckOptions(timeout=10, recheck_after=0))


def test_a_recrawl_writes_only_what_changed(engine, tree):
    files = [write_file(tree / f"d{i % 5}" / f"f{i}.dat", random_bytes(100 + i, i))
             for i in range(120)]
    root = os.fsencode(tree)
    _, first = crawl(engine, root, "s")
    assert (first.counts.new, first.counts.changed, first.counts.vanished) == (120, 0, 0)
    check_all(engine)
    before = generations(engine)

    _, again = crawl(engine, root, "s")  # nothing changed
    assert (again.counts.new, again.counts.changed, again.counts.vanished) == (0, 0, 0)
    assert generations(engine) == before  # not one row written
    assert set(verdicts(engine).values()) == {Status.OK}

    write_file(files[3], b"rewritten")  # size and mtime change
    st = os.stat(files[4])
    os.utime(files[4], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # only the mtime
    os.unlink(files[5])
    os.unlink(files[6])
    new = write_file(tree / "d9" / "new.dat", b"new")
    _, third = crawl(engine, root, "s")
    assert (third.counts.new, third.counts.changed, third.counts.vanished) == (1, 2, 2)
    changed = {p for p, g in generations(engine).items() if g != before.get(p)}
    assert changed == {files[3], files[4], files[5], files[6], new}
    got = verdicts(engine)
    assert (got[files[3]], got[files[4]], got[new]) == (Status.UNCHECKED,) * 3
    assert got[files[5]] == got[files[6]] == Status.VANISHED
    assert row(engine, files[3]).size == len(b"rewritten")
    with engine.connect() as conn:
        last = conn.execute(sa.select(crawls).order_by(crawls.c.id.desc())).first()
    assert (last.new, last.changed, last.vanished, last.files) == (1, 2, 2, 119)
    assert stage_tables(engine) == []  # each crawl drops its staging table


def test_vanished_files_found_in_many_batches(engine, tree, monkeypatch):
    """Vanished files are marked in batches: gone files from every batch are found, and a
    sibling site, vanished files of earlier crawls and other roots are never touched."""
    from pnfsmon.crawler import ingest

    monkeypatch.setattr(ingest, "BATCH", 7)
    write_file(tree.parent / "elsewhere" / "e", b"e")
    crawl(engine, os.fsencode(tree.parent / "elsewhere"), "s")
    files = [write_file(tree / f"f{i:03d}", b"x") for i in range(60)]
    root = os.fsencode(tree)
    crawl(engine, root, "s")
    crawl(engine, root, "other")
    gone = files[::4]
    for f in gone:
        os.unlink(f)
    _, ingest_ = crawl(engine, root, "s")
    assert ingest_.counts.vanished == len(gone)
    with engine.connect() as conn:
        vanished = {(s, bytes(p)) for s, p in conn.execute(
            sa.select(statuses.c.site, statuses.c.path)
            .where(statuses.c.status == int(Status.VANISHED)))}
    assert vanished == {("s", f) for f in gone}
    _, ingest_ = crawl(engine, root, "s")  # already vanished: not again
    assert ingest_.counts.vanished == 0


def test_the_vanish_step_runs_whenever_a_file_can_have_gone(engine, tree, monkeypatch):
    """A re-crawl that listed every present file of the site skips the vanish step's
    anti-join (and the index it needs); any crawl after which a file can be missing runs
    it, also when as many files came (new, or back) as went."""
    from pnfsmon.crawler.staging import Stage

    indexed = []
    real = Stage.index
    monkeypatch.setattr(Stage, "index", lambda self: indexed.append(self.name) or real(self))
    files = [write_file(tree / f"d{i % 3}" / f"f{i}", b"x" * (i + 1)) for i in range(12)]
    root = os.fsencode(tree)
    crawl(engine, root, "s")
    _, again = crawl(engine, root, "s")
    assert again.counts.vanished == 0 and indexed == []

    before = os.stat(files[0])
    os.unlink(files[0])
    write_file(tree / "d0" / "new", b"n")  # one came, one went
    _, third = crawl(engine, root, "s")
    assert (third.counts.new, third.counts.vanished) == (1, 1) and len(indexed) == 1

    write_file(files[0], b"x")  # back as it was, while another goes
    os.utime(files[0], ns=(before.st_atime_ns, before.st_mtime_ns))
    os.unlink(files[1])
    _, fourth = crawl(engine, root, "s")
    assert (fourth.counts.returned, fourth.counts.vanished) == (1, 1) and len(indexed) == 2
    assert row(engine, files[0]).status == Status.UNCHECKED
    assert row(engine, files[1]).status == Status.VANISHED

    _, fifth = crawl(engine, root, "s")  # the vanished file stays vanished, skipped again
    assert fifth.counts.vanished == 0 and len(indexed) == 2


CRAWL_SCRIPT = """
import os, sys, time
from pnfsmon.crawler import ingest
from pnfsmon.crawler.crawl import crawl
from pnfsmon.schema import db
from pnfsmon.schema.config import Settings

ingest.BATCH = 400
real = ingest.Ingest._merge_chunk
def slow(self, *chunk):  # slow enough to be killed in the middle of the merges
    real(self, *chunk)
    time.sleep(0.2)
ingest.Ingest._merge_chunk = slow
crawl(db.create_engine(Settings(sys.argv[1])), os.fsencode(sys.argv[2]), "s")
"""


def test_a_crawl_killed_mid_merge_leaves_nothing_to_confuse_the_next(db_url, engine, tree):
    files = [write_file(tree / f"d{i // 100}" / f"f{i}", b"%d" % i) for i in range(4000)]
    root = os.fsencode(tree)
    crawl(engine, root, "s")
    for f in files[::4]:  # changed files in every chunk the killed crawl merges
        write_file(f, b"changed!")
    proc = subprocess.Popen([sys.executable, "-c", CRAWL_SCRIPT, db_url, str(tree)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            done = conn.execute(sa.select(sa.func.count()).where(
                statuses.c.size == len(b"changed!"))).scalar()
        if done >= 500:  # some chunks merged, more to come
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with engine.connect() as conn:  # another chunk may have merged before the kill landed
        done = conn.execute(sa.select(sa.func.count()).where(
            statuses.c.size == len(b"changed!"))).scalar()
    assert 0 < done < 1000
    left = stage_tables(engine)
    assert len(left) == 1  # the dead crawl's table, ignored from now on
    with engine.connect() as conn:
        dead = conn.execute(sa.select(crawls).order_by(crawls.c.id.desc())).first()
    assert dead.finished is None and not dead.complete

    _, ingest = crawl(engine, root, "s")
    assert ingest.counts.vanished == 0 and ingest.counts.new == 0
    assert ingest.counts.changed == 1000 - done  # what the dead crawl had not merged
    assert set(verdicts(engine).values()) == {Status.UNCHECKED}
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(statuses)).scalar() == 4000
    assert stage_tables(engine) == left
    # A day later the dead crawl's table is dropped.
    assert staging.drop_stale(engine, now=time.time() + 2 * 86400) == left
    assert stage_tables(engine) == []


@pytest.mark.slow
def test_workers_check_while_a_crawl_merges(db_url, engine, tree):
    """Workers claim and record while a re-crawl changes a third of the files: nothing
    deadlocks or fails, each changed file ends unchecked or checked after its change, and
    the ledger stays exact (checked on the way out)."""
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer at a time: nothing runs concurrently")
    files = [write_file(tree / f"d{i // 200}" / f"f{i}", random_bytes(3000, i))
             for i in range(6000)]
    root = os.fsencode(tree)
    crawl(engine, root, "s")
    for f in files[::3]:
        write_file(f, b"new content")
    workers = subprocess.Popen(
        [sys.executable, "-m", "pnfsmon", "check", "--workers", "2", "--recheck-after", "0",
         "--db", db_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, ingest = crawl(engine, root, "s")
    out, err = workers.communicate(timeout=300)
    assert workers.returncode == 0, err
    assert ingest.counts.changed == 2000 and ingest.counts.vanished == 0
    for f in files[::3]:
        r = row(engine, f)
        assert r.size == len(b"new content")
        assert r.status == Status.UNCHECKED or (r.status == Status.OK
                                               and r.computed_adler32 is not None)


def _staged_rows(engine, site: str) -> set:
    with engine.connect() as conn:
        return {(bytes(r.path), r.size, r.mtime_ns, r.recorded_adler32, r.pool, r.status)
                for r in conn.execute(sa.select(statuses).where(statuses.c.site == site))}


def test_load_data_local_infile_and_its_fallback_give_the_same_rows(engine, caplog):
    """MariaDB stages with LOAD DATA LOCAL INFILE; a server that refuses it gets INSERTs,
    with one line saying so. Odd pool names (tab, newline, backslash) survive both."""
    if engine.dialect.name not in ("mysql", "mariadb"):
        pytest.skip("LOAD DATA LOCAL INFILE is MariaDB's")
    from pnfsmon.crawler.ingest import Ingest
    from pnfsmon.crawler.listing import Listed, WalkStats

    def listing(version: int) -> list[Listed]:
        # A re-listing with another size and mtime: a rewrite (the same mtime would be
        # truncation in place, judged corrupted).
        return [Listed(b"/r/f%d" % i, 10 + i + version, 10**18 + version,
                       None if i % 3 else f"{i:08x}", "pnfs" if i % 3 == 0 else None,
                       pool=["p1", "a\tb\\c\nd", None][i % 3], nearline=i % 5 == 0)
                for i in range(30)]

    caplog.set_level(logging.INFO)
    admin = sa.create_engine(engine.url, isolation_level="AUTOCOMMIT")
    results = {}
    for mode in ("local_infile", "refused"):
        site = f"s-{mode}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f"SET GLOBAL local_infile = {int(mode == 'local_infile')}")
        try:
            for version in (0, 1):  # first crawl, then a re-crawl through the staging table
                caplog.clear()
                ingest = Ingest(engine, site, b"/r")
                ingest.add_all(listing(version))
                ingest.mark_vanished([])
                ingest.finish(WalkStats())
                refused = "refuses LOAD DATA LOCAL INFILE" in caplog.text
                assert refused == (mode == "refused" and version == 1)
                assert ingest.counts.changed == 30 * version
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql("SET GLOBAL local_infile = 1")
        results[mode] = {r[:5] for r in _staged_rows(engine, site)}
    admin.dispose()
    assert results["local_infile"] == results["refused"]
    assert (b"/r/f1", 12, 10**18 + 1, None, "a\tb\\c\nd") in results["refused"]


@pytest.mark.parametrize("first", [True, False], ids=["first crawl", "re-crawl"])
def test_a_chunk_whose_commit_answer_was_lost_is_not_merged_twice(engine, tree, monkeypatch,
                                                                  first):
    """A chunk's transaction committed, but the answer never came back (injected after the
    real commit): the retry finds the chunk in and adds nothing twice."""
    import contextlib

    import pymysql

    from pnfsmon.crawler import ingest as ingest_module
    from pnfsmon.crawler.listing import WalkStats
    from pnfsmon.crawler.posix import PosixNamespace

    files = [write_file(tree / f"f{i}", b"%d" % i) for i in range(10)]
    root = os.fsencode(tree)
    if not first:
        crawl(engine, root, "s")
        for f in files[:4]:
            write_file(f, b"changed")
    ingest = ingest_module.Ingest(engine, "s", root)
    real = ingest_module.write_transaction
    lost = []

    @contextlib.contextmanager
    def commit_then_lose_the_answer(eng):
        with real(eng) as conn:
            yield conn
        if not lost:  # the first chunk's transaction only: it has committed
            lost.append(True)
            raise sa.exc.OperationalError(
                "COMMIT", {}, pymysql.err.OperationalError(2013, "Lost connection"))

    monkeypatch.setattr(ingest_module, "write_transaction", commit_then_lose_the_answer)
    stats = WalkStats()
    ingest.add_all(PosixNamespace(root).walk(stats))
    ingest.mark_vanished([])
    ingest.finish(stats)
    assert lost
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(statuses)).scalar() == 10
    got = verdicts(engine)
    assert set(got) == set(files) and set(got.values()) == {Status.UNCHECKED}
    if not first:
        assert {row(engine, f).size for f in files[:4]} == {len(b"changed")}
