"""The HTML of one table row: a problem file, a history section's heading, one check.

Built in Python rather than in the templates: with 100,000 problem rows and 200,000 checks
the template engine's cost per row was a third of the report's time (bench/report.py).
Every value goes through ``markupsafe.escape``; paths through ``display`` first."""

from __future__ import annotations

import time

from markupsafe import Markup, escape

from pnfsmon.schema.paths import display
from pnfsmon.web.history import HISTORY_BUCKET, Check
from pnfsmon.web.summary import ProblemRow


def when(ts: float | None) -> str:
    """Local time with its zone (``2026-11-29 13:05:09 CET``): a report is read elsewhere."""
    if not ts:
        return ""
    local = time.localtime(ts)
    return time.strftime("%Y-%m-%d %H:%M:%S ", local) + (local.tm_zone
                                                         or time.strftime("%z", local))


def problem_row(r: ProblemRow) -> Markup:
    first = ' <span class="note">(first check)</span>' if r.recorded_from == "first_check" else ""
    node = f" / {escape(r.source_node)}" if r.source_node else ""
    return Markup(
        f'<tr><td>{escape(r.site)}</td><td class="path">{escape(display(r.path))}</td>'
        f'<td class="num">{r.size:,}</td><td>{escape(r.recorded_adler32 or "")}{first}</td>'
        f'<td>{escape(r.computed_adler32 or "")}</td>'
        f'<td class="num">{(r.bytes_read or 0):,}</td>'
        f'<td>{escape(r.pool or "")}{node}</td><td>{when(r.checked)}</td>'
        f'<td>{escape(r.error or "")}</td>'
        f'<td><a href="history/{r.id // HISTORY_BUCKET}.html#f{r.id}">checks</a></td></tr>\n')


def history_heading(r: ProblemRow, status_label: str) -> Markup:
    recorded = escape(r.recorded_adler32 or "none")
    source = f" ({escape(r.recorded_from)})" if r.recorded_from else ""
    return Markup(
        f'<tr class="file" id="f{r.id}"><th colspan="9"><span class="path">'
        f'{escape(display(r.path))}</span><br>site {escape(r.site)}, {r.size:,} bytes, now '
        f'<span class="bad">{escape(status_label)}</span>; recorded adler32 {recorded}{source}'
        f'</th></tr>\n')


def check_row(c: Check) -> Markup:
    source = " / ".join(escape(x) for x in (c.source_pool, c.source_node) if x)
    bad = "" if c.status.label == "ok" else ' class="bad"'
    return Markup(
        f'<tr><td>{when(c.checked)}</td><td{bad}>{c.status.label}</td>'
        f'<td>{escape(c.worker_node)}</td><td>{source}</td>'
        f'<td class="num">{c.seconds:.2f}</td><td class="num">{c.bytes_read:,}</td>'
        f'<td class="num">{c.mb_per_s:.1f}</td><td>{escape(c.computed_adler32 or "")}</td>'
        f'<td>{escape(c.error or "")}</td></tr>\n')
