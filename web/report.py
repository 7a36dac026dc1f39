"""Write the static report into one directory: copy it to any web server (no PHP, no
server-side code, no script, nothing fetched from elsewhere).

- ``index.html``: per-site summary, the sweep's progress and ETA, problem files found per
  day (a file once a day);
- ``STATUS.html`` for missing, corrupted, timeout and unreadable: paginated (``PAGE_ROWS``
  per page, so each file stays a few MB at a million problems) and sortable across the whole
  list: by path (``STATUS.html``, ``STATUS-2.html``, ...), largest first
  (``STATUS-by-size.html``, ...) and newest first (``STATUS-by-time.html``, ...);
- ``history/N.html``: the last checks of every problem file (file ``id`` is on page
  ``id // 1000``), linked from each row;
- ``incidents.html``: per site what was declared to Rucio, what is held in incidents and
  what is pending; every open incident with its files;
- ``calibration.html``: MB/s per pool and per worker node, timeouts and corruption per pool;
- exports (``web.exports``): ``STATUS.txt``/``.csv``/``.jsonl``, ``summary.json``,
  ``pnfsmon.prom``.

Rows are streamed from the database and each problem row is read and rendered once
(``web.rowstore`` keeps it for the other orders and the histories): the report never holds
a whole list. The summary, calibration and trend queries run meanwhile on a second
connection, so the database works while this process renders."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import jinja2
import sqlalchemy as sa
from markupsafe import Markup, escape

from pnfsmon.schema import incidents
from pnfsmon.schema.atomic import atomic_text
from pnfsmon.schema.config import Thresholds
from pnfsmon.schema.declarable import SiteDeclarations, site_declarations
from pnfsmon.schema.discrepancies import write_lists
from pnfsmon.schema.paths import display
from pnfsmon.schema.progress import count, human_bytes
from pnfsmon.schema.sites import Site
from pnfsmon.schema.status import MISSING_AT_SITE, NEXT_STEPS, PROBLEMS, Status
from pnfsmon.web import plots
from pnfsmon.web.calibration import throughput
from pnfsmon.web.exports import ListExports, write_prometheus
from pnfsmon.web.history import HISTORY_BUCKET, HISTORY_ROWS, Check, problem_checks
from pnfsmon.web.prefetch import Prefetched
from pnfsmon.web.rows import check_row, history_heading, problem_row, when
from pnfsmon.web.rowstore import RowStore
from pnfsmon.web.summary import (
    DAY,
    Summary,
    problem_counts,
    problem_ids,
    problem_rows,
    problem_trend,
    summarize,
)
from pnfsmon.web.watchdog import judge

#: Rows on one HTML page (about 1 KB each); the exports always hold everything.
PAGE_ROWS = 2000

def commands(text: str) -> Markup:
    """Plain text with `backquoted` commands and file names, as HTML with <code>."""
    parts = str(escape(text)).split("`")
    return Markup("".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)))


DESCRIPTIONS = {
    Status.MISSING: "Listed in the namespace, but the data could not be found.",
    Status.CORRUPTED: "The content's Adler32 or size differs from the reference checksum. "
                      "Until a second read agrees, the detail column says 'unconfirmed'.",
    Status.TIMEOUT: "Could not be read within the timeout; 'bytes read' shows how far it got.",
    Status.UNREADABLE: "An I/O or permission error stopped the read; see the detail column.",
    Status.UNSTABLE_READ: "Two reads of the file disagreed (another Adler32, or one ok and "
                          "one corrupted), or the namespace found a file a read found gone: "
                          "the hardware or the network, not the data at rest.",
    Status.LOST: "Gone from the namespace while missing or corrupted: the data is lost unless "
                 "it is restored. Listed until a person acknowledges it (pnfsmon ack PATH, or "
                 "--all --site S) or it comes back.",
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


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pnfsmon.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["n"] = lambda v: f"{v:,}"
    env.filters["files"] = lambda v: count(v, "file")
    env.filters["when"] = when
    env.filters["size"] = human_bytes
    env.filters["path"] = display
    env.filters["age"] = _age
    env.filters["commands"] = commands
    return env


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return f"{seconds / 3600:.1f} h" if seconds < 2 * DAY else f"{seconds / DAY:.1f} days"


def write_report(engine: sa.Engine, outdir: Path, *,
                 site_settings: Callable[[str], Site] = Site,
                 limits: Thresholds | None = None) -> Summary:
    """Render every page and export into ``outdir`` (created if needed). ``site_settings``
    and ``limits``: each site's settings and the watchdog's thresholds (the configuration's;
    by default the built-in ones)."""
    limits = limits or Thresholds()
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "history").mkdir(exist_ok=True)
    env = _environment()
    generated = time.time()
    common = {"generated": when(generated), "problem_labels": [s.label for s in PROBLEMS],
              "root": ""}
    with ThreadPoolExecutor(1) as pool, RowStore() as store:
        aggregates = pool.submit(_aggregates, engine, site_settings)
        # The checks of problem files are sorted by the server while the pages render.
        checks = Prefetched(engine, problem_checks)
        try:
            with engine.connect() as conn:
                totals = problem_counts(conn)
                for status in PROBLEMS:
                    _write_problem_pages(conn, env, outdir, status, totals[status], store,
                                         common)
            _write_histories(checks, env, outdir, store, common)
        finally:
            checks.close()
        summary, pools, nodes, trend = aggregates.result()
    _render(env, outdir / "calibration.html", "calibration.html", pools=pools, nodes=nodes,
            pool_plot=plots.throughput_bars("Read rate per pool (MB/s)", pools),
            node_plot=plots.throughput_bars("Read rate per worker node (MB/s)", nodes),
            problem_plot=plots.problem_bars("Timed-out and corrupted reads per pool", pools),
            **common)
    lists = _write_consistency(engine, env, outdir, summary, common)
    rucio = _write_incidents(engine, env, outdir, summary, site_settings, generated, common)
    _render(env, outdir / "index.html", "index.html", s=summary, lists=lists, rucio=rucio,
            trend=plots.trend_lines("Problem files found per day (last 60 days)", *trend),
            counts=[(s, summary.counts[s]) for s in Status], problem_statuses=PROBLEMS,
            unchecked=Status.UNCHECKED, unstable=Status.UNSTABLE_READ,
            watch=[(w, judge(w, limits)) for w in summary.watch],
            age_plot=plots.age_histogram("Files by age of their last verification",
                                         summary.watch),
            **common)
    with atomic_text(outdir / "summary.json") as fh:
        json.dump({**summary.as_json(), "rucio": [r.as_json() for r in rucio]}, fh, indent=2)
        fh.write("\n")
    write_prometheus(outdir / "pnfsmon.prom", summary)
    return summary


def _write_consistency(engine: sa.Engine, env: jinja2.Environment, outdir: Path,
                       summary: Summary, common: dict) -> dict[str, list[str]]:
    """Each site's latest catalog comparison: the lists it published, and a page."""
    folder = outdir / "consistency"
    lists = {}
    for site in summary.sites:
        if site.compare is not None:
            written = write_lists(engine, site.compare.id, site.site, folder)
            lists[site.site] = [f"consistency/{p.name}" for p in written]
    _render(env, outdir / "consistency.html", "consistency.html", sites=summary.sites,
            lists=lists, lost_next_step=NEXT_STEPS[MISSING_AT_SITE], **common)
    return lists


#: Decided incidents stay on the incidents page this long (open ones, until decided).
DECIDED_SHOWN = 90 * DAY


def _write_incidents(engine: sa.Engine, env: jinja2.Environment, outdir: Path,
                     summary: Summary, site_settings: Callable[[str], Site],
                     generated: float, common: dict) -> list[SiteDeclarations]:
    """``incidents.html``: per site what was declared to Rucio, what is held in incidents
    and what is pending; every open incident with its files (``PAGE_ROWS`` each; ``pnfsmon
    incident show N`` lists all), and those decided in the last ``DECIDED_SHOWN``."""
    rucio = [site_declarations(engine, site_settings(row.site)) for row in summary.sites]
    with engine.connect() as conn:
        shown = incidents.listed(conn, everything=True,
                                 decided_since=generated - DECIDED_SHOWN)
        files = {i.id: incidents.files_of(conn, i.id, limit=PAGE_ROWS)
                 for i in shown if i.state == incidents.OPEN}
    _render(env, outdir / "incidents.html", "incidents.html", rucio=rucio,
            shown=list(reversed(shown)), files=files, open_state=incidents.OPEN,
            statuses=", ".join(s.label for s in incidents.INCIDENT_STATUSES),
            page_rows=PAGE_ROWS, **common)
    return rucio


def _aggregates(engine: sa.Engine, site_settings: Callable[[str], Site]):
    """The database-bound part: counts, calibration, trend (on its own connection)."""
    with engine.connect() as conn:
        return (summarize(conn, site_settings=site_settings),
                throughput(conn, "source_pool"),
                throughput(conn, "worker_node"), problem_trend(conn))


def _render(env: jinja2.Environment, path: Path, template: str, **values) -> None:
    with atomic_text(path) as fh:
        fh.write(env.get_template(template).render(**values))


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _write_problem_pages(conn: sa.Connection, env: jinja2.Environment, outdir: Path,
                         status: Status, total: int, store: RowStore, common: dict) -> None:
    """The path order straight from the database (writing the exports and filling the
    store on the way), then the other orders from their ids and the store. ``total``
    counts the rows when the report starts; rows that change status meanwhile may make a
    page short or add one, never lose a row from the exports."""
    pages = max(1, math.ceil(total / PAGE_ROWS))
    written = {order: 0 for order in ORDERS}
    with ListExports(outdir, status) as exports:
        for number, page in enumerate(_chunks(problem_rows(conn, status, "path"),
                                              PAGE_ROWS), start=1):
            html = []
            for row in page:
                exports.add(row)
                html.append(problem_row(row))
            store.add((row.id, text, history_heading(row, status.label))
                      for row, text in zip(page, html, strict=True))
            _write_problem_page(env, outdir, status, ORDERS[0], number, max(pages, number),
                                html, total, common)
            written[ORDERS[0]] = number
    for order in ORDERS[1:]:
        for number, ids in enumerate(_chunks(problem_ids(conn, status, order.key),
                                             PAGE_ROWS), start=1):
            _write_problem_page(env, outdir, status, order, number, max(pages, number),
                                store.rows(ids), total, common)
            written[order] = number
    for order, last in written.items():
        if last == 0:  # no rows: one page that says so
            _write_problem_page(env, outdir, status, order, 1, 1, [], 0, common)
        _remove_stale_pages(outdir, status, order, max(last, 1))
def _write_problem_page(env, outdir: Path, status: Status, order: Order, number: int,
                        pages: int, rows: list[Markup], total: int, common: dict) -> None:
    _render(env, outdir / page_name(status, order, number), "problems.html",
            label=status.label, description=DESCRIPTIONS[status],
            next_step=NEXT_STEPS[status], rows=rows, total=total,
            first=(number - 1) * PAGE_ROWS + 1, number=number, pages=pages, order=order,
            orders=ORDERS, page_name=lambda o, p: page_name(status, o, p), **common)


def _remove_stale_pages(outdir: Path, status: Status, order: Order, pages: int) -> None:
    """Pages past the last one, left by an earlier report of a longer list."""
    page = pages + 1
    while (stale := outdir / page_name(status, order, page)).exists():
        stale.unlink()
        page += 1


def _write_histories(checks: Iterator[tuple[int, Check]], env: jinja2.Environment,
                     outdir: Path, store: RowStore, common: dict) -> None:
    """One page per ``HISTORY_BUCKET`` ids: each problem file's heading (from the store)
    and its last ``HISTORY_ROWS`` checks (streamed by file id; the two are merged)."""
    checks = iter(checks)
    pending = next(checks, None)
    written = set()
    for number, files in _buckets(store.headings()):
        sections = []
        for file_id, heading in files:
            rows = []
            while pending is not None and pending[0] <= file_id:
                if pending[0] == file_id and len(rows) < HISTORY_ROWS:
                    rows.append(check_row(pending[1]))
                pending = next(checks, None)
            sections.append((heading, rows))
        _render(env, outdir / "history" / f"{number}.html", "history.html",
                sections=sections, number=number, **{**common, "root": "../"})
        written.add(f"{number}.html")
    for old in (outdir / "history").glob("*.html"):
        if old.name not in written:
            old.unlink()


def _buckets(headings: Iterator[tuple[int, Markup]]
             ) -> Iterator[tuple[int, list[tuple[int, Markup]]]]:
    bucket: list[tuple[int, Markup]] = []
    for item in headings:
        if bucket and item[0] // HISTORY_BUCKET != bucket[0][0] // HISTORY_BUCKET:
            yield bucket[0][0] // HISTORY_BUCKET, bucket
            bucket = []
        bucket.append(item)
    if bucket:
        yield bucket[0][0] // HISTORY_BUCKET, bucket
