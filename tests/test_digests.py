"""Directory digests (``crawler.digests``): a full crawl that compares unchanged
directories with ``statuses`` as a whole leaves exactly the rows of one that compares
every file, after every kind of change, on SQLite, MariaDB and PostgreSQL; and a crawl
that merged part of a listing without completing leaves no digest to trust."""

from __future__ import annotations

import os

import pytest

from pnfsmon.crawler import directories
from pnfsmon.crawler import ingest as ingest_module
from pnfsmon.crawler.crawl import crawl
from pnfsmon.crawler.digests import digest, directory_of, overlapped
from pnfsmon.crawler.listing import Listed
from pnfsmon.schema import xrdcks
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import crawl_directories, crawls, statuses
from tests.helpers import random_bytes, write_file
from tests.test_incremental import rows


class Twins:
    """One tree crawled twice after each change, in one database: site ``dig`` with the
    digests its last complete crawl saved, site ``each`` with them forgotten first (every
    file staged and compared, as before digests)."""

    def __init__(self, engine, root: bytes) -> None:
        self.engine, self.root = engine, root

    def crawl(self, **options):
        dig = crawl(self.engine, self.root, "dig", **options)
        with self.engine.begin() as conn:  # every file of "each" staged and compared
            conn.execute(crawl_directories.update()
                         .where(crawl_directories.c.site == "each").values(digest=None))
        each = crawl(self.engine, self.root, "each", **options)
        assert not each[1].unchanged_directories
        got, want = timeless(rows(self.engine, "dig")), timeless(rows(self.engine, "each"))
        assert got.keys() == want.keys()
        assert got == want
        return dig, each


def timeless(rows: dict[bytes, dict]) -> dict[bytes, dict]:
    """Rows with the times their crawl set (its start: a judged truncation's check and
    confirmation due) told only as set or not: the twins' crawls start apart."""
    return {path: {k: (v is None if k in ("checked", "confirm_due") else v)
                   for k, v in values.items()} for path, values in rows.items()}


def build(root: bytes) -> None:
    for d in range(6):
        for f in range(5):
            write_file(os.path.join(root, b"d%d/f%d.root" % (d, f)),
                       random_bytes(100 + f, d * 10 + f), record=d % 2 == 0)
    write_file(os.path.join(root, b"d5/deeper/f.root"), b"deep", record=True)


def crawled_twice(engine, tmp_path, pair=Twins, tree=build):
    """The test ``tree``, crawled twice by both sites of a ``pair`` (``Twins``, or
    ``test_walkers.Pair``): its digests saved, then used. Returns (root, pair)."""
    root = os.fsencode(tmp_path / "tree")
    tree(root)
    crawler = pair(engine, root)
    crawler.crawl()
    crawler.crawl()
    return root, crawler


def test_digested_and_file_by_file_crawls_leave_identical_rows_after_every_change(
        engine, tmp_path):
    root = os.fsencode(tmp_path / "tree")
    build(root)
    twins = Twins(engine, root)
    (stats, ingest), _ = twins.crawl()
    assert stats.files == 31 and not ingest.unchanged_directories  # nothing saved yet

    # Nothing changed: every directory is compared by its digest, no file staged.
    (stats, ingest), _ = twins.crawl()
    assert len(ingest.unchanged_directories) == 7 and ingest.unchanged_files == 31
    assert ingest.counts.new == ingest.counts.changed == ingest.counts.vanished == 0

    # Added, deleted, rewritten, a checksum the storage now records differently, a size
    # that changed in place under the same mtime (judged corrupted by the crawl).
    write_file(os.path.join(root, b"d0/added.root"), b"added", record=True)
    os.unlink(os.path.join(root, b"d1/f0.root"))
    write_file(os.path.join(root, b"d2/f1.root"), random_bytes(999, 1), record=True)
    recorded = os.path.join(root, b"d4/f2.root")
    os.setxattr(recorded, xrdcks.XATTR_NAME,
                xrdcks.encode("0badf00d", int(os.stat(recorded).st_mtime)))
    truncated = os.path.join(root, b"d3/f3.root")
    before = os.stat(truncated)
    os.truncate(truncated, 10)
    os.utime(truncated, ns=(before.st_atime_ns, before.st_mtime_ns))
    (stats, ingest), _ = twins.crawl()
    assert ingest.counts.new == 1 and ingest.counts.vanished == 1
    assert ingest.counts.changed == 2 and ingest.counts.truncated == 1
    assert len(ingest.unchanged_directories) == 2  # d5 and d5/deeper
    got = rows(engine, "dig")
    assert got[truncated]["status"] == Status.CORRUPTED and got[truncated]["size"] == 103
    assert got[recorded]["recorded_adler32"] == "0badf00d"

    # The directory whose row keeps its old size (the truncated file) has no digest: it is
    # compared file by file for as long as that lasts, the others by their digests again.
    (stats, ingest), _ = twins.crawl()
    assert len(ingest.unchanged_directories) == 6
    assert directories.load(engine, "dig", root)[os.path.join(root, b"d3")].digest is None

    # A directory that goes with its subdirectory; the rest unchanged: the vanish step
    # goes by directory.
    for name in (b"d5/deeper/f.root", *(b"d5/f%d.root" % f for f in range(5))):
        os.unlink(os.path.join(root, name))
    os.rmdir(os.path.join(root, b"d5/deeper"))
    os.rmdir(os.path.join(root, b"d5"))
    (stats, ingest), _ = twins.crawl()
    assert ingest.counts.vanished == 6 and len(ingest.unchanged_directories) == 4
    assert rows(engine, "dig")[os.path.join(root, b"d5/f0.root")]["status"] == Status.VANISHED

    # Most directories changed and one file deleted: the few unchanged directories' rows
    # are copied in and the vanish step goes by hash.
    for d in (0, 1):
        for name in os.listdir(os.path.join(root, b"d%d" % d)):
            path = os.path.join(root, b"d%d" % d, name)
            os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 1000))
    os.unlink(os.path.join(root, b"d4/f4.root"))
    (stats, ingest), _ = twins.crawl()
    assert len(ingest.unchanged_directories) == 1 and ingest.counts.vanished == 1


def test_a_crawl_that_does_not_complete_leaves_no_digest_to_trust(engine, tmp_path):
    """A refused crawl merged a change (a new mtime) and marked nothing vanished; the file
    then gets its old mtime back, so its directory lists what the last complete crawl
    listed, while its row holds the refused crawl's mtime. Only a digest forgotten by that
    merge makes the next crawl see that."""
    root, twins = crawled_twice(engine, tmp_path)
    path = os.path.join(root, b"d1/f1.root")
    old = os.stat(path).st_mtime_ns
    os.utime(path, ns=(0, old + 5_000_000_000))
    for f in range(5):  # most of the site vanishing: refused, the crawl incomplete
        for d in (0, 2, 3, 4):
            os.rename(os.path.join(root, b"d%d/f%d.root" % (d, f)),
                      os.path.join(os.fsencode(tmp_path), b"away-%d-%d" % (d, f)))
    (stats, ingest), _ = twins.crawl(max_drop=0.1)
    assert ingest.drop is not None and ingest.counts.changed == 1
    assert rows(engine, "dig")[path]["mtime_ns"] == old + 5_000_000_000
    # The merge that wrote the row forgot its directory's digest; the others stand.
    known = directories.load(engine, "dig", root)
    assert {d for d, k in known.items() if k.digest is None} == {root, os.path.join(root, b"d1")}

    os.utime(path, ns=(0, old))
    for f in range(5):
        for d in (0, 2, 3, 4):
            os.rename(os.path.join(os.fsencode(tmp_path), b"away-%d-%d" % (d, f)),
                      os.path.join(root, b"d%d/f%d.root" % (d, f)))
    (stats, ingest), _ = twins.crawl()
    assert len(ingest.unchanged_directories) == 6 and ingest.counts.changed == 1
    assert rows(engine, "dig")[path]["mtime_ns"] == old
    (stats, ingest), _ = twins.crawl()  # complete again: digests trusted again
    assert len(ingest.unchanged_directories) == 7


def test_the_files_of_a_directory_replaced_by_a_file_vanish(engine, tmp_path):
    """A file named as a directory was has that directory's hash: it is not taken for the
    directory found unchanged that spares its old files in the vanish step."""
    root, twins = crawled_twice(engine, tmp_path)
    deeper = os.path.join(root, b"d5/deeper")
    os.unlink(os.path.join(deeper, b"f.root"))
    os.rmdir(deeper)
    write_file(deeper, b"now a file", record=True)
    (stats, ingest), _ = twins.crawl()
    assert ingest.counts.vanished == 1 and ingest.counts.new == 1
    assert rows(engine, "dig")[os.path.join(deeper, b"f.root")]["status"] == Status.VANISHED


def test_an_incremental_crawl_leaves_the_digests_of_the_directories_it_skips(engine,
                                                                             tmp_path):
    """A quiet incremental night writes no directory state for what it skipped; the next
    full crawl compares those directories by their digests."""
    root = os.fsencode(tmp_path / "tree")
    build(root)
    crawl(engine, root, "s")
    before = directories.load(engine, "s", root)
    assert all(k.digest is not None for d, k in before.items() if d != root)  # (no files)
    stats, ingest = crawl(engine, root, "s", incremental=True)
    # (d1, d3 and d5 hold files without a recorded checksum: listed every night)
    assert stats.kind == "incremental" and stats.skipped_directories == 5
    assert directories.load(engine, "s", root) == before
    stats, ingest = crawl(engine, root, "s", incremental=True, full=True)
    assert stats.kind == "full" and len(ingest.unchanged_directories) == 7


def test_a_crawl_that_another_ran_beside_saves_no_digest(engine, tmp_path, monkeypatch,
                                                        caplog):
    """A crawl of the root lists a file; before it finishes, the file is rewritten and a
    crawl of its directory records that (forgetting the directory's digest). The root's
    crawl, finishing last, must not save the digest of its older listing over that: once
    the file is restored with its old times, the rows would keep the rewrite."""
    root = os.fsencode(tmp_path / "tree")
    build(root)
    crawl(engine, root, "s")
    crawl(engine, root, "s")
    sub = os.path.join(root, b"d2")
    path = os.path.join(sub, b"f1.root")
    old = os.stat(path)
    with open(path, "rb") as fh:
        content = fh.read()
    mark_vanished = ingest_module.Ingest.mark_vanished

    def beside(self, *args, **kwargs):
        if self.root == root:
            write_file(path, random_bytes(999, 5), record=True)
            assert crawl(engine, sub, "s")[1].counts.changed == 1
        return mark_vanished(self, *args, **kwargs)

    monkeypatch.setattr(ingest_module.Ingest, "mark_vanished", beside)
    crawl(engine, root, "s")
    monkeypatch.undo()
    assert "ran beside this one: no directory digests saved" in caplog.text
    assert rows(engine, "s")[path]["size"] == 999
    write_file(path, content, record=True)
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    stats, ingest = crawl(engine, root, "s")
    assert not ingest.unchanged_directories and ingest.counts.changed == 1
    got = rows(engine, "s")[path]
    assert (got["size"], got["mtime_ns"]) == (old.st_size, old.st_mtime_ns)


def test_which_crawls_ran_beside_one(engine):
    """Beside a crawl started at T: one finished after T, or one unfinished and less than
    a day old at T (older, it died); not one finished before T, nor one of another site."""
    day, now = 86400.0, 2_000_000_000.0

    def add(site: str, started: float, finished: float | None) -> int:
        with engine.begin() as conn:
            return conn.execute(crawls.insert().values(
                site=site, root=b"/r", started=started, finished=finished,
                complete=finished is not None)).inserted_primary_key[0]

    this = add("s", now, None)
    add("s", now - 3 * day, now - 2 * day)  # finished before
    add("other", now - 3600, None)  # another site
    add("s", now - 2 * day, None)  # died two days ago
    with engine.connect() as conn:
        assert overlapped(conn, "s", this, now) is None
    running = add("s", now - 3600, None)  # started an hour before, still running
    with engine.connect() as conn:
        assert overlapped(conn, "s", this, now) == running
    with engine.begin() as conn:
        conn.execute(crawls.update().where(crawls.c.id == running)
                     .values(finished=now - 60))  # finished before this one started
    with engine.connect() as conn:
        assert overlapped(conn, "s", this, now) is None
    later = add("s", now + 60, now + 120)  # started and finished while this one ran
    with engine.connect() as conn:
        assert overlapped(conn, "s", this, now) == later


@pytest.mark.hand_written_rows
def test_a_large_directory_is_merged_in_chunks(engine, tmp_path, monkeypatch):
    """A directory's files are cut into chunks of at most BATCH (one statement and one
    staging load each: a server's max_allowed_packet); one held by its digest whose count
    does not confirm it is staged in pieces of BATCH too."""
    monkeypatch.setattr(ingest_module, "BATCH", 4)
    loads, inserts = [], []
    stage_load, insert_new = ingest_module.Stage.load, ingest_module.Ingest._insert_new
    monkeypatch.setattr(ingest_module.Stage, "load", lambda self, conn, rows: (
        loads.append(len(rows)), stage_load(self, conn, rows))[1])
    monkeypatch.setattr(ingest_module.Ingest, "_insert_new", lambda self, conn, new, *a: (
        inserts.append(len(new)), insert_new(self, conn, new, *a))[1])
    root = os.fsencode(tmp_path / "tree")
    for f in range(11):
        write_file(os.path.join(root, b"big/f%02d.root" % f), b"x" * f, record=True)
    twins = Twins(engine, root)
    twins.crawl()
    assert max(inserts) == 4 and sum(inserts) == 22  # both twins
    twins.crawl()
    with engine.begin() as conn:  # its count no longer confirms it: staged in pieces
        conn.execute(statuses.delete().where(
            statuses.c.path == os.path.join(root, b"big/f03.root")))
    loads.clear()
    (stats, ingest), _ = twins.crawl()
    assert ingest.counts.new == 1 and not ingest.unchanged_directories
    assert max(loads) == 4 and sum(loads) == 22


@pytest.mark.hand_written_rows
def test_a_row_deleted_by_hand_is_found_by_its_directorys_count(engine, tmp_path):
    root = os.fsencode(tmp_path / "tree")
    build(root)
    twins = Twins(engine, root)
    twins.crawl()
    gone = os.path.join(root, b"d2/f2.root")
    with engine.begin() as conn:
        conn.execute(statuses.delete().where(statuses.c.path == gone))
    (stats, ingest), _ = twins.crawl()
    assert ingest.counts.new == 1 and len(ingest.unchanged_directories) == 6
    assert rows(engine, "dig")[gone]["status"] == Status.UNCHECKED


def test_a_directory_digest_is_its_files_in_any_order_and_all_they_hold():
    files = [Listed(b"/r/d/a", 1, 10, "0000abcd", pool="pool1"), Listed(b"/r/d/b", 2, 20)]
    assert digest(files) == digest(files[::-1])
    changed = [
        Listed(b"/r/d/c", 1, 10, "0000abcd", pool="pool1"),  # another name
        Listed(b"/r/d/a", 3, 10, "0000abcd", pool="pool1"),  # size
        Listed(b"/r/d/a", 1, 11, "0000abcd", pool="pool1"),  # mtime
        Listed(b"/r/d/a", 1, 10, "0000abce", pool="pool1"),  # recorded checksum
        Listed(b"/r/d/a", 1, 10, None, pool="pool1"),  # none recorded
        Listed(b"/r/d/a", 1, 10, "0000abcd", pool="pool2"),  # pool
        Listed(b"/r/d/a", 1, 10, "0000abcd", pool="pool1", nearline=True),  # only on tape
    ]
    seen = {digest(files)}
    for first in changed:
        seen.add(digest([first, files[1]]))
    assert len(seen) == 1 + len(changed)
    tape = [Listed(b"/r/d/a", 1, 10, nearline=True)]
    # A nearline file staged (crawl --include-nearline) is not one parked.
    assert digest(tape) != digest(tape, include_nearline=True)
    assert len(digest(files)) == 16
    # A file's directory as the directory state names it (XRootD's server root too).
    assert directory_of(b"/a") == b"/" and directory_of(b"/x//y") == b"/x"
    assert directory_of(b"root://host//a") == b"root://host"
