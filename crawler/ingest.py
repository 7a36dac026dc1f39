"""Merge a namespace listing into ``statuses``, for any namespace, writing only what
changed: a nightly re-crawl of an unchanged tree writes no ``statuses`` row at all.

The listing streams into the crawl's staging table (``crawler.staging``) in chunks. Each
chunk is merged as soon as it is loaded, in one short transaction, by writer threads that
overlap the walk:
- one join of the chunk against ``statuses`` (its unique (site, path hash) index) returns
  only the files that are **new**, **changed** (size and mtime, mtime alone, recorded
  checksum, tape-only or not), **truncated**, **back** after having vanished, or whose
  pools changed;
- new files are copied from the staging table; changed ones go back to ``unchecked``,
  breaking any lease so that a verdict on the old content is dropped.
When the walk is complete, the staging table is indexed and one anti-join, page by page
over the site's rows, finds the **vanished** files below the root, except below
directories the walk could not list. Every change of status or size is written to the
``status_counts`` ledger in the same transaction (``schema.counts``).

The crawl never erases evidence:
- a size that differs while the mtime did not is no rewrite (a rewrite moves the mtime):
  the file is judged ``corrupted`` there and then, with an ``events`` row, keeping the
  size and reference it had (a file still in its grace window, or listed empty before,
  excepted: it may still be being written). The checker judges a truncation the same
  way, so crawl and check agree whichever runs first, and a later crawl leaves the
  verdict alone. Like a first read's, the crawl's verdict is unconfirmed until a read
  agrees (``tester.confirm``);
- more than ``max_drop`` of the site vanishing at once, or a root that listed no file
  where files were, is refused (``Drop``): nothing is marked vanished and the crawl is
  not complete (an automount that did not come up is not a mass deletion);
- a file that vanishes keeps its status in ``prior_status``; one that was missing or
  corrupted becomes ``lost`` and stays in view until a person acknowledges it
  (``crawler.ack``). A file that comes back with the same size and mtime gets its status
  back, with its reference and history (a problem is checked again at once).

Where a listed file goes in the queue:
- written within the grace window (it may still be being written; a partial file is not a
  corrupted one): listed but not claimable until ``mtime + grace``. It waits like a lease
  with an expiry and no owner; the claim's expired-lease step (``schema.lease``) queues it
  at the head when that time has passed, so no later crawl is needed;
- only on tape (dCache NEARLINE), unless the crawl includes nearline files: status
  ``nearline``, never claimed (reading it would stage it from tape);
- otherwise due at once (``claim_key`` 0)."""

from __future__ import annotations

import itertools
import logging
import queue
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache

import sqlalchemy as sa

from pnfsmon.crawler import digests
from pnfsmon.crawler.digests import digest as directory_digest
from pnfsmon.crawler.digests import directory_of
from pnfsmon.crawler.listing import Listed, Packed, WalkStats
from pnfsmon.crawler.staging import Stage, drop_stale, mysql_checksum, mysql_text
from pnfsmon.schema import ages, counts, schedule
from pnfsmon.schema.db import bulk_loading, retrying, write_transaction
from pnfsmon.schema.paths import dir_hash, path_hash
from pnfsmon.schema.status import GONE, LOST_WHEN_GONE, PROBLEMS, Status
from pnfsmon.schema.tables import crawls, events, statuses

log = logging.getLogger(__name__)

BATCH = 10000  # files per chunk: one staging load and one merge transaction
DIR_BATCH = 1000  # unchanged directories whose files one statement carries over
NEARLINE, VANISHED, LOST = int(Status.NEARLINE), int(Status.VANISHED), int(Status.LOST)
CORRUPTED, UNCHECKED = int(Status.CORRUPTED), int(Status.UNCHECKED)
_GONE = [int(g) for g in GONE]
# What the merge join says of a staged file (``Ingest._differences``).
NOTHING, NEW, CHANGED, TRUNCATED, RETURNED = range(5)
_NEW_COLUMNS = ("site", "path", "path_hash", "size", "mtime_ns", "recorded_adler32",
                "recorded_from", "reference", "pool", "status", "claim_key", "tag_expiry",
                "crawl_gen", "dir_hash")


@dataclass
class IngestCounts:
    new: int = 0
    changed: int = 0
    vanished: int = 0
    truncated: int = 0  # judged corrupted by the crawl: size differs, mtime does not
    returned: int = 0  # back with the same size and mtime after having vanished
    lost: int = 0  # of the vanished: missing or corrupted when they went


@dataclass(frozen=True)
class Drop:
    """A crawl's refusal to mark files vanished: ``files`` unlisted of the site's
    ``present``, above ``max_drop``, or everything below a root that listed nothing."""

    files: int
    present: int
    max_drop: float
    empty_root: bool

    def describe(self, root: str, site: str) -> str:
        share = self.files / max(self.present, 1)
        why = ("the root listed no files" if self.empty_root
               else f"more than max_crawl_drop {self.max_drop:.0%}")
        return (f"crawl of {root} (site {site}) refused to mark {self.files:,} of "
                f"{self.present:,} files vanished ({share:.0%}: {why}); nothing was marked "
                "vanished and the crawl is not complete. Is the storage mounted? If the "
                "files are really gone, crawl again with --allow-drop")


def _number(value: float | None) -> str:
    return "NULL" if value is None else repr(float(value))


def _subtree_range(directory: bytes) -> tuple[bytes, bytes]:
    """[lo, hi) such that every path strictly below ``directory`` sorts inside it."""
    base = directory.rstrip(b"/")
    return base + b"/", base + b"0"  # '0' is the byte after '/'


def by_directory(listing: Iterable[Listed]
                 ) -> Iterator[tuple[bytes, list[Listed], None]]:
    """A listing of files cut into runs of one directory's files (``add_directories``)."""
    directory, files = None, []
    for item in listing:
        path = item.path
        # directory_of, inline: every file passes here
        parent = path[:path.rfind(b"/")].rstrip(b"/") or b"/"
        if parent == directory:
            files.append(item)
            continue
        if files:
            yield directory, files, None
        directory, files = parent, [item]
    if files:
        yield directory, files, None


class Ingest:
    """Write one crawl of one site below one root."""

    def __init__(self, engine: sa.Engine, site: str, root: bytes, *, grace: float = 0.0,
                 include_nearline: bool = False, local_infile: bool = True,
                 digests: dict[bytes, bytes] | None = None) -> None:
        self.engine = engine
        # The chunks' connections: on MariaDB/MySQL they may LOAD DATA LOCAL INFILE.
        self.writer = bulk_loading(engine) if local_infile else engine
        self.site = site
        self.root = root
        self.grace = grace
        self.include_nearline = include_nearline
        self.counts = IngestCounts()
        self.drop: Drop | None = None  # set when marking vanished was refused
        self.withheld = 0  # files not marked vanished because of it
        self.started = time.time()
        self._lock = threading.Lock()  # the counts, from several writer threads
        # Directory digests (``crawler.digests``): the saved ones, by directory; this
        # listing's (None: not to be saved); the directories found unchanged by theirs
        # (their hashes), and their files.
        self.digests = digests or {}
        self.listed_digests: dict[bytes, bytes | None] = {}
        self.unchanged_directories: list[bytes] = []
        self.unchanged_files = 0
        self._seq = 0  # files listed so far: the next one's place
        drop_stale(engine, self.started)
        with write_transaction(engine) as conn:
            # The site's first crawl: nothing to compare with, nothing can vanish, so no
            # staging table; every file goes straight in.
            self.first = conn.execute(
                sa.select(statuses.c.id).where(statuses.c.site == site).limit(1)
            ).first() is None
            # A file that comes back as it was is due this period after its last check.
            self.recheck_after = schedule.periods(conn, [site])[site]
            self.crawl_id = conn.execute(
                crawls.insert().values(site=site, root=root, started=self.started,
                                       complete=False)
            ).inserted_primary_key[0]
        self.stage = Stage(self.writer, self.crawl_id,
                           local_infile=self.writer is not self.engine)
        if not self.first:
            self.stage.create()

    # -- the listing, chunk by chunk ---------------------------------------------------

    def add_all(self, listing: Iterable[Listed], batch: int | None = None,
                writers: int = 2) -> None:
        """Stage and merge a listing of files (``add_directories``, a directory's run of
        files at a time)."""
        self.add_directories(by_directory(listing), batch, writers)

    def add_directories(self, listing: Iterable[tuple[bytes, Sequence[Listed], bytes | None]],
                        batch: int | None = None, writers: int = 2) -> None:
        """Stage and merge a listing given as runs of one directory's files: (its name as
        ``digests.directory_of`` gives it, the files, their digest or None to compute
        it here). Chunks are loaded and merged by ``writers`` threads on their own
        connections, so the walk overlaps the database's work (waiting on a socket
        releases the GIL) and the server can use more than one core. Chunks hold
        distinct paths, so concurrent writers never touch the same row."""
        if self.engine.dialect.name == "sqlite":
            writers = 1  # one writer at a time is all SQLite allows anyway
        chunks: queue.Queue = queue.Queue(maxsize=2 * writers)
        failure: list[BaseException] = []

        def writer() -> None:
            while (chunk := chunks.get()) is not None:
                if not failure:
                    try:
                        retrying(self.writer, lambda c=chunk: self._merge_chunk(*c))
                    except BaseException as err:  # handed to the walking thread below
                        failure.append(err)

        threads = [threading.Thread(target=writer, name=f"pnfsmon-ingest-{n}", daemon=True)
                   for n in range(writers)]
        for thread in threads:
            thread.start()
        chunk: list[tuple[bytes, Listed]] = []
        groups: list[list] = []
        held = 0  # files in this chunk's groups
        batch = batch or BATCH
        try:
            for directory, files, found in listing:
                # One run of a directory's files: staged one by one, or, when its digest
                # is the saved one, held as a group that the merge confirms by its rows'
                # count.
                if found is None:
                    found = directory_digest(files, self.include_nearline)
                if directory in self.listed_digests:  # its files came in more than one run
                    self.listed_digests[directory] = None
                else:
                    self.listed_digests[directory] = found
                if not self.first and self.digests.get(directory) == found:
                    key = files.dir_hash if files.__class__ is Packed else dir_hash(files[0].path)
                    groups.append([key, files, None])
                    held += len(files)
                else:
                    chunk += [(path_hash(item.path), item) for item in files]
                while len(chunk) + held >= batch:  # a large directory's files in chunks
                    cut = max(batch - held, 0)  # (a group is never cut: its chunk takes it)
                    chunks.put((self._seq, chunk[:cut], groups, cut + held))
                    self._seq += cut + held
                    chunk, groups, held = chunk[cut:], [], 0
                if failure:
                    break
            if (chunk or groups) and not failure:
                chunks.put((self._seq, chunk, groups, len(chunk) + held))
                self._seq += len(chunk) + held
        finally:
            for _ in threads:
                chunks.put(None)
            for thread in threads:
                thread.join()
        if failure:
            raise failure[0]

    def _parked(self, item: Listed) -> bool:
        return item.nearline and not self.include_nearline

    def _queue_state(self, item: Listed) -> tuple[int, float | None, float | None]:
        """(status, claim_key, tag_expiry) for a new or changed file; see the docstring."""
        if self._parked(item):
            return NEARLINE, None, None
        ready = item.mtime_ns / 1e9 + self.grace
        if self.grace > 0 and ready > self.started:
            return int(Status.UNCHECKED), None, ready
        return int(Status.UNCHECKED), 0.0, None

    def _differences(self, conn: sa.Connection, lo: int, hi: int) -> list:
        """The chunk's staged files that have something to do: (seq, statuses id or None,
        kind, pool moved), ``kind`` one of NEW, CHANGED, TRUNCATED, RETURNED, NOTHING."""
        s, t = statuses.c, self.stage.table.c
        gone = s.status.in_(_GONE)
        was = sa.case((gone, s.prior_status), else_=s.status)  # before it vanished
        # Listed, waiting out its grace window: it may still be being written, and a coarse
        # mtime need not move with every write.
        young = sa.and_(s.status == UNCHECKED, s.tag.is_(None), s.tag_expiry.is_not(None))
        # A file listed empty that now has content lost nothing: an upload that outlasted
        # the grace window (dCache creates the entry first) is completing.
        truncated = sa.and_(s.size != t.size, s.mtime_ns == t.mtime_ns, s.size > 0,
                            sa.not_(young))
        changed = sa.or_(
            s.size != t.size, s.mtime_ns != t.mtime_ns,
            # staged to disk, or now only on tape
            sa.and_(was == NEARLINE, ~t.nearline),
            sa.and_(was != NEARLINE, t.nearline),
            # A checksum the storage records now, different from the reference we hold,
            # replaces it.
            sa.and_(t.recorded_adler32.is_not(None),
                    sa.or_(s.recorded_adler32.is_(None),
                           s.recorded_adler32 != t.recorded_adler32)),
        )
        kind = sa.case(
            (s.id.is_(None), NEW),
            # Judged once: a later crawl leaves a corrupted file alone.
            (truncated, sa.case((sa.or_(gone, s.status != CORRUPTED), TRUNCATED),
                                else_=NOTHING)),
            (changed, CHANGED),
            (gone, RETURNED),
            else_=NOTHING)
        pool_moved = sa.and_(t.pool.is_not(None), sa.or_(s.pool.is_(None), s.pool != t.pool))
        # A row written without its directory (by hand): given it, so that an incremental
        # crawl can carry it over.
        unplaced = sa.and_(s.id.is_not(None), s.dir_hash.is_(None))
        # A row that keeps another size than the listing's (judged truncated): its
        # directory gets no digest, which would stand for rows matching the listing.
        kept = sa.and_(s.id.is_not(None), s.size != t.size)
        return conn.execute(
            sa.select(t.seq, s.id, kind, sa.case((pool_moved, True), else_=False),
                      sa.case((unplaced, True), else_=False), sa.case((kept, True), else_=False))
            .select_from(self.stage.table.outerjoin(
                statuses, sa.and_(s.site == self.site, s.path_hash == t.path_hash)))
            .where(t.seq >= lo, t.seq <= hi,
                   sa.or_(kind != NOTHING, pool_moved, unplaced, kept))
        ).all()

    def _merge_chunk(self, first: int, chunk: list[tuple[bytes, Listed]], groups: list[list],
                     size: int) -> None:
        """Merge one chunk: ``chunk``'s files, each with its path's hash, staged at
        ``first`` on, and ``groups`` of files held by their directory's digest
        (``_confirm_unchanged``); ``size`` files in all, the places ``first`` to
        ``first + size - 1``."""
        s = statuses.c
        lo, hi = first, first + size - 1
        if self.first:
            with write_transaction(self.writer) as conn:
                s = statuses.c
                # A retry after a commit that got through (its answer lost) finds the
                # chunk's first file already there: the whole chunk is in.
                if conn.execute(sa.select(s.id).where(
                        s.site == self.site, s.path_hash == chunk[0][0])).first() is None:
                    deltas, waiting = counts.Deltas(), ages.Deltas()
                    self._insert_new(conn, chunk, deltas, waiting)
                    deltas.write(conn)
                    waiting.write(conn)
                    digests.forget(conn, self.site, (item.path for _, item in chunk))
            with self._lock:
                self.counts.new += len(chunk)
            return
        with write_transaction(self.writer) as conn:
            unchanged, restaged = self._confirm_unchanged(conn, groups)
            chunk = chunk + restaged
            staged = [(lo + i, digest, item.size, item.mtime_ns, item.recorded_adler32,
                       item.pool, self._parked(item)) for i, (digest, item) in enumerate(chunk)]
            if staged and not conn.execute(
                    sa.select(sa.func.count()).select_from(self.stage.table)
                    .where(self.stage.table.c.seq >= lo, self.stage.table.c.seq <= hi)
            ).scalar():
                # (Not again when this transaction is retried after its commit got through.)
                # In pieces: a large directory whose count did not confirm it comes whole.
                for start in range(0, len(staged), BATCH):
                    self.stage.load(conn, staged[start:start + BATCH])
            found: dict[int, list] = {NEW: [], CHANGED: [], TRUNCATED: [], RETURNED: []}
            moved, unplaced, written = [], [], []
            differences = self._differences(conn, lo, hi) if staged else []
            for seq, file_id, kind, pool_moved, no_dir, kept in differences:
                digest, item = chunk[seq - lo]
                if kept and kind in (NOTHING, TRUNCATED):
                    with self._lock:
                        self.listed_digests[directory_of(item.path)] = None
                if no_dir or pool_moved or kind != NOTHING:
                    written.append(item.path)  # (its row is written below)
                if no_dir:
                    unplaced.append({"b_id": file_id, "b_dir": dir_hash(item.path)})
                if kind == NEW:
                    found[NEW].append((digest, item))
                elif kind != NOTHING:
                    found[kind].append((file_id, item))
                elif pool_moved:
                    moved.append({"b_id": file_id, "b_pool": item.pool})
            deltas, waiting = counts.Deltas(), ages.Deltas()
            if found[NEW]:
                self._insert_new(conn, found[NEW], deltas, waiting)
            if found[CHANGED]:
                self._reset_changed(conn, found[CHANGED], deltas, waiting)
            truncated = self._judge_truncated(conn, found[TRUNCATED], deltas, waiting)
            returned = self._restore_returned(conn, found[RETURNED], deltas, waiting)
            if moved:
                conn.execute(statuses.update().where(s.id == sa.bindparam("b_id"))
                             .values(pool=sa.bindparam("b_pool")), moved)
            if unplaced:
                conn.execute(statuses.update().where(s.id == sa.bindparam("b_id"))
                             .values(dir_hash=sa.bindparam("b_dir")), unplaced)
            deltas.write(conn)
            waiting.write(conn)
            digests.forget(conn, self.site, written)
        with self._lock:
            self.counts.new += len(found[NEW])
            self.counts.changed += len(found[CHANGED])
            self.counts.truncated += truncated
            self.counts.returned += returned
            self.unchanged_directories += [group[0] for group in unchanged]
            self.unchanged_files += sum(len(group[1]) for group in unchanged)

    def _confirm_unchanged(self, conn: sa.Connection, groups: list[list]
                           ) -> tuple[list[list], list[tuple[bytes, Listed]]]:
        """The chunk's directories whose digest is the saved one (``groups``: [directory
        hash, files, decision]): unchanged if their present rows are as many as they list;
        returned with the files of the others, to be staged one by one. The decision is
        kept in the group, so that a retry of the chunk decides as the first try did."""
        undecided = [g for g in groups if g[2] is None]
        if undecided:
            s = statuses.c
            present = {bytes(h): n for h, n in conn.execute(
                sa.select(s.dir_hash, sa.func.count())
                .where(s.site == self.site, s.dir_hash.in_([g[0] for g in undecided]),
                       s.status.not_in(_GONE))
                .group_by(s.dir_hash))}
            for group in undecided:
                group[2] = present.get(group[0]) == len(group[1])
        restaged = [(path_hash(item.path), item) for g in groups if not g[2] for item in g[1]]
        return [g for g in groups if g[2]], restaged

    def _insert_new(self, conn: sa.Connection, new: list[tuple[bytes, Listed]],
                    deltas: counts.Deltas, waiting: ages.Deltas) -> None:
        # (A first crawl inserts every file: what a chunk's files share is worked out
        # once, their directory's hash by the path's head, os.path.dirname's argument.)
        parents: dict[bytes, bytes] = {}
        rows = []
        for digest, item in new:
            path = item.path
            head = path[:path.rfind(b"/") + 1]
            parent = parents.get(head)
            if parent is None:
                parent = parents[head] = dir_hash(path)
            rows.append((self.site, path, digest, item.size, item.mtime_ns,
                         item.recorded_adler32, item.recorded_from, int(item.reference),
                         item.pool, *self._queue_state(item), self.crawl_id, parent))
        kinds: Counter = Counter()  # the ledgers' entries by status and reference
        sizes: Counter = Counter()
        for row in rows:
            kinds[row[9], row[7]] += 1
            sizes[row[9], row[7]] += row[3]
        for (status, reference), n in kinds.items():
            deltas.add(self.site, status, reference, sizes[status, reference], n)
            waiting.add(self.site, status, None, self.started, n)
        if conn.dialect.name not in ("mysql", "mariadb"):
            conn.execute(statuses.insert(), [dict(zip(_NEW_COLUMNS, r, strict=True))
                                             for r in rows])
            return
        # MariaDB/MySQL: PyMySQL escapes each parameter in Python, which costs more than
        # the statement; hex literals are built at C speed and are exact. At most a chunk's
        # worth a statement (a server's max_allowed_packet). The literals of the few
        # values many rows share (site, source, pool, due time) are built once.
        text, number = cache(mysql_text), cache(_number)
        for start in range(0, len(rows), BATCH):
            conn.exec_driver_sql(
                f"INSERT INTO statuses ({', '.join(_NEW_COLUMNS)}) VALUES "
                + ",".join(f"({text(site)},X'{path.hex()}',X'{digest.hex()}',"
                           f"{int(size)},{int(mtime)},{mysql_checksum(recorded)},"
                           f"{text(source)},{reference},{text(pool)},{status},"
                           f"{number(key)},{number(expiry)},{gen},X'{parent.hex()}')"
                           for site, path, digest, size, mtime, recorded, source, reference,
                           pool, status, key, expiry, gen, parent in rows[start:start + BATCH]))

    def _reset_changed(self, conn: sa.Connection, changed: list[tuple[int, Listed]],
                       deltas: counts.Deltas, waiting: ages.Deltas) -> None:
        s = statuses.c
        ids = [file_id for file_id, _ in changed]
        # Old values under lock: the ledger must take away what the row holds now, even
        # if a worker recorded a verdict since the join above read it.
        old = conn.execute(sa.select(s.id, s.status, s.size, s.reference, s.checked,
                                     s.crawl_gen).where(s.id.in_(ids)).with_for_update()
                           ).all()
        listed = ages.listing_starts(conn, (r.crawl_gen for r in old))
        for _id, status, size, reference, checked, gen in old:
            deltas.remove(self.site, status, reference, size)
            waiting.remove(self.site, status, checked, listed.get(gen))
        values = []
        for file_id, item in changed:
            status, key, expiry = self._queue_state(item)
            deltas.add(self.site, status, item.reference, item.size)
            waiting.add(self.site, status, None, self.started)
            values.append({"b_id": file_id, "b_size": item.size, "b_mtime": item.mtime_ns,
                           "b_recorded": item.recorded_adler32,
                           "b_from": item.recorded_from, "b_reference": int(item.reference),
                           "b_pool": item.pool,
                           "b_status": status, "b_key": key, "b_expiry": expiry})
        conn.execute(
            statuses.update().where(s.id == sa.bindparam("b_id")).values(
                size=sa.bindparam("b_size"), mtime_ns=sa.bindparam("b_mtime"),
                recorded_adler32=sa.bindparam("b_recorded"),
                recorded_from=sa.bindparam("b_from"),
                reference=sa.bindparam("b_reference"), pool=sa.bindparam("b_pool"),
                status=sa.bindparam("b_status"), claim_key=sa.bindparam("b_key"),
                tag_expiry=sa.bindparam("b_expiry"), computed_adler32=None,
                tag=None, error=None, prior_status=None, crawl_gen=self.crawl_id,
                confirm_due=None, confirm_from=None),
            values)

    def _locked(self, conn: sa.Connection, ids: list[int], *columns) -> list:
        """The rows' current values under lock: the ledger takes away what a row holds
        now, even if a worker recorded a verdict since the merge join read it."""
        s = statuses.c
        return conn.execute(sa.select(s.id, s.status, s.size, s.reference, *columns)
                            .where(s.id.in_(ids)).with_for_update()).all()

    def _judge_truncated(self, conn: sa.Connection, found: list[tuple[int, Listed]],
                         deltas: counts.Deltas, waiting: ages.Deltas) -> int:
        """Files listed with another size and the same mtime: corrupted, judged by this
        crawl (one ``events`` row each), keeping the size and reference they had. The
        lease of a worker reading one is broken: its verdict is this one."""
        if not found:
            return 0
        s = statuses.c
        listed = dict(found)
        rows = [r for r in self._locked(conn, list(listed), s.pool, s.checked, s.crawl_gen)
                if r.status != CORRUPTED]
        if not rows:
            return 0
        starts = ages.listing_starts(conn, (r.crawl_gen for r in rows))
        node = socket.gethostname()
        values, checks = [], []
        for r in rows:
            item = listed[r.id]
            deltas.remove(self.site, r.status, r.reference, r.size)
            deltas.add(self.site, CORRUPTED, r.reference, r.size)
            waiting.remove(self.site, r.status, r.checked, starts.get(r.crawl_gen))
            waiting.add(self.site, CORRUPTED, self.started, None)
            error = (f"listed with {item.size:,} bytes, {r.size:,} before, mtime unchanged: "
                     "truncated or extended in place (found by the crawl)")
            # The listing was the first look; a read is the second, confirming one
            # (``tester.confirm``), due at once. A file only on tape is not read: the
            # listing's word stands for it, as before.
            parked = self._parked(item)
            values.append({"b_id": r.id, "b_error": error, "b_key": None,
                           "b_due": None if parked else self.started, "b_pool": item.pool})
            checks.append({"file_id": r.id, "checked": self.started, "worker_node": node,
                           "seconds": 0.0, "source_pool": item.pool or r.pool,
                           "size": r.size, "bytes_read": 0, "status": CORRUPTED,
                           "error": error})
        conn.execute(statuses.update().where(s.id == sa.bindparam("b_id")).values(
            status=CORRUPTED, error=sa.bindparam("b_error"), claim_key=sa.bindparam("b_key"),
            confirm_due=sa.bindparam("b_due", type_=sa.Double), confirm_from=None,
            computed_adler32=None,  # no read computed one: a second read compares so
            pool=sa.func.coalesce(sa.bindparam("b_pool", type_=sa.String), s.pool),
            checked=self.started, problem_seen=True, tag=None, tag_expiry=None,
            prior_status=None, crawl_gen=self.crawl_id), values)
        conn.execute(events.insert(), checks)
        return len(rows)

    def _restore_returned(self, conn: sa.Connection, found: list[tuple[int, Listed]],
                          deltas: counts.Deltas, waiting: ages.Deltas) -> int:
        """Files back with the same size and mtime (and no other recorded checksum) after
        having vanished: the status they had, with their reference and history. A problem
        is checked again at once (is it sound now?), an ``ok`` file when its cycle comes
        round; a file whose status is not known (vanished before schema revision 0004, or
        changed) is queued like a new one."""
        if not found:
            return 0
        s = statuses.c
        listed = dict(found)
        rows = [r for r in self._locked(conn, list(listed), s.prior_status, s.checked)
                if r.status in _GONE]
        values = []
        for r in rows:
            item = listed[r.id]
            prior = r.prior_status
            if prior in PROBLEMS:
                status, key, expiry = prior, 0.0, None
            elif prior == Status.OK:  # due its period after its last check
                status, expiry = prior, None
                key = 0.0 if r.checked is None else r.checked + self.recheck_after
            else:
                status, key, expiry = self._queue_state(item)
            deltas.remove(self.site, r.status, r.reference, r.size)
            deltas.add(self.site, status, r.reference, r.size)
            # Gone files are outside the age ledger: back, they join it as verified in
            # the hour of their last check, or as waiting since this crawl.
            waiting.add(self.site, status, r.checked, self.started)
            values.append({"b_id": r.id, "b_status": int(status), "b_key": key,
                           "b_expiry": expiry, "b_pool": item.pool})
        if values:
            conn.execute(statuses.update().where(s.id == sa.bindparam("b_id")).values(
                status=sa.bindparam("b_status"), claim_key=sa.bindparam("b_key"),
                tag_expiry=sa.bindparam("b_expiry"), tag=None, prior_status=None,
                pool=sa.func.coalesce(sa.bindparam("b_pool", type_=sa.String), s.pool),
                crawl_gen=self.crawl_id), values)
        return len(values)

    # -- after the walk ----------------------------------------------------------------

    def carry_over(self, directories: list[bytes]) -> tuple[int, int]:
        """An incremental crawl: the present files of ``directories`` (unchanged since the
        last complete crawl) count as listed. Set-based, one statement per ``DIR_BATCH``
        directories: their rows are copied from ``statuses`` into the staging table (keyed
        by their negated id, beside the listing's own sequence numbers), where the vanish
        step finds them. Returns (files, bytes) carried."""
        if self.first or not directories:
            return 0, 0
        self._copy_rows([path_hash(d) for d in directories])
        t = self.stage.table.c
        with self.writer.connect() as conn:
            files, size = conn.execute(sa.select(sa.func.count(), sa.func.sum(t.size))
                                       .where(t.seq < 0)).one()
        return int(files), int(size or 0)

    def _copy_rows(self, hashes: list[bytes]) -> None:
        """The present rows of the directories so hashed, copied from ``statuses`` into
        the staging table (keyed by their negated id)."""
        s, t = statuses.c, self.stage.table.c
        for start in range(0, len(hashes), DIR_BATCH):
            batch = hashes[start:start + DIR_BATCH]
            rows = (sa.select(-s.id, s.path_hash, s.size, s.mtime_ns, s.recorded_adler32,
                              s.pool, sa.false())
                    .where(s.site == self.site, s.dir_hash.in_(batch),
                           s.status.not_in(_GONE),
                           # a retry after a commit that got through adds nothing twice
                           ~sa.exists().where(t.seq == -s.id)))
            statement = self.stage.table.insert().from_select(
                ["seq", "path_hash", "size", "mtime_ns", "recorded_adler32", "pool",
                 "nearline"], rows)

            def carry(statement=statement) -> None:
                with write_transaction(self.writer) as conn:
                    conn.execute(statement)

            retrying(self.writer, carry)

    def mark_vanished(self, unlisted: list[bytes], *, listed: int | None = None,
                      max_drop: float | None = None) -> int:
        """Mark rows of this site below the root that this crawl did not list as vanished
        (``lost`` if they were missing or corrupted); rows below an unlisted directory are
        left alone (we do not know whether they are still there).

        With ``max_drop``, refuse (``self.drop``, nothing marked) when more than that
        fraction of the site's files would vanish at once, or when the root listed no
        file (``listed`` 0) where there were some.

        One streamed read finds the site's rows whose hash the staging table lacks: it
        reads only the unique (site, path hash) index, which holds the row id too, and
        looks each hash up in the staging table's index. Rows already gone are among
        them; the few candidates are then sorted out by id, counted, and marked in short
        transactions. Where directories were found unchanged by their digests
        (``crawler.digests``), their files are not staged: the directories are, and the
        read goes by the (site, directory hash) index instead, its candidates (the rows
        of the other directories) checked against the staged files batch by batch."""
        if self.first:
            return 0
        staged = self._staged_unless_complete()
        if staged is None:
            return 0
        s, t = statuses.c, self.stage.table.c
        # By directory when that spares reading most rows; else the few unchanged
        # directories' rows are copied in and the read goes by hash, as everywhere else.
        by_directory = self.unchanged_files > staged
        if self.unchanged_directories and not by_directory:
            self._copy_rows(self.unchanged_directories)
        if by_directory:
            self._stage_unchanged_directories()
            # (size -1: a file named as the directory was has its hash, and is no marker)
            unseen = (sa.select(s.id).where(
                s.site == self.site,
                ~sa.exists().where(t.path_hash == s.dir_hash, t.size < 0)))
        else:
            unseen = (sa.select(s.id).where(
                s.site == self.site, ~sa.exists().where(t.path_hash == s.path_hash)))
        self.stage.index()
        with self.engine.connect() as conn:
            stream = (conn.execution_options(stream_results=True, yield_per=BATCH)
                      .execute(unseen).scalars())
            if by_directory:  # many candidates (a changed directory's files): batch by batch
                with self.engine.connect() as check:
                    gone = []
                    while ids := list(itertools.islice(stream, BATCH)):
                        gone += [r.id for r in self._leaving(check, ids, unlisted,
                                                             unstaged=True)]
            else:  # few: read, then sorted out on the same connection
                candidates = list(stream)
                gone = []
                for start in range(0, len(candidates), BATCH):
                    gone += [r.id for r in self._leaving(
                        conn, candidates[start:start + BATCH], unlisted)]
            if max_drop is not None and gone:
                self.drop = self._refused(conn, len(gone), listed, max_drop)
        if self.drop is not None:
            self.withheld = len(gone)  # the caller says so: the CLI as its one error line
            return 0
        for start in range(0, len(gone), BATCH):
            ids = gone[start:start + BATCH]
            vanished, lost = retrying(self.engine, lambda ids=ids: self._vanish(ids, unlisted))
            self.counts.vanished += vanished
            self.counts.lost += lost
        return self.counts.vanished

    def _staged_unless_complete(self) -> int | None:
        """How many rows the staging table holds; None if they, with the files of the
        directories found unchanged, are as many as the site's present rows: then none
        can vanish, and the anti-join and the index it needs (a third of a re-crawl's
        database time) are skipped. Exact: after the merge every listed file has a present
        row of this site (new ones inserted, changed and returned ones present again, an
        unchanged directory's counted), and a listing names each file once, so equal
        counts are the same set. Both counts in one statement, one read view."""
        s = statuses.c
        present = (sa.select(sa.func.count())
                   .where(s.site == self.site, s.status.not_in(_GONE)).scalar_subquery())
        staged = sa.select(sa.func.count()).select_from(self.stage.table).scalar_subquery()
        with self.engine.connect() as conn:
            present, staged = conn.execute(sa.select(present, staged)).one()
        if present == staged + self.unchanged_files:
            log.debug("all %s present files of site %s listed: none vanished", f"{present:,}",
                      self.site)
            return None
        return staged

    def _stage_unchanged_directories(self) -> None:
        """The directories found unchanged, into the staging table (size -1, after the
        listing's places), where the vanish step spares their files."""
        rows = [(self._seq + i, directory, -1, 0, None, None, False)
                for i, directory in enumerate(self.unchanged_directories)]

        def load() -> None:
            with write_transaction(self.writer) as conn:
                t = self.stage.table.c
                if not conn.execute(sa.select(t.seq).where(t.seq == self._seq)).first():
                    for start in range(0, len(rows), BATCH):
                        self.stage.load(conn, rows[start:start + BATCH])

        retrying(self.writer, load)

    def _leaving(self, conn: sa.Connection, ids: list[int], unlisted: list[bytes], *,
                 lock: bool = False, unstaged: bool = False) -> list:
        """Which of ``ids`` are present below the root and outside every unlisted
        directory (and, ``unstaged``, not among the staged files): the files this crawl
        finds gone."""
        s, t = statuses.c, self.stage.table.c
        lo, hi = _subtree_range(self.root)
        fences = [_subtree_range(d) for d in unlisted]
        query = (sa.select(s.id, s.path, s.status, s.size, s.reference, s.checked,
                           s.crawl_gen)
                 .where(s.id.in_(ids), s.status.not_in(_GONE), s.path >= lo, s.path < hi))
        if unstaged:
            query = query.where(~sa.exists().where(t.path_hash == s.path_hash, t.size >= 0))
        if lock:
            query = query.with_for_update()
        return [r for r in conn.execute(query)
                if not any(a <= bytes(r.path) < b for a, b in fences)]

    def _refused(self, conn: sa.Connection, leaving: int, listed: int | None,
                 max_drop: float) -> Drop | None:
        """The guard: the site's present files (the ledger, less what this crawl added)
        against the ones about to vanish."""
        totals = counts.totals(conn, self.site)
        present = sum(n for (_, st), n in totals.files.items() if st not in GONE)
        present = max(present - self.counts.new, leaving)
        if listed == 0:
            return Drop(leaving, present, max_drop, empty_root=True)
        if leaving > max_drop * present:
            return Drop(leaving, present, max_drop, empty_root=False)
        return None

    def _vanish(self, ids: list[int], unlisted: list[bytes]) -> tuple[int, int]:
        """Mark what is still leaving of ``ids``: (vanished, of them lost)."""
        s = statuses.c
        with write_transaction(self.engine) as conn:
            gone = self._leaving(conn, ids, unlisted, lock=True)
            if not gone:
                return 0, 0
            lost = [int(st) for st in LOST_WHEN_GONE]
            deltas, waiting = counts.Deltas(), ages.Deltas()
            listed = ages.listing_starts(conn, (r.crawl_gen for r in gone))
            for r in gone:
                deltas.remove(self.site, r.status, r.reference, r.size)
                deltas.add(self.site, LOST if r.status in lost else VANISHED, r.reference,
                           r.size)
                waiting.remove(self.site, r.status, r.checked, listed.get(r.crawl_gen))
            conn.execute(statuses.update().where(s.id.in_([r.id for r in gone])).ordered_values(
                # MySQL assigns left to right, later ones seeing earlier ones: the prior
                # status first, while status still holds it.
                (s.prior_status, s.status),
                (s.status, sa.case((s.status.in_(lost), LOST), else_=VANISHED)),
                (s.claim_key, None), (s.tag, None), (s.tag_expiry, None),
                (s.crawl_gen, self.crawl_id)))
            deltas.write(conn)
            waiting.write(conn)
            return len(gone), sum(1 for r in gone if r.status in lost)

    def finish(self, stats: WalkStats, *, kind: str | None = None,
               skipped_directories: int = 0,
               when_complete: Callable[[sa.Connection], None] | None = None) -> None:
        """Mark the crawl finished; if it is complete, ``when_complete`` writes what it
        leaves for the next crawl (its directory state) in the same transaction."""
        complete = not stats.unreadable and self.drop is None
        with write_transaction(self.engine) as conn:
            conn.execute(
                crawls.update().where(crawls.c.id == self.crawl_id).values(
                    finished=time.time(),
                    complete=complete, kind=kind,
                    skipped_directories=skipped_directories,
                    files=stats.files, directories=stats.directories,
                    empty_directories=stats.empty_directories,
                    unreadable_directories=stats.unreadable_directories, bytes=stats.bytes,
                    new=self.counts.new, changed=self.counts.changed,
                    vanished=self.counts.vanished, skipped=stats.skipped,
                    withheld=self.withheld,
                    checksums_unread=stats.checksums_unread,
                )
            )
            if complete and when_complete is not None:
                when_complete(conn)
            counts.fold(conn)
        if not self.first:
            self.stage.drop()
        self._close_writer()

    def _close_writer(self) -> None:
        if self.writer is not self.engine:
            self.writer.dispose()

    def abandon(self) -> None:
        """After a failure: drop the staging table if the database lets us (else a later
        crawl drops it); the crawl stays unfinished, so nothing trusts it."""
        try:
            if not self.first:
                self.stage.drop()
        except sa.exc.DBAPIError as err:
            log.debug("staging table %s left for later: %s", self.stage.name, err)
        self._close_writer()
