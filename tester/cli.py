"""``pnfsmon check``: run N local worker processes until every due file is verified."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator

import sqlalchemy as sa

from pnfsmon.schema import cli, counts, logs, outcome
from pnfsmon.schema.db import create_engine
from pnfsmon.schema.durations import DAY, DEFAULT_RECHECK_DAYS
from pnfsmon.schema.errors import (
    EXIT_OK,
    EXIT_PROBLEMS,
    ConfigError,
    Interrupted,
    PnfsmonError,
    WorkerLost,
)
from pnfsmon.schema.lease import Lease, request_now
from pnfsmon.schema.paths import display
from pnfsmon.schema.progress import Progress, count, human_bytes, stopped_by, warn_list
from pnfsmon.schema.status import PROBLEMS, Status
from pnfsmon.schema.tables import statuses
from pnfsmon.schema.xrootd import is_xrootd_url
from pnfsmon.tester.explain import why
from pnfsmon.tester.readers import READERS, make_reader
from pnfsmon.tester.stream import ADLER32_IMPLEMENTATION
from pnfsmon.tester.worker import CheckOptions, Tally, run

log = logging.getLogger(__name__)

DEFAULT_LEASE = 3600.0


def _worker_main(settings, options: CheckOptions, lease_seconds: float, results,
                 reading) -> None:
    """Body of one worker process: its own engine, its own lease tag. SIGTERM and SIGINT
    ask it to stop at a safe point (see ``tester.worker``). ``reading`` counts the files
    and bytes it has read (shared with the parent, for progress between batches)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    def on_file(verdict) -> None:
        with reading.get_lock():
            reading[0] += 1
            reading[1] += verdict.bytes_read

    engine = create_engine(settings)
    try:
        lease = Lease(engine, lease_seconds=lease_seconds)
        reader = make_reader(options.reader, options.timeout)
        run(lease, reader, options, on_batch=results.put, stop=stop, on_file=on_file)
    except PnfsmonError as err:
        results.put(err)
    except BaseException as err:  # noqa: BLE001 (a worker reports every end; main exits 4)
        results.put(outcome.as_error(err))
    finally:
        engine.dispose()


def run_workers(settings, options: CheckOptions, workers: int, lease_seconds: float,
                progress: Progress | None = None) -> Tally:
    """Run ``workers`` processes to completion; the unit shared by the CLI and the demo."""
    if options.sweep_start is None:  # one sweep for all the workers
        options = dataclasses.replace(options, sweep_start=time.time())
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    reading = ctx.Array("q", 2)  # files, bytes read by every worker so far
    procs = [ctx.Process(target=_worker_main,
                         args=(settings, options, lease_seconds, results, reading),
                         name=f"pnfsmon-worker-{i}") for i in range(workers)]
    for p in procs:
        p.start()
    total = Tally()
    started = time.monotonic()
    error: PnfsmonError | None = None
    try:
        while any(p.is_alive() for p in procs) or not results.empty():
            try:
                item = results.get(timeout=0.5)
            except queue.Empty:
                item = None
            if isinstance(item, PnfsmonError):
                error = item
            elif item is not None:
                total.merge(item)
            if progress is not None:
                # Every tick, not only when a batch is recorded: a batch may take minutes.
                files, read = reading[:]
                elapsed = time.monotonic() - started
                progress.update(files, f"{human_bytes(read)} read, "
                                       f"{human_bytes(read / elapsed)}/s, "
                                       f"{total.problems:,} problems recorded")
    except (KeyboardInterrupt, Interrupted) as err:
        # Ctrl-C, or SIGTERM (condor_rm, systemd): each worker records what it checked,
        # releases the rest of its batch and exits; then we say what was kept.
        _stop(procs)
        _drain(results, total)
        raise Interrupted(
            f"stopped by {stopped_by(err)}: {count(total.checked, 'file')} checked and "
            f"recorded before stopping ({total.problems:,} problems), the rest released "
            "for the next run") from None
    except BaseException:
        _stop(procs)
        raise
    finally:
        for p in procs:
            p.join()
        if progress is not None:
            progress.done()
    if error is not None:
        raise error
    failed = [p for p in procs if p.exitcode not in (0, None)]
    if failed:
        raise WorkerLost(f"{len(failed)} worker(s) died (exit codes "
                           f"{', '.join(str(p.exitcode) for p in failed)}); their leases "
                           "will expire and the files come back")
    return total


def _stop(procs) -> None:
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGTERM)
    for p in procs:
        p.join()


def _drain(results, total: Tally) -> None:
    """The tallies the stopped workers sent after their last recorded batch."""
    while True:
        try:
            item = results.get(timeout=0.2)
        except queue.Empty:
            return
        if isinstance(item, Tally):
            total.merge(item)


def summary(tally: Tally, seconds: float) -> str:
    by_status = ", ".join(f"{s.label} {tally.statuses[s]:,}" for s in Status
                          if tally.statuses[s])
    line = (f"checked {count(tally.checked, 'file')} in {seconds:.1f} s "
            f"({tally.checked / max(seconds, 1e-9):,.0f} files/s, "
            f"{human_bytes(tally.bytes_read / max(seconds, 1e-9))}/s)")
    if by_status:
        line += f": {by_status}"
    if tally.dropped:
        line += f"; {tally.dropped} verdicts dropped (lease lost)"
    return line


def add_check_options(p: argparse.ArgumentParser) -> None:
    """The worker options, shared by ``pnfsmon check`` and ``pnfsmon condor submit``."""
    p.add_argument("--lease", type=float, default=DEFAULT_LEASE, metavar="S",
                   help=f"seconds a claimed file stays reserved (default: {DEFAULT_LEASE:g})")
    p.add_argument("--timeout", type=float, default=500.0, metavar="S",
                   help="seconds allowed to read one file (default: 500)")
    p.add_argument("--recheck-after", type=float, metavar="D",
                   help="days before a checked file is due again (default: the site's "
                        "recheck_after with --site, else 30)")
    p.add_argument("--site", metavar="NAME",
                   help="only this site's files (default: every site in the database)")
    p.add_argument("--forever", action="store_true",
                   help="keep polling for due files instead of exiting")
    p.add_argument("--poll", type=float, default=60.0, metavar="S",
                   help="seconds between polls with --forever (default: 60)")
    p.add_argument("--max-rate", type=float, default=0.0, metavar="MB/s",
                   help="cap each worker's read rate, to spare production I/O (default: none)")
    p.add_argument("--sweep-start", type=float, metavar="EPOCH",
                   help="files checked after this time are not due again in this sweep "
                        "(default: when this command starts; condor jobs and DAG nodes "
                        "carry none, so every run sweeps from its own start)")
    p.add_argument("--max-per-pool", type=int, default=0, metavar="K",
                   help="at most K workers reading from one pool at a time, over all "
                        "workers and jobs (default: no cap)")
    p.add_argument("--reader", choices=READERS, default="auto",
                   help="how to read files: auto (default: root:// paths through the XRootD "
                        "bindings, or xrdcp where they are missing; POSIX for the rest), "
                        "posix, xrootd, xrdcp (the XRootD client program), or dccp "
                        "(dCache's dcap client)")


def _recheck_days(args: argparse.Namespace) -> float:
    if args.recheck_after is not None:
        return args.recheck_after
    if args.site is None:
        return DEFAULT_RECHECK_DAYS
    return cli.settings(args).site(args.site).recheck_after / DAY


def check_options(args: argparse.Namespace) -> CheckOptions:
    """Validated worker options from parsed arguments."""
    recheck_days = _recheck_days(args)
    if args.timeout <= 0 or args.lease <= args.timeout:
        raise ConfigError("--timeout must be positive and --lease longer than --timeout")
    if min(recheck_days, args.max_rate, args.max_per_pool) < 0 or args.poll <= 0:
        raise ConfigError("--recheck-after, --max-rate and --max-per-pool must not be "
                          "negative, --poll must be positive")
    return CheckOptions(timeout=args.timeout, recheck_after=recheck_days * DAY,
                        forever=args.forever, poll=args.poll,
                        max_rate=args.max_rate * 1e6, max_per_pool=args.max_per_pool,
                        sweep_start=args.sweep_start, reader=args.reader, site=args.site)


def check_options_as_args(args: argparse.Namespace) -> list[str]:
    """The same options as a ``pnfsmon check`` command line (for worker jobs)."""
    options = check_options(args)  # validate before they are sent to a thousand jobs
    out = ["--lease", f"{args.lease:g}", "--timeout", f"{args.timeout:g}",
           "--recheck-after", f"{options.recheck_after / DAY:g}"]
    if args.forever:
        out += ["--forever", "--poll", f"{args.poll:g}"]
    if args.max_rate:
        out += ["--max-rate", f"{args.max_rate:g}"]
    if args.max_per_pool:
        out += ["--max-per-pool", str(args.max_per_pool)]
    if args.reader != "auto":
        out += ["--reader", args.reader]
    if args.site is not None:
        out += ["--site", args.site]
    # No --sweep-start: these arguments go into files a site keeps and resubmits (a nightly
    # DAG, a kept submit file), and an epoch written into them would freeze "due" at the
    # day they were written. Each job's sweep starts when the job starts.
    return out


def do_check(args: argparse.Namespace) -> int:
    """Verify due files: claim them under a lease, stream each through Adler32 and record a
    verdict. Files never checked come first, then those checked longest ago (at least
    --recheck-after days back). Exits when nothing is due, unless --forever. Exits 1 if
    any file was found missing, corrupted, timed out or unreadable.

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
    return EXIT_PROBLEMS if any(tally.statuses[s] for s in PROBLEMS) else EXIT_OK


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


def due_now(engine, options: CheckOptions) -> int:
    """How many files a sweep starting now has to check (leased ones included)."""
    due_before = time.time() - options.recheck_after
    c = statuses.c
    query = sa.select(sa.func.count()).where(
        sa.or_(c.claim_key <= due_before, c.tag.is_not(None)))
    if options.site is not None:
        query = query.where(c.site == options.site)
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


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
