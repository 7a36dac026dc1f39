"""Walker processes (``crawler.walkers``): a full crawl of a local tree walked on several
cores leaves exactly the rows, counters and directory state of one walked in the crawl's
own process, on SQLite, MariaDB and PostgreSQL; and a walker that dies, fails or is
interrupted ends the crawl loudly, incomplete, with no walker left behind."""

from __future__ import annotations

import errno
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from pnfsmon.crawler import directories, walkers
from pnfsmon.crawler.crawl import crawl
from pnfsmon.crawler.directories import DirectoryPlan
from pnfsmon.crawler.posix import PosixNamespace
from pnfsmon.schema import xrdcks
from pnfsmon.schema.errors import EXIT_INTERNAL, PnfsmonError, WorkerLost
from pnfsmon.schema.tables import crawls, statuses
from tests.helpers import pnfsmon, random_bytes, write_file
from tests.test_digests import build as digests_tree
from tests.test_digests import crawled_twice, timeless
from tests.test_incremental import rows

MAIN = os.getpid()


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
#: ``hang`` (as on a dead disk) or ``die`` (SIGKILL itself).
PLANTED = """
import os, signal, time
from pnfsmon.crawler import walkers
from pnfsmon.crawler.posix import PosixNamespace
walkers.cpus = lambda: 2
real, main = PosixNamespace._describe, os.getpid()
def describe(self, fd, directory, name, st):
    act = os.environ.get("ACT")
    if act and os.getpid() != main and directory != self.root:
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


def cli_crawled(tmp_path) -> tuple[list[str], dict[str, str]]:
    """A tree crawled twice by ``pnfsmon crawl`` (digests saved): the third crawl's
    arguments and environment."""
    root = tmp_path / "tree"
    build(os.fsencode(root))
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


def test_which_crawls_walk_in_processes(tmp_path):
    root = os.fsencode(tmp_path)
    full, saved = DirectoryPlan(root, None), {root: b"d" * 16}
    assert PosixNamespace(root).processes(full, saved) == 2
    assert PosixNamespace(root, parallel=1).processes(full, saved) == 0  # one call at a time
    assert PosixNamespace(root).processes(full, {}) == 0  # a first crawl: nothing held
    assert PosixNamespace(root).processes(DirectoryPlan(root, {}), saved) == 0  # incremental
