"""Write the static report into one directory: copy it to any web server (no PHP, no
server-side code, no script, nothing fetched from elsewhere).

- ``index.html``: per-site summary, the sweep's progress and ETA, problems found per day;
- ``STATUS.html`` for missing, corrupted, timeout and unreadable: paginated (``PAGE_ROWS``
  per page, so each file stays a few MB at a million problems) and sortable across the whole
  list: by path (``STATUS.html``, ``STATUS-2.html``, ...), largest first
  (``STATUS-by-size.html``, ...) and newest first (``STATUS-by-time.html``, ...);
- ``history/N.html``: the last checks of every problem file (file ``id`` is on page
  ``id // 1000``), linked from each row;
- ``calibration.html``: MB/s per pool and per worker node, timeouts and corruption per pool;
- exports (``web.exports``): ``STATUS.txt``/``.csv``/``.jsonl``, ``summary.json``,
  ``pnfsmon.prom``.

Rows are streamed from the database page by page; the report never holds a whole list."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jinja2
import sqlalchemy as sa

from schema.paths import display
from schema.progress import human_bytes
from schema.status import PROBLEMS, Status
from web import plots
from web.atomic import atomic_text
from web.calibration import throughput
from web.exports import ListExports, write_prometheus
from web.history import HISTORY_BUCKET, FileHistory, problem_histories
from web.summary import DAY, ProblemRow, Summary, problem_rows, problem_trend, summarize

#: Rows on one HTML page (about 1 KB each); the exports always hold everything.
PAGE_ROWS = 2000

DESCRIPTIONS = {
    Status.MISSING: "Listed in the namespace, but the data could not be found.",
    Status.CORRUPTED: "The content's Adler32 or size differs from the reference checksum.",
    Status.TIMEOUT: "Could not be read within the timeout; 'bytes read' shows how far it got.",
    Status.UNREADABLE: "An I/O or permission error stopped the read; see the detail column.",
}


@dataclass(frozen=True)
class Order:
    key: str  # "" for the default (path) order
    title: str


ORDERS = (Order("", "path"), Order("size", "largest first"), Order("time", "newest first"))


def page_name(status: Status, order: Order, page: int) -> str:
    """``corrupted.html``, ``corrupted-3.html``, ``corrupted-by-size-2.html``, ..."""
    stem = status.label + (f"-by-{order.key}" if order.key else "")
    return f"{stem}.html" if page == 1 else f"{stem}-{page}.html"


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["n"] = lambda v: f"{v:,}"
    env.filters["when"] = _when
    env.filters["size"] = human_bytes
    env.filters["path"] = display
    return env


def write_report(engine: sa.Engine, outdir: Path, *, recheck_after: float = 30 * DAY
                 ) -> Summary:
    """Render every page and export into ``outdir`` (created if needed)."""
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "history").mkdir(exist_ok=True)
    env = _environment()
    with engine.connect() as conn:
        summary = summarize(conn, recheck_after)
        common = {"generated": _when(summary.generated),
                  "problem_labels": [s.label for s in PROBLEMS], "root": ""}
        for status in PROBLEMS:
            _write_problem_pages(conn, env, outdir, status, summary.counts[status], common)
        _write_histories(conn, env, outdir, common)
        _write_calibration(conn, env, outdir, common)
        trend = plots.trend_lines("Problems found per day (last 60 days)",
                                  *problem_trend(conn))
    _render(env, outdir / "index.html", "index.html", s=summary, trend=trend,
            counts=[(s, summary.counts[s]) for s in Status], problem_statuses=PROBLEMS,
            unchecked=Status.UNCHECKED, **common)
    with atomic_text(outdir / "summary.json") as fh:
        json.dump(summary.as_json(), fh, indent=2)
        fh.write("\n")
    write_prometheus(outdir / "pnfsmon.prom", summary)
    return summary


def _render(env: jinja2.Environment, path: Path, template: str, **values) -> None:
    with atomic_text(path) as fh:
        for chunk in env.get_template(template).generate(**values):
            fh.write(chunk)


def _pages(rows: Iterator[ProblemRow], size: int) -> Iterator[list[ProblemRow]]:
    page: list[ProblemRow] = []
    for row in rows:
        page.append(row)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


def _write_problem_pages(conn: sa.Connection, env: jinja2.Environment, outdir: Path,
                         status: Status, total: int, common: dict) -> None:
    pages = max(1, math.ceil(total / PAGE_ROWS))
    for order in ORDERS:
        rows = problem_rows(conn, status, order.key or "path")
        exports = ListExports(outdir, status) if not order.key else None
        written = 0
        with exports or contextlib.nullcontext():
            if exports is not None:
                rows = _exported(rows, exports)
            for number, page in enumerate(_pages(rows, PAGE_ROWS), start=1):
                _write_problem_page(env, outdir, status, order, number, pages, page, total,
                                    common)
                written = number
        if written == 0:  # no rows: one page that says so
            _write_problem_page(env, outdir, status, order, 1, 1, [], total, common)
        _remove_stale_pages(outdir, status, order, max(written, 1))


def _exported(rows: Iterator[ProblemRow], exports: ListExports) -> Iterator[ProblemRow]:
    for row in rows:
        exports.add(row)
        yield row


def _write_problem_page(env, outdir: Path, status: Status, order: Order, number: int,
                        pages: int, rows: list[ProblemRow], total: int, common: dict) -> None:
    _render(env, outdir / page_name(status, order, number), "problems.html",
            label=status.label, description=DESCRIPTIONS[status], rows=rows, total=total,
            first=(number - 1) * PAGE_ROWS + 1, number=number, pages=pages, order=order,
            orders=ORDERS, page_name=lambda o, p: page_name(status, o, p),
            bucket=HISTORY_BUCKET, **common)


def _remove_stale_pages(outdir: Path, status: Status, order: Order, pages: int) -> None:
    """Pages past the last one, left by an earlier report of a longer list."""
    page = pages + 1
    while (stale := outdir / page_name(status, order, page)).exists():
        stale.unlink()
        page += 1


def _write_histories(conn: sa.Connection, env: jinja2.Environment, outdir: Path,
                     common: dict) -> None:
    bucket: list[FileHistory] = []
    written = set()

    def flush() -> None:
        number = bucket[0].id // HISTORY_BUCKET
        _render(env, outdir / "history" / f"{number}.html", "history.html", files=bucket,
                number=number, **{**common, "root": "../"})
        written.add(f"{number}.html")

    for history in problem_histories(conn):
        if bucket and history.id // HISTORY_BUCKET != bucket[0].id // HISTORY_BUCKET:
            flush()
            bucket = []
        bucket.append(history)
    if bucket:
        flush()
    for old in (outdir / "history").glob("*.html"):
        if old.name not in written:
            old.unlink()


def _write_calibration(conn: sa.Connection, env: jinja2.Environment, outdir: Path,
                       common: dict) -> None:
    pools = throughput(conn, "source_pool")
    nodes = throughput(conn, "worker_node")
    _render(env, outdir / "calibration.html", "calibration.html", pools=pools, nodes=nodes,
            pool_plot=plots.throughput_bars("Read rate per pool (MB/s)", pools),
            node_plot=plots.throughput_bars("Read rate per worker node (MB/s)", nodes),
            problem_plot=plots.problem_bars("Timeouts and corruption per pool", pools),
            **common)
