"""dCache namespaces on real trees that carry their magic files (``.(use)(2)(NAME)``,
``.(get)(NAME)(checksums)``, ``.(get)(NAME)(locality)``), the grace window for files still
being written, and checking a chosen subset now; on every database backend."""

from __future__ import annotations

import os
import time

import sqlalchemy as sa
from helpers import flip_bit, random_bytes, row, verdicts, write_file
from zlib_ng import zlib_ng

from crawler.chimera import ChimeraNamespace
from crawler.cli import crawl
from crawler.pnfs import PnfsNamespace, parse_layer2
from schema.lease import Lease, request_now
from schema.status import Status
from schema.tables import events
from tester.readers import make_reader
from tester.stream import adler32_hex
from tester.worker import CheckOptions, run
from web.summary import summarize


def adler(data: bytes) -> str:
    return adler32_hex(zlib_ng.adler32(data))


def check(engine, **options) -> None:
    run(Lease(engine, lease_seconds=60), make_reader("auto", 10),
        CheckOptions(timeout=10, recheck_after=0, **options))


def pnfs_file(directory, name: bytes, data: bytes, layer2: bytes) -> bytes:
    path = write_file(os.path.join(os.fsencode(directory), name), data)
    with open(os.path.join(os.fsencode(directory), b".(use)(2)(" + name + b")"), "wb") as fh:
        fh.write(layer2)
    return path


def test_pnfs_layer2_gives_checksum_and_pools_and_bit_rot_is_found(engine, tree):
    good, rot, zeros = random_bytes(5000, 1), random_bytes(7000, 2), b"\x00" * 3
    d = tree / "data"
    d.mkdir()
    a = pnfs_file(d, b"a.root", good,
                  f"2,0,0,0.0,0.0 :c=1:{adler(good)};\ncabinet-1-1-12_1 cabinet-1-1-9_1\n"
                  .encode())
    # Flags wrapped mid-value over two lines, pools on their own lines.
    b = pnfs_file(d, b"b <&>.root", rot,
                  f"2,0,0,0.0,0.0\n:h=no;l={len(rot)};c=1:{adler(rot)[:3]}\n"
                  f"{adler(rot)[3:]};\npoolB\n".encode())
    # Adler32 of three zero bytes is 0x00030001: dCache may store it as "30001".
    c = pnfs_file(d, b"c.dat", zeros, b"2,0,0,0.0,0.0\n:c=1:30001;\npoolC\n")
    bad = pnfs_file(d, b"bad.dat", b"x", b"2,0,0,0.0,0.0\n:c=1:not-hex;\npoolD\n")
    stats, _ = crawl(engine, PnfsNamespace(os.fsencode(tree)), "T1")
    assert stats.files == 4  # the magic files are not listed as files
    assert [(p, why.split(":")[0]) for p, why in stats.malformed] == [(bad, "layer 2")]
    ra, rb, rc = row(engine, a), row(engine, b), row(engine, c)
    assert (ra.recorded_adler32, ra.recorded_from, ra.pool) == (
        adler(good), "pnfs", "cabinet-1-1-12_1 cabinet-1-1-9_1")
    assert (rb.recorded_adler32, rb.pool) == (adler(rot), "poolB")
    assert rc.recorded_adler32 == adler(zeros) == "00030001"
    assert row(engine, bad).recorded_adler32 is None

    flip_bit(b, 100)  # silent rot: same size and mtime
    check(engine)
    got = verdicts(engine)
    assert got[a] == got[c] == got[bad] == Status.OK
    assert got[b] == Status.CORRUPTED


def test_pnfs_without_layer2_is_reported_and_still_listed(engine, tree):
    lone = write_file(tree / "lone.dat", b"data")
    stats, _ = crawl(engine, PnfsNamespace(os.fsencode(tree)), "T1")
    assert stats.files == 1 and stats.malformed[0][0] == lone


def chimera_file(directory, name: bytes, data: bytes, checksums: bytes | None,
                 locality: bytes) -> bytes:
    path = write_file(os.path.join(os.fsencode(directory), name), data)
    base = os.fsencode(directory)
    if checksums is not None:
        with open(os.path.join(base, b".(get)(" + name + b")(checksums)"), "wb") as fh:
            fh.write(checksums)
    with open(os.path.join(base, b".(get)(" + name + b")(locality)"), "wb") as fh:
        fh.write(locality)
    return path


def test_chimera_checksums_locality_and_nearline(engine, tree):
    one, two, tape = random_bytes(3000, 3), random_bytes(4000, 4), random_bytes(100, 5)
    a = chimera_file(tree, b"a", one, f"ADLER32:{adler(one)}\n".encode(), b"ONLINE\n")
    b = chimera_file(tree, b"-b\tc", two, f"MD5:0123, ADLER32:{adler(two).upper()}".encode(),
                     b"ONLINE_AND_NEARLINE\n")
    t = chimera_file(tree, b"t", tape, f"ADLER32:{adler(tape)}\n".encode(), b"NEARLINE\n")
    junk = chimera_file(tree, b"junk", b"j", b"\xff\xfe garbage", b"ONLINE\n")
    namespace = ChimeraNamespace(os.fsencode(tree))
    stats, _ = crawl(engine, namespace, "T1")
    assert stats.files == 4 and [p for p, _ in stats.malformed] == [junk]
    assert row(engine, b).recorded_adler32 == adler(two)
    assert row(engine, b).recorded_from == "chimera"
    check(engine)
    got = verdicts(engine)
    assert got[a] == got[b] == got[junk] == Status.OK
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


def test_layer2_parser_on_its_own():
    assert parse_layer2(b"") .adler32 is None
    layer = parse_layer2(b"2,0,0,0.0,0.0 :c=1:f9b03ea3;\ncabinet-1-1-12_1 cabinet-1-1-9_1\n")
    assert layer.adler32 == "f9b03ea3" and layer.pools == ("cabinet-1-1-12_1",
                                                           "cabinet-1-1-9_1")
