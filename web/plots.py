"""Plots for the report, drawn at build time as inline SVG with pygal: no JavaScript, nothing
fetched (pygal's tooltip script, loaded from the web by default, is switched off, and its
inline config script removed), labels escaped by its XML writer. Each function returns
SVG markup, or "" when there is nothing to draw."""

from __future__ import annotations

import re

import pygal
from pygal.style import Style

from pnfsmon.schema.status import Status
from pnfsmon.web.calibration import Throughput
from pnfsmon.web.watchdog import AGE_BINS, SiteWatch

MAX_BARS = 30  # more bars than this are unreadable; the table beside the plot has them all
#: One colour per status, the same in every chart.
COLOURS = {Status.MISSING: "#3465a4", Status.CORRUPTED: "#cc0000", Status.TIMEOUT: "#f57900",
           Status.UNREADABLE: "#75507b", Status.UNSTABLE_READ: "#c17d11"}


def _style(*colours: str) -> Style:
    return Style(background="white", plot_background="white", font_family="sans-serif",
                 colors=colours or ("#4e9a06",))


_COMMON = dict(js=[], disable_xml_declaration=True, width=800,
               explicit_size=False, print_values=False, show_legend=True,
               legend_at_bottom=True, truncate_label=40, truncate_legend=40)


# pygal always embeds a small config script (inert without its tooltip library). The
# report carries no script at all: drop it. Its XML writer escapes "<" in text, so the
# only "</script>" is the element's own end tag.
_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)


def _render(chart) -> str:
    return _SCRIPT.sub("", chart.render(is_unicode=True))


def throughput_bars(title: str, rows: list[Throughput]) -> str:
    """MB/s per pool or node, the busiest ``MAX_BARS``."""
    rows = [r for r in rows if r.seconds > 0][:MAX_BARS]
    if not rows:
        return ""
    chart = pygal.HorizontalBar(title=title, height=120 + 22 * len(rows), style=_style(),
                                **{**_COMMON, "show_legend": False})
    chart.x_labels = [r.name for r in rows]
    chart.add("MB/s", [round(r.mb_per_s, 1) for r in rows])
    return _render(chart)


def problem_bars(title: str, rows: list[Throughput]) -> str:
    """Timeouts and corrupted verdicts per pool, the pools with most of them first."""
    rows = sorted((r for r in rows if r.timeouts or r.corrupted),
                  key=lambda r: -(r.timeouts + r.corrupted))[:MAX_BARS]
    if not rows:
        return ""
    chart = pygal.StackedBar(title=title, height=380, x_label_rotation=30,
                             style=_style(COLOURS[Status.TIMEOUT], COLOURS[Status.CORRUPTED]),
                             **_COMMON)
    chart.x_labels = [r.name for r in rows]
    chart.add("timeout", [r.timeouts for r in rows])
    chart.add("corrupted", [r.corrupted for r in rows])
    return _render(chart)


def trend_lines(title: str, labels: list[str], series: dict[Status, list[int]]) -> str:
    """Problem verdicts per day, one line per status."""
    if not any(any(values) for values in series.values()):
        return ""
    chart = pygal.Line(title=title, height=340, x_label_rotation=45, show_dots=False,
                       show_minor_x_labels=False,
                       style=_style(*(COLOURS[status] for status in series)), **_COMMON)
    chart.x_labels = labels
    chart.x_labels_major = labels[::7]
    for status, values in series.items():
        chart.add(status.label, values)
    return _render(chart)


def age_histogram(title: str, sites: list[SiteWatch]) -> str:
    """Files by the age of their last verification, one bar series per site (the last
    bin: never verified)."""
    sites = [w for w in sites if w.files][:MAX_BARS]
    if not sites:
        return ""
    chart = pygal.Bar(title=title, height=340, x_label_rotation=30,
                      style=_style(*_SITE_COLOURS), **_COMMON)
    chart.x_labels = [label for _, label in AGE_BINS] + ["never"]
    for w in sites:
        chart.add(w.site, [*w.histogram, w.never_verified])
    return _render(chart)


_SITE_COLOURS = ("#4e9a06", "#3465a4", "#f57900", "#75507b", "#c17d11", "#555753")
