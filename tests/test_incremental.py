"""Incremental crawls (``crawler.directories``): through the FUSE emulator of a dCache mount
changed between crawls as dCache changes it, and on a real XRootD server whose site says
``incremental = yes``, an incremental crawl and a full crawl of the same namespace leave
identical ``statuses`` rows after every kind of change; the directory state is kept only
from complete crawls; full crawls still come by the calendar and on demand."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from dcache_fuse import Changes

from pnfsmon.crawler.chimera import ChimeraNamespace
from pnfsmon.crawler.crawl import crawl, summary
from pnfsmon.crawler.posix import PosixNamespace
from pnfsmon.crawler.xrootd import XRootDNamespace
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


class XRootDTwins:
    """One directory on the XRootD server crawled twice after each change, in one
    database: site ``inc`` incrementally (its site says ``incremental = yes``), site
    ``full`` in full. The server's mtimes are whole seconds, and a directory whose mtime
    is the second its listing was asked in is listed again (``moved`` puts changed
    directories' mtimes in distinct past seconds, as a change made then would: the counts
    stay exact)."""

    def __init__(self, engine, xrootd, served) -> None:
        self.engine, self.xrootd, self.served = engine, xrootd, served
        self.url = f"{xrootd.url}//{served.name}"
        self.root = os.fsencode(self.url)
        self.seconds = itertools.count(int(time.time()) - 100_000)

    def key(self, rel: str) -> bytes:
        return os.fsencode(f"{self.url}/{rel}" if rel else self.url)

    def moved(self, *rels: str) -> int:
        """Set the mtimes of these directories (below the served one) to a new past second;
        returns it."""
        second = next(self.seconds)
        for rel in rels:
            os.utime(self.served / rel, (second, second))
        return second

    def crawl(self, clock=None):
        self.xrootd.give(self.served)  # as the server's data is: its checksum cache
        namespace = XRootDNamespace(self.url)
        if clock is not None:
            namespace.clock = clock
        inc, ingest = crawl(self.engine, namespace, "inc", incremental=True)
        line = summary(self.root, "inc", inc, ingest, 1.0)
        full = crawl(self.engine, XRootDNamespace(self.url), "full", incremental=True,
                     full=True)[0]
        assert full.kind == "full"
        got, want = rows(self.engine, "inc"), rows(self.engine, "full")
        assert got.keys() == want.keys()
        assert got == want
        return inc, line


def test_incremental_xrootd_crawls_leave_the_rows_of_full_ones(engine, xrootd, served):
    for g in range(3):
        for d in range(4):
            for f in range(4):
                write_file(served / f"g{g}/d{d}/f{f}.root",
                           random_bytes(20 + f, g * 100 + d * 10 + f), record=True)
    write_file(served / "g2/d3/deeper/f.root", b"deep", record=True)
    write_file(served / "g0/d1/empty.root", b"", record=True)
    write_file(served / "g0/d0/upload.root", b"", record=True)  # opened, not yet written
    twins = XRootDTwins(engine, xrootd, served)
    directories = ["", *(f"g{g}" for g in range(3)),
                   *(f"g{g}/d{d}" for g in range(3) for d in range(4)), "g2/d3/deeper"]
    twins.moved(*directories)
    inc, line = twins.crawl()
    assert inc.kind == "full" and inc.full_because.startswith("no directory state")
    assert len(state(engine, "inc")) == 17
    assert {p for p, _, u, _ in state(engine, "inc") if u} == {twins.key("g0/d0"),
                                                               twins.key("g0/d1")}

    # Nothing changed: only the directories holding an empty file are listed.
    inc, line = twins.crawl()
    assert inc.kind == "incremental" and inc.directories == 2 and not inc.unreadable
    assert inc.files == 51 and inc.carried_files == 51 - 10
    assert ("incremental crawl: 2 directories listed, 15 skipped as unchanged (41 files "
            "carried over), 0 gone") in line

    # Added, deleted, renamed in place and across directories.
    write_file(served / "g1/d1/added.root", b"added", record=True)
    (served / "g1/d2/f0.root").unlink()
    (served / "g2/d0/f1.root").rename(served / "g2/d0/renamed.root")
    (served / "g2/d1/f2.root").rename(served / "g2/d2/moved.root")
    twins.moved("g1/d1", "g1/d2", "g2/d0", "g2/d1", "g2/d2")
    inc, _ = twins.crawl()
    assert inc.kind == "incremental" and inc.directories == 2 + 5
    got = rows(engine, "inc")
    assert twins.key("g1/d1/added.root") in got
    assert got[twins.key("g1/d2/f0.root")]["status"] == Status.VANISHED

    # The upload completes (its size and the server's checksum xattr set) in a directory
    # whose mtime does not move: it held an empty file, so it is listed again.
    mtime = os.stat(served / "g0/d0").st_mtime_ns
    write_file(served / "g0/d0/upload.root", random_bytes(4000, 7), record=True)
    assert os.stat(served / "g0/d0").st_mtime_ns == mtime
    inc, _ = twins.crawl()
    upload = rows(engine, "inc")[twins.key("g0/d0/upload.root")]
    assert upload["size"] == 4000 and upload["recorded_adler32"] is not None
    assert inc.directories == 2  # g0/d0 (once more: it held an empty file) and g0/d1

    # New directories, nested; a directory that goes with its subdirectory.
    write_file(served / "g3/n0/new.root", b"new", record=True)
    write_file(served / "g1/d1/newdir/sub/new.root", b"newer", record=True)
    shutil.rmtree(served / "g2/d3")
    twins.moved("", "g1/d1", "g2", "g3", "g3/n0", "g1/d1/newdir", "g1/d1/newdir/sub")
    inc, _ = twins.crawl()
    assert inc.directories == 1 + 3 + 4 and inc.vanished_directories == 2
    got = rows(engine, "inc")
    assert twins.key("g1/d1/newdir/sub/new.root") in got
    assert got[twins.key("g2/d3/deeper/f.root")]["status"] == Status.VANISHED
    assert twins.key("g2/d3") not in {p for p, *_ in state(engine, "inc")}

    # Directories the server cannot stat (their parent is closed to it): their files are
    # neither carried over nor marked vanished (one was deleted meanwhile), and the crawl
    # is not complete: the state stays. A full crawl cannot list the parent either.
    (served / "g1/d0/f3.root").unlink()
    twins.moved("g1/d0")
    before = state(engine, "inc")
    (served / "g1").chmod(0)
    try:
        inc, line = twins.crawl()
    finally:
        (served / "g1").chmod(0o755)
    assert sorted(inc.unreadable) == sorted(twins.key(d) for d in (
        "g1/d0", "g1/d1", "g1/d2", "g1/d3", "g1/d1/newdir", "g1/d1/newdir/sub"))
    assert inc.kind == "incremental" and "6 unreadable" in line
    assert rows(engine, "inc")[twins.key("g1/d0/f3.root")]["status"] == Status.UNCHECKED
    assert state(engine, "inc") == before
    # Once it answers again, the deletion is found by both.
    inc, _ = twins.crawl()
    assert inc.kind == "incremental" and not inc.unreadable
    assert rows(engine, "inc")[twins.key("g1/d0/f3.root")]["status"] == Status.VANISHED

    # A directory changed again within the second of the mtime its listing kept (here:
    # listed half a second into that second): its mtime cannot move, so it is kept
    # unsettled, and the next crawl lists it and finds the file.
    write_file(served / "g0/d2/early.root", b"early", record=True)
    second = twins.moved("g0/d2")
    inc, _ = twins.crawl(clock=lambda: second + 0.5)
    assert inc.directories == 2  # it and g0/d1 (its empty file)
    kept = {p: u for p, _, u, _ in state(engine, "inc")}
    assert kept[twins.key("g0/d2")] is True and kept[twins.key("g0/d3")] is False
    write_file(served / "g0/d2/late.root", b"late", record=True)
    os.utime(served / "g0/d2", (second, second))  # the same second: it does not move
    inc, _ = twins.crawl()
    assert inc.directories == 2  # it and g0/d1 (its empty file)
    assert twins.key("g0/d2/late.root") in rows(engine, "inc")
    assert {p: u for p, _, u, _ in state(engine, "inc")}[twins.key("g0/d2")] is False

    # A directory replaced by a file: the server answers the stat of its subdirectory
    # "not a directory" (an error, not "not found"); below a directory found gone, it is
    # gone too, not unlisted.
    shutil.rmtree(served / "g3")
    write_file(served / "g3", b"a file now", record=True)
    twins.moved("")
    inc, _ = twins.crawl()
    assert inc.vanished_directories == 2 and not inc.unreadable
    got = rows(engine, "inc")
    assert got[twins.key("g3/n0/new.root")]["status"] == Status.VANISHED
    assert got[twins.key("g3")]["size"] == len(b"a file now")


def test_a_site_with_incremental_yes_crawls_xrootd_incrementally(xrootd, served, tmp_path):
    for d in range(3):
        write_file(served / f"d{d}/f", random_bytes(10, d), record=True)
    old = time.time() - 1000
    for directory in (served, *served.iterdir()):
        os.utime(directory, (old, old))
    xrootd.give(served)
    config = tmp_path / "pnfsmon.conf"
    config.write_text(f"[pnfsmon]\ndb = sqlite:///{tmp_path / 'db.sqlite'}\n[site s]\n"
                      f"namespace = {xrootd.url}//{served.name}\nincremental = yes\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")}
    env["PNFSMON_CONFIG"] = str(config)
    subprocess.run([sys.executable, "-m", "pnfsmon", "db", "init"], env=env, check=True,
                   capture_output=True, timeout=120)
    for extra, said in (([], "full crawl (no directory state"),
                        ([], "incremental crawl: 0 directories listed, 4 skipped"),
                        (["--full"], "full crawl (--full)")):
        r = subprocess.run([sys.executable, "-m", "pnfsmon", "crawl", "--site", "s",
                            "--grace", "0", *extra], env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert said in r.stdout and "3 files" in r.stdout, r.stdout
        assert "crawled in full" not in r.stderr


def test_a_directory_is_gone_only_when_its_parent_agrees(engine, tmp_path, caplog):
    """One stat's "not found" (a redirector's, a door's, an NFS cache's) would take every
    file below with it: it is trusted when the parent's listing agrees, never when the
    parent's mtime did not move. Then the directory is unlisted, its files kept, the crawl
    not complete; once the parent's listing shows it gone, its files vanish."""
    root = tmp_path / "tree"
    for d in ("a", "a/sub", "b"):
        write_file(root / d / "f", random_bytes(10, len(d)), record=True)
    broot = os.fsencode(root)
    old = time.time() - 1000
    for directory in (root, root / "a", root / "a/sub", root / "b"):
        os.utime(directory, (old, old))
    crawl(engine, PosixNamespace(broot), "s", incremental=True)
    # a/sub goes, and a's mtime is put back: its stat says gone, its parent unchanged.
    shutil.rmtree(root / "a/sub")
    os.utime(root / "a", (old, old))
    stats, ingest = crawl(engine, PosixNamespace(broot), "s", incremental=True)
    sub = os.path.join(broot, b"a", b"sub")
    assert stats.kind == "incremental" and stats.unreadable == [sub]
    assert "its parent's mtime did not move" in caplog.text
    assert ingest.counts.vanished == 0
    assert rows(engine, "s")[os.path.join(sub, b"f")]["status"] == Status.UNCHECKED
    assert not last_crawl_complete(engine)
    # The parent's listing no longer holds it: gone, with its file.
    os.utime(root / "a", (old + 10, old + 10))
    stats, ingest = crawl(engine, PosixNamespace(broot), "s", incremental=True)
    assert not stats.unreadable and stats.vanished_directories == 1
    assert ingest.counts.vanished == 1
    assert rows(engine, "s")[os.path.join(sub, b"f")]["status"] == Status.VANISHED
    assert last_crawl_complete(engine)


def last_crawl_complete(engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(sa.select(crawls.c.complete)
                                 .order_by(crawls.c.id.desc()).limit(1)).scalar())
