"""Queries behind every report: counts per status and per site, crawl and sweep progress,
the trend of problem files found per day, problem rows. Producing the numbers is kept apart from
rendering them (HTML, exports, terminal); rows are streamed, never loaded whole."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa

from pnfsmon.schema import counts
from pnfsmon.schema.discrepancies import CompareState
from pnfsmon.schema.durations import DAY
from pnfsmon.schema.incidents import Incident, open_incidents
from pnfsmon.schema.reference import Reference
from pnfsmon.schema.sites import Site
from pnfsmon.schema.status import GONE, PROBLEMS, Status
from pnfsmon.schema.sweep import SweepProgress, leases, sweep_progress
from pnfsmon.schema.tables import compares, crawls, events, statuses
from pnfsmon.web.watchdog import SiteWatch, watch


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
    withheld: int  # not marked vanished: the crawl refused a drop (``max_crawl_drop``)
    kind: str | None = None  # full | incremental (None: before schema revision 0008)
    skipped_directories: int = 0  # incremental: not listed, unchanged


#: Problems a check (or a crawl) finds; ``lost`` is what becomes of some when they vanish.
FOUND = tuple(s for s in PROBLEMS if s not in GONE)

@dataclass(frozen=True)
class CompareInfo:
    """The latest finished comparison of a site with its catalog (``pnfsmon compare``)."""

    id: int
    finished: float
    state: CompareState  # published, refused or flagged (finished ones only)
    reason: str | None
    missing: int
    missing_bytes: int
    orphan: int
    orphan_bytes: int
    mismatch: int
    young: int
    ignored: int

    def __post_init__(self) -> None:  # as the row holds it: the closed vocabulary's value
        object.__setattr__(self, "state", CompareState(self.state))


def latest_compares(conn: sa.Connection) -> dict[str, CompareInfo]:
    latest = (sa.select(sa.func.max(compares.c.id).label("id"))
              .where(compares.c.finished.is_not(None)).group_by(compares.c.site).subquery())
    cols = [compares.c[name] for name in CompareInfo.__dataclass_fields__]
    return {row.site: CompareInfo(*row[1:]) for row in conn.execute(
        sa.select(compares.c.site, *cols).join(latest, compares.c.id == latest.c.id))}


@dataclass
class SiteRow:
    """One site: its last finished crawl, its files by status (count and bytes), and its
    latest comparison with the catalog."""

    site: str
    crawl: CrawlInfo | None
    counts: dict[Status, int]
    sizes: dict[Status, int]
    compare: CompareInfo | None = None
    # Listed files by where their reference came from, or why they have none.
    references: dict[Reference, int] = field(default_factory=dict)
    # Of the corrupted files: how many a second read has not confirmed yet.
    unconfirmed: int = 0


@dataclass
class Summary:
    generated: float
    counts: dict[Status, int]
    leased: int
    first_check_references: int
    in_grace: int  # listed but written too recently to judge (crawl --grace)
    crawls: list[CrawlInfo] = field(default_factory=list)
    sites: list[SiteRow] = field(default_factory=list)
    sweep: SweepProgress | None = None
    watch: list[SiteWatch] = field(default_factory=list)  # the watchdog, per site
    # Listed files by where their reference came from, or why they have none.
    references: dict[Reference, int] = field(default_factory=dict)
    # Bursts of problems waiting for a person (``schema.incidents``): CRITICAL in Nagios.
    incidents: list[Incident] = field(default_factory=list)

    @property
    def unconfirmed(self) -> int:
        """Corrupted files whose second read has not confirmed the verdict yet."""
        return sum(r.unconfirmed for r in self.sites)

    @property
    def unreadable_references(self) -> int:
        """Files whose recorded checksum the storage keeps but could not give."""
        return self.references.get(Reference.UNREADABLE, 0)

    @property
    def listed(self) -> int:
        """Files currently in the namespace (everything but vanished and lost)."""
        return sum(n for s, n in self.counts.items() if s not in GONE)

    @property
    def checked(self) -> int:
        return self.listed - self.counts[Status.UNCHECKED] - self.counts[Status.NEARLINE]

    def as_json(self) -> dict:
        return {
            "generated": self.generated,
            "counts": {s.label: self.counts[s] for s in Status},
            "unconfirmed": self.unconfirmed,
            "files": self.listed,
            "checked": self.checked,
            "leased": self.leased,
            "in_grace": self.in_grace,
            "first_check_references": self.first_check_references,
            "references": {r.name.lower(): self.references.get(r, 0) for r in Reference},
            "sites": [
                {"site": r.site, "counts": {s.label: r.counts[s] for s in Status},
                 "bytes": {s.label: r.sizes[s] for s in Status},
                 "unconfirmed": r.unconfirmed,
                 "last_crawl_finished": r.crawl.finished if r.crawl else None,
                 "last_crawl_complete": r.crawl.complete if r.crawl else None,
                 "catalog": r.compare.__dict__ if r.compare else None}
                for r in self.sites
            ],
            "sweep": None if self.sweep is None else {
                "checked_in_cycle": self.sweep.checked_in_cycle,
                "checkable": self.sweep.checkable, "due": self.sweep.due,
                "checked_last_hour": self.sweep.checked_last_hour,
                "checked_last_day": self.sweep.checked_last_day,
                "rate_per_hour": self.sweep.rate_per_hour, "eta_hours": self.sweep.eta_hours,
            },
            "watchdog": [w.as_json() for w in self.watch],
            "open_incidents": [i.as_json() for i in self.incidents],
            "last_crawls": [
                {"site": c.site, "root": c.root.decode("utf-8", "backslashreplace"),
                 "started": c.started, "finished": c.finished, "complete": c.complete,
                 "files": c.files, "directories": c.directories,
                 "empty_directories": c.empty_directories,
                 "unreadable_directories": c.unreadable_directories, "bytes": c.bytes,
                 "new": c.new, "changed": c.changed, "vanished": c.vanished,
                 "withheld": c.withheld, "kind": c.kind,
                 "skipped_directories": c.skipped_directories}
                for c in self.crawls
            ],
        }


def summarize(conn: sa.Connection, *, sweep: bool = True, now: float | None = None,
              site_settings: Callable[[str], Site] = Site) -> Summary:
    """Counts per status and site (from the ``status_counts`` ledger: no scan), files
    being checked and in grace (the lease index), the last crawls and compares, the
    watchdog's view of each site (``web.watchdog``, with ``site_settings``: no scan); and
    with ``sweep``, where the checking cycle stands (one scan). ``now``: the application's
    clock, by default."""
    now = time.time() if now is None else now
    totals = counts.totals(conn)
    total_counts = dict.fromkeys(Status, 0)
    sites: dict[str, SiteRow] = {}

    def site_row(site: str) -> SiteRow:
        return sites.setdefault(site, SiteRow(site, None, dict.fromkeys(Status, 0),
                                              dict.fromkeys(Status, 0)))

    for (site, status), n in totals.files.items():
        total_counts[status] += n
        site_row(site).counts[status] = n
        site_row(site).sizes[status] = totals.bytes[(site, status)]
    for (site, reference), n in totals.references.items():
        if n:
            site_row(site).references[reference] = n
    crawled = last_crawls(conn)
    for c in crawled:  # the most recent crawl of each site stands for it
        row = site_row(c.site)
        if row.crawl is None or c.started > row.crawl.started:
            row.crawl = c
    for name, info in latest_compares(conn).items():
        site_row(name).compare = info
    for name, n in unconfirmed(conn).items():
        site_row(name).unconfirmed = n
    leased, in_grace = leases(conn)
    return Summary(now, total_counts, leased, sum(totals.first_check.values()), in_grace,
                   crawled, sorted(sites.values(), key=lambda r: r.site),
                   sweep_progress(conn, now, totals) if sweep else None,
                   watch(conn, now, site_settings),
                   references={r: totals.with_reference(r) for r in Reference},
                   incidents=open_incidents(conn))


def unconfirmed(conn: sa.Connection) -> dict[str, int]:
    """Per site, the corrupted files a second read has not confirmed yet (they are few:
    read through ``ix_statuses_confirm_due``)."""
    c = statuses.c
    return dict(conn.execute(
        sa.select(c.site, sa.func.count())
        .where(c.confirm_due.is_not(None), c.status == int(Status.CORRUPTED))
        .group_by(c.site)).all())


def problem_trend(conn: sa.Connection, days: int = 60, now: float | None = None
                  ) -> tuple[list[str], dict[Status, list[int]]]:
    """Problem files found per day over the last ``days`` (UTC days, oldest first), by
    status: how many files each day's checks found missing, corrupted, ... A file counts
    once a day per status, however often it was checked that day."""
    now = time.time() if now is None else now
    first_day = int(now // DAY) - days + 1
    series = {s: [0] * days for s in FOUND}
    seen: set[tuple[int, int, int]] = set()  # (day, status, file): problem files only
    # Bucketed here rather than in SQL: a portable day function does not exist.
    for file_id, checked, status in conn.execution_options(
        stream_results=True, yield_per=10000
    ).execute(
        sa.select(events.c.file_id, events.c.checked, events.c.status)
        .where(events.c.checked >= first_day * DAY,
               events.c.status.in_([int(s) for s in FOUND]))
    ):
        index = int(checked // DAY) - first_day
        if 0 <= index < days and (index, status, file_id) not in seen:
            seen.add((index, status, file_id))
            series[Status(status)][index] += 1
    labels = [time.strftime("%m-%d", time.gmtime((first_day + i) * DAY)) for i in range(days)]
    return labels, series


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


_ORDERS = {
    "path": (statuses.c.site, statuses.c.path),
    "size": (statuses.c.size.desc(), statuses.c.id),
    "time": (statuses.c.checked.desc(), statuses.c.id),
}


def problem_rows(conn: sa.Connection, status: Status, order: str = "path"
                 ) -> Iterator[ProblemRow]:
    """Rows with ``status`` by site and path (or largest first, or newest first),
    streamed (never the whole list in memory)."""
    cols = [statuses.c[name] for name in ProblemRow.__dataclass_fields__]
    result = conn.execution_options(stream_results=True, yield_per=2000).execute(
        sa.select(*cols).where(statuses.c.status == int(status))
        .order_by(*_ORDERS[order])
    )
    for row in result:
        values = list(row)
        values[2] = bytes(values[2])
        yield ProblemRow(*values)


def problem_ids(conn: sa.Connection, status: Status, order: str) -> Iterator[int]:
    """Only the ids of the rows with ``status``, in ``order`` (see ``problem_rows``)."""
    result = conn.execution_options(stream_results=True, yield_per=10000).execute(
        sa.select(statuses.c.id).where(statuses.c.status == int(status))
        .order_by(*_ORDERS[order])
    )
    for (file_id,) in result:
        yield file_id


def problem_counts(conn: sa.Connection) -> dict[Status, int]:
    """Files in each problem status (served by the (status, site) index)."""
    counts = dict.fromkeys(PROBLEMS, 0)
    for code, n in conn.execute(
        sa.select(statuses.c.status, sa.func.count())
        .where(statuses.c.status.in_([int(s) for s in PROBLEMS])).group_by(statuses.c.status)
    ):
        counts[Status(code)] = n
    return counts
