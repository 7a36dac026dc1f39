"""dCache namespaces through the FUSE emulator of a mount (``tests/dcache_fuse.py``: the
dot-commands ``.(use)(2)(NAME)``, ``.(get)(NAME)(checksums)``, ``.(get)(NAME)(locality)``
open by name and are never listed), the parsers of their text on their own, the grace
window for files still being written, and checking a chosen subset now; on every
database backend."""

from __future__ import annotations

import os
import time

import pytest
import sqlalchemy as sa
from helpers import flip_bit, random_bytes, row, verdicts, write_file
from zlib_ng import zlib_ng

from pnfsmon.crawler.chimera import ChimeraNamespace, parse_checksums, parse_locality
from pnfsmon.crawler.crawl import crawl
from pnfsmon.crawler.pnfs import MalformedMetadata, PnfsNamespace, parse_layer2
from pnfsmon.schema.lease import Lease, request_now
from pnfsmon.schema.reference import Reference
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import events
from pnfsmon.tester.readers import make_reader
from pnfsmon.tester.stream import adler32_hex
from pnfsmon.tester.worker import CheckOptions, run
from pnfsmon.web.cli import format_summary
from pnfsmon.web.report import write_report
from pnfsmon.web.summary import summarize


def adler(data: bytes) -> str:
    return adler32_hex(zlib_ng.adler32(data))


def check(engine, **options) -> None:
    run(Lease(engine, lease_seconds=60), make_reader("auto", 10),
        CheckOptions(timeout=10, recheck_after=0, **options))


def test_pnfs_layer2_gives_checksum_and_pools_and_bit_rot_is_found(engine, tmp_path,
                                                                    dcache):
    """Through the FUSE emulator of a /pnfs mount: layer 2 read by name (never listed),
    wrapped flags, a short Adler32, pools kept; rot and a lost file found by the checks
    read through the same mount."""
    backing = tmp_path / "backing"
    good, rot, zeros = random_bytes(5000, 1), random_bytes(7000, 2), b"\x00" * 3
    write_file(backing / "data" / "a.root", good)
    write_file(backing / "data" / "b <&>.root", rot)
    write_file(backing / "data" / "c.dat", zeros)
    write_file(backing / "data" / "bad.dat", b"x")
    write_file(backing / "data" / "lost.dat", b"lost")
    mount = dcache(backing, overrides={
        b"data/a.root": {"layer2": f"2,0,0,0.0,0.0 :c=1:{adler(good)};\n"
                                   "cabinet-1-1-12_1 cabinet-1-1-9_1\n".encode()},
        # Flags wrapped mid-value over two lines, pools on their own lines.
        b"data/b <&>.root": {"layer2": f"2,0,0,0.0,0.0\n:h=no;l={len(rot)};c=1:"
                                       f"{adler(rot)[:3]}\n{adler(rot)[3:]};\npoolB\n"
                                       .encode()},
        # Adler32 of three zero bytes is 0x00030001: dCache may store it as "30001".
        b"data/c.dat": {"layer2": b"2,0,0,0.0,0.0\n:c=1:30001;\npoolC\n"},
        b"data/bad.dat": {"layer2": b"2,0,0,0.0,0.0\n:c=1:not-hex;\npoolD\n"},
    })
    tree = os.fsencode(mount.root)
    a, b, c, bad, lost = (os.path.join(tree, b"data", n) for n in
                          (b"a.root", b"b <&>.root", b"c.dat", b"bad.dat", b"lost.dat"))
    stats, _ = crawl(engine, PnfsNamespace(tree), "T1")
    assert stats.files == 5  # the dot-commands are never listed
    assert [(p, why.split(":")[0]) for p, why in stats.malformed] == [(bad, "layer 2")]
    ra, rb, rc = row(engine, a), row(engine, b), row(engine, c)
    assert (ra.recorded_adler32, ra.recorded_from, ra.pool) == (
        adler(good), "pnfs", "cabinet-1-1-12_1 cabinet-1-1-9_1")
    assert (rb.recorded_adler32, rb.pool) == (adler(rot), "poolB")
    assert rc.recorded_adler32 == adler(zeros) == "00030001"
    assert row(engine, bad).recorded_adler32 is None
    assert row(engine, lost).pool == "pool_emulated_1"

    flip_bit(backing / "data" / "b <&>.root", 100)  # silent rot: same size and mtime
    os.unlink(backing / "data" / "lost.dat")  # lost by the pool
    check(engine)
    got = verdicts(engine)
    assert got[a] == got[c] == Status.OK
    assert got[b] == Status.CORRUPTED and got[lost] == Status.MISSING
    # A recorded checksum that cannot be read is not replaced by the check's own reading.
    assert got[bad] == Status.UNCHECKED and "not-hex" in row(engine, bad).error


def test_pnfs_without_layer2_is_reported_and_still_listed(engine, tmp_path, dcache):
    write_file(tmp_path / "backing" / "lone.dat", b"data")
    mount = dcache(tmp_path / "backing", overrides={b"lone.dat": {"layer2": None}})
    stats, _ = crawl(engine, PnfsNamespace(os.fsencode(mount.root)), "T1")
    assert stats.files == 1
    assert stats.malformed == [(os.fsencode(mount.root / "lone.dat"),
                                "layer 2: No such file or directory")]


def test_chimera_checksums_locality_and_nearline(engine, tmp_path, dcache):
    backing = tmp_path / "backing"
    one, two, tape = random_bytes(3000, 3), random_bytes(4000, 4), random_bytes(100, 5)
    for name, data in ((b"a", one), (b"-b\tc", two), (b"t", tape), (b"junk", b"j"),
                       (b"wrong", b"w"), (b"non-utf8-\xff", b"n")):
        write_file(os.path.join(os.fsencode(backing), name), data)
    mount = dcache(backing, overrides={
        b"-b\tc": {"checksums": f"MD5:0123, ADLER32:{adler(two).upper()}".encode(),
                   "locality": b"ONLINE_AND_NEARLINE\n"},
        b"t": {"locality": b"NEARLINE\n"},
        b"junk": {"checksums": b"\xff\xfe garbage"},
        b"wrong": {"checksums": b"ADLER32:0badc0de\n"},  # the catalog of dCache is wrong
    })
    root = os.fsencode(mount.root)
    a, b, t, junk, wrong, odd = (os.path.join(root, n) for n in
                                 (b"a", b"-b\tc", b"t", b"junk", b"wrong", b"non-utf8-\xff"))
    namespace = ChimeraNamespace(root)
    stats, _ = crawl(engine, namespace, "T1")
    assert stats.files == 6 and [p for p, _ in stats.malformed] == [junk]
    assert row(engine, b).recorded_adler32 == adler(two)
    assert row(engine, b).recorded_from == "chimera"
    check(engine)
    got = verdicts(engine)
    assert got[a] == got[b] == got[odd] == Status.OK
    assert got[junk] == Status.UNCHECKED  # its recorded checksum cannot be read
    assert got[wrong] == Status.CORRUPTED
    assert got[t] == Status.NEARLINE  # listed, never read: it would be staged from tape
    with engine.connect() as conn:
        read = {r for (r,) in conn.execute(sa.select(events.c.file_id))}
    assert row(engine, t).id not in read

    # Asked for explicitly, the tape-only file is queued and read.
    crawl(engine, namespace, "T1", include_nearline=True)
    assert verdicts(engine)[t] == Status.UNCHECKED
    check(engine)
    assert verdicts(engine)[t] == Status.OK
    # Back to tape-only: parked again, not re-read.
    crawl(engine, namespace, "T1")
    assert verdicts(engine)[t] == Status.NEARLINE


def test_grace_window_lists_young_files_and_judges_them_later(engine, tree):
    young = write_file(tree / "young.dat", b"still being written")
    old = write_file(tree / "old.dat", b"finished long ago")
    past = time.time() - 3 * 3600
    os.utime(old, (past, past))
    crawl(engine, os.fsencode(tree), "s", grace=2 * 3600)
    check(engine)
    got = verdicts(engine)
    assert got[old] == Status.OK and got[young] == Status.UNCHECKED
    with engine.connect() as conn:
        s = summarize(conn)
    assert (s.in_grace, s.leased) == (1, 0)
    # Another crawl of the unchanged file keeps it waiting; it does not queue it.
    crawl(engine, os.fsencode(tree), "s", grace=2 * 3600)
    lease = Lease(engine, lease_seconds=60)
    assert lease.claim(10, due_before=0) == []  # only files never checked
    # Once mtime + grace has passed, it comes due without another crawl, at the head.
    later = os.stat(young).st_mtime + 2 * 3600 + 1
    claimed = lease.claim(10, due_before=0, now=later)
    assert [c.path for c in claimed] == [young]


def test_check_subset_now_by_prefix_and_by_paths(engine, tree, tmp_path):
    files = {n: write_file(tree / d / n, random_bytes(100, i))
             for i, (d, n) in enumerate([("pool1", "a"), ("pool1", "b"), ("pool2", "c"),
                                         ("pool10", "d")])}
    crawl(engine, os.fsencode(tree), "s")
    check(engine)

    def checks() -> dict[bytes, int]:
        with engine.connect() as conn:
            counts = dict(conn.execute(sa.select(events.c.file_id, sa.func.count())
                                       .group_by(events.c.file_id)).all())
        return {p: counts.get(row(engine, p).id, 0) for p in files.values()}

    assert set(checks().values()) == {1}
    # Not due again for 30 days; but an operator asks for pool1 now ("pool10" is not in it).
    marked, _ = request_now(engine, prefix=os.fsencode(tree / "pool1"))
    assert marked == 2
    options = dict(urgent_only=True)
    check(engine, **options)
    got = checks()
    assert (got[files["a"]], got[files["b"]], got[files["c"]], got[files["d"]]) == (2, 2, 1, 1)

    marked, unknown = request_now(engine, paths=[files["c"], b"/not/crawled"])
    assert (marked, unknown) == (1, [b"/not/crawled"])
    check(engine, **options)
    assert checks()[files["c"]] == 2 and checks()[files["d"]] == 1


def test_checksums_and_locality_parsers_on_their_own():
    assert parse_checksums(b"ADLER32:1\n") == "00000001"
    assert parse_checksums(b"MD5:0123abcd, ADLER32:AbCdEf01") == "abcdef01"
    assert parse_checksums(b"") is None and parse_checksums(b"MD5:00") is None
    for bad in (b"ADLER32:xyz", b"ADLER32", b"\xff"):
        with pytest.raises(MalformedMetadata):
            parse_checksums(bad)
    assert parse_locality(b"nearline\n") == "NEARLINE"
    with pytest.raises(MalformedMetadata):
        parse_locality(b"SOMEWHERE")


def test_layer2_parser_on_its_own():
    assert parse_layer2(b"") .adler32 is None
    layer = parse_layer2(b"2,0,0,0.0,0.0 :c=1:f9b03ea3;\ncabinet-1-1-12_1 cabinet-1-1-9_1\n")
    assert layer.adler32 == "f9b03ea3" and layer.pools == ("cabinet-1-1-12_1",
                                                           "cabinet-1-1-9_1")
    for bad in (b":c=1:zz;", b":novalue;", b"2,0,0 :c=1:ok; pool\xff"):
        with pytest.raises(MalformedMetadata):
            parse_layer2(bad)


def test_a_checksum_dcache_could_not_give_is_asked_again_by_the_check(engine, tmp_path,
                                                                      dcache):
    """Chimera fails to answer one file's checksums at the crawl: the file is marked, not
    given a reference. Its check asks again: still failing, the file is not judged (its
    own reading does not become the reference); answered, the recorded checksum is the
    reference, and the damage done meanwhile is found."""
    backing = tmp_path / "backing"
    good, kept = random_bytes(3000, 1), random_bytes(4000, 2)
    write_file(backing / "good", good)
    write_file(backing / "kept", kept)
    mount = dcache(backing, name="m", overrides={b"kept": {"checksums": None}})
    root = os.fsencode(mount.root)
    a, b = os.path.join(root, b"good"), os.path.join(root, b"kept")
    stats, _ = crawl(engine, ChimeraNamespace(root), "T1")
    assert (stats.checksums_unread, stats.unread_examples) == (1, [b])
    assert Reference(row(engine, b).reference) == Reference.UNREADABLE

    check(engine)
    r = row(engine, b)
    assert (r.status, r.recorded_adler32, Reference(r.reference)) == (
        Status.UNCHECKED, None, Reference.UNREADABLE)
    assert "not judged: the recorded checksum could not be read" in r.error
    assert row(engine, a).status == Status.OK
    # The report's note and `status` tell it apart from "the storage keeps none".
    summary = write_report(engine, tmp_path / "report")
    page = " ".join((tmp_path / "report" / "index.html").read_text().split())
    assert "No reference checksum for 1 file: the storage could not give" in page
    assert "No checksum recorded by the storage" not in page
    assert summary.as_json()["references"]["unreadable"] == 1
    assert "1 file has no reference: the storage keeps its checksum but could not " \
        "give it" in format_summary(summary)

    flip_bit(backing / "kept", 99)  # after the crawl, behind dCache's recorded checksum
    mount.stop()
    dcache(backing, name="m", overrides={b"kept": {"checksums": f"ADLER32:{adler(kept)}\n"
                                                   .encode()}})
    check(engine)
    r = row(engine, b)
    assert (r.status, r.recorded_adler32, r.recorded_from, Reference(r.reference)) == (
        Status.CORRUPTED, adler(kept), "chimera", Reference.STORAGE)
