"""``pnfsmon crawl``: list a namespace into the database."""

from __future__ import annotations

import argparse
import logging
import os
import time

from pnfsmon.crawler.chimera_db import password_from
from pnfsmon.crawler.crawl import crawl, previous_files, summary
from pnfsmon.crawler.directories import SKIPPING, WRITE_ONCE
from pnfsmon.crawler.namespaces import NAMESPACES, open_namespace
from pnfsmon.crawler.walkers import MAX_PROCESSES
from pnfsmon.schema import cli, logs, schedule
from pnfsmon.schema.errors import (
    EXIT_OK,
    EXIT_PROBLEMS,
    ConfigError,
    DropRefused,
)
from pnfsmon.schema.paths import display
from pnfsmon.schema.progress import Progress
from pnfsmon.schema.sites import DEFAULT_GRACE, DEFAULT_PARALLEL

DEFAULT_SITE = "local"
log = logging.getLogger(__name__)


def do_crawl(args: argparse.Namespace) -> int:
    """List every regular file below ROOT (never following symlinks, never opening
    anything) with its size, mtime and the Adler32 the storage records, and update the
    database: new files are queued for checking, changed ones re-queued, disappeared ones
    marked vanished (lost, if they were missing or corrupted: see pnfsmon ack). A file
    whose size changed while its mtime did not is judged corrupted. Files modified within
    --grace are listed but judged only once that time has passed. A recorded checksum the
    storage fails to give is asked again with backoff; what still fails is counted and
    named. Exits 1 if some directories could not be listed, or some files' recorded
    metadata or checksums could not be read; exits 2, marking nothing vanished, if more
    than the site's max_crawl_drop of its files (or every file below ROOT) would vanish at
    once. dCache mounts (pnfs, chimera; posix and xrootd namespaces with incremental = yes
    in the site's section) are crawled incrementally: only directories whose mtime moved
    since the last complete crawl, new ones and ones that held files still being written
    are listed; the files of the others are carried over. A full crawl runs every
    full_crawl_every days (default 7) and with --full."""
    site = cli.settings(args).site(args.site)
    root = args.root or site.namespace
    if root is None:
        raise ConfigError(f"no ROOT given, and site {args.site} has no namespace in the "
                          "configuration file ([site NAME] namespace = ...)")
    grace = site.grace if args.grace is None else args.grace * 3600
    parallel = site.parallel if args.parallel is None else args.parallel
    if grace < 0 or args.request_timeout <= 0 or (parallel is not None and parallel < 1):
        raise ConfigError("--grace must not be negative, --request-timeout must be "
                          "positive, --parallel at least 1")
    kind = args.namespace or site.namespace_kind
    namespace = open_namespace(
        os.fsencode(root), kind, read_xattrs=not args.no_xattr, checksums=args.checksums,
        timeout=args.request_timeout, parallel=parallel,
        chimera_db=args.chimera_db or site.chimera_db,
        chimera_password=password_from(site.chimera_db_password_file)
        if kind == "chimera-db" else None, chimera_timezone=site.chimera_timezone)
    engine = cli.engine(args)
    schedule.apply(engine, cli.settings(args))  # each site's recheck_after, as configured
    started = time.monotonic()
    # The total is the last crawl's: an estimate, good enough for an ETA.
    progress = Progress(f"crawl of {display(namespace.root)}",
                        previous_files(engine, args.site, namespace.root),
                        interval=args.log_interval)
    incremental = (site.incremental if site.incremental is not None
                   else namespace.name in WRITE_ONCE)
    if site.incremental and namespace.name not in SKIPPING:
        log.warning("[site %s] incremental = yes, but the %s namespace cannot skip "
                    "directories yet: crawled in full", args.site, namespace.name)
    stats, ingest = crawl(engine, namespace, args.site, grace=grace,
                          include_nearline=args.include_nearline, progress=progress,
                          local_infile=cli.settings(args).mysql_local_infile,
                          max_drop=None if args.allow_drop else site.max_crawl_drop,
                          incremental=incremental, full=args.full,
                          full_every=site.full_crawl_every)
    logs.result(summary(namespace.root, args.site, stats, ingest,
                        time.monotonic() - started))
    if ingest.drop is not None:
        raise DropRefused(ingest.drop.describe(display(namespace.root), args.site))
    if stats.malformed:
        log.warning("%s files' recorded metadata could not be read (named above); they are "
                    "listed without a recorded checksum", f"{len(stats.malformed):,}")
    if stats.checksums_unread:
        log.warning("%s files' recorded checksums could not be read (%s%s); they are "
                    "marked so, and their first check asks the storage again",
                    f"{stats.checksums_unread:,}",
                    ", ".join(display(p) for p in stats.unread_examples),
                    ", ..." if stats.checksums_unread > len(stats.unread_examples) else "")
    if stats.unreadable:
        log.warning("%s directories could not be listed (named above); their files were "
                    "not marked vanished", f"{stats.unreadable_directories:,}")
    return (EXIT_PROBLEMS if stats.unreadable or stats.malformed or stats.checksums_unread
            else EXIT_OK)


def register(subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("crawl", parents=parents, help="list a namespace into the DB",
                              description=do_crawl.__doc__)
    p.add_argument("root", metavar="ROOT", nargs="?",
                   help="directory to crawl, or root://host:port//path for XRootD "
                        "(default: the site's namespace in the configuration file)")
    p.add_argument("--namespace", choices=NAMESPACES,
                   help="how to list ROOT: posix (default for a directory), pnfs (checksum "
                        "and pools from .(use)(2)(NAME)), chimera (.(get)(NAME)(checksums) "
                        "and locality), chimera-db (dCache's database, ROOT the path in the "
                        "namespace), xrootd (default for a root:// URL)")
    p.add_argument("--grace", type=float, metavar="HOURS",
                   help="files modified less than this long ago are listed but not judged "
                        "until then: they may still be being written (default: the site's "
                        f"grace, else {DEFAULT_GRACE / 3600:g})")
    p.add_argument("--chimera-db", metavar="URL",
                   help="chimera-db: dCache's namespace database, postgresql://ROLE@HOST/"
                        "chimera, read-only (default: the site's chimera_db); the password "
                        "from ~/.pgpass, PGPASSFILE or chimera_db_password_file")
    p.add_argument("--include-nearline", action="store_true",
                   help="also check files dCache has only on tape (reading stages them)")
    p.add_argument("--checksums", choices=("query", "none"), default="query",
                   help="xrootd: ask the server for each file's recorded checksum (default) "
                        "or not (some servers compute one on query: a full read)")
    p.add_argument("--request-timeout", type=float, default=60.0, metavar="S",
                   help="seconds one request may take: an XRootD listing or query, or a "
                        "call on a mount (a directory whose calls take longer is counted "
                        "unlisted; default: 60)")
    p.add_argument("--parallel", type=int, metavar="N",
                   help="mounts (posix, pnfs, chimera): calls in flight at once, listing "
                        "directories and reading each file's metadata (default: the site's "
                        f"parallel, else {DEFAULT_PARALLEL} on a network or FUSE filesystem; "
                        "on a local one a full re-crawl walks in a process a CPU (at "
                        f"most {MAX_PROCESSES}), one call at a time each; 1: in the crawl's "
                        "own process)")
    p.add_argument("--site", default=DEFAULT_SITE,
                   help=f"site name the files belong to (default: {DEFAULT_SITE})")
    p.add_argument("--allow-drop", action="store_true",
                   help="mark vanished whatever share of the site the crawl did not list "
                        "(by default more than the site's max_crawl_drop, or an empty ROOT, "
                        "is refused: nothing is marked vanished, exit 2)")
    p.add_argument("--full", action="store_true",
                   help="list every directory, even on a namespace crawled incrementally "
                        "(by default one runs every full_crawl_every days of the site, 7)")
    p.add_argument("--no-xattr", action="store_true",
                   help="do not read recorded checksums from user.XrdCks.adler32")
    p.set_defaults(func=do_crawl)
