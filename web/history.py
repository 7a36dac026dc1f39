"""A file's history from ``events``: "when was this file last verified, by whom, and was it
good?". ``pnfsmon history PATH`` prints it; the report's history pages show it for every
problem file."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa

from pnfsmon.schema.paths import display, encode_line, path_hash
from pnfsmon.schema.status import PROBLEMS, Status
from pnfsmon.schema.tables import acknowledgements, events, statuses

#: Problem files per history page: the page of file ``id`` is ``id // HISTORY_BUCKET``.
HISTORY_BUCKET = 1000
#: Checks shown per file on a history page (``pnfsmon history`` shows them all).
HISTORY_ROWS = 20


def utc_iso(ts: float | None) -> str:
    """``2026-11-23T16:10:52Z``, the time form of every export ("" for none)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else ""


@dataclass(frozen=True)
class Check:
    checked: float
    worker_node: str
    status: Status
    seconds: float
    bytes_read: int
    size: int
    source_node: str | None
    source_pool: str | None
    computed_adler32: str | None
    error: str | None
    # the worker (``host:pid:tag``) of a read that took part in a confirmation
    reader: str | None = None

    @property
    def mb_per_s(self) -> float:
        return self.bytes_read / self.seconds / 1e6 if self.seconds > 0 else 0.0

    def as_json(self) -> dict:
        return {
            "checked": self.checked,
            "checked_utc": utc_iso(self.checked),
            "worker_node": self.worker_node, "status": self.status.label,
            "seconds": self.seconds, "bytes_read": self.bytes_read, "size": self.size,
            "source_node": self.source_node, "source_pool": self.source_pool,
            "computed_adler32": self.computed_adler32, "error": self.error,
            "reader": self.reader,
        }


_CHECK_COLUMNS = (events.c.checked, events.c.worker_node, events.c.status, events.c.seconds,
                  events.c.bytes_read, events.c.size, events.c.source_node,
                  events.c.source_pool, events.c.computed_adler32, events.c.error,
                  events.c.reader)


def _check(values) -> Check:
    values = list(values)
    values[2] = Status(values[2])
    return Check(*values)


@dataclass
class FileHistory:
    id: int
    site: str
    path: bytes
    status: Status
    size: int
    recorded_adler32: str | None
    recorded_from: str | None
    checks: list[Check]  # newest first
    # (what was lost, by whom, when) for each ``pnfsmon ack`` of it, newest first
    acknowledged: list[tuple[Status, str, float]] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"site": self.site, "path": encode_line(self.path),
                "path_display": display(self.path), "status": self.status.label,
                "size": self.size, "recorded_adler32": self.recorded_adler32,
                "recorded_from": self.recorded_from,
                "checks": [c.as_json() for c in self.checks],
                "acknowledged": [{"lost": st.label, "by": by, "at": at,
                                  "at_utc": utc_iso(at)} for st, by, at in self.acknowledged]}


def file_history(conn: sa.Connection, path: bytes, site: str | None = None
                 ) -> list[FileHistory]:
    """Every site's record of ``path`` (or ``site``'s), with all its checks."""
    s = statuses.c
    query = sa.select(s.id, s.site, s.path, s.status, s.size, s.recorded_adler32,
                      s.recorded_from).where(s.path_hash == path_hash(path), s.path == path)
    if site is not None:
        query = query.where(s.site == site)
    out = []
    for row in conn.execute(query.order_by(s.site)):
        checks = [_check(c) for c in conn.execute(
            sa.select(*_CHECK_COLUMNS).where(events.c.file_id == row.id)
            .order_by(events.c.checked.desc(), events.c.id.desc()))]
        a = acknowledgements.c
        acked = [(Status(st), by, at) for st, by, at in conn.execute(
            sa.select(a.status, a.acked_by, a.acked_at)
            .where(a.site == row.site, a.path_hash == path_hash(path), a.path == path)
            .order_by(a.acked_at.desc()))]
        out.append(FileHistory(row.id, row.site, bytes(row.path), Status(row.status),
                               row.size, row.recorded_adler32, row.recorded_from, checks,
                               acked))
    return out


def problem_checks(conn: sa.Connection) -> Iterator[tuple[int, Check]]:
    """(file id, check) for every check of every problem file, by file id, newest check
    first; streamed, and only the events' own columns (the files' paths are not repeated
    per check)."""
    s = statuses.c
    rows = conn.execution_options(stream_results=True, yield_per=10000).execute(
        sa.select(events.c.file_id, *_CHECK_COLUMNS)
        .join(statuses, events.c.file_id == s.id)
        .where(s.status.in_([int(p) for p in PROBLEMS]))
        .order_by(events.c.file_id, events.c.checked.desc(), events.c.id.desc())
    )
    for row in rows:
        yield row[0], _check(row[1:])
