"""``pnfsmon report`` (static site) and ``pnfsmon status`` (the same summary in a terminal)."""

from __future__ import annotations

import argparse
from pathlib import Path

from schema import cli
from schema.errors import EXIT_OK, EXIT_PROBLEMS
from schema.paths import display
from schema.status import PROBLEMS, Status
from web.report import write_report
from web.summary import Summary, summarize


def format_summary(s: Summary) -> str:
    lines = [f"{s.listed:,} files listed, {s.checked:,} checked "
             f"({100.0 * s.checked / max(s.listed, 1):.1f} %), {s.leased:,} being checked now"]
    width = max(len(st.label) for st in Status)
    for st in Status:
        mark = "  <- problem" if st in PROBLEMS and s.counts[st] else ""
        lines.append(f"  {st.label:<{width}}  {s.counts[st]:>12,}{mark}")
    if s.first_check_references:
        lines.append(f"{s.first_check_references:,} files have their first computed checksum "
                     "as reference (the storage recorded none)")
    for c in s.crawls:
        state = "complete" if c.complete else f"{c.unreadable_directories} dirs unlisted"
        lines.append(f"last crawl of {c.site} {display(c.root)}: {c.files:,} files, {state}")
    return "\n".join(lines)


def do_status(args: argparse.Namespace) -> int:
    """Print counts per status, check progress and the last crawls. Exits 1 if any file is
    missing, corrupted, timed out or unreadable."""
    engine = cli.engine(args)
    with engine.connect() as conn:
        s = summarize(conn)
    print(format_summary(s))
    return EXIT_PROBLEMS if any(s.counts[st] for st in PROBLEMS) else EXIT_OK


def do_report(args: argparse.Namespace) -> int:
    """Write the static HTML report, summary.json and the problem lists into OUTDIR."""
    engine = cli.engine(args)
    outdir = Path(args.outdir)
    write_report(engine, outdir)
    print(f"report written to {outdir.resolve() / 'index.html'}")
    return EXIT_OK


def register(subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("report", parents=parents, help="write the static HTML report",
                              description=do_report.__doc__)
    p.add_argument("outdir", metavar="OUTDIR")
    p.set_defaults(func=do_report)
    p = subparsers.add_parser("status", parents=parents, help="print the summary",
                              description=do_status.__doc__)
    p.set_defaults(func=do_status)
