"""Concurrent walks of mounts, through the FUSE emulator of a dCache mount with a delay on
every call: many calls in flight (counted by the server, nothing timed), exactly the
listing and counters of a walk with --parallel 1, and a mount that stops answering turned
into an unlisted directory instead of a crawl that hangs."""

from __future__ import annotations

import os
import select
import stat
import subprocess
import sys

import pytest

from pnfsmon.crawler.chimera import ChimeraNamespace
from pnfsmon.crawler.crawl import crawl
from pnfsmon.crawler.listing import WalkStats
from pnfsmon.crawler.pnfs import PnfsNamespace
from pnfsmon.crawler.posix import PosixNamespace
from pnfsmon.crawler.walk import filesystem_type, is_remote
from pnfsmon.schema.status import Status
from tests.helpers import random_bytes, row, verdicts, write_file

ODD = [b"plain.root", b"non-utf8-\xff\xfe.dat", b"new\nline.dat", b"tab\there.dat",
       b"<script>&amp;\"'.dat", b"-leading-dash", b" space "]


def hostile_backing(root) -> None:
    base = os.fsencode(root)
    for i in range(12):
        for j, name in enumerate(ODD):
            write_file(os.path.join(base, b"d%d" % i, b"s%d" % (i % 3), name),
                       random_bytes(10 + i + j, i * 10 + j))
    os.makedirs(os.path.join(base, b"empty", b"nested-empty"))
    os.mkfifo(os.path.join(base, b"a-fifo"))
    os.symlink(b"d1", os.path.join(base, b"link-to-dir"))
    os.symlink(b"d1/s1/plain.root", os.path.join(base, b"link-to-file"))
    if os.geteuid() == 0:
        os.mknod(os.path.join(base, b"a-device"), stat.S_IFCHR | 0o600, os.makedev(1, 5))


def listing(namespace) -> tuple[list, dict]:
    stats = WalkStats()
    items = sorted((i.path, i.size, i.mtime_ns, i.recorded_adler32, i.pool, i.nearline)
                   for i in namespace.walk(stats))
    counters = dict(files=stats.files, directories=stats.directories,
                    empty=stats.empty_directories, unlisted=sorted(stats.unreadable),
                    malformed=sorted(stats.malformed), skipped=stats.skipped,
                    bytes=stats.bytes)
    return items, counters


@pytest.mark.parametrize("kind", [PosixNamespace, PnfsNamespace, ChimeraNamespace])
def test_parallel_walk_is_the_walk_of_one_call_at_a_time(tmp_path, dcache, kind):
    backing = tmp_path / "backing"
    hostile_backing(backing)
    mount = dcache(backing, delay=0.002, overrides={
        b"d3/s0/plain.root": {"layer2": b":c=1:zz;", "checksums": b"ADLER32:zz"},
        b"d4/s1/tab\there.dat": {"locality": b"NEARLINE\n"}})
    root = os.fsencode(mount.root)
    assert filesystem_type(root) == "fuse" and is_remote(root)
    one = listing(kind(root, parallel=1))
    mount.reset_counts()
    many = listing(kind(root, parallel=16))
    assert mount.max_in_flight >= 8  # many calls were in flight at once
    assert many == one
    items, counters = one
    assert counters["files"] == 12 * len(ODD) == len(items)
    assert counters["skipped"] == 3 + (os.geteuid() == 0)  # fifo, links, device
    assert counters["empty"] == 1 and counters["unlisted"] == []
    if kind is not PosixNamespace:
        assert len(counters["malformed"]) == 1  # dot-commands are never listed as files
    if kind is ChimeraNamespace:
        assert sum(nearline for *_, nearline in items) == 1


def test_a_mount_that_stops_answering_is_unlisted_not_hung(db_url, engine, tmp_path, dcache):
    backing = tmp_path / "backing"
    for d in ("ok", "stuck", "stuck/deeper"):
        write_file(backing / d / "f.dat", d.encode())
    write_file(backing / "ok" / "gone.dat", b"gone")
    mount = dcache(backing, name="pnfs")
    root = os.fsencode(mount.root)
    crawl(engine, PnfsNamespace(root), "s")
    mount.stop()
    os.unlink(backing / "ok" / "gone.dat")
    mount = dcache(backing, name="pnfs", hang=b"stuck")  # its calls never return
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")}
    env["PNFSMON_DB"] = db_url
    # One file of four deleted: beyond max_crawl_drop, so allowed explicitly.
    proc = subprocess.Popen([sys.executable, "-m", "pnfsmon", "crawl", str(mount.root),
                             "--namespace", "pnfs", "--site", "s", "--request-timeout", "1",
                             "--full", "--allow-drop"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The crawl finishes its work and says so; the thread stuck in the hung call keeps the
    # process from exiting (the kernel holds it, as on a hung hard NFS mount) until the
    # mount answers or goes away.
    summary = proc.stdout.readline()
    assert summary.startswith("crawled "), proc.stderr.read()
    mount.stop()
    _, err = proc.communicate(timeout=60)
    r = subprocess.CompletedProcess(proc.args, proc.returncode, summary, err)
    assert r.returncode == 1, r.stderr
    stuck = os.path.join(root, b"stuck")
    assert f"could not list {stuck.decode()}: no answer within 1 s" in r.stderr
    assert "1 unreadable" in r.stdout and "vanished 1" in r.stdout
    got = verdicts(engine)
    assert got[os.path.join(root, b"ok", b"gone.dat")] == Status.VANISHED
    # Below the directory that did not answer, nothing is called vanished.
    assert got[os.path.join(stuck, b"f.dat")] == Status.UNCHECKED
    assert got[os.path.join(stuck, b"deeper", b"f.dat")] == Status.UNCHECKED
    assert row(engine, os.path.join(root, b"ok", b"f.dat")).status == Status.UNCHECKED


def test_a_dead_mount_stops_the_crawl_at_the_cap_with_exit_3(db_url, engine, tmp_path, dcache):
    """Every directory but one stops answering: each given-up call holds a thread and a
    directory descriptor until the mount answers, so at the cap (here 4: --parallel 2, at
    least 4) the crawl stops with exit 3 naming the mount, keeps what it listed and marks
    nothing vanished."""
    backing = tmp_path / "backing"
    stuck = [f"stuck{i}" for i in range(8)]
    for d in ("ok", *stuck):
        write_file(backing / d / "f.dat", d.encode())
    mount = dcache(backing, name="pnfs")
    root = os.fsencode(mount.root)
    crawl(engine, PnfsNamespace(root), "s")  # a first, complete crawl
    mount.stop()
    write_file(backing / "new.dat", b"new")  # described before any directory is listed
    mount = dcache(backing, name="pnfs", hang=tuple(d.encode() for d in stuck))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")}
    env["PNFSMON_DB"] = db_url
    proc = subprocess.Popen([sys.executable, "-m", "pnfsmon", "crawl", str(mount.root),
                             "--namespace", "pnfs", "--site", "s", "--request-timeout", "1",
                             "--full", "--parallel", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    line = ""
    while not line.startswith("pnfsmon: error:"):
        # 150 s of silence (a loaded machine takes well over a minute at times): the crawl
        # is stuck behind its hung calls, with no error line.
        if not select.select([proc.stderr], [], [], 150)[0]:
            break
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
    mount.stop()  # the kernel lets the hung threads go: the process can exit
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, "".join(lines) + err + out
    assert f"mount {mount.root} stopped answering: 4 calls given up" in line
    given_up = sum("no answer within 1 s" in x for x in lines)
    assert given_up == 4  # no thread or descriptor past the cap
    got = verdicts(engine)
    assert got[os.path.join(root, b"new.dat")] == Status.UNCHECKED  # what it found: recorded
    assert Status.VANISHED not in got.values()  # an incomplete crawl marks nothing
