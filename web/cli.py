"""``pnfsmon report`` (static site), ``pnfsmon status`` (the summary in a terminal, or one
Nagios/Icinga line) and ``pnfsmon history PATH`` (one file's checks)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from pnfsmon.schema import cli
from pnfsmon.schema.cli import add_ignored_recheck_after, ignored_recheck_after
from pnfsmon.schema.config import Thresholds
from pnfsmon.schema.durations import DAY
from pnfsmon.schema.errors import EXIT_OK, EXIT_PROBLEMS, ConfigError, PnfsmonError
from pnfsmon.schema.paths import display, spellings
from pnfsmon.schema.progress import count
from pnfsmon.schema.status import NEXT_STEPS, PROBLEMS, Status
from pnfsmon.schema.xrootd import is_xrootd_url
from pnfsmon.web.history import FileHistory, file_history
from pnfsmon.web.rows import when
from pnfsmon.web.summary import Summary, summarize
from pnfsmon.web.watchdog import SiteWatch, histogram_text, judge

NAGIOS_OK, NAGIOS_WARNING, NAGIOS_CRITICAL, NAGIOS_UNKNOWN = 0, 1, 2, 3


def format_summary(s: Summary) -> str:
    lines = [f"{count(s.listed, 'file')} listed, {s.checked:,} checked "
             f"({100.0 * s.checked / max(s.listed, 1):.1f} %), {s.leased:,} being checked now"]
    width = max(len(st.label) for st in Status)
    for st in Status:
        mark = "  <- problem" if st in PROBLEMS and s.counts[st] else ""
        if st == Status.CORRUPTED and s.unconfirmed:
            mark += (f" ({s.unconfirmed:,} unconfirmed: a second read is due before it is "
                     "final)")
        lines.append(f"  {st.label:<{width}}  {s.counts[st]:>12,}{mark}")
    for w in s.watch:
        lines.extend(watch_lines(w))
    if s.first_check_references:
        one = s.first_check_references == 1
        lines.append(f"{count(s.first_check_references, 'file')} "
                     f"{'has its' if one else 'have their'} first computed checksum as "
                     "reference (the storage recorded none)")
    if s.unreadable_references:
        one = s.unreadable_references == 1
        lines.append(f"{count(s.unreadable_references, 'file')} "
                     f"{'has' if one else 'have'} no reference: the storage keeps "
                     f"{'its' if one else 'their'} checksum but could not give it (asked again "
                     "at each check)")
    for site in s.sites:
        if site.references:
            listed = sum(site.references.values())
            lines.append(f"references of {site.site}: " + ", ".join(
                f"{ref.label} {n:,} ({100 * n / listed:.1f}%)"
                for ref, n in sorted(site.references.items())))
        if site.counts[Status.LOST]:
            lost = site.counts[Status.LOST]
            lines.append(f"{count(lost, 'file')} of {site.site} {'is' if lost == 1 else 'are'} "
                         "lost (gone while missing or corrupted; the report lists them): "
                         "acknowledge "
                         f"with pnfsmon ack PATH... or pnfsmon ack --all --site {site.site}")
    for inc in s.incidents:
        lines.append(f"{inc.describe()} <- held from Rucio: pnfsmon incident show {inc.id}, "
                     "then release or dismiss it")
    for c in s.crawls:
        state = ("complete" if c.complete else
                 f"refused to mark {count(c.withheld, 'file')} vanished" if c.withheld else
                 f"{c.unreadable_directories} dirs unlisted")
        lines.append(f"last crawl of {c.site} {display(c.root)}: {count(c.files, 'file')}, "
                     f"{state}")
    return "\n".join(lines)


def age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 2 * DAY:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / DAY:.1f} days ago"


def waiting_lines(w: SiteWatch) -> list[str]:
    """Why files are not being checked now: the grace window, a recent check."""
    lines = []
    if w.in_grace:
        lines.append(f"{w.in_grace:,} files wait out their grace window (written too "
                     f"recently to judge); the first is due at {when(w.grace_until)}")
    if w.not_due:
        lines.append(f"{w.not_due:,} files are not due until {when(w.not_due_until)} "
                     f"(checked within the last {w.recheck_after / DAY:g} days)")
    return lines


def watch_lines(w: SiteWatch) -> list[str]:
    """The watchdog's view of one site, for ``pnfsmon status``."""
    crawl = ("last complete crawl " + age(w.crawl_age) if w.last_complete_crawl
             else "no complete crawl")
    lines = [f"site {w.site}: {w.overdue:,} of {w.files:,} files overdue "
             f"({w.overdue_percent:.2f} %, more than {w.overdue_slack / DAY:g} days past "
             f"due); oldest verification {age(w.oldest_age)}; {crawl}; last check "
             f"{age(w.now - w.last_check) if w.last_check else 'never'}",
             f"  verification ages: {histogram_text(w)}"]
    lines.extend("  " + line for line in waiting_lines(w))
    return lines


def nagios_line(s: Summary, warning: int, critical: int, max_crawl_age: float,
                now: float | None = None, limits: Thresholds | None = None
                ) -> tuple[int, str]:
    """One Nagios/Icinga plugin line and its exit code: CRITICAL at ``critical`` problem
    files or while an incident is open (``schema.incidents``), WARNING at ``warning``, or
    when a site's last crawl is incomplete or older than ``max_crawl_age`` seconds; and
    WARNING or CRITICAL when a site passes the watchdog's ``limits`` (overdue files, age
    of the last complete crawl, of the last check while files are due)."""
    now = time.time() if now is None else now
    limits = limits or Thresholds()
    problems = sum(s.counts[st] for st in PROBLEMS)
    notes = []
    code = NAGIOS_OK
    if problems >= critical:
        code = NAGIOS_CRITICAL
    elif problems >= warning:
        code = NAGIOS_WARNING
    for site in s.sites:
        c = site.crawl
        if c is None or not c.finished:
            notes.append(f"{site.site}: no finished crawl")
        elif c.withheld:
            notes.append(f"{site.site}: last crawl refused to mark {c.withheld:,} files "
                         "vanished")
        elif not c.complete:
            notes.append(f"{site.site}: last crawl incomplete")
        elif now - c.finished > max_crawl_age:
            notes.append(f"{site.site}: last crawl {(now - c.finished) / 3600:.0f} h ago")
    if notes:
        code = max(code, NAGIOS_WARNING)
    for inc in s.incidents:  # a burst waits for a person: its files are held from Rucio
        notes.append(f"incident {inc.id} open: {inc.files:,} problem files on {inc.where} "
                     f"(pnfsmon incident show {inc.id})")
        code = NAGIOS_CRITICAL
    for w in s.watch:
        for finding in judge(w, limits):
            notes.append(finding.text)
            code = max(code, finding.level)
    word = ("OK", "WARNING", "CRITICAL")[code]
    detail = ", ".join(f"{st.label} {s.counts[st]:,}" for st in PROBLEMS)
    checked = 100.0 * s.checked / max(s.listed, 1)
    text = (f"PNFSMON {word} - {count(problems, 'problem file')} ({detail}); {checked:.1f} % "
            f"of {count(s.listed, 'file')} checked" + (f"; {'; '.join(notes)}" if notes else ""))
    perf = " ".join(f"{st.label}={s.counts[st]};{warning};{critical};0"
                    for st in PROBLEMS)
    perf += f" unchecked={s.counts[Status.UNCHECKED]} checked={checked:.1f}%;;;0;100"
    oldest = max((w.oldest_age for w in s.watch if w.oldest_age is not None), default=0.0)
    perf += f" incidents={len(s.incidents)};;1;0"
    perf += (f" overdue={sum(w.overdue for w in s.watch)};;;0"
             f" oldest_check_days={oldest / DAY:.2f};;;0")
    return code, f"{text} | {perf}"


def _number(option: str, text: str, kind: type) -> float:
    """A threshold, parsed here rather than by argparse: a plugin's bad argument must be
    UNKNOWN (3), and argparse's exit 2 reads as CRITICAL to Nagios."""
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{option} needs a number, not {text!r}") from None


def _summary(args: argparse.Namespace) -> Summary:
    """The summary without the sweep's scan, each site with its configured settings."""
    settings = cli.settings(args)
    engine = cli.engine(args)
    with engine.connect() as conn:
        return summarize(conn, sweep=False, site_settings=settings.site)


def do_status(args: argparse.Namespace) -> int:
    """Print counts per status, check progress, open incidents and the last crawls. Exits 1
    if any file is missing, corrupted, timed out or unreadable, or an incident is open.
    With --nagios: one plugin line, exit 0 (OK), 1 (WARNING), 2 (CRITICAL: by the
    thresholds, or while an incident is open), 3 (UNKNOWN) if it cannot tell."""
    if not args.nagios:
        s = _summary(args)
        print(format_summary(s))
        return (EXIT_PROBLEMS if s.incidents or any(s.counts[st] for st in PROBLEMS)
                else EXIT_OK)
    try:
        warning = _number("--warning", args.warning, int)
        critical = _number("--critical", args.critical, int)
        max_crawl_age = _number("--max-crawl-age", args.max_crawl_age, float)
        if not 0 < warning <= critical:
            raise ConfigError("need 0 < --warning <= --critical")
        s = _summary(args)
        code, line = nagios_line(s, warning, critical, max_crawl_age * 3600,
                                 s.generated, cli.settings(args).watch)
    except PnfsmonError as err:
        code, line = NAGIOS_UNKNOWN, f"PNFSMON UNKNOWN - {err}"
    print(line)
    return code


def do_report(args: argparse.Namespace) -> int:
    """Write the static HTML report (summary, problem pages, calibration, file histories)
    and its exports (CSV, JSON Lines, percent-encoded lists, summary.json, pnfsmon.prom)
    into OUTDIR."""
    # Imported here: the plotting and Prometheus libraries are not needed (nor shipped in
    # the HTCondor bundle) for the other commands.
    from pnfsmon.web.report import write_report

    ignored_recheck_after(args)
    settings = cli.settings(args)
    engine = cli.engine(args)
    outdir = Path(args.outdir)
    write_report(engine, outdir, site_settings=settings.site, limits=settings.watch)
    print(f"report written to {outdir.resolve() / 'index.html'}")
    return EXIT_OK


def _format_history(h: FileHistory) -> str:
    lines = [f"{display(h.path)} (site {h.site}, {h.size:,} bytes): {h.status.label}; "
             f"recorded adler32 {h.recorded_adler32 or 'none'}"
             + (f" ({h.recorded_from})" if h.recorded_from else "")]
    lines += [f"  lost ({st.label}), acknowledged by {by} at {when(at)}"
              for st, by, at in h.acknowledged]
    if h.status in NEXT_STEPS:
        lines.append(f"  what to do: {NEXT_STEPS[h.status]}")
    if not h.checks:
        lines.append("  never checked")
        return "\n".join(lines)
    last = h.checks[0]
    lines.append(f"  last verified {when(last.checked)} by {last.worker_node}: "
                 f"{last.status.label}")
    for c in h.checks:
        source = " / ".join(x for x in (c.source_pool, c.source_node) if x)
        lines.append(
            f"  {when(c.checked)}  "
            f"{c.status.label:<10} {c.worker_node}"
            + (f" (worker {c.reader})" if c.reader else "") + f"  {c.seconds:8.2f} s  "
            f"{c.bytes_read:>14,} B  {c.mb_per_s:8.1f} MB/s  {c.computed_adler32 or '-':8}"
            + (f"  {source}" if source else "") + (f"  {c.error}" if c.error else ""))
    return "\n".join(lines)


def do_history(args: argparse.Namespace) -> int:
    """When was PATH last verified, by whom, and was it good: every check recorded for it,
    newest first. PATH as the file system has it, or as pnfs-monitor prints it: the
    percent-encoded form of the .txt lists and exports, or the escaped form (\\n, \\t,
    \\xNN, \\\\) of the logs and HTML pages. Exits 1 if the file's current status is a
    problem."""
    candidates = [p if is_xrootd_url(p) else os.path.abspath(p)
                  for p in spellings(args.path)]
    engine = cli.engine(args)
    histories: dict[int, FileHistory] = {}
    with engine.connect() as conn:
        for path in dict.fromkeys(candidates):
            histories.update((h.id, h) for h in file_history(conn, path, args.site))
    if not histories:
        raise ConfigError(f"{display(candidates[0])} is not in the database (not crawled, "
                          "or another spelling of its path)")
    histories = list(histories.values())
    if args.json:
        print(json.dumps([h.as_json() for h in histories], indent=2))
    else:
        print("\n".join(_format_history(h) for h in histories))
    return EXIT_PROBLEMS if any(h.status in PROBLEMS for h in histories) else EXIT_OK


def register(subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("report", parents=parents, help="write the static HTML report",
                              description=do_report.__doc__)
    p.add_argument("outdir", metavar="OUTDIR")
    add_ignored_recheck_after(p)
    p.set_defaults(func=do_report)
    p = subparsers.add_parser("status", parents=parents, help="print the summary",
                              description=do_status.__doc__)
    p.add_argument("--nagios", action="store_true",
                   help="print one Nagios/Icinga plugin line with performance data")
    p.add_argument("--warning", default="1", metavar="N",
                   help="--nagios: WARNING at N problem files (default: 1)")
    p.add_argument("--critical", default="100", metavar="N",
                   help="--nagios: CRITICAL at N problem files (default: 100)")
    p.add_argument("--max-crawl-age", default="48", metavar="HOURS",
                   help="--nagios: WARNING if a site's last crawl is older (default: 48)")
    p.set_defaults(func=do_status)
    p = subparsers.add_parser("history", parents=parents, help="one file's checks",
                              description=do_history.__doc__)
    p.add_argument("path", metavar="PATH",
                   help="the file's path (or root:// URL) as crawled, percent-encoded as in "
                        "the .txt lists, or escaped as in the logs and HTML pages")
    p.add_argument("--site", help="only this site's record of it")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=do_history)
