"""Queries behind every report: counts per status, crawl and sweep progress, problem rows.
Producing the numbers is kept apart from rendering them (HTML, JSON, terminal)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa

from schema.lease import FIRST_CHECK
from schema.status import Status
from schema.tables import crawls, statuses


@dataclass
class CrawlInfo:
    site: str
    root: bytes
    started: float
    finished: float | None
    complete: bool
    files: int
    directories: int
    empty_directories: int
    unreadable_directories: int
    bytes: int
    new: int
    changed: int
    vanished: int


@dataclass
class Summary:
    generated: float
    counts: dict[Status, int]
    leased: int
    first_check_references: int
    in_grace: int  # listed but written too recently to judge (crawl --grace)
    crawls: list[CrawlInfo] = field(default_factory=list)

    @property
    def listed(self) -> int:
        """Files currently in the namespace (everything but vanished)."""
        return sum(n for s, n in self.counts.items() if s != Status.VANISHED)

    @property
    def checked(self) -> int:
        return self.listed - self.counts[Status.UNCHECKED] - self.counts[Status.NEARLINE]

    def as_json(self) -> dict:
        return {
            "generated": self.generated,
            "counts": {s.label: self.counts[s] for s in Status},
            "files": self.listed,
            "checked": self.checked,
            "leased": self.leased,
            "in_grace": self.in_grace,
            "first_check_references": self.first_check_references,
            "last_crawls": [
                {"site": c.site, "root": c.root.decode("utf-8", "backslashreplace"),
                 "started": c.started, "finished": c.finished, "complete": c.complete,
                 "files": c.files, "directories": c.directories,
                 "empty_directories": c.empty_directories,
                 "unreadable_directories": c.unreadable_directories, "bytes": c.bytes,
                 "new": c.new, "changed": c.changed, "vanished": c.vanished}
                for c in self.crawls
            ],
        }


def summarize(conn: sa.Connection) -> Summary:
    counts = dict.fromkeys(Status, 0)
    for code, n in conn.execute(
        sa.select(statuses.c.status, sa.func.count()).group_by(statuses.c.status)
    ):
        counts[Status(code)] = n
    leased = conn.execute(
        sa.select(sa.func.count()).where(statuses.c.tag.is_not(None))
    ).scalar_one()
    # A young file waits with an expiry but no owner: see crawler.ingest.
    in_grace = conn.execute(
        sa.select(sa.func.count())
        .where(statuses.c.tag.is_(None), statuses.c.tag_expiry.is_not(None))
    ).scalar_one()
    first = conn.execute(
        sa.select(sa.func.count()).where(statuses.c.recorded_from == FIRST_CHECK)
    ).scalar_one()
    return Summary(time.time(), counts, leased, first, in_grace, last_crawls(conn))


def last_crawls(conn: sa.Connection) -> list[CrawlInfo]:
    """The most recent finished crawl of each (site, root)."""
    latest = (
        sa.select(sa.func.max(crawls.c.id).label("id"))
        .where(crawls.c.finished.is_not(None))
        .group_by(crawls.c.site, crawls.c.root)
        .subquery()
    )
    cols = [crawls.c[name] for name in CrawlInfo.__dataclass_fields__]
    rows = conn.execute(
        sa.select(*cols).join(latest, crawls.c.id == latest.c.id).order_by(crawls.c.site)
    )
    return [CrawlInfo(*[bytes(v) if isinstance(v, memoryview) else v for v in row])
            for row in rows]


@dataclass(frozen=True)
class ProblemRow:
    id: int
    site: str
    path: bytes
    size: int
    recorded_adler32: str | None
    recorded_from: str | None
    computed_adler32: str | None
    checked: float | None
    worker_node: str | None
    source_node: str | None
    pool: str | None
    bytes_read: int | None
    error: str | None


def problem_rows(conn: sa.Connection, status: Status) -> Iterator[ProblemRow]:
    """Rows with ``status``, by site and path, streamed (never the whole list in memory)."""
    cols = [statuses.c[name] for name in ProblemRow.__dataclass_fields__]
    result = conn.execution_options(stream_results=True, yield_per=2000).execute(
        sa.select(*cols).where(statuses.c.status == int(status))
        .order_by(statuses.c.site, statuses.c.path)
    )
    for row in result:
        values = list(row)
        values[2] = bytes(values[2])
        yield ProblemRow(*values)
