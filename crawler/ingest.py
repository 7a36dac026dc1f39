"""Stream a namespace listing into ``statuses`` in batches, for any namespace.

Per batch: one SELECT by path hash finds the rows we know; new files are inserted, files
whose size, mtime or recorded checksum changed go back to ``unchecked`` (breaking any lease,
so a verdict on the old content is dropped), the rest only get the new crawl generation.
After a complete walk, rows of this site below the root that were not seen are marked
``vanished`` — except below directories the walk could not list.

Where a listed file goes in the queue:
- written within the grace window (it may still be being written; a partial file is not a
  corrupted one): listed but not claimable until ``mtime + grace``. It waits like a lease
  with an expiry and no owner; the claim's expired-lease step (``schema.lease``) queues it
  at the head when that time has passed, so no later crawl is needed;
- only on tape (dCache NEARLINE), unless the crawl includes nearline files: status
  ``nearline``, never claimed (reading it would stage it from tape);
- otherwise due at once (``claim_key`` 0)."""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from pymysql.converters import escape_string

from crawler.listing import Listed, WalkStats
from schema.db import retrying, write_transaction
from schema.paths import path_hash
from schema.status import Status
from schema.tables import crawls, statuses

BATCH = 5000
_HEX8 = re.compile(r"[0-9a-f]{8}")
_NEW_COLUMNS = ("site", "path", "path_hash", "size", "mtime_ns", "recorded_adler32",
                "recorded_from", "pool", "status", "claim_key", "tag_expiry", "crawl_gen")


@dataclass
class IngestCounts:
    new: int = 0
    changed: int = 0
    vanished: int = 0


def _content_changed(row, item: Listed, parked: bool) -> bool:
    if row.size != item.size or row.mtime_ns != item.mtime_ns:
        return True
    if (row.status == Status.NEARLINE) != parked:
        return True  # staged to disk, or now only on tape
    if row.status == Status.VANISHED:
        return True  # it is back: judge it afresh
    # A checksum the storage records now, different from the reference we hold, replaces it.
    return item.recorded_adler32 is not None and item.recorded_adler32 != row.recorded_adler32


class Ingest:
    """Write one crawl of one site below one root."""

    def __init__(self, engine: sa.Engine, site: str, root: bytes, *, grace: float = 0.0,
                 include_nearline: bool = False) -> None:
        self.engine = engine
        self.site = site
        self.root = root
        self.grace = grace
        self.include_nearline = include_nearline
        self.counts = IngestCounts()
        self.started = time.time()
        with write_transaction(engine) as conn:
            self.crawl_id = conn.execute(
                crawls.insert().values(site=site, root=root, started=self.started,
                                       complete=False)
            ).inserted_primary_key[0]

    def add_all(self, listing: Iterable[Listed], batch: int = BATCH, writers: int = 2) -> None:
        """Ingest a listing. Batches are written by ``writers`` threads on their own
        connections, so walking the namespace overlaps the database's work (waiting on a
        socket releases the GIL) and the server can use more than one core. Batches hold
        distinct paths, so concurrent writers never touch the same row."""
        if self.engine.dialect.name == "sqlite":
            writers = 1  # one writer at a time is all SQLite allows anyway
        batches: queue.Queue = queue.Queue(maxsize=2 * writers)
        failure: list[BaseException] = []

        def writer() -> None:
            while (hashed := batches.get()) is not None:
                if not failure:
                    try:
                        retrying(self.engine, lambda h=hashed: self._write_batch(dict(h)))
                    except BaseException as err:  # handed to the walking thread below
                        failure.append(err)

        threads = [threading.Thread(target=writer, name=f"pnfsmon-ingest-{n}", daemon=True)
                   for n in range(writers)]
        for thread in threads:
            thread.start()
        try:
            buffer: dict[bytes, Listed] = {}
            for item in listing:
                buffer[path_hash(item.path)] = item
                if len(buffer) >= batch:
                    batches.put(buffer)
                    buffer = {}
                    if failure:
                        break
            if buffer and not failure:
                batches.put(buffer)
        finally:
            for _ in threads:
                batches.put(None)
            for thread in threads:
                thread.join()
        if failure:
            raise failure[0]

    def _parked(self, item: Listed) -> bool:
        return item.nearline and not self.include_nearline

    def _queue_state(self, item: Listed) -> tuple[int, float | None, float | None]:
        """(status, claim_key, tag_expiry) for a new or changed file; see the docstring."""
        if self._parked(item):
            return int(Status.NEARLINE), None, None
        ready = item.mtime_ns / 1e9 + self.grace
        if self.grace > 0 and ready > self.started:
            return int(Status.UNCHECKED), None, ready
        return int(Status.UNCHECKED), 0.0, None

    def _write_batch(self, hashed: dict[bytes, Listed]) -> None:
        c = statuses.c
        gen = self.crawl_id
        with write_transaction(self.engine) as conn:
            known = self._select_known(conn, list(hashed))
            touch, repool, reset = [], [], []
            for row in known:
                item = hashed.pop(bytes(row.path_hash))
                if _content_changed(row, item, self._parked(item)):
                    reset.append((row.id, item))
                elif row.pool != item.pool and item.pool is not None:
                    repool.append({"b_id": row.id, "b_pool": item.pool})
                else:
                    touch.append(row.id)
            if hashed:
                self._insert_new(conn, hashed)
            if touch:
                conn.execute(statuses.update().where(c.id.in_(touch)).values(crawl_gen=gen))
            if repool:
                conn.execute(
                    statuses.update().where(c.id == sa.bindparam("b_id"))
                    .values(pool=sa.bindparam("b_pool"), crawl_gen=gen),
                    repool,
                )
            if reset:
                conn.execute(
                    statuses.update().where(c.id == sa.bindparam("b_id")).values(
                        size=sa.bindparam("b_size"), mtime_ns=sa.bindparam("b_mtime"),
                        recorded_adler32=sa.bindparam("b_recorded"),
                        recorded_from=sa.bindparam("b_from"), pool=sa.bindparam("b_pool"),
                        status=sa.bindparam("b_status"), claim_key=sa.bindparam("b_key"),
                        tag_expiry=sa.bindparam("b_expiry"), computed_adler32=None,
                        tag=None, error=None, crawl_gen=gen,
                    ),
                    [dict(zip(("b_status", "b_key", "b_expiry"), self._queue_state(i),
                              strict=True),
                          b_id=rid, b_size=i.size, b_mtime=i.mtime_ns,
                          b_recorded=i.recorded_adler32, b_from=i.recorded_from, b_pool=i.pool)
                     for rid, i in reset],
                )
        self.counts.new += len(hashed)
        self.counts.changed += len(reset)

    def _mysql(self, conn: sa.Connection) -> bool:
        return conn.dialect.name in ("mysql", "mariadb")

    def _select_known(self, conn: sa.Connection, hashes: list[bytes]) -> list:
        c = statuses.c
        columns = (c.id, c.path_hash, c.size, c.mtime_ns, c.recorded_adler32, c.status, c.pool)
        if not self._mysql(conn):
            return conn.execute(
                sa.select(*columns).where(c.site == self.site, c.path_hash.in_(hashes))
            ).all()
        # MariaDB/MySQL fast path: PyMySQL escapes each parameter in Python, which costs
        # more than the query itself; hex literals are built at C speed and are exact.
        names = ", ".join(col.name for col in columns)
        in_list = ",".join(f"X'{h.hex()}'" for h in hashes)
        return conn.exec_driver_sql(
            f"SELECT {names} FROM statuses WHERE site = '{escape_string(self.site)}' "
            f"AND path_hash IN ({in_list})"
        ).all()

    def _insert_new(self, conn: sa.Connection, hashed: dict[bytes, Listed]) -> None:
        gen = self.crawl_id
        if not self._mysql(conn):
            conn.execute(statuses.insert(), [
                dict(zip(_NEW_COLUMNS, (self.site, i.path, h, i.size, i.mtime_ns,
                                        i.recorded_adler32, i.recorded_from, i.pool,
                                        *self._queue_state(i), gen), strict=True))
                for h, i in hashed.items()
            ])
            return
        site = f"'{escape_string(self.site)}'"

        def text(value: str | None) -> str:
            return "NULL" if value is None else f"'{escape_string(value)}'"

        def checksum(value: str | None) -> str:
            if value is None:
                return "NULL"
            if not _HEX8.fullmatch(value):
                raise ValueError(f"not an Adler32 hex value: {value!r}")
            return f"'{value}'"

        def number(value: float | None) -> str:
            return "NULL" if value is None else repr(float(value))

        def queued(item: Listed) -> str:
            status, key, expiry = self._queue_state(item)
            return f"{status},{number(key)},{number(expiry)}"

        values = ",".join(
            f"({site},X'{i.path.hex()}',X'{h.hex()}',{int(i.size)},{int(i.mtime_ns)},"
            f"{checksum(i.recorded_adler32)},{text(i.recorded_from)},{text(i.pool)},"
            f"{queued(i)},{gen})"
            for h, i in hashed.items()
        )
        conn.exec_driver_sql(
            f"INSERT INTO statuses ({', '.join(_NEW_COLUMNS)}) VALUES {values}"
        )

    def mark_vanished(self, unlisted: list[bytes]) -> int:
        """Mark rows below the root not seen by this crawl as vanished; rows below an
        unlisted directory are left alone (we do not know whether they are still there)."""
        lo, hi = _subtree_range(self.root)
        c = statuses.c
        query = (
            sa.select(c.id, c.path)
            .where(c.site == self.site, c.crawl_gen < self.crawl_id,
                   c.status != int(Status.VANISHED), c.path >= lo, c.path < hi)
        )
        fences = [_subtree_range(d) for d in unlisted]

        def protected(path: bytes) -> bool:
            return any(lo_ <= path < hi_ for lo_, hi_ in fences)

        with self.engine.connect() as conn:
            gone = [row.id for row in conn.execute(query) if not protected(bytes(row.path))]
        for start in range(0, len(gone), BATCH):
            ids = gone[start : start + BATCH]

            def run(ids=ids) -> None:
                with write_transaction(self.engine) as conn:
                    conn.execute(
                        statuses.update().where(c.id.in_(ids)).values(
                            status=int(Status.VANISHED), claim_key=None, tag=None,
                            tag_expiry=None, crawl_gen=self.crawl_id)
                    )

            retrying(self.engine, run)
        self.counts.vanished = len(gone)
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
                )
            )


def _subtree_range(directory: bytes) -> tuple[bytes, bytes]:
    """[lo, hi) such that every path strictly below ``directory`` sorts inside it."""
    base = directory.rstrip(b"/")
    return base + b"/", base + b"0"  # '0' is the byte after '/'

