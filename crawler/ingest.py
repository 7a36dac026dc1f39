"""Merge a namespace listing into ``statuses``, for any namespace, writing only what
changed: a nightly re-crawl of an unchanged tree writes no ``statuses`` row at all.

The listing streams into the crawl's staging table (``crawler.staging``) in chunks. Each
chunk is merged as soon as it is loaded, in one short transaction, by writer threads that
overlap the walk:
- one join of the chunk against ``statuses`` (its unique (site, path hash) index) returns
  only the files that are **new**, **changed** (size, mtime, recorded checksum, tape-only
  or not, or back after having vanished) or whose pools changed;
- new files are copied from the staging table; changed ones go back to ``unchecked``,
  breaking any lease so that a verdict on the old content is dropped.
When the walk is complete, the staging table is indexed and one anti-join, page by page
over the site's rows, finds the **vanished** files below the root, except below
directories the walk could not list. Every change of status or size is written to the
``status_counts`` ledger in the same transaction (``schema.counts``).

Where a listed file goes in the queue:
- written within the grace window (it may still be being written; a partial file is not a
  corrupted one): listed but not claimable until ``mtime + grace``. It waits like a lease
  with an expiry and no owner; the claim's expired-lease step (``schema.lease``) queues it
  at the head when that time has passed, so no later crawl is needed;
- only on tape (dCache NEARLINE), unless the crawl includes nearline files: status
  ``nearline``, never claimed (reading it would stage it from tape);
- otherwise due at once (``claim_key`` 0)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from pnfsmon.crawler.listing import Listed, WalkStats
from pnfsmon.crawler.staging import Stage, drop_stale, mysql_checksum, mysql_text
from pnfsmon.schema import counts
from pnfsmon.schema.db import bulk_loading, retrying, write_transaction
from pnfsmon.schema.paths import path_hash
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import crawls, statuses

log = logging.getLogger(__name__)

BATCH = 10000  # files per chunk: one staging load and one merge transaction
NEARLINE, VANISHED = int(Status.NEARLINE), int(Status.VANISHED)
_NEW_COLUMNS = ("site", "path", "path_hash", "size", "mtime_ns", "recorded_adler32",
                "recorded_from", "reference", "pool", "status", "claim_key", "tag_expiry",
                "crawl_gen")


@dataclass
class IngestCounts:
    new: int = 0
    changed: int = 0
    vanished: int = 0


def _number(value: float | None) -> str:
    return "NULL" if value is None else repr(float(value))


def _subtree_range(directory: bytes) -> tuple[bytes, bytes]:
    """[lo, hi) such that every path strictly below ``directory`` sorts inside it."""
    base = directory.rstrip(b"/")
    return base + b"/", base + b"0"  # '0' is the byte after '/'


class Ingest:
    """Write one crawl of one site below one root."""

    def __init__(self, engine: sa.Engine, site: str, root: bytes, *, grace: float = 0.0,
                 include_nearline: bool = False, local_infile: bool = True) -> None:
        self.engine = engine
        # The chunks' connections: on MariaDB/MySQL they may LOAD DATA LOCAL INFILE.
        self.writer = bulk_loading(engine) if local_infile else engine
        self.site = site
        self.root = root
        self.grace = grace
        self.include_nearline = include_nearline
        self.counts = IngestCounts()
        self.started = time.time()
        self._lock = threading.Lock()  # the counts, from several writer threads
        drop_stale(engine, self.started)
        with write_transaction(engine) as conn:
            # The site's first crawl: nothing to compare with, nothing can vanish, so no
            # staging table; every file goes straight in.
            self.first = conn.execute(
                sa.select(statuses.c.id).where(statuses.c.site == site).limit(1)
            ).first() is None
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
        """Stage and merge a listing. Chunks are loaded and merged by ``writers`` threads on
        their own connections, so the walk overlaps the database's work (waiting on a
        socket releases the GIL) and the server can use more than one core. Chunks hold
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
        seq = 0  # each file's place in the listing: its key in the staging table
        try:
            batch = batch or BATCH
            chunk: list[tuple[bytes, Listed]] = []
            for item in listing:
                chunk.append((path_hash(item.path), item))
                if len(chunk) >= batch:
                    chunks.put((seq, chunk))
                    seq += len(chunk)
                    chunk = []
                    if failure:
                        break
            if chunk and not failure:
                chunks.put((seq, chunk))
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
        """The chunk's staged files that are new, changed, or moved between pools:
        (seq, statuses id or None, content changed)."""
        s, t = statuses.c, self.stage.table.c
        content_changed = sa.or_(
            s.size != t.size, s.mtime_ns != t.mtime_ns,
            # staged to disk, or now only on tape
            sa.and_(s.status == NEARLINE, ~t.nearline),
            sa.and_(s.status != NEARLINE, t.nearline),
            s.status == VANISHED,  # it is back: judge it afresh
            # A checksum the storage records now, different from the reference we hold,
            # replaces it.
            sa.and_(t.recorded_adler32.is_not(None),
                    sa.or_(s.recorded_adler32.is_(None),
                           s.recorded_adler32 != t.recorded_adler32)),
        )
        pool_moved = sa.and_(t.pool.is_not(None), sa.or_(s.pool.is_(None), s.pool != t.pool))
        return conn.execute(
            sa.select(t.seq, s.id, sa.case((content_changed, True), else_=False))
            .select_from(self.stage.table.outerjoin(
                statuses, sa.and_(s.site == self.site, s.path_hash == t.path_hash)))
            .where(t.seq >= lo, t.seq <= hi,
                   sa.or_(s.id.is_(None), content_changed, pool_moved))
        ).all()

    def _merge_chunk(self, first: int, chunk: list[tuple[bytes, Listed]]) -> None:
        s = statuses.c
        lo, hi = first, first + len(chunk) - 1
        if self.first:
            with write_transaction(self.writer) as conn:
                s = statuses.c
                # A retry after a commit that got through (its answer lost) finds the
                # chunk's first file already there: the whole chunk is in.
                if conn.execute(sa.select(s.id).where(
                        s.site == self.site, s.path_hash == chunk[0][0])).first() is None:
                    deltas = counts.Deltas()
                    self._insert_new(conn, chunk, deltas)
                    deltas.write(conn)
            with self._lock:
                self.counts.new += len(chunk)
            return
        with write_transaction(self.writer) as conn:
            if not conn.execute(sa.select(sa.func.count()).select_from(self.stage.table)
                                .where(self.stage.table.c.seq == lo)).scalar():
                # (Not again when this transaction is retried after its commit got through.)
                self.stage.load(conn, [
                    (lo + i, digest, item.size, item.mtime_ns, item.recorded_adler32,
                     item.pool, self._parked(item)) for i, (digest, item) in enumerate(chunk)])
            new, changed, moved = [], [], []
            for seq, file_id, content in self._differences(conn, lo, hi):
                digest, item = chunk[seq - lo]
                if file_id is None:
                    new.append((digest, item))
                elif content:
                    changed.append((file_id, item))
                else:
                    moved.append({"b_id": file_id, "b_pool": item.pool})
            deltas = counts.Deltas()
            if new:
                self._insert_new(conn, new, deltas)
            if changed:
                self._reset_changed(conn, changed, deltas)
            if moved:
                conn.execute(statuses.update().where(s.id == sa.bindparam("b_id"))
                             .values(pool=sa.bindparam("b_pool")), moved)
            deltas.write(conn)
        with self._lock:
            self.counts.new += len(new)
            self.counts.changed += len(changed)

    def _insert_new(self, conn: sa.Connection, new: list[tuple[bytes, Listed]],
                    deltas: counts.Deltas) -> None:
        rows = [(self.site, item.path, digest, item.size, item.mtime_ns,
                 item.recorded_adler32, item.recorded_from, int(item.reference), item.pool,
                 *self._queue_state(item), self.crawl_id) for digest, item in new]
        for row in rows:
            deltas.add(self.site, row[9], row[7], row[3])
        if conn.dialect.name not in ("mysql", "mariadb"):
            conn.execute(statuses.insert(), [dict(zip(_NEW_COLUMNS, r, strict=True))
                                             for r in rows])
            return
        # MariaDB/MySQL: PyMySQL escapes each parameter in Python, which costs more than
        # the statement; hex literals are built at C speed and are exact.
        conn.exec_driver_sql(
            f"INSERT INTO statuses ({', '.join(_NEW_COLUMNS)}) VALUES "
            + ",".join(f"({mysql_text(site)},X'{path.hex()}',X'{digest.hex()}',{int(size)},"
                       f"{int(mtime)},{mysql_checksum(recorded)},{mysql_text(source)},"
                       f"{reference},{mysql_text(pool)},{status},{_number(key)},"
                       f"{_number(expiry)},{gen})"
                       for site, path, digest, size, mtime, recorded, source, reference, pool,
                       status, key, expiry, gen in rows))

    def _reset_changed(self, conn: sa.Connection, changed: list[tuple[int, Listed]],
                       deltas: counts.Deltas) -> None:
        s = statuses.c
        ids = [file_id for file_id, _ in changed]
        # Old values under lock: the ledger must take away what the row holds now, even
        # if a worker recorded a verdict since the join above read it.
        for _id, status, size, reference in conn.execute(
                sa.select(s.id, s.status, s.size, s.reference)
                .where(s.id.in_(ids)).with_for_update()):
            deltas.remove(self.site, status, reference, size)
        values = []
        for file_id, item in changed:
            status, key, expiry = self._queue_state(item)
            deltas.add(self.site, status, item.reference, item.size)
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
                tag=None, error=None, crawl_gen=self.crawl_id),
            values)

    # -- after the walk ----------------------------------------------------------------

    def mark_vanished(self, unlisted: list[bytes]) -> int:
        """Mark rows of this site below the root that this crawl did not list as vanished;
        rows below an unlisted directory are left alone (we do not know whether they are
        still there).

        One streamed read finds the site's rows whose hash the staging table lacks: it
        reads only the unique (site, path hash) index, which holds the row id too, and
        looks each hash up in the staging table's index. Rows already vanished are among
        them; the few candidates are then checked and marked by id, in short
        transactions."""
        if self.first:
            return 0
        self.stage.index()
        s, t = statuses.c, self.stage.table.c
        unseen = (sa.select(s.id)
                  .where(s.site == self.site, ~sa.exists().where(t.path_hash == s.path_hash)))
        with self.engine.connect() as conn:
            candidates = list(conn.execution_options(stream_results=True, yield_per=10000)
                              .execute(unseen).scalars())
        for start in range(0, len(candidates), BATCH):
            ids = candidates[start:start + BATCH]
            self.counts.vanished += retrying(self.engine, lambda ids=ids: self._vanish(
                ids, unlisted))
        return self.counts.vanished

    def _vanish(self, ids: list[int], unlisted: list[bytes]) -> int:
        s = statuses.c
        lo, hi = _subtree_range(self.root)
        fences = [_subtree_range(d) for d in unlisted]
        with write_transaction(self.engine) as conn:
            gone = [r for r in conn.execute(
                sa.select(s.id, s.path, s.status, s.size, s.reference)
                .where(s.id.in_(ids), s.status != VANISHED, s.path >= lo, s.path < hi)
                .with_for_update())
                if not any(a <= bytes(r.path) < b for a, b in fences)]
            if not gone:
                return 0
            deltas = counts.Deltas()
            for r in gone:
                deltas.remove(self.site, r.status, r.reference, r.size)
                deltas.add(self.site, VANISHED, r.reference, r.size)
            conn.execute(statuses.update().where(s.id.in_([r.id for r in gone])).values(
                status=VANISHED, claim_key=None, tag=None, tag_expiry=None,
                crawl_gen=self.crawl_id))
            deltas.write(conn)
            return len(gone)

    def finish(self, stats: WalkStats) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(
                crawls.update().where(crawls.c.id == self.crawl_id).values(
                    finished=time.time(), complete=not stats.unreadable,
                    files=stats.files, directories=stats.directories,
                    empty_directories=stats.empty_directories,
                    unreadable_directories=stats.unreadable_directories, bytes=stats.bytes,
                    new=self.counts.new, changed=self.counts.changed,
                    vanished=self.counts.vanished, skipped=stats.skipped,
                    checksums_unread=stats.checksums_unread,
                )
            )
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
