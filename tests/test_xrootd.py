"""XRootD and dccp against the real thing: a Debian ``xrootd`` server on 127.0.0.1 (real bit
rot behind its checksum cache, deletions, unlistable directories, a server that goes away)
and the real ``dccp`` client on local files (including a read that never ends)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from functools import partial

import helpers
import pytest
import sqlalchemy as sa
import xrootd_server
from helpers import flip_bit, pnfsmon, random_bytes, row, verdicts, write_file
from xrootd_server import XRootDServer
from zlib_ng import zlib_ng

from pnfsmon.crawler.crawl import crawl, summary
from pnfsmon.crawler.listing import WalkStats
from pnfsmon.crawler.namespaces import open_namespace
from pnfsmon.crawler.xrootd import XRootDNamespace, parse_checksum_response
from pnfsmon.schema.errors import ConfigError, StorageUnavailable
from pnfsmon.schema.lease import Claimed, Lease
from pnfsmon.schema.reference import Reference
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import crawls, statuses
from pnfsmon.tester.checker import check_file
from pnfsmon.tester.readers import make_reader
from pnfsmon.tester.stream import adler32_hex
from pnfsmon.tester.worker import CheckOptions, run


def check(engine, reader: str = "auto", timeout: float = 10) -> None:
    run(Lease(engine, lease_seconds=60), make_reader(reader, timeout),
        CheckOptions(timeout=timeout, recheck_after=0))


def adler(data: bytes) -> str:
    return adler32_hex(zlib_ng.adler32(data))


def test_crawl_and_check_through_xrootd(xrootd, served, sqlite_engine):
    engine = sqlite_engine
    payload = {
        "run1/a.root": random_bytes(300_000, 1),
        "run1/b <&>.root": random_bytes(5_000, 2),
        "run2/deep/c.root": random_bytes(9_000_000, 3),  # several 4 MiB reads
        "run2/empty.root": b"",
        "closed/hidden.root": random_bytes(100, 4),
    }
    for name, data in payload.items():
        write_file(served / name, data)
    (served / "nothing here").mkdir()
    xrootd.give(served)
    url = f"{xrootd.url}//{served.name}"
    namespace = open_namespace(url)
    assert isinstance(namespace, XRootDNamespace)

    stats, ingest = crawl(engine, namespace, "T2_XRD")
    assert (stats.files, stats.empty_directories, stats.unreadable) == (5, 1, [])
    stored = {name: os.fsencode(f"{url}/{name}") for name in payload}
    for name, data in payload.items():
        r = row(engine, stored[name])
        # The server computed and cached each checksum when first asked: recorded.
        assert (r.size, r.recorded_adler32, r.recorded_from) == (len(data), adler(data),
                                                                 "xrootd")

    check(engine)
    assert set(verdicts(engine).values()) == {Status.OK}
    r = row(engine, stored["run2/deep/c.root"])
    assert r.source_node == xrootd.url.removeprefix("root://")
    assert r.bytes_read == len(payload["run2/deep/c.root"])

    # Silent bit rot behind the server's cache (mtime restored), and a lost file.
    flip_bit(served / "run1/a.root", 123_456)
    (served / "run1/b <&>.root").unlink()
    # A directory the server can no longer list: its file must not be called vanished.
    (served / "closed").chmod(0)
    try:
        stats, ingest = crawl(engine, namespace, "T2_XRD")
    finally:
        (served / "closed").chmod(0o755)
    assert stats.unreadable == [os.fsencode(f"{url}/closed")]
    assert ingest.counts.vanished == 1  # b, which is gone from the listing
    # The server still answers its cached, now stale, checksum: the recorded one.
    assert row(engine, stored["run1/a.root"]).recorded_adler32 == adler(payload["run1/a.root"])
    assert row(engine, stored["closed/hidden.root"]).status == Status.OK

    with engine.begin() as conn:  # due again now
        conn.execute(statuses.update().where(statuses.c.status == int(Status.OK))
                     .values(claim_key=0))
    check(engine)
    got = verdicts(engine)
    assert got[stored["run1/a.root"]] == Status.CORRUPTED
    assert got[stored["run2/deep/c.root"]] == Status.OK


def test_a_file_deleted_after_the_crawl_is_missing(xrootd, served, sqlite_engine):
    write_file(served / "x.dat", b"payload")
    xrootd.give(served)
    crawl(sqlite_engine, open_namespace(f"{xrootd.url}//{served.name}"), "s")
    (served / "x.dat").unlink()
    check(sqlite_engine)
    r = row(sqlite_engine, os.fsencode(f"{xrootd.url}//{served.name}/x.dat"))
    assert r.status == Status.MISSING and "no such file" in r.error.lower()


def test_checksums_none_asks_nothing(xrootd, served, sqlite_engine):
    write_file(served / "y.dat", b"abc")
    xrootd.give(served)
    crawl(sqlite_engine, open_namespace(f"{xrootd.url}//{served.name}", checksums="none"),
          "s")
    assert row(sqlite_engine, os.fsencode(f"{xrootd.url}//{served.name}/y.dat")) \
        .recorded_adler32 is None


def test_fewer_directories_in_flight_when_they_are_large(xrootd, served, monkeypatch):
    """The listing sends fewer directories at once when those listed so far are large
    (answers read late wait in memory), and still lists every file."""
    from pnfsmon.crawler import xrootd as module

    for d in range(12):
        for f in range(10):
            write_file(served / f"d{d:02d}" / f"f{f}", b"x")
    monkeypatch.setattr(module, "ENTRIES_IN_FLIGHT", 25)  # room for 2 of 10 entries
    in_flight = []
    real = module._Listing.listed

    def listed(self, *answer):
        in_flight.append(self.in_flight)
        return real(self, *answer)

    monkeypatch.setattr(module._Listing, "listed", listed)
    stats = WalkStats()
    files = list(XRootDNamespace(f"{xrootd.url}//{served.name}", checksums="none")
                 .walk(stats))
    assert len(files) == 120 and stats.directories == 13 and not stats.unreadable
    assert max(in_flight) == 2  # 12 without the bound


def test_a_root_that_is_not_there_is_a_config_error(xrootd, sqlite_engine):
    with pytest.raises(ConfigError, match="does not exist"):
        crawl(sqlite_engine, open_namespace(f"{xrootd.url}//no/such/dir"), "s")


def test_a_test_server_whose_port_is_taken_before_it_binds_starts_on_another(
        tmp_path, xrootd, monkeypatch):
    """A port chosen free can be taken before xrootd binds it; ``xrootd -b`` then exits 1
    and says why only in its log (a CI run lost every XRootD test of one worker so). The
    test server starts on another port, and serves."""
    with helpers.port_taken_first(monkeypatch, xrootd_server) as taken:
        server = XRootDServer(tmp_path / "data", tmp_path / "work", name="port-taken").start()
        try:
            assert server.port != taken
            assert "address already in use" in server.log.read_text()
            write_file(server.data / "f", b"served")
            server.give(server.data)
            listed = subprocess.run(["xrdfs", server.url, "ls", "-l", "/"], text=True,
                                    capture_output=True, timeout=30)
            assert "/f" in listed.stdout, listed
        finally:
            server.stop()


def test_a_server_that_goes_away_loses_nothing(tmp_path, xrootd, sqlite_engine):
    """Crawl from a server, stop it, check: the worker stops with the retryable error,
    judges nothing and leaves no lease; the CLI says so in one line with exit 3."""
    server = XRootDServer(tmp_path / "data", tmp_path / "work", name="goes-away").start()
    try:
        for i in range(3):
            write_file(server.data / f"f{i}", b"z" * 100)
        server.give(server.data)
        crawl(sqlite_engine, open_namespace(f"{server.url}//"), "s")
    finally:
        server.stop()
    with pytest.raises(StorageUnavailable, match="unreachable"):
        check(sqlite_engine, timeout=5)
    with sqlite_engine.connect() as conn:
        rows = conn.execute(sa.select(statuses.c.status, statuses.c.tag)).all()
    assert rows == [(Status.UNCHECKED, None)] * 3
    r = pnfsmon("crawl", f"{server.url}//", "--db", str(sqlite_engine.url))
    assert r.returncode == 3, r.stderr
    assert "unreachable" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_checksum_response_parsing():
    assert parse_checksum_response(b"adler32 bb920cf5\x00") == "bb920cf5"
    assert parse_checksum_response(b"adler32 30001\x00") == "00030001"
    assert parse_checksum_response(b"md5 0123456789abcdef\x00") is None
    assert parse_checksum_response(None) is None


dccp = pytest.mark.skipif(shutil.which("dccp") is None and not os.environ.get("CI"),
                          reason="dccp (Debian dcap) is not installed; .ci/run installs it")


@dccp
def test_dccp_reader_verdicts(engine, tree):
    good = write_file(tree / "good.dat", random_bytes(2_000_000, 7), record=True)
    rotten = write_file(tree / "rotten.dat", random_bytes(50_000, 8), record=True)
    gone = write_file(tree / "gone.dat", b"bye", record=True)
    crawl(engine, os.fsencode(tree), "s")
    flip_bit(rotten, 10)
    os.unlink(gone)
    check(engine, reader="dccp")
    got = verdicts(engine)
    assert (got[good], got[rotten], got[gone]) == (Status.OK, Status.CORRUPTED,
                                                   Status.MISSING)
    assert row(engine, good).bytes_read == 2_000_000


@dccp
def test_dccp_that_never_ends_is_killed_at_the_timeout(tmp_path):
    """dccp reading a FIFO nobody writes blocks for ever, as on a dead pool."""
    fifo = os.fsencode(tmp_path / "stuck")
    os.mkfifo(fifo)
    st = os.stat(fifo)
    item = Claimed(1, "s", fifo, 0, st.st_mtime_ns, None, None, "pool-1")
    started = time.monotonic()
    verdict = check_file(item, make_reader("dccp", 1), timeout=1)
    assert verdict.status == Status.TIMEOUT and time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _dccp_on(fifo):
        time.sleep(0.05)
    assert not _dccp_on(fifo), "the dccp process was left running"


def _dccp_on(path: bytes) -> bool:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True).stdout
    return any(line.startswith(b"dccp ") and path in line for line in out.splitlines())


def test_crawl_and_check_through_a_delaying_proxy(xrootd, served, sqlite_engine):
    """The latency proxy of the benchmarks (5 ms each way) carries a real crawl with
    checksum queries and a real check: the same files and verdicts as without it."""
    from latency_proxy import LatencyProxy

    payload = {f"d{i}/f{i}.root": random_bytes(20_000 + i, i) for i in range(6)}
    for name, data in payload.items():
        write_file(served / name, data)
    xrootd.give(served)
    with LatencyProxy(("127.0.0.1", xrootd.port), delay=0.005) as proxy:
        url = f"root://127.0.0.1:{proxy.port}//{served.name}"
        stats, _ = crawl(sqlite_engine, open_namespace(url), "T2_XRD")
        assert stats.files == len(payload) and stats.unreadable == []
        for name, data in payload.items():
            assert row(sqlite_engine, os.fsencode(f"{url}/{name}")).recorded_adler32 \
                == adler(data)
        check(sqlite_engine)
        assert set(verdicts(sqlite_engine).values()) == {Status.OK}
        assert proxy.connections >= 1
        assert proxy.bytes["down"] > sum(len(d) for d in payload.values())  # the reads


@pytest.mark.parametrize("reader", ["xrdcp", "auto-without-bindings"])
def test_the_xrdcp_reader_verdicts(xrootd, served, sqlite_engine, monkeypatch, caplog,
                                   reader):
    """Read through ``xrdcp SRC -`` (a node without the XRootD bindings): good, rotten
    behind the server's checksum cache, gone; a server that is gone stops the check."""
    import logging

    from pnfsmon.tester import readers

    caplog.set_level(logging.INFO)
    if reader == "auto-without-bindings":
        monkeypatch.setattr(readers, "_xrootd_bindings", lambda: False)
        reader = "auto"
    good, rot = random_bytes(5_000_000, 1), random_bytes(70_000, 2)  # 5 MB: several pipes
    for name, data in (("good", good), ("rot", rot), ("gone", b"g")):
        write_file(served / name, data)
    xrootd.give(served)
    url = f"{xrootd.url}//{served.name}"
    crawl(sqlite_engine, open_namespace(url), "s")  # the server records the checksums
    flip_bit(served / "rot", 100)
    (served / "gone").unlink()
    check(sqlite_engine, reader=reader)
    got = {p.rsplit(b"/", 1)[1]: s for p, s in verdicts(sqlite_engine).items()}
    assert got == {b"good": Status.OK, b"rot": Status.CORRUPTED, b"gone": Status.MISSING}
    assert row(sqlite_engine, os.fsencode(f"{url}/good")).computed_adler32 == adler(good)
    if reader == "auto":
        assert "no XRootD Python bindings here: reading root:// files with xrdcp" \
            in caplog.text


def test_the_xrdcp_reader_stops_when_the_server_is_gone(tmp_path, xrootd, sqlite_engine):
    server = XRootDServer(tmp_path / "data", tmp_path / "work", name="xrdcp-away").start()
    try:
        write_file(server.data / "f", b"z" * 100)
        server.give(server.data)
        crawl(sqlite_engine, open_namespace(f"{server.url}//"), "s")
    finally:
        server.stop()
    with pytest.raises(StorageUnavailable, match="unreachable"):
        check(sqlite_engine, reader="xrdcp", timeout=30)
    with sqlite_engine.connect() as conn:
        assert conn.execute(sa.select(statuses.c.status, statuses.c.tag)).all() == [
            (Status.UNCHECKED, None)]


def written_just_now(served, n: int = 300) -> dict[str, bytes]:
    """``n`` files of 10 B to 300 kB, as a transfer leaves them: no checksum cached yet,
    so the server computes each on its first query."""
    sizes = (10, 1_000, 30_000, 100_000, 300_000)
    payload = {f"d{i % 7}/f{i}": random_bytes(sizes[i % len(sizes)], i) for i in range(n)}
    for name, data in payload.items():
        write_file(served / name, data)
    return payload


def test_a_crawl_right_after_writing_records_every_checksum(xrootd, served, engine, caplog):
    """Hundreds of queries at once can make a fresh server answer many with a kXR_wait
    that ends ``Operation expired``: each is asked again, with fewer in flight, until every
    file has its recorded checksum. Damage done after the crawl is then found by the
    first check, file by file."""
    import logging

    caplog.set_level(logging.INFO)
    payload = written_just_now(served, 600)  # a burst a busy node cannot outpace either
    xrootd.give(served)
    url = f"{xrootd.url}//{served.name}"
    stats, ingest = crawl(engine, open_namespace(url), "T2_XRD")  # the default timeout
    # Whether this burst makes the server answer some queries "Operation expired" depends
    # on the machine's speed at that moment: the retry itself is shown every time by
    # test_an_answer_that_never_comes_is_given_up_and_a_late_one_ignored and test_units.
    assert (stats.files, stats.checksums_unread) == (len(payload), 0)
    with engine.connect() as conn:
        got = {bytes(p): (rec, Reference(ref)) for p, rec, ref in conn.execute(
            sa.select(statuses.c.path, statuses.c.recorded_adler32, statuses.c.reference))}
        unread = conn.execute(sa.select(crawls.c.checksums_unread)
                              .where(crawls.c.id == ingest.crawl_id)).scalar()
    assert unread == 0
    assert got == {os.fsencode(f"{url}/{name}"): (adler(data), Reference.STORAGE)
                   for name, data in payload.items()}

    damaged = ["d0/f0", "d1/f1", "d3/f3"]  # 10 B, 1 kB, 100 kB
    for name in damaged:
        flip_bit(served / name, 5)
    check(engine)
    assert verdicts(engine) == {
        os.fsencode(f"{url}/{name}"): Status.CORRUPTED if name in damaged else Status.OK
        for name in payload}


def test_a_checksum_that_cannot_be_read_is_counted_named_and_marked(xrootd, served, engine,
                                                                    caplog):
    """A file the server cannot checksum (here: not allowed to read it) is listed, marked
    unreadable-reference (not "none kept"), counted in the crawl's row and named in the
    log; its check does not adopt its own reading."""
    write_file(served / "fine", b"fine")
    write_file(served / "locked", b"locked")
    xrootd.give(served)
    os.chown(served / "locked", 0, 0)
    os.chmod(served / "locked", 0)
    url = f"{xrootd.url}//{served.name}"
    stats, ingest = crawl(engine, open_namespace(url, timeout=5), "T2_XRD")
    locked = os.fsencode(f"{url}/locked")
    assert (stats.files, stats.checksums_unread, stats.unread_examples) == (2, 1, [locked])
    assert "recorded checksums unread 1;" in summary(ingest.root, "T2_XRD", stats, ingest, 1)
    assert f"{url}/locked: the recorded checksum could not be read" in caplog.text
    assert "permission denied" in caplog.text
    r = row(engine, locked)
    assert (r.recorded_adler32, r.recorded_from, Reference(r.reference)) == (
        None, "xrootd", Reference.UNREADABLE)
    assert Reference(row(engine, os.fsencode(f"{url}/fine")).reference) == Reference.STORAGE
    with engine.connect() as conn:
        assert conn.execute(sa.select(crawls.c.checksums_unread)
                            .where(crawls.c.id == ingest.crawl_id)).scalar() == 1

    # The server can read it again and records its checksum (a transfer's verification
    # asked for it); then the file rots behind that record. Its first check asks the
    # server again instead of taking its own reading as the reference, and finds it.
    import pwd

    from XRootD import client as xrd
    from XRootD.client.flags import QueryCode

    user = pwd.getpwnam("xrootd")
    os.chown(served / "locked", user.pw_uid, user.pw_gid)
    os.chmod(served / "locked", 0o644)
    status, _ = xrd.FileSystem(xrootd.url).query(QueryCode.CHECKSUM,
                                                 f"/{served.name}/locked", timeout=5)
    assert status.ok
    flip_bit(served / "locked", 2)
    check(engine)
    r = row(engine, locked)
    assert (r.status, r.recorded_adler32, Reference(r.reference)) == (
        Status.CORRUPTED, adler(b"locked"), Reference.STORAGE)


@pytest.mark.parametrize("bindings", [True, False])
def test_a_check_asks_the_server_with_or_without_the_bindings(xrootd, served, monkeypatch,
                                                              bindings):
    """What a check asks before adopting its own reading: through the bindings, or
    ``xrdfs`` on a worker node without them (the HTCondor bundle)."""
    from pnfsmon.tester import recorded

    monkeypatch.setattr(recorded, "_bindings", lambda: bindings)
    write_file(served / "f", b"payload")
    xrootd.give(served)

    def claimed(name: str) -> Claimed:
        return Claimed(1, "s", os.fsencode(f"{xrootd.url}//{served.name}/{name}"), 7, 0,
                       None, "xrootd", None, Reference.UNREADABLE)

    answer = recorded.ask(claimed("f"), timeout=10)
    assert (answer.reference, answer.adler32) == (Reference.STORAGE, adler(b"payload"))
    answer = recorded.ask(claimed("gone"), timeout=10)  # an answer, not asked again
    assert answer.reference == Reference.UNREADABLE and "no such file" in answer.why


def finishes(work, seconds: float = 300):
    """``work()``, run in a thread so that a hang fails the test instead of the session."""
    result: dict = {}

    def run() -> None:
        try:
            result["value"] = work()
        except BaseException as err:  # re-raised below, in the test's thread
            result["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: it hangs"
    if "error" in result:
        raise result["error"]
    return result["value"]


def settled(served, second: int) -> None:
    """Every directory below ``served`` (and it) given an mtime of a past second, as if
    unchanged since: an incremental crawl skips what does not change after this."""
    for top, dirs, _files in os.walk(served):
        for d in [top, *(os.path.join(top, d) for d in dirs)]:
            os.utime(d, (second, second))


NOT_UTF8 = ("no answer within 8 s: the server's answer could not be read (a name in it "
            "that is not UTF-8?)")  # with timeout=2: 2 s, then 1 s resolution and 5 s


def test_a_name_that_is_not_utf8_does_not_hang_the_crawl(xrootd, served, engine, caplog):
    """pyxrootd cannot read a listing that holds a name that is not UTF-8 and drops it
    without calling back: the request is given up at its deadline and its directory
    counted unlisted, with a reason a person can act on; the rest of the tree is crawled;
    nothing below it is marked vanished, in a full crawl and in an incremental one, which
    does not carry over its unchanged subdirectories either."""
    base = os.fsencode(served)
    for name in ("good/f", "odd/sub/inner", "ok/fine"):
        write_file(served / name, name.encode(), record=True)
    settled(served, int(time.time()) - 1000)
    xrootd.give(served)
    url = f"{xrootd.url}//{served.name}"

    def key(rel: str) -> bytes:
        return os.fsencode(f"{url}/{rel}")

    stats, _ = crawl(engine, XRootDNamespace(url, timeout=2), "s", incremental=True)
    assert (stats.kind, stats.files, stats.unreadable) == ("full", 3, [])

    os.mkdir(base + b"/odd/bad\xffdir")  # a directory named so, and a file
    write_file(base + b"/odd/bad\xffdir/x", b"x", record=True)
    write_file(base + b"/ok/bad\xfefile", b"bad", record=True)
    (served / "ok/fine").unlink()  # gone, but its directory cannot be listed now
    xrootd.give(served)
    for full in (True, False):
        caplog.clear()
        stats, ingest = finishes(partial(crawl, engine, XRootDNamespace(url, timeout=2),
                                         "s", incremental=True, full=full))
        assert stats.kind == ("full" if full else "incremental")
        assert sorted(stats.unreadable) == [key("odd"), key("ok")]
        for rel in ("odd", "ok"):
            assert f"could not list {url}/{rel}: {NOT_UTF8}" in caplog.text
        assert ingest.counts.vanished == 0
        # good/f listed (full) or carried over (its directory unchanged); odd/sub is
        # unchanged too, but below a directory that could not be listed: not carried.
        assert (stats.files, stats.carried_files) == (1, 0 if full else 1)
        assert stats.skipped_directories == (0 if full else 3)  # the root, good, odd/sub
        got = verdicts(engine)
        assert got == {key(name): Status.UNCHECKED
                       for name in ("good/f", "odd/sub/inner", "ok/fine")}
        with engine.connect() as conn:
            assert conn.execute(sa.select(crawls.c.finished).where(
                crawls.c.id == ingest.crawl_id)).scalar() is not None


def test_a_crawl_with_a_name_that_is_not_utf8_exits_1_naming_it(xrootd, served, db_url):
    """The command: it ends, exits 1, and names the directory it could not list."""
    write_file(served / "good/f", b"f", record=True)
    write_file(os.fsencode(served) + b"/odd/bad\xffname", b"x", record=True)
    xrootd.give(served)
    url = f"{xrootd.url}//{served.name}"
    r = pnfsmon("crawl", url, "--db", db_url, "--request-timeout", "2")
    assert r.returncode == 1, r.stderr
    assert f"could not list {url}/odd: {NOT_UTF8}" in r.stderr
    assert "Traceback" not in r.stderr


class LateAnswers:
    """A pyxrootd FileSystem whose answers to chosen requests come late: ``late`` maps
    (method, path) to the delays of its successive calls, in seconds after the request (None:
    never), as the client does with an answer it cannot read."""

    def __init__(self, real, late: dict[tuple[str, str], list[float | None]]) -> None:
        self.real, self.late = real, late

    def __getattr__(self, name: str):
        method = getattr(self.real, name)

        def call(*args):
            delays = self.late.get((name, args[1] if name == "query" else args[0]))
            if not delays:
                return method(*args)
            delay, callback, sent = delays.pop(0), args[-1], time.monotonic()

            def late(*answer) -> None:
                if delay is not None:
                    threading.Timer(max(0.0, sent + delay - time.monotonic()), callback,
                                    answer).start()
            return method(*args[:-1], late)
        return call


def test_an_answer_that_never_comes_is_given_up_and_a_late_one_ignored(
        xrootd, served, sqlite_engine, monkeypatch, caplog):
    """Any request of a crawl has a deadline. A known directory's stat that is not
    answered in time: unlisted, its files neither carried over nor vanished; a listing:
    unlisted; a checksum query: asked again. Their answers, when they come after all,
    are ignored: nothing is taken twice."""
    import logging

    from pyxrootd import client as raw

    caplog.set_level(logging.INFO)
    for name in ("a/f", "b/g", "c/h"):
        write_file(served / name, name.encode(), record=True)
    settled(served, int(time.time()) - 1000)
    xrootd.give(served)
    url = f"{xrootd.url}//{served.name}"
    engine = sqlite_engine
    crawl(engine, XRootDNamespace(url, timeout=2), "s", incremental=True)  # full: no state

    (served / "b/g").unlink()
    write_file(served / "c/new", b"new", record=True)
    write_file(served / "a/new", b"new", record=True)
    xrootd.give(served)
    top = f"/{served.name}"
    # The stat of b and the listing of c answered at 9 and 10 s, after their deadline
    # (8 s) but while the crawl still waits for a/new's checksum: its first query is
    # never answered, the second 3 s after it is asked, at its deadline and a backoff.
    late = {("stat", f"{top}/b"): [9], ("dirlist", f"{top}/c"): [10],
            ("query", f"{top}/a/new"): [None, 3]}
    real = raw.FileSystem
    monkeypatch.setattr(raw, "FileSystem", lambda server: LateAnswers(real(server), late))
    stats, ingest = finishes(partial(crawl, engine, XRootDNamespace(url, timeout=2), "s",
                                     incremental=True))
    assert stats.kind == "incremental"
    assert sorted(stats.unreadable) == [os.fsencode(f"{url}/{d}") for d in "bc"]
    assert f"could not list {url}/b: stat: no answer within 8 s" in caplog.text
    assert f"could not list {url}/c: {NOT_UTF8}" in caplog.text
    assert "1 checksum queries asked again after an error" in caplog.text
    assert (stats.files, stats.carried_files, stats.checksums_unread) == (2, 0, 0)
    assert stats.directories == 2  # a, and c given up; once each
    assert ingest.counts.vanished == 0
    got = verdicts(engine)
    assert got == {os.fsencode(f"{url}/{name}"): Status.UNCHECKED
                   for name in ("a/f", "a/new", "b/g", "c/h")}  # not c/new: late
    assert row(engine, os.fsencode(f"{url}/a/new")).recorded_adler32 == adler(b"new")
    assert not any(late.values())  # every late answer was asked for
