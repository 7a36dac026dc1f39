"""Walker processes (``crawler.walkers``): a full crawl of a local tree walked on several
cores leaves exactly the rows, counters and directory state of one walked in the crawl's
own process, on SQLite, MariaDB and PostgreSQL; and a walker that dies, fails or is
interrupted ends the crawl loudly, incomplete, with no walker left behind."""

from __future__ import annotations

import errno
import gc
import multiprocessing
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from pnfsmon.crawler import directories, walk, walkers
from pnfsmon.crawler import ingest as ingest_module
from pnfsmon.crawler.crawl import crawl
from pnfsmon.crawler.directories import DirectoryPlan
from pnfsmon.crawler.ingest import Ingest
from pnfsmon.crawler.listing import WalkStats
from pnfsmon.crawler.posix import PosixNamespace
from pnfsmon.crawler.walk import ParallelWalk
from pnfsmon.schema import db, migrate, xrdcks
from pnfsmon.schema.config import Settings
from pnfsmon.schema.errors import EXIT_INTERNAL, DatabaseUnavailable, PnfsmonError, WorkerLost
from pnfsmon.schema.tables import crawls, statuses
from tests import test_crawl
from tests.helpers import (
    DB_SECRET,
    SERVERS,
    as_nobody,
    assert_no_secret,
    open_path_to,
    pnfsmon,
    random_bytes,
    write_file,
)
from tests.test_digests import build as digests_tree
from tests.test_digests import crawled_twice, timeless
from tests.test_incremental import rows

MAIN = os.getpid()
mixed_mounts = test_crawl.mixed_mounts  # (a fixture)


@pytest.fixture(autouse=True)
def two_cpus(monkeypatch):
    """Two walkers wherever the tests run (a one-CPU machine would walk in one process)."""
    monkeypatch.setattr(walkers, "cpus", lambda: 2)


def build(root: bytes) -> None:
    """The digests' test tree (31 files in 7 directories), and 3 files more."""
    digests_tree(root)
    write_file(os.path.join(root, b"d1/empty.root"), b"")  # may still change: unsettled
    write_file(os.path.join(root, b"top.root"), b"top", record=True)
    write_file(os.path.join(root, b"odd/\xff\xfe name"), b"odd")  # not UTF-8
    os.makedirs(os.path.join(root, b"empty/nested"))
    os.mkfifo(os.path.join(root, b"d2/a-fifo"))  # skipped, never opened
    os.symlink(b"f0.root", os.path.join(root, b"d3/link"))  # skipped


def counters(stats) -> tuple:
    return (stats.files, stats.directories, stats.empty_directories, stats.bytes,
            stats.skipped, sorted(stats.unreadable), stats.checksums_unread,
            stats.xattrs_unsupported)


def directory_state(engine, site: str, root: bytes) -> dict:
    return {p: (k.mtime_ns, k.unsettled, k.digest)
            for p, k in directories.load(engine, site, root).items()}


class Pair:
    """One tree crawled after each change by site ``procs`` (walked by walker processes)
    and site ``one`` (walked in the crawl's process)."""

    def __init__(self, engine, root: bytes) -> None:
        self.engine, self.root = engine, root

    def crawl(self, *, walked: bool = True):
        procs = crawl(self.engine, PosixNamespace(self.root), "procs")
        one = crawl(self.engine, PosixNamespace(self.root, parallel=1), "one")
        assert counters(procs[0]) == counters(one[0])
        got, want = timeless(rows(self.engine, "procs")), timeless(rows(self.engine, "one"))
        assert got.keys() == want.keys()
        assert got == want
        assert (directory_state(self.engine, "procs", self.root)
                == directory_state(self.engine, "one", self.root))
        c = procs[1].counts, one[1].counts
        assert [(x.new, x.changed, x.vanished, x.truncated) for x in c] == [
            (c[1].new, c[1].changed, c[1].vanished, c[1].truncated)] * 2
        assert multiprocessing.active_children() == []  # every walker gone
        return procs, one


def test_walkers_leave_the_rows_counters_and_state_of_one_process(engine, tmp_path):
    root = os.fsencode(tmp_path / "tree")
    build(root)
    pair = Pair(engine, root)
    (stats, _), _ = pair.crawl()
    assert stats.walkers == 0  # a first crawl: no digests saved
    (stats, ingest), (other, _) = pair.crawl()
    assert (stats.walkers, other.walkers) == (2, 0)
    assert ingest.unchanged_files == 34 and stats.files == 34  # every file held packed

    # Added, deleted, rewritten, a new directory: only those directories are unpacked.
    write_file(os.path.join(root, b"d0/added.root"), b"added", record=True)
    os.unlink(os.path.join(root, b"d1/f0.root"))
    write_file(os.path.join(root, b"d2/f1.root"), random_bytes(999, 1), record=True)
    write_file(os.path.join(root, b"new/dir/f.root"), b"new", record=True)
    (stats, ingest), _ = pair.crawl()
    assert (ingest.counts.new, ingest.counts.changed, ingest.counts.vanished) == (2, 1, 1)

    # A directory gone with what it held.
    os.unlink(os.path.join(root, b"d5/deeper/f.root"))
    os.rmdir(os.path.join(root, b"d5/deeper"))
    (stats, ingest), _ = pair.crawl()
    assert ingest.counts.vanished == 1


@pytest.mark.hand_written_rows
def test_a_held_directory_its_rows_do_not_confirm_is_unpacked_and_staged(engine, tmp_path):
    root, pair = crawled_twice(engine, tmp_path, Pair, build)
    # A row deleted by hand: its directory's digest is the saved one, its count is not,
    # and its packed files are unpacked and staged (the file is new again).
    for site in ("procs", "one"):
        with engine.begin() as conn:
            conn.execute(statuses.delete().where(
                statuses.c.site == site,
                statuses.c.path == os.path.join(root, b"d4/f3.root")))
    (_, ingest), (_, other) = pair.crawl()
    assert ingest.counts.new == 1 == other.counts.new
    assert ingest.unchanged_files == 34 - 5


def test_a_file_whose_checksum_cannot_be_read_is_counted_by_the_crawl(engine, tmp_path,
                                                                       monkeypatch):
    _, pair = crawled_twice(engine, tmp_path, Pair, build)
    real = xrdcks.read_at

    def failing(dir_fd, name, path, mtime):
        if name == b"f2.root":
            raise OSError(errno.EIO, "Input/output error")
        return real(dir_fd, name, path, mtime)

    monkeypatch.setattr(xrdcks, "read_at", failing)  # (the walkers are forked after this)
    (stats, _), _ = pair.crawl()
    assert stats.checksums_unread == 6


def test_a_directory_too_large_to_cross_is_described_by_the_crawl_itself(
        engine, tmp_path, monkeypatch):
    """A directory crosses whole, so while it crosses its files sit in two processes: one
    of more than ``WHOLE`` names is listed and described by the crawl's own process, as
    without walkers. Rows, counters, digests and state stay those of one process."""
    monkeypatch.setattr(walkers, "WHOLE", 4)  # d0 to d5 (5 or 6 names each); the walkers
    here = []  # are forked after this
    real = ParallelWalk.list_whole

    def list_whole(self, path, *more, **named):
        if os.getpid() == MAIN:
            here.append(path)
        return real(self, path, *more, **named)

    monkeypatch.setattr(ParallelWalk, "list_whole", list_whole)
    root, pair = crawled_twice(engine, tmp_path, Pair, build)
    large = {os.path.join(root, b"d%d" % d) for d in range(6)}
    assert sorted(here) == sorted(large)  # the second crawl's: the first had no walkers
    (stats, ingest), _ = pair.crawl()
    assert stats.walkers == 2 and ingest.unchanged_files == 34  # still held by the ingest
    write_file(os.path.join(root, b"d0/added.root"), b"added", record=True)
    os.unlink(os.path.join(root, b"d1/f0.root"))
    write_file(os.path.join(root, b"d2/f1.root"), random_bytes(999, 1), record=True)
    (stats, ingest), _ = pair.crawl()
    assert (ingest.counts.new, ingest.counts.changed, ingest.counts.vanished) == (1, 1, 1)
    assert len(here) == 3 * len(large)


@pytest.mark.parametrize("how", ["killed", "failed"])
def test_a_walker_that_ends_while_the_crawl_describes_a_large_directory_ends_it_soon(
        engine, tmp_path, monkeypatch, how):
    """While the crawl describes a directory too large to cross, it reads no walker's
    pipe: it looks at the walkers between slices of its files, and one that has ended
    ends the crawl there, not once the whole directory is described: killed, with exit 3;
    failed, with its own line (exit 4). No descriptor is left open."""
    root = os.fsencode(tmp_path / "tree")
    build(root)
    for n in range(5000):
        write_file(os.path.join(root, b"large/f%05d.root" % n), b"")
    for _ in range(2):
        crawl(engine, PosixNamespace(root), "s")
    before = rows(engine, "s")
    monkeypatch.setattr(walkers, "WHOLE", 1000)  # (the walkers are forked after this)
    seen, described = [], []
    real_init, real_describe = walkers._Walkers.__init__, PosixNamespace._describe

    def init(self):
        real_init(self)
        seen.append(self)

    def describe(self, fd, directory, name, st):
        if os.getpid() == MAIN and directory.endswith(b"/large"):
            if not described:
                victim = seen[0].walkers[0]
                if how == "killed":  # as by the OOM killer
                    os.kill(victim.proc.pid, signal.SIGKILL)
                else:  # a directory it cannot take: its bug
                    victim.tasks.send(42)
                victim.proc.join(30)
            described.append(name)
        return real_describe(self, fd, directory, name, st)

    monkeypatch.setattr(walkers._Walkers, "__init__", init)
    monkeypatch.setattr(PosixNamespace, "_describe", describe)
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(PnfsmonError) as err:
        crawl(engine, PosixNamespace(root), "s")
    if how == "killed":
        assert isinstance(err.value, WorkerLost) and "killed by signal 9" in str(err.value)
    else:
        assert err.value.exit_code == EXIT_INTERNAL and "TypeError" in str(err.value)
    del err, seen[:]  # (its frames and the walkers' process objects hold descriptors)
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == fds  # the large directory's closed too
    assert len(described) == walk.WHOLE_SLICE  # one slice, then the look at the walkers
    assert_incomplete_and_nothing_vanished(engine, before)


def crawled_with_digests(engine, tmp_path) -> bytes:
    root = os.fsencode(tmp_path / "tree")
    build(root)
    for _ in range(2):
        crawl(engine, PosixNamespace(root), "s")
    return root


def poisoned(monkeypatch, act) -> None:
    """Walkers (not the crawl's process) run ``act`` on reaching d3/f1.root."""
    real = PosixNamespace._describe

    def describe(self, fd, directory, name, st):
        if name == b"f1.root" and directory.endswith(b"d3") and os.getpid() != MAIN:
            act()
        return real(self, fd, directory, name, st)

    monkeypatch.setattr(PosixNamespace, "_describe", describe)


def assert_incomplete_and_nothing_vanished(engine, before: dict) -> None:
    with engine.connect() as conn:
        last = conn.execute(sa.select(crawls).order_by(crawls.c.id.desc())).first()
    assert not last.complete
    assert rows(engine, "s") == before
    assert multiprocessing.active_children() == []


def test_a_walker_that_dies_ends_the_crawl_as_worker_lost(engine, tmp_path, monkeypatch):
    root = crawled_with_digests(engine, tmp_path)
    before = rows(engine, "s")
    poisoned(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGKILL))
    with pytest.raises(WorkerLost, match=r"walker process \d+ died \(killed by signal 9\)"):
        crawl(engine, PosixNamespace(root), "s")
    assert_incomplete_and_nothing_vanished(engine, before)


def test_a_walker_that_fails_ends_the_crawl_with_its_line(engine, tmp_path, monkeypatch):
    root = crawled_with_digests(engine, tmp_path)
    before = rows(engine, "s")

    def fail():
        raise RuntimeError("the walker's bug")

    poisoned(monkeypatch, fail)
    with pytest.raises(PnfsmonError, match="RuntimeError: the walker's bug") as err:
        crawl(engine, PosixNamespace(root), "s")
    assert err.value.exit_code == EXIT_INTERNAL
    assert_incomplete_and_nothing_vanished(engine, before)


#: Run by a ``pnfsmon crawl`` process before its CLI (``tests.helpers.pnfsmon``): two
#: walkers, each of which writes its pid to ``$WALKERS`` on reaching a directory below the
#: root, then does ``$ACT``: ``kill-crawl-TERM``/``-INT`` (signal the crawl, then go on),
#: ``hang`` (as on a dead disk), ``die`` (SIGKILL itself) or anything else (only the pid).
PLANTED = """
import os, signal, time
from pnfsmon.crawler import walkers
from pnfsmon.crawler.posix import PosixNamespace
walkers.cpus = lambda: 2
real, crawl_pid = PosixNamespace._describe, os.getpid()  # (not "main": the CLI's, after)
def describe(self, fd, directory, name, st):
    act = os.environ.get("ACT")
    if act and os.getpid() != crawl_pid and directory != self.root:
        with open(os.environ["WALKERS"], "a") as fh:
            fh.write(f"{os.getpid()}\\n")
        if act.startswith("kill-crawl-"):
            try:  # once: a second signal would stop the crawl's own stopping
                os.close(os.open(os.environ["WALKERS"] + ".signalled", os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return real(self, fd, directory, name, st)
            os.kill(os.getppid(), getattr(signal, "SIG" + act.removeprefix("kill-crawl-")))
        elif act == "hang":
            time.sleep(600)
        elif act == "die":
            os.kill(os.getpid(), signal.SIGKILL)
    return real(self, fd, directory, name, st)
PosixNamespace._describe = describe
"""


def cli_crawled(tmp_path, tree=build) -> tuple[list[str], dict[str, str]]:
    """A ``tree`` crawled twice by ``pnfsmon crawl`` (digests saved): the third crawl's
    arguments and environment."""
    root = tmp_path / "tree"
    tree(os.fsencode(root))
    env = {"PNFSMON_DB": f"sqlite:///{tmp_path / 'db.sqlite'}",
           "WALKERS": str(tmp_path / "walkers")}
    assert pnfsmon("db", "init", env=env).returncode == 0
    for walked in (False, True):  # (the first saves the digests)
        r = pnfsmon("crawl", str(root), "--grace", "0", env=env, before=PLANTED)
        assert r.returncode == 0, r.stderr
        assert ("), walked by 2 processes) in " in r.stdout) == walked, r.stdout
    return ["crawl", str(root), "--grace", "0"], env


def walker_pids(tmp_path) -> list[int]:
    return [int(p) for p in (tmp_path / "walkers").read_text().split()]


def assert_gone(pids: list[int], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while any(map(alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(alive, pids)), pids


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(("signum", "said"), [("TERM", "SIGTERM"), ("INT", "Ctrl-C")])
def test_a_stopped_crawl_ends_its_walkers_and_exits_130(tmp_path, signum, said):
    args, env = cli_crawled(tmp_path)
    r = pnfsmon(*args, env={**env, "ACT": f"kill-crawl-{signum}"}, before=PLANTED)
    assert r.returncode == 130, r.stderr
    assert f"pnfsmon: error: crawl stopped by {said} after listing" in r.stderr
    assert "Traceback" not in r.stderr
    assert_gone(walker_pids(tmp_path))


def test_a_dead_walker_ends_the_crawl_with_exit_3(tmp_path):
    args, env = cli_crawled(tmp_path)
    r = pnfsmon(*args, env={**env, "ACT": "die"}, before=PLANTED)
    assert r.returncode == 3, r.stderr
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "died (killed by signal 9)" in errors[0], r.stderr
    assert_gone(walker_pids(tmp_path))


def test_the_walkers_of_a_killed_crawl_exit_at_once(tmp_path):
    args, env = cli_crawled(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", f"import sys\n{PLANTED}\nfrom pnfsmon.cli import main\n"
         "sys.exit(main(sys.argv[1:]))", *args],
        env={**os.environ, **env, "ACT": "hang"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(set(walker_pids(tmp_path) if (tmp_path / "walkers").exists() else [])) < 2:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL: the crawl cannot end its walkers itself
        proc.wait()
    pids = walker_pids(tmp_path)
    try:
        assert_gone(pids, within=10)  # both hang in a call: not by polling
    finally:  # (a failure leaves none behind)
        for pid in filter(alive, pids):
            os.kill(pid, signal.SIGKILL)


def test_walkers_are_as_many_as_the_cpus_the_crawl_may_use(tmp_path, monkeypatch):
    v2, v1 = tmp_path / "v2", tmp_path / "v1"
    (v2 / "slot").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "slot").mkdir(parents=True)
    (tmp_path / "cgroup-v2").write_text("0::/slot\n")
    (tmp_path / "cgroup-v1").write_text("9:pids:/slot\n3:cpu,cpuacct:/slot\n0::/\n")
    for quota, cpus in (("250000 100000", 2.5), ("max 100000", None)):
        (v2 / "slot" / "cpu.max").write_text(quota + "\n")
        assert walkers.cgroup_cpus(str(tmp_path / "cgroup-v2"), str(v2)) == cpus
    for quota, cpus in (("150000", 1.5), ("-1", None)):
        (v1 / "cpu,cpuacct" / "slot" / "cpu.cfs_quota_us").write_text(quota + "\n")
        (v1 / "cpu,cpuacct" / "slot" / "cpu.cfs_period_us").write_text("100000\n")
        assert walkers.cgroup_cpus(str(tmp_path / "cgroup-v1"), str(v1)) == cpus
    assert walkers.cgroup_cpus(str(tmp_path / "none")) is None
    # A quota on a systemd slice above the service's cgroup, which has none of its own.
    (v2 / "batch.slice" / "pnfsmon.service").mkdir(parents=True)
    (v2 / "batch.slice" / "cpu.max").write_text("100000 100000\n")
    (v2 / "batch.slice" / "pnfsmon.service" / "cpu.max").write_text("max 100000\n")
    (tmp_path / "cgroup-slice").write_text("0::/batch.slice/pnfsmon.service\n")
    assert walkers.cgroup_cpus(str(tmp_path / "cgroup-slice"), str(v2)) == 1.0
    # A container on cgroup v1 (Docker on EL7): /proc names the host's path of its cgroup,
    # mounted in the container as the hierarchy's root.
    docker = tmp_path / "docker" / "cpu,cpuacct"
    docker.mkdir(parents=True)
    (docker / "cpu.cfs_quota_us").write_text("100000\n")  # docker --cpus 1
    (docker / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cgroup-docker").write_text("4:cpu,cpuacct:/docker/0123abcd\n"
                                            "1:name=systemd:/docker/0123abcd\n")
    assert walkers.cgroup_cpus(str(tmp_path / "cgroup-docker"), str(tmp_path / "docker")) == 1.0
    monkeypatch.undo()  # (the real ``cpus``, on 8 CPUs of affinity)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    for quota, n in ((None, walkers.MAX_PROCESSES), (2.5, 2), (1.5, 0), (0.5, 0)):
        monkeypatch.setattr(walkers, "cgroup_cpus", lambda q=quota: q)
        assert walkers.cpus() == n


def test_which_crawls_walk_in_processes(tmp_path):
    root = os.fsencode(tmp_path)
    full, saved = DirectoryPlan(root, None), {root: b"d" * 16}
    assert PosixNamespace(root).processes(full, saved) == 2
    assert PosixNamespace(root, parallel=1).processes(full, saved) == 0  # one call at a time
    assert PosixNamespace(root).processes(full, {}) == 0  # a first crawl: nothing held
    assert PosixNamespace(root).processes(DirectoryPlan(root, {}), saved) == 0  # incremental


# -- hostile trees, and every way a walk can end (from the review of the first version) ----


def hostile(root: bytes) -> None:
    """test_crawl's hostile tree (odd names, a path of 4,050 bytes, a fifo, a device,
    symlinks), a socket, and a directory of more files than an ingest chunk holds (the
    test's ``BATCH``)."""
    test_crawl.build_hostile_tree(root)
    os.makedirs(os.path.join(root, b"toolong"))
    big = os.path.join(root, b"big")
    os.makedirs(big)
    for n in range(1_200):
        write_file(os.path.join(big, b"f%05d" % n), b"x", record=n % 3 == 0)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(os.path.join(root, b"odd", b"a-socket"))


def too_long(root: bytes) -> None:
    """A directory whose path is longer than PATH_MAX: unlisted by either walk."""
    fd = os.open(os.path.join(root, b"toolong"), os.O_RDONLY)
    try:
        for _ in range(22):
            os.mkdir(b"d" * 200, dir_fd=fd)
            inner = os.open(b"d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        os.close(os.open(b"f", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    finally:
        os.close(fd)


@pytest.mark.parametrize("slash", [False, True], ids=["root", "root-with-slash"])
def test_a_hostile_tree_walked_by_walkers_is_recorded_as_by_one_process(engine, tmp_path,
                                                                          monkeypatch, slash):
    monkeypatch.setattr(ingest_module, "BATCH", 1000)
    root = os.fsencode(tmp_path / "tree")
    hostile(root)
    pair = Pair(engine, root + b"/" if slash else root)
    pair.crawl()
    (stats, _), _ = pair.crawl()
    assert stats.walkers == 2
    too_long(root)
    (stats, _), _ = pair.crawl()
    assert stats.walkers == 2 and stats.unreadable
    os.unlink(os.path.join(root, b"big/f00007"))
    write_file(os.path.join(root, b"big/new"), b"new")
    (_, ingest), _ = pair.crawl()
    assert ingest.counts.new == 1 and ingest.counts.vanished == 1


def test_files_without_xattrs_are_counted_and_said_once_for_all_walkers(engine, mixed_mounts,
                                                                         caplog):
    root = os.fsencode(mixed_mounts)
    for d in range(4):
        for i in range(3):
            write_file(mixed_mounts / f"r{d}" / f"plain{i}", b"p%d" % i)
            write_file(mixed_mounts / "sub" / f"s{d}" / f"kept{i}", b"k%d" % i, record=True)
    pair = Pair(engine, root)
    pair.crawl()
    caplog.clear()
    procs = crawl(engine, PosixNamespace(root), "procs")[0]
    said = [r for r in caplog.records if "(counted; asked again" in r.getMessage()]
    assert procs.walkers == 2 and procs.xattrs_unsupported == 12 and len(said) == 1


def wide(root: bytes, dirs: int, files: int) -> None:
    for d in range(dirs):
        for f in range(files):
            write_file(os.path.join(root, b"d%02d/f%04d" % (d, f)), b"x")


def test_a_database_lost_mid_walk_ends_the_walkers_too(engine, tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_module, "BATCH", 20)  # a chunk merged every few directories
    root = os.fsencode(tmp_path / "tree")
    wide(root, 30, 10)
    for _ in range(2):
        crawl(engine, PosixNamespace(root), "s")

    def lost(self, *args):
        raise DatabaseUnavailable("database gone")

    monkeypatch.setattr(Ingest, "_merge_chunk", lost)
    with pytest.raises(DatabaseUnavailable):
        crawl(engine, PosixNamespace(root), "s")
    assert multiprocessing.active_children() == []


def test_crawls_with_walkers_leak_no_descriptor_or_thread(engine, tmp_path):
    root = os.fsencode(tmp_path / "tree")
    wide(root, 6, 5)
    for _ in range(2):
        crawl(engine, PosixNamespace(root), "s")
    fds, threads = len(os.listdir("/proc/self/fd")), threading.active_count()
    for _ in range(5):
        assert crawl(engine, PosixNamespace(root), "s")[0].walkers == 2
    assert (len(os.listdir("/proc/self/fd")), threading.active_count()) == (fds, threads)


def test_a_dead_walker_is_noticed_while_the_others_still_send(engine, tmp_path, monkeypatch):
    """An OOM-killed walker ends the crawl at once, not after the others have walked (and
    the ingest merged) the rest of the tree: the crawl could not complete anyway."""
    root = os.fsencode(tmp_path / "tree")
    wide(root, 300, 3)
    for _ in range(2):
        crawl(engine, PosixNamespace(root), "s")
    real_walk = PosixNamespace.parallel_walk

    def parallel_walk(self):
        walk = real_walk(self)
        real = walk.list_whole

        def list_whole(path, *more, **named):
            if os.getpid() != MAIN:
                if path.endswith(b"/d00"):
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(0.01)  # a directory's calls take 10 ms (a busy disk)
            return real(path, *more, **named)
        walk.list_whole = list_whole
        return walk

    monkeypatch.setattr(PosixNamespace, "parallel_walk", parallel_walk)
    taken = []
    real_take = walkers._take
    monkeypatch.setattr(walkers, "_take", lambda f, *a: taken.append(1) or real_take(f, *a))
    with pytest.raises(WorkerLost):
        crawl(engine, PosixNamespace(root), "s")
    # (with one walker left at 10 ms a directory, the rest would take 3 s)
    assert len(taken) < 50, f"{len(taken)} of 301 directories taken after the walker died"


def test_a_refused_drop_is_the_same_with_walkers(engine, tmp_path):
    root = os.fsencode(tmp_path / "tree")
    wide(root, 10, 10)
    for _ in range(2):
        for site, parallel in (("procs", None), ("one", 1)):
            crawl(engine, PosixNamespace(root, parallel=parallel), site, max_drop=0.5)
    for d in range(6):
        for f in range(10):
            os.unlink(os.path.join(root, b"d%02d/f%04d" % (d, f)))
    got = {}
    for site, parallel in (("procs", None), ("one", 1)):
        stats, ingest = crawl(engine, PosixNamespace(root, parallel=parallel), site,
                              max_drop=0.5)
        got[site] = (stats.walkers, ingest.drop, ingest.withheld, stats.files)
    assert got["procs"][0] == 2 and got["one"][0] == 0 and got["one"][1] is not None
    assert got["procs"][1:] == got["one"][1:]
    assert timeless(rows(engine, "procs")) == timeless(rows(engine, "one"))


def _crawl_both_twice(url: str, root: bytes):
    """(Run as nobody.) Both sites' crawls, twice: their walkers, counters and counts,
    then the rows and directory state."""
    engine = db.create_engine(Settings(url))
    out = []
    for _ in range(2):
        for site, parallel in (("procs", None), ("one", 1)):
            stats, ingest = crawl(engine, PosixNamespace(root, parallel=parallel), site)
            out.append((stats.walkers, counters(stats),
                        (ingest.counts.new, ingest.counts.changed, ingest.counts.vanished)))
    return out, {s: timeless(rows(engine, s)) for s in ("procs", "one")}, {
        s: directory_state(engine, s, root) for s in ("procs", "one")}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_what_nobody_cannot_read_is_recorded_as_by_one_process(tmp_path):
    open_path_to(tmp_path)
    world = tmp_path / "world"
    for d in range(5):
        for f in range(3):
            write_file(world / f"d{d}" / f"f{f}", b"%d" % f, record=True)
            write_file(world / f"d{d}" / "sub" / f"s{f}", b"s", record=True)
    (tmp_path / "db").mkdir()
    url = f"sqlite:///{tmp_path / 'db' / 'x.sqlite'}"
    engine = db.create_engine(Settings(url))
    migrate.upgrade(engine)
    engine.dispose()
    subprocess.run(["chown", "-R", "nobody", str(world), str(tmp_path / "db")], check=True)
    root = os.fsencode(world)
    as_nobody(_crawl_both_twice, url, root)  # digests saved
    (world / "d1").chmod(0)  # unreadable
    (world / "d2").chmod(0o311)  # may be entered, not listed
    (world / "d3" / "f0").chmod(0)  # its checksum (an xattr) cannot be read
    (world / "d4" / "sub").chmod(0)
    try:
        runs, got, state = as_nobody(_crawl_both_twice, url, root)
    finally:
        for p in ("d1", "d2", "d3/f0", "d4/sub"):
            (world / p).chmod(stat.S_IRWXU)
    assert runs[0][0] == 2 and runs[1][0] == 0
    assert runs[0][1:] == runs[1][1:] and runs[2][1:] == runs[3][1:]
    assert got["procs"] == got["one"] and state["procs"] == state["one"]


def small_and_big(root: bytes) -> None:
    """The walkers' tree and a directory of more files than a pipe holds at once."""
    build(root)
    big = os.path.join(root, b"big")
    os.makedirs(big)
    for n in range(2_000):  # one message of about 200 kB (a pipe holds 64)
        with open(os.path.join(big, b"file-with-a-longish-name-%06d.root" % n), "wb"):
            pass


KILLED_MID_MESSAGE = """
import os, signal, struct
from multiprocessing import connection, reduction
main = os.getpid()
real_send = connection.Connection.send
def send(self, message):
    if os.getpid() != main and getattr(message, "name", b"").endswith(b"/big"):
        # killed (the OOM killer, an operator) half way through this directory's message
        data = reduction.ForkingPickler.dumps(message)
        self._send(struct.pack("!i", len(data)) + bytes(data[:len(data) // 2]))
        os.kill(os.getpid(), signal.SIGKILL)
    return real_send(self, message)
connection.Connection.send = send
"""

UNSENDABLE = """
import os
from multiprocessing import reduction
main = os.getpid()
real_dumps = reduction.ForkingPickler.dumps
def dumps(obj, protocol=None):
    if os.getpid() != main and getattr(obj, "name", b"").endswith(b"/big"):
        raise MemoryError()  # what pickling a large message may raise under ulimit -v
    return real_dumps(obj, protocol)
reduction.ForkingPickler.dumps = dumps
"""


@pytest.mark.parametrize(("planted", "code", "said"), [
    (KILLED_MID_MESSAGE, 3, "died (killed by signal 9)"),
    (UNSENDABLE, 4, "MemoryError"),
], ids=["killed-mid-message", "message-unsendable"])
def test_a_directory_a_walker_cannot_deliver_ends_the_crawl(tmp_path, planted, code, said):
    args, env = cli_crawled(tmp_path, small_and_big)
    try:
        r = pnfsmon(*args, env=env, before=PLANTED + planted, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the crawl hung waiting for the directory")
    assert r.returncode == code and said in r.stderr, r.stderr


FORK_FAILS = """
import errno, multiprocessing.context as c
real, n = c.ForkProcess._Popen, [0]
def popen(p):
    n[0] += 1
    if n[0] == 2:  # fork(): EAGAIN, as at systemd's TasksMax or a pids cgroup's limit
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
    return real(p)
c.ForkProcess._Popen = staticmethod(popen)
"""

TERM_WHILE_STARTING = """
import os, signal, multiprocessing.context as c
real, n = c.ForkProcess._Popen, [0]
def popen(p):
    n[0] += 1
    if n[0] == 2:  # SIGTERM between the first fork and the second
        os.kill(os.getpid(), signal.SIGTERM)
    return real(p)
c.ForkProcess._Popen = staticmethod(popen)
"""


@pytest.mark.parametrize(("planted", "code", "said"), [
    (FORK_FAILS, 3, "could not start walker process 2 of 2: Resource temporarily unavailable"),
    (TERM_WHILE_STARTING, 130, "crawl stopped by SIGTERM"),
], ids=["fork-fails", "sigterm"])
def test_a_crawl_stopped_while_starting_its_walkers_ends_them(tmp_path, planted, code, said):
    args, env = cli_crawled(tmp_path)
    try:
        r = pnfsmon(*args, env={**env, "ACT": "pid"}, before=PLANTED + planted, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the crawl never exited (a walker it started was left running)")
    assert r.returncode == code and said in r.stderr, r.stderr
    if (tmp_path / "walkers").exists():  # (the one started may have begun its walk)
        assert_gone(walker_pids(tmp_path))


TERM_AT_END_OF_START = """
import os, signal, multiprocessing.process as mp
class Children(set):
    n = 0
    def add(self, proc):
        super().add(proc)
        Children.n += 1
        if Children.n == 2 and proc.name.startswith("pnfsmon-walker"):
            os.kill(os.getpid(), signal.SIGTERM)  # once the second walker is a child
mp._children = Children(mp._children)
"""

NO_SEMAPHORES = """
import errno, _multiprocessing
class SemLock(_multiprocessing.SemLock):
    def __init__(self, *args, **kwargs):  # as sem_open() answers on a read-only /dev/shm
        raise OSError(errno.EROFS, "Read-only file system")
_multiprocessing.SemLock = SemLock
"""


def test_a_signal_as_a_walker_starts_does_not_hang_the_crawls_exit(tmp_path):
    """(multiprocessing joins its children at exit, after a SIGTERM the walkers ignore.)"""
    args, env = cli_crawled(tmp_path)
    try:
        r = pnfsmon(*args, env={**env, "ACT": "pid"}, before=PLANTED + TERM_AT_END_OF_START,
                    timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the crawl hung at exit joining a walker that ignores SIGTERM")
    assert r.returncode == 130, r.stderr


def test_a_host_without_posix_semaphores_walks_with_walkers(tmp_path):
    args, env = cli_crawled(tmp_path)
    r = pnfsmon(*args, env=env, before=PLANTED + NO_SEMAPHORES, timeout=60)
    assert r.returncode == 0 and "walked by 2 processes" in r.stdout, r.stderr


def test_a_failed_crawl_leaves_no_thread_or_descriptor(engine, tmp_path, monkeypatch):
    root = os.fsencode(tmp_path / "tree")
    for d in range(300):
        write_file(os.path.join(root, b"a-rather-long-directory-name-%06d/f" % d), b"x")
    for _ in range(2):
        crawl(engine, PosixNamespace(root), "s")
    real = ParallelWalk.list_whole

    def list_whole(self, path, *more, **named):
        if os.getpid() != MAIN and path != root:
            os.kill(os.getpid(), signal.SIGKILL)  # the OOM killer, past the root
        return real(self, path, *more, **named)

    monkeypatch.setattr(ParallelWalk, "list_whole", list_whole)
    fds, threads = len(os.listdir("/proc/self/fd")), threading.active_count()
    with pytest.raises(WorkerLost):
        crawl(engine, PosixNamespace(root), "s")
    assert (len(os.listdir("/proc/self/fd")), threading.active_count()) == (fds, threads)


def test_the_directories_waiting_stay_few_as_in_one_process(tmp_path, monkeypatch):
    root = os.fsencode(tmp_path / "tree")
    for a in range(60):
        for b in range(60):
            os.makedirs(os.path.join(root, b"a%03d/b%03d" % (a, b)))
    waiting = [1, 0]  # now, most
    real_take = walkers._take

    def take(found, stats, plan):
        following, files = real_take(found, stats, plan)
        waiting[0] += len(following) - 1
        waiting[1] = max(waiting[1], waiting[0])
        return following, files

    monkeypatch.setattr(walkers, "_take", take)
    list(walkers.walk(PosixNamespace(root), WalkStats(), DirectoryPlan(root, None), 2,
                      {b"x": b"y"}, False))
    # Depth first, as one process walks: the top level's 60, and 60 for each directory in
    # flight (two walkers, IN_FLIGHT each); not a whole level, 3,600 (first in, first out).
    bound = 60 * (1 + 2 * walkers.IN_FLIGHT) + 8
    assert waiting[1] <= bound, f"{waiting[1]} of 3,661 directories waited at once"


@pytest.mark.parametrize("given", ["in-the-url", "by-environment"])
def test_no_password_reaches_a_walked_crawls_output(tmp_path, mariadb_with_password, given):
    """A walker crawl, and one whose walker dies, say nothing of the database's password,
    however it was given."""
    root = tmp_path / "tree"
    build(os.fsencode(root))
    user = sa.make_url(mariadb_with_password)
    admin = sa.create_engine(SERVERS["mariadb"], isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:  # (a re-crawl stages in its own database, as a site grants)
        conn.exec_driver_sql(f"GRANT ALL ON `{user.database}_stage`.* TO "
                             f"'{user.username}'@'%%'")
    admin.dispose()
    if given == "in-the-url":
        env = {"PNFSMON_DB": user.set(password=DB_SECRET).render_as_string(False)}
    else:
        env = {"PNFSMON_DB": mariadb_with_password, "PNFSMON_DB_PASSWORD": DB_SECRET}
    env["WALKERS"] = str(tmp_path / "walkers")
    assert pnfsmon("db", "init", env=env).returncode == 0
    for act, code, walked in (("", 0, False), ("", 0, True), ("die", 3, True)):
        r = pnfsmon("crawl", str(root), "--grace", "0", env={**env, "ACT": act},
                    before=PLANTED)
        assert r.returncode == code, r.stderr
        assert ("walked by 2 processes" in r.stdout or "walker process" in r.stderr) == walked
        assert_no_secret(r.stdout + r.stderr, DB_SECRET, f"crawl {act or 'walked'}")
    assert "died (killed by signal 9)" in r.stderr
