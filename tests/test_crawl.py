"""The crawler against real trees and real databases: odd names, special files, recorded
checksums, re-crawls (new / changed / vanished), unreadable directories."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest
import sqlalchemy as sa

from pnfsmon.crawler import posix
from pnfsmon.crawler.crawl import crawl
from pnfsmon.crawler.ingest import Ingest
from pnfsmon.crawler.listing import WalkStats
from pnfsmon.schema import counts
from pnfsmon.schema.lease import Lease
from pnfsmon.schema.reference import Reference
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import crawls, statuses
from pnfsmon.tester.posix_read import PosixReader
from pnfsmon.tester.worker import CheckOptions, run
from tests.helpers import (
    as_nobody,
    flip_bit,
    open_path_to,
    random_bytes,
    row,
    verdicts,
    write_file,
)

ODD_NAMES = [
    b"plain.root",
    b"non-utf8-\xff\xfe.dat",
    b"new\nline.dat",
    b"tab\there.dat",
    b"<script>&amp;\"'.dat",
    b"-leading-dash",
    b" space ",
]


def build_hostile_tree(root: bytes) -> dict[bytes, bytes]:
    """Regular files (returned: path → content) plus things that must not be listed."""
    files = {}
    for i, name in enumerate(ODD_NAMES):
        p = os.path.join(root, b"odd", name)
        files[write_file(p, random_bytes(100 + i, seed=i))] = random_bytes(100 + i, seed=i)
    # A path of about 4,050 bytes (PATH_MAX is 4,096): nested 200-byte directory names.
    deep = root
    while len(deep) + 201 < 3900:
        deep = os.path.join(deep, b"d" * 200)
    name = b"f" * (4050 - len(deep) - 1)
    files[write_file(os.path.join(deep, name), b"deep")] = b"deep"
    files[write_file(os.path.join(root, b"empty-file"), b"")] = b""
    os.makedirs(os.path.join(root, b"empty-dir", b"nested-empty"))
    os.mkfifo(os.path.join(root, b"a-fifo"))  # opening this would block the crawl forever
    if os.geteuid() == 0:  # a character device (like /dev/zero): reading it never ends
        os.mknod(os.path.join(root, b"a-device"), stat.S_IFCHR | 0o600, os.makedev(1, 5))
    os.symlink(b"plain.root", os.path.join(root, b"odd", b"link-to-file"))
    os.symlink(b"..", os.path.join(root, b"odd", b"loop"))  # a symlink loop
    os.symlink(b"/", os.path.join(root, b"link-to-root"))
    return files


def test_crawl_lists_exactly_the_regular_files(engine, tree):
    root = os.fsencode(tree)
    files = build_hostile_tree(root)
    assert max(len(p) for p in files) > 4000
    stats, ingest = crawl(engine, root, "site-a")
    assert verdicts(engine) == dict.fromkeys(files, Status.UNCHECKED)
    for path, data in files.items():
        r = row(engine, path)
        assert bytes(r.path) == path and r.size == len(data) and r.site == "site-a"
        assert r.mtime_ns == os.stat(path).st_mtime_ns
    assert stats.files == len(files)
    # fifo, device, 3 symlinks: never followed, never opened
    assert stats.skipped == 4 + (os.geteuid() == 0)
    assert stats.empty_directories == 1  # empty-dir/nested-empty (empty-dir holds it)
    assert ingest.counts.new == len(files)
    with engine.connect() as conn:
        c = conn.execute(sa.select(crawls)).one()
    assert c.complete and c.finished and c.files == len(files)
    assert c.empty_directories == stats.empty_directories


def test_recorded_checksum_is_read_and_a_stale_one_ignored(engine, tree):
    good = write_file(tree / "good.dat", b"hello", record=True)
    stale = write_file(tree / "stale.dat", b"hello", record=True)
    st = os.stat(stale)
    os.utime(stale, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    crawl(engine, os.fsencode(tree), "s")
    assert row(engine, good).recorded_adler32 == "062c0215"
    assert row(engine, good).recorded_from == "xrdcks"
    assert row(engine, stale).recorded_adler32 is None
    assert [Reference(row(engine, p).reference) for p in (good, stale)] == [
        Reference.STORAGE, Reference.NONE_KEPT]


def check_all(engine) -> None:
    run(Lease(engine, lease_seconds=120), PosixReader(),
        CheckOptions(timeout=30, recheck_after=0.0))


@pytest.fixture
def mixed_mounts(tmp_path):
    """A crawl root on ramfs (no user xattrs: ENOTSUP) holding a tmpfs (which keeps
    them): the root's own files are described before the subdirectory's."""
    if os.geteuid() != 0:
        pytest.skip("mounting ramfs and tmpfs needs root")
    top = tmp_path / "ram"
    top.mkdir()
    mounted = []
    try:
        for kind, where in (("ramfs", top), ("tmpfs", top / "sub")):
            where.mkdir(exist_ok=True)
            r = subprocess.run(["mount", "-t", kind, "-o", "size=8m", kind, str(where)],
                               capture_output=True, text=True)
            if r.returncode:
                pytest.skip(f"cannot mount {kind} here: {r.stderr.strip()}")
            mounted.append(where)
        yield top
    finally:
        for where in reversed(mounted):
            subprocess.run(["umount", str(where)], check=True)


def test_one_filesystem_without_xattrs_does_not_stop_reading_them(engine, mixed_mounts,
                                                                  caplog, tmp_path):
    """ENOTSUP on some files' xattrs is counted and said; every other file's recorded
    checksum is still read, and damage done after the crawl is found by the first check
    against it."""
    plain = [write_file(mixed_mounts / f"plain{i}", random_bytes(100, i)) for i in range(3)]
    kept = {write_file(mixed_mounts / "sub" / f"kept{i}", random_bytes(200, i), record=True):
            random_bytes(200, i) for i in range(4)}
    stats, _ = crawl(engine, os.fsencode(mixed_mounts), "s")
    assert (stats.files, stats.xattrs_unsupported, stats.checksums_unread) == (7, 3, 0)
    assert "without user extended attributes" in caplog.text
    for p in plain:
        r = row(engine, p)
        assert (r.recorded_adler32, Reference(r.reference)) == (None, Reference.NONE_KEPT)
    for p in kept:
        r = row(engine, p)
        assert (r.recorded_from, Reference(r.reference)) == ("xrdcks", Reference.STORAGE)
        assert r.recorded_adler32 is not None
    damaged = sorted(kept)[1]
    flip_bit(damaged, 7)
    check_all(engine)
    assert {p: s for p, s in verdicts(engine).items() if p in kept} == {
        p: Status.CORRUPTED if p == damaged else Status.OK for p in kept}


def test_recrawl_new_changed_vanished_and_no_duplicates(engine, tree):
    a = write_file(tree / "a.dat", b"aaaa")
    b = write_file(tree / "sub" / "b.dat", b"bbbb")
    c = write_file(tree / "c.dat", b"cccc")
    root = os.fsencode(tree)
    crawl(engine, root, "s")
    with engine.begin() as conn:  # pretend everything was checked
        conn.execute(statuses.update().values(status=int(Status.OK), claim_key=1.0))
        counts.recount(conn)
    write_file(tree / "c.dat", b"cccc-longer")  # rewritten
    os.unlink(b)
    d = write_file(tree / "d.dat", b"dddd")
    _, ingest = crawl(engine, root, "s")
    assert (ingest.counts.new, ingest.counts.changed, ingest.counts.vanished) == (1, 1, 1)
    assert verdicts(engine) == {a: Status.OK, b: Status.VANISHED, c: Status.UNCHECKED,
                                d: Status.UNCHECKED}
    assert row(engine, c).claim_key == 0.0 and row(engine, b).claim_key is None
    # Back again: a vanished file that reappears is judged afresh.
    write_file(b, b"bbbb")
    _, ingest = crawl(engine, root, "s")
    assert ingest.counts.changed == 1 and row(engine, b).status == Status.UNCHECKED
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(statuses)).scalar() == 4


def test_crawl_of_a_subtree_leaves_the_rest_alone(engine, tree):
    a = write_file(tree / "x" / "a.dat", b"a")
    write_file(tree / "y" / "b.dat", b"b")
    crawl(engine, os.fsencode(tree), "s")
    os.unlink(a)
    # Crawling only y/ must not call x/a vanished; nor must a sibling named "y0" count.
    write_file(tree / "y0" / "c.dat", b"c")
    _, ingest = crawl(engine, os.fsencode(tree / "y"), "s")
    assert ingest.counts.vanished == 0
    assert row(engine, a).status == Status.UNCHECKED


def test_sites_are_separate(engine, tree):
    p = write_file(tree / "f.dat", b"f")
    crawl(engine, os.fsencode(tree), "site-a")
    crawl(engine, os.fsencode(tree), "site-b")
    with engine.connect() as conn:
        sites = conn.execute(sa.select(statuses.c.site).where(statuses.c.path == p)).scalars()
        assert sorted(sites) == ["site-a", "site-b"]


def _walk(root: bytes) -> tuple[list, WalkStats]:
    stats = WalkStats()
    return list(posix.PosixNamespace(root).walk(stats)), stats


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_unreadable_directory_is_counted_and_its_files_not_vanished(engine, tmp_path):
    open_path_to(tmp_path)  # adds the bits `nobody` needs, never takes /tmp's sticky bit
    tree = tmp_path / "world"
    a = write_file(tree / "open" / "a.dat", b"a")
    hidden = write_file(tree / "closed" / "h.dat", b"h")
    for d in (tree, tree / "open", tree / "closed"):
        d.chmod(0o755)
    for f in (a, hidden):
        os.chmod(f, 0o644)
    root = os.fsencode(tree)
    crawl(engine, root, "s")
    (tree / "closed").chmod(0)
    try:
        items, stats = as_nobody(_walk, root)
    finally:
        (tree / "closed").chmod(stat.S_IRWXU)
    assert stats.unreadable == [os.path.join(root, b"closed")]
    assert [i.path for i in items] == [a]
    ingest = Ingest(engine, "s", root)
    ingest.add_all(items)
    assert ingest.mark_vanished(stats.unreadable) == 0
    ingest.finish(stats)
    assert row(engine, hidden).status == Status.UNCHECKED
    with engine.connect() as conn:
        last = conn.execute(sa.select(crawls).order_by(crawls.c.id.desc())).first()
    assert not last.complete and last.unreadable_directories == 1
