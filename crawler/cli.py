"""``pnfsmon crawl``: list a namespace into the database."""

from __future__ import annotations

import argparse
import os
import time

from crawler import posix
from crawler.ingest import Ingest
from crawler.listing import WalkStats
from schema import cli
from schema.errors import EXIT_OK, EXIT_PROBLEMS, ConfigError
from schema.paths import display
from schema.progress import Progress, human_bytes

DEFAULT_SITE = "local"


def crawl(engine, root: bytes, site: str, *, read_xattrs: bool = True,
          progress: Progress | None = None) -> tuple[WalkStats, Ingest]:
    """Walk ``root`` and ingest it as one crawl of ``site``; the unit the CLI and the demo
    share."""
    stats = WalkStats()
    ingest = Ingest(engine, site, root)
    started = time.monotonic()

    def listing():
        for item in posix.walk(root, stats, read_xattrs=read_xattrs):
            if progress is not None:
                rate = stats.files / max(time.monotonic() - started, 1e-9)
                progress.update(f"{stats.files:,} files, {stats.directories:,} directories, "
                                f"{rate:,.0f} files/s")
            yield item

    ingest.add_all(listing())
    if progress is not None:
        progress.done()
    ingest.mark_vanished(stats.unreadable)
    ingest.finish(stats)
    return stats, ingest


def summary(root: bytes, site: str, stats: WalkStats, ingest: Ingest, seconds: float) -> str:
    c = ingest.counts
    rate = stats.files / max(seconds, 1e-9)
    return (
        f"crawled {display(root)} (site {site}) in {seconds:.1f} s: "
        f"{stats.files:,} files, {stats.directories:,} directories "
        f"({stats.empty_directories:,} empty, {stats.unreadable_directories:,} unreadable), "
        f"{human_bytes(stats.bytes)}; new {c.new:,}, changed {c.changed:,}, "
        f"vanished {c.vanished:,}, skipped {stats.skipped:,}; {rate:,.0f} files/s"
    )


def do_crawl(args: argparse.Namespace) -> int:
    """List every regular file below ROOT (never following symlinks, never opening
    anything) with its size, mtime and the Adler32 the storage records, and update the
    database: new files are queued for checking, changed ones re-queued, disappeared ones
    marked vanished. Exits 1 if some directories could not be listed."""
    root = os.path.abspath(os.fsencode(args.root))
    if not os.path.isdir(root):
        raise ConfigError(f"crawl root {display(root)} is not a directory")
    engine = cli.engine(args)
    started = time.monotonic()
    stats, ingest = crawl(engine, root, args.site, read_xattrs=not args.no_xattr,
                          progress=Progress())
    print(summary(root, args.site, stats, ingest, time.monotonic() - started))
    if stats.unreadable:
        shown = ", ".join(display(d) for d in stats.unreadable[:5])
        more = len(stats.unreadable) - 5
        print(f"warning: could not list {stats.unreadable_directories} directories "
              f"(their files were not marked vanished): {shown}"
              + (f" and {more} more" if more > 0 else ""))
        return EXIT_PROBLEMS
    return EXIT_OK


def register(subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("crawl", parents=parents, help="list a namespace into the DB",
                              description=do_crawl.__doc__)
    p.add_argument("root", metavar="ROOT", help="directory to crawl")
    p.add_argument("--site", default=DEFAULT_SITE,
                   help=f"site name the files belong to (default: {DEFAULT_SITE})")
    p.add_argument("--no-xattr", action="store_true",
                   help="do not read recorded checksums from user.XrdCks.adler32")
    p.set_defaults(func=do_crawl)
