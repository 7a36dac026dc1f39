"""``pnfsmon check``: run N local worker processes until every due file is verified."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
import urllib.parse
from collections.abc import Iterator

import sqlalchemy as sa

from pnfsmon.schema import cli, counts, incidents, logs, schedule
from pnfsmon.schema.db import describe
from pnfsmon.schema.errors import (
    EXIT_OK,
    EXIT_PROBLEMS,
    ConfigError,
    PnfsmonError,
)
from pnfsmon.schema.lease import request_now
from pnfsmon.schema.paths import display
from pnfsmon.schema.progress import Progress, count, warn_list
from pnfsmon.schema.status import PROBLEMS
from pnfsmon.schema.tables import statuses
from pnfsmon.schema.xrootd import is_xrootd_url
from pnfsmon.tester.explain import why
from pnfsmon.tester.options import add_check_options, check_options
from pnfsmon.tester.pool import due_now, run_workers, summary
from pnfsmon.tester.stream import ADLER32_IMPLEMENTATION

log = logging.getLogger(__name__)


def do_check(args: argparse.Namespace) -> int:
    """Verify due files: claim them under a lease, stream each through Adler32 and record a
    verdict. Files never checked come first, then those due longest ago: each file when
    its site's recheck_after has passed since its last check (with --recheck-after D: files
    last checked more than D days ago, for this run). Exits when nothing is due, unless
    --forever. Exits 1 if any file was found missing, corrupted, timed out or unreadable.

    With --prefix or --paths, check only those files, now (after a pool outage, say),
    whenever they were last checked."""
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    options = check_options(args)
    subset = args.prefix is not None or args.paths is not None
    if subset and args.forever:
        raise ConfigError("--prefix and --paths check a subset once; drop --forever")
    if ADLER32_IMPLEMENTATION != "zlib-ng":
        log.warning("Adler32 from %s", ADLER32_IMPLEMENTATION)
    settings = cli.settings(args)
    engine = cli.engine(args)  # connect and check the schema once, before forking
    if args.site is not None:
        _known_site(engine, settings, args.site)
    schedule.apply(engine, settings)  # each site's recheck_after, as configured now
    total = None
    if subset:
        total = _request_subset(engine, args)
        options = dataclasses.replace(options, urgent_only=True)
    elif sys.stderr.isatty() and not options.forever:
        total = due_now(engine, options)  # for the ETA; a batch job needs none
    engine.dispose()
    started = time.monotonic()
    progress = Progress("check", total, interval=args.log_interval)
    tally = run_workers(settings, options, args.workers, args.lease, progress)
    logs.result(summary(tally, time.monotonic() - started) + why(engine, options, tally))
    _look_for_bursts(engine, settings)
    return EXIT_PROBLEMS if any(tally.statuses[s] for s in PROBLEMS) else EXIT_OK


def _look_for_bursts(engine: sa.Engine, settings) -> None:
    """Open incidents for bursts among the verdicts just recorded, so status and Nagios
    show them now. A failure costs no verdict and holds nothing back wrongly: ``declare``
    detects again before it declares; it is logged, and the check's exit code stays."""
    try:
        found = incidents.detect(engine, settings.incidents)
    except (sa.exc.SQLAlchemyError, PnfsmonError) as err:
        log.warning("could not look for bursts of problems (incidents): %s; pnfsmon "
                    "declare and pnfsmon incident list look again", describe(err))
        return
    if found.joined:
        log.warning("%d more problem checks joined open incidents (pnfsmon incident list)",
                    found.joined)


def _known_site(engine: sa.Engine, settings, site: str) -> None:
    """A site that is neither configured nor in the database is a typo: checking it would
    judge nothing and say so with exit 0."""
    if site in settings.sites:
        return
    with engine.connect() as conn:
        known = sorted({name for name, _status in counts.totals(conn).files})
    if site not in known:
        listed = ", ".join(known) if known else "none yet"
        raise ConfigError(f"--site {site}: no such site in the configuration "
                          f"({settings.config_file or 'no file'}) or the database (sites "
                          f"there: {listed})")


def _listed_below(engine: sa.Engine, prefix: bytes) -> bool:
    """Whether any file at ``prefix``, or below it as a directory, is in the database."""
    s = statuses.c
    below = prefix.rstrip(b"/") + b"/"
    with engine.connect() as conn:
        return conn.execute(sa.select(s.id).where(sa.or_(
            s.path == prefix, sa.and_(s.path >= below, s.path < below[:-1] + b"0")))
            .limit(1)).first() is not None


def _read_paths(name: str) -> Iterator[bytes]:
    """One path per line; percent-encoded as in the report's ``*.txt`` lists (so a list
    can be fed back), which leaves ordinary paths unchanged."""
    try:
        fh = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115
    except OSError as err:
        raise ConfigError(f"cannot read --paths {name}: {err.strerror}") from None
    with fh:
        for line in fh:
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield urllib.parse.unquote_to_bytes(line)


def _request_subset(engine, args: argparse.Namespace) -> int:
    prefix = None
    if args.prefix is not None:
        prefix = os.fsencode(args.prefix)
        if not is_xrootd_url(prefix):
            prefix = os.path.abspath(prefix)
    paths = _read_paths(args.paths) if args.paths is not None else ()
    marked, unknown = request_now(engine, prefix=prefix, paths=paths)
    if prefix is not None and not marked and not _listed_below(engine, prefix):
        raise ConfigError(f"--prefix {display(prefix)}: no file below it is in the database "
                          "(a typo, or a tree not crawled yet: pnfsmon crawl it first)")
    print(f"{count(marked, 'file')} queued to be checked now")
    if unknown:
        warn_list(f"{len(unknown):,} of the given paths are not in the database (crawl "
                  "them first)", [display(p) for p in unknown])
    return marked


def register(subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("check", parents=parents, help="verify due files",
                              description=do_check.__doc__)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="worker processes (default: one per CPU)")
    add_check_options(p)
    p.add_argument("--prefix", metavar="PATH",
                   help="check now every file below PATH (or that file), then exit")
    p.add_argument("--paths", metavar="FILE",
                   help="check now the files listed in FILE (one per line, - for stdin; "
                        "a report's percent-encoded .txt list works as it is), then exit")
    p.set_defaults(func=do_check)
