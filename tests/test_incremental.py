"""Incremental crawls (``crawler.directories``): through the FUSE emulator of a dCache mount
changed between crawls as dCache changes it, an incremental crawl and a full crawl of the
same mount leave identical ``statuses`` rows after every kind of change; the directory
state is kept only from complete crawls; full crawls still come by the calendar and on
demand."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from dcache_fuse import Changes

from pnfsmon.crawler.chimera import ChimeraNamespace
from pnfsmon.crawler.crawl import crawl
from pnfsmon.crawler.posix import PosixNamespace
from pnfsmon.schema.errors import Interrupted
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import crawl_directories, crawls, statuses
from tests.helpers import random_bytes, write_file

DAY = 86400.0


def rows(engine, site: str) -> dict[bytes, tuple]:
    """Every row of ``site`` by path, its crawl generation as the crawl's place among the
    site's crawls (the two sites' crawls interleave in one database)."""
    with engine.connect() as conn:
        order = {cid: n for n, cid in enumerate(conn.execute(
            sa.select(crawls.c.id).where(crawls.c.site == site).order_by(crawls.c.id)
        ).scalars())}
        columns = [c for c in statuses.c if c.name not in ("id", "site")]
        out = {}
        for r in conn.execute(sa.select(*columns).where(statuses.c.site == site)):
            values = dict(r._mapping)
            values["crawl_gen"] = order[values["crawl_gen"]]
            out[bytes(values.pop("path"))] = values
        return out


def state(engine, site: str) -> set[tuple]:
    d = crawl_directories.c
    with engine.connect() as conn:
        return {(bytes(p), m, bool(u), c) for p, m, u, c in conn.execute(
            sa.select(d.path, d.mtime_ns, d.unsettled, d.crawl_id).where(d.site == site))}


def build(backing) -> Changes:
    changes = Changes(backing)
    for g in range(3):
        for d in range(4):
            for f in range(4):
                write_file(os.path.join(os.fsencode(backing), b"g%d/d%d/f%d.root" % (g, d, f)),
                           random_bytes(20 + f, g * 100 + d * 10 + f))
    write_file(os.path.join(os.fsencode(backing), b"g2/d3/deeper/f.root"), b"deep")
    write_file(os.path.join(os.fsencode(backing), b"g0/d1/empty.root"), b"")
    changes.start_writing(b"g0/d0/upload.root", b"partial")
    return changes


class Twins:
    """One mount crawled twice after each change, in one database: site ``inc``
    incrementally, site ``full`` in full."""

    def __init__(self, engine, dcache, backing, changes: Changes) -> None:
        self.engine, self.dcache, self.backing, self.changes = engine, dcache, backing, changes
        self.mount = None

    def crawl(self, unstatable: tuple = ()):
        if self.mount is not None:
            self.mount.stop()
        self.mount = self.dcache(self.backing, name="mnt", writing=self.changes.writing,
                                 unstatable=unstatable)
        root = os.fsencode(self.mount.root)
        self.mount.reset_counts()
        inc = crawl(self.engine, ChimeraNamespace(root), "inc", incremental=True)[0]
        inc_calls = self.mount.calls
        self.mount.reset_counts()
        full = crawl(self.engine, ChimeraNamespace(root), "full", incremental=True,
                     full=True)[0]
        assert full.kind == "full"
        got, want = rows(self.engine, "inc"), rows(self.engine, "full")
        assert got.keys() == want.keys()
        assert got == want
        return root, inc, full, inc_calls, self.mount.calls


def test_incremental_and_full_crawls_leave_identical_rows_after_every_change(
        engine, tmp_path, dcache):
    backing = tmp_path / "backing"
    changes = build(backing)
    twins = Twins(engine, dcache, backing, changes)
    root, inc, full, *_ = twins.crawl()
    assert inc.kind == "full" and inc.full_because.startswith("no directory state")
    assert len(state(engine, "inc")) == 1 + 3 + 12 + 1

    # Nothing changed: only the unsettled directories are listed (the upload, the empty
    # file), with a stat of each known one, far fewer calls than the full crawl.
    root, inc, full, inc_calls, full_calls = twins.crawl()
    assert inc.kind == "incremental"
    assert inc.directories == 2 and inc.skipped_directories == 15
    assert inc.files == full.files == 12 * 4 + 3 and inc.carried_files == 12 * 4 + 3 - 10
    assert inc_calls * 3 < full_calls

    # Added, deleted, renamed in place and across directories.
    changes.add(b"g1/d1/added.root", b"added")
    changes.delete(b"g1/d2/f0.root")
    changes.rename(b"g2/d0/f1.root", b"g2/d0/renamed.root")
    changes.rename(b"g2/d1/f2.root", b"g2/d2/moved.root")
    root, inc, *_ = twins.crawl()
    assert inc.kind == "incremental" and inc.directories == 2 + 5
    got = rows(engine, "inc")
    assert os.path.join(root, b"g1/d1/added.root") in got
    assert got[os.path.join(root, b"g1/d2/f0.root")]["status"] == Status.VANISHED  # status

    # The upload completes in a directory whose mtime does not move: it held a file
    # without a checksum, so it is listed again, and the file is changed.
    mtime = os.stat(backing / "g0" / "d0").st_mtime_ns
    changes.complete(b"g0/d0/upload.root", random_bytes(4000, 7))
    assert os.stat(backing / "g0" / "d0").st_mtime_ns == mtime
    root, inc, *_ = twins.crawl()
    upload = rows(engine, "inc")[os.path.join(root, b"g0/d0/upload.root")]
    assert upload["size"] == 4000 and upload["recorded_adler32"] is not None
    assert inc.directories == 2  # /g0/d0 (once more: its mtime was never settled) and d1

    # New directories, nested; a directory that goes with its subdirectory.
    changes.add(b"g3/n0/new.root", b"new")
    changes.add(b"g1/d1/newdir/sub/new.root", b"newer")
    changes.delete(b"g2/d3")
    root, inc, *_ = twins.crawl()
    assert inc.vanished_directories == 2
    got = rows(engine, "inc")
    assert os.path.join(root, b"g1/d1/newdir/sub/new.root") in got
    assert got[os.path.join(root, b"g2/d3/deeper/f.root")]["status"] == Status.VANISHED
    assert os.path.join(root, b"g2/d3") not in {p for p, *_ in state(engine, "inc")}

    # A directory that cannot be stat'ed: its files are neither carried over nor marked
    # vanished (one was deleted meanwhile), and the crawl is not complete: the state stays.
    changes.delete(b"g1/d0/f3.root")
    before = state(engine, "inc")
    root, inc, *_ = twins.crawl(unstatable=(b"g1/d0",))
    unstated = os.path.join(root, b"g1/d0")
    assert inc.unreadable == [unstated]
    got = rows(engine, "inc")
    assert got[os.path.join(unstated, b"f3.root")]["status"] == Status.UNCHECKED
    assert state(engine, "inc") == before
    # Once it answers again, the deletion is found by both.
    root, inc, *_ = twins.crawl()
    assert inc.kind == "incremental" and not inc.unreadable
    assert rows(engine, "inc")[os.path.join(unstated, b"f3.root")]["status"] == Status.VANISHED


def test_a_killed_crawl_leaves_the_previous_directory_state(engine, tmp_path):
    root = tmp_path / "tree"
    for d in range(6):
        for f in range(3):
            write_file(root / f"d{d}" / f"f{f}", random_bytes(10 + f, d), record=True)
    broot = os.fsencode(root)
    crawl(engine, PosixNamespace(broot), "s", incremental=True)
    kept = state(engine, "s")
    assert len(kept) == 7 and not any(u for _, _, u, _ in kept)
    for d in range(6):
        write_file(root / f"d{d}" / "new", b"new", record=True)

    class Killed(PosixNamespace):
        def walk(self, stats, plan=None):
            for n, item in enumerate(super().walk(stats, plan)):
                if n == 2:
                    raise KeyboardInterrupt
                yield item

    with pytest.raises(Interrupted):
        crawl(engine, Killed(broot), "s", incremental=True)
    assert state(engine, "s") == kept
    stats, ingest = crawl(engine, PosixNamespace(broot), "s", incremental=True)
    assert stats.kind == "incremental" and stats.directories == 6  # not the root
    assert ingest.counts.new == 6 and stats.files == 6 * 4
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(statuses)).scalar() == 24


def test_full_crawls_come_by_the_calendar_and_on_demand(engine, db_url, tmp_path):
    root = tmp_path / "tree"
    for d in range(3):
        write_file(root / f"d{d}" / "f", random_bytes(10, d), record=True)
    broot = os.fsencode(root)
    crawl(engine, PosixNamespace(broot), "s", incremental=True, full_every=7 * DAY)
    stats, _ = crawl(engine, PosixNamespace(broot), "s", incremental=True,
                     full_every=7 * DAY, now=time.time() + 6 * DAY)
    assert stats.kind == "incremental" and stats.skipped_directories == 4
    stats, _ = crawl(engine, PosixNamespace(broot), "s", incremental=True,
                     full_every=7 * DAY, now=time.time() + 7.5 * DAY)
    assert stats.kind == "full" and stats.full_because.startswith("due: the last full crawl")
    # The CLI: a site that says incremental = yes, and --full.
    config = tmp_path / "pnfsmon.conf"
    config.write_text(f"[pnfsmon]\ndb = {db_url}\n[site s]\nincremental = yes\n"
                      "full_crawl_every = 7\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")}
    env["PNFSMON_CONFIG"] = str(config)
    for extra, said in (([], "incremental crawl: 0 directories listed, 4 skipped"),
                        (["--full"], "full crawl (--full)")):
        r = subprocess.run([sys.executable, "-m", "pnfsmon", "crawl", str(root), "--site",
                            "s", "--grace", "0", *extra], env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert said in r.stdout and "3 files" in r.stdout, r.stdout
    with engine.connect() as conn:
        kinds = conn.execute(sa.select(crawls.c.kind, crawls.c.skipped_directories)
                             .order_by(crawls.c.id)).all()
    assert [tuple(k) for k in kinds] == [("full", 0), ("incremental", 4), ("full", 0),
                                         ("incremental", 4), ("full", 0)]
    config.write_text(f"[pnfsmon]\ndb = {db_url}\n[site s]\nincremental = maybe\n")
    r = subprocess.run([sys.executable, "-m", "pnfsmon", "crawl", str(root), "--site", "s"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "incremental = 'maybe': use yes or no" in r.stderr
