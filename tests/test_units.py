"""Pure functions: path encodings, the XrdCks record, the Adler32 stream and its timeout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
import zlib

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from pnfsmon.schema import xrdcks
from pnfsmon.schema.paths import decode_line, display, encode_line, path_hash
from pnfsmon.schema.status import PROBLEMS, Status
from pnfsmon.tester.stream import adler32_hex, checksum


@given(st.binary(min_size=1, max_size=300))
def test_list_encoding_round_trips_any_bytes(path):
    line = encode_line(path)
    assert "\n" not in line and " " not in line and "\t" not in line
    assert line.isascii()
    assert decode_line(line + "\n") == path


@given(st.binary(max_size=100), st.binary(max_size=100))
def test_display_is_unambiguous(a, b):
    if a != b:
        assert display(a) != display(b)
    assert "\n" not in display(a) and "\t" not in display(a)


def test_display_examples():
    assert display(b"a/b c.root") == "a/b c.root"
    assert display("é<&>".encode()) == "é<&>"
    assert display(b"new\nline\ttab") == "new\\nline\\ttab"
    assert display(b"bad\xff\xfe") == "bad\\xff\\xfe"
    assert display(b"back\\xff") == "back\\\\xff"  # a literal backslash is doubled


def test_path_hash_is_16_bytes_and_distinguishes_paths():
    long_path = b"/" + b"d" * 4000
    assert len(path_hash(long_path)) == 16
    assert path_hash(b"/a") != path_hash(b"/b")


def test_status_vocabulary():
    assert {"unchecked", "ok", "corrupted", "missing", "timeout", "unreadable"} <= {
        s.label for s in Status}
    assert Status.from_label("corrupted") is Status.CORRUPTED
    with pytest.raises(ValueError, match="unknown status"):
        Status.from_label("rotten")
    assert Status.OK not in PROBLEMS


def test_xrdcks_parse_trusts_only_matching_mtime():
    record = xrdcks.encode("0a0b0c0d", 1_700_000_000)
    assert len(record) == 96
    assert xrdcks.parse(record, 1_700_000_000) == "0a0b0c0d"
    assert xrdcks.parse(record, 1_700_000_001) is None  # stale: the file changed since
    assert xrdcks.parse(record[:50], 1_700_000_000) is None  # malformed
    other = record.replace(b"adler32", b"md5\0\0\0\0", 1)
    assert xrdcks.parse(other, 1_700_000_000) is None


@pytest.mark.skipif(shutil.which("xrdadler32") is None, reason="xrootd-client not installed")
def test_xrdcks_reads_what_real_xrdadler32_writes(tmp_path):
    path = tmp_path / "f.dat"
    data = os.urandom(123_457)
    path.write_bytes(data)
    out = subprocess.run(["xrdadler32", str(path)], capture_output=True, text=True,
                         check=True).stdout.split()[0]
    expected = f"{zlib.adler32(data):08x}"
    assert out == expected
    assert xrdcks.read(os.fsencode(path), int(path.stat().st_mtime)) == expected


@pytest.mark.parametrize("by_name", [True, False], ids=["getxattrat", "by-path"])
def test_xrdcks_read_at_answers_as_read_does(tmp_path, monkeypatch, by_name):
    """The crawl reads the xattr by name in its directory where the kernel has getxattrat
    (6.13+), by path elsewhere: the same answer either way, for every kind of file."""
    kernel = tuple(int(n) for n in re.findall(r"\d+", os.uname().release)[:2])
    if by_name and kernel < (6, 13):
        pytest.skip("this kernel has no getxattrat")
    assert xrdcks._at.available == (kernel >= (6, 13))  # the probe found it
    monkeypatch.setattr(xrdcks._at, "available", by_name)
    mtime = 1_700_000_000
    files = {"good": xrdcks.encode("0a0b0c0d", mtime), "stale": xrdcks.encode("0a0b0c0d", 1),
             "short": b"adler32", "long": b"x" * 1000, "none": None}
    for name, value in files.items():
        (tmp_path / name).write_bytes(b"data")
        if value is not None:
            os.setxattr(tmp_path / name, xrdcks.XATTR_NAME, value)
    directory = os.fsencode(tmp_path)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        got = {name: xrdcks.read_at(fd, name.encode(), directory + b"/" + name.encode(), mtime)
               for name in files}
        # A file gone since its directory was listed: none recorded, as by path.
        assert xrdcks.read_at(fd, b"gone", directory + b"/gone", mtime) is None
    finally:
        os.close(fd)
    assert got == {n: xrdcks.read(directory + b"/" + n.encode(), mtime) for n in files}
    assert got == {"good": "0a0b0c0d", "stale": None, "short": None, "long": None,
                   "none": None}


class _Pipe:
    """A source over a pipe whose writer the test controls."""

    def __init__(self):
        self.r, self.w = os.pipe()
        self.closed = threading.Event()

    def readinto(self, buf):
        return os.readv(self.r, [buf])

    def close(self):
        os.close(self.r)
        self.closed.set()


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 4 * 1024 * 1024 + 3, 9_000_001])
def test_stream_checksum_matches_zlib(size):
    data = os.urandom(size)
    pipe = _Pipe()
    threading.Thread(target=lambda: (os.write(pipe.w, data) if data else None,
                                     os.close(pipe.w)), daemon=True).start()
    result = checksum(pipe, time.monotonic() + 30, size_hint=size)
    pipe.close()
    assert result == type(result)(f"{zlib.adler32(data):08x}", size)
    assert adler32_hex(zlib.adler32(data)) == result.adler32


def test_stream_times_out_on_a_read_that_hangs():
    pipe = _Pipe()
    os.write(pipe.w, b"x" * 10)  # ten bytes, then the writer stalls forever
    started = time.monotonic()
    result = checksum(pipe, started + 0.5, size_hint=100)
    assert result.timed_out and result.adler32 is None
    assert result.bytes_read == 10
    assert time.monotonic() - started < 5
    assert not pipe.closed.is_set()  # the abandoned read still owns the source...
    os.close(pipe.w)  # ...until its read returns
    assert pipe.closed.wait(5)


def test_stream_reports_read_errors():
    class Failing:
        def readinto(self, buf):
            raise OSError(5, "Input/output error")

        def close(self):
            pass

    result = checksum(Failing(), time.monotonic() + 5)
    assert result.error is not None and result.error.errno == 5


def test_stop_request_ends_a_hanging_read_promptly():
    from pnfsmon.tester.stream import Streamer

    pipe = _Pipe()
    os.write(pipe.w, b"y" * 7)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    streamer = Streamer(65536)
    result = streamer.checksum(pipe, started + 60, stop)
    assert result.interrupted and not result.timed_out and result.bytes_read == 7
    assert time.monotonic() - started < 5  # not the 60 s deadline
    os.close(pipe.w)
    assert pipe.closed.wait(5)  # the abandoned read closed its source
    streamer.close()


def test_max_rate_caps_a_workers_reads(tmp_path):
    from pnfsmon.tester.posix_read import PosixFile
    from pnfsmon.tester.stream import Streamer

    path = tmp_path / "two-mb"
    path.write_bytes(os.urandom(2_000_000))
    streamer = Streamer(chunk=256 * 1024, max_rate=4e6)  # 4 MB/s
    started = time.monotonic()
    source = PosixFile(os.fsencode(path))
    result = streamer.checksum(source, started + 60)
    source.close()
    streamer.close()
    assert result.bytes_read == 2_000_000
    assert result.adler32 == f"{zlib.adler32(path.read_bytes()):08x}"
    assert time.monotonic() - started >= 0.45  # 2 MB at 4 MB/s: at least half a second


def test_scrub_hides_url_passwords_and_registered_secrets():
    from pnfsmon.schema import secrets

    assert secrets.scrub("mysql+pymysql://mon:p%40ss:w/rd@db/pn failed") == \
        "mysql+pymysql://mon:***@db/pn failed"
    assert secrets.scrub("postgresql+psycopg://u:x@h/d") == "postgresql+psycopg://u:***@h/d"
    # XRootD URLs with a port and an '@' in a path are not database URLs: left alone.
    path = "root://host:1094//store/a@b.root"
    assert secrets.scrub(path) == path
    secrets.register("Unit-S3cret/@!")
    for form in ("Unit-S3cret/@!", "Unit-S3cret%2F%40%21"):
        assert secrets.scrub(f"login with {form} refused") == "login with *** refused"
    url = secrets.without_password(sa.make_url("mysql+pymysql://mon:pw@db:3307/pn?charset=utf8"))
    assert url.render_as_string(hide_password=False) == \
        "mysql+pymysql://mon@db:3307/pn?charset=utf8"


def test_the_query_window_halves_once_per_burst_and_grows_back():
    from pnfsmon.crawler.xrootd_queries import Window

    w = Window(256)
    sent_in = w.round
    w.failed(sent_in)
    w.failed(sent_in)  # the same burst's other errors: no further cut
    assert w.size == 128
    w.failed(w.round)
    assert w.size == 64
    for _ in range(64):
        w.succeeded()
    assert w.size == 80  # a window's worth of answers: a quarter more
    for _ in range(20):
        w.failed(w.round)
    assert w.size == 1  # never below one
    for _ in range(10_000):
        w.succeeded()
    assert w.size == 256  # never above the ceiling


def test_checksum_queries_retry_with_backoff_then_mark_unreadable():
    """The scheduler's events with a clock of our own: an expired query is asked again
    after 0.25, 0.5, 1 ... s; kept failing, the file is marked unreadable, never "none
    kept"; kXR_Unsupported ends all asking with "none kept"."""
    from pnfsmon.crawler import xrootd_queries as q
    from pnfsmon.crawler.listing import Listed
    from pnfsmon.schema.reference import Reference

    now = [0.0]
    sent: list = []
    queries = q.ChecksumQueries(sent.append, ceiling=4, clock=lambda: now[0])
    expired = {"ok": False, "errno": 0, "code": 206, "message": "[ERROR] Operation expired"}
    ok = {"ok": True, "errno": 0, "code": 0, "message": ""}
    item = Listed(b"root://h//f", 1, 0)
    assert queries.add("/f", item) == []
    waits = []
    for attempt in range(1, q.ATTEMPTS + 1):
        queries.send()
        assert len(sent) == attempt
        done = queries.answered(sent[-1], expired, None)
        if attempt < q.ATTEMPTS:
            assert done == [] and queries.busy
            waits.append(queries.seconds_to_next())
            queries.send()
            assert len(sent) == attempt  # not before its time
            now[0] += waits[-1]
    assert waits == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert done == [item] and not queries.busy
    assert (item.reference, item.recorded_from) == (Reference.UNREADABLE, "xrootd")
    assert "Operation expired (asked 8 times)" in item.unread
    assert queries.window.size == 1

    good, other, late = (Listed(b"root://h//" + n, 1, 0) for n in (b"g", b"o", b"l"))
    queries.add("/g", good)
    queries.add("/o", other)
    queries.send()  # one in flight: the window is down to one
    assert [s.item for s in sent[-1:]] == [other]
    assert queries.answered(sent[-1], ok, b"adler32 30001\0") == [other]
    assert (other.recorded_adler32, other.reference) == ("00030001", Reference.STORAGE)
    unsupported = {"ok": False, "errno": 3013, "code": 400, "message": "no checksums"}
    queries.send()
    assert queries.answered(sent[-1], unsupported, None) == [good]
    assert queries.add("/l", late) == [late]  # not asked any more
    assert (good.reference, late.reference) == (Reference.NONE_KEPT, Reference.NONE_KEPT)


def test_a_directory_plan_trusts_a_stat_that_found_nothing_only_with_its_parent():
    """``DirectoryPlan.settle``: a known directory whose stat found nothing is gone when
    its parent is gone too, or was listed without it, and nothing below it answered;
    otherwise it is unlisted. A directory stat'ed unchanged that its parent's listing no
    longer holds is unlisted, not carried over."""
    from pnfsmon.crawler.directories import DirectoryPlan, Known

    names = [b"/r", b"/r/a", b"/r/a/x", b"/r/a/x/y", b"/r/b", b"/r/b/c", b"/r/d", b"/r/d/e",
             b"/r/f", b"/r/f/g", b"/r/h", b"/r/h/i", b"/r/h/i/j"]
    plan = DirectoryPlan(b"/r/", {n: Known(1, False) for n in names}, started=10.0)
    plan.listing(b"/r", 2, subdirectories=[b"/r/a", b"/r/b", b"/r/d", b"/r/h"])  # f went
    plan.gone(b"/r/a/x")  # a skipped as unchanged: x cannot have gone
    plan.gone(b"/r/a/x/y")  # below it: nothing confirms it either
    assert not plan.must_list(b"/r/a", 1)
    plan.gone(b"/r/f")  # the root's listing lacks f: gone...
    plan.gone(b"/r/f/g")  # ...and below it too
    plan.listing(b"/r/b", 2, subdirectories=[b"/r/b/c"])
    plan.gone(b"/r/b/c")  # b's listing holds it: not trusted
    plan.gone(b"/r/h")  # the root's listing holds h, and h/i/j answered
    assert not plan.must_list(b"/r/h/i/j", 1)
    assert not plan.must_list(b"/r/d", 1)  # d stat'ed unchanged...
    unlisted = dict(plan.settle())
    assert plan.vanished == [b"/r/f", b"/r/f/g"]
    assert set(unlisted) == {b"/r/a/x", b"/r/b/c", b"/r/h"}
    assert "parent's mtime did not move" in unlisted[b"/r/a/x"]
    assert "parent's listing holds it" in unlisted[b"/r/b/c"]
    assert "a directory below it answered" in unlisted[b"/r/h"]
    # A directory stat'ed unchanged whose parent's listing lacks it: gone since its stat.
    plan = DirectoryPlan(b"/r", {n: Known(1, False) for n in names}, started=10.0)
    assert not plan.must_list(b"/r/d", 1)
    plan.listing(b"/r", 2, subdirectories=[b"/r/a"])
    assert [d for d, _ in plan.settle()] == [b"/r/d"]
    assert plan.carried([b"/r/d"]) == []
    # The root found gone by its stat: nothing above it can confirm that.
    plan = DirectoryPlan(b"/r", {b"/r": Known(1, False)}, started=10.0)
    plan.gone(b"/r")
    assert [d for d, _ in plan.settle()] == [b"/r"] and plan.vanished == []
