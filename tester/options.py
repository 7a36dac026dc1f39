"""The worker options: one set of argparse options for ``pnfsmon check`` and ``pnfsmon
condor submit``, validated into ``CheckOptions``, and written back as a ``check`` command
line for HTCondor jobs."""

from __future__ import annotations

import argparse

from pnfsmon.schema import cli
from pnfsmon.schema.durations import DAY
from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.sites import DEFAULT_CONFIRM_AFTER
from pnfsmon.tester.readers import READERS
from pnfsmon.tester.worker import CheckOptions

DEFAULT_LEASE = 3600.0


def add_check_options(p: argparse.ArgumentParser) -> None:
    """The worker options, shared by ``pnfsmon check`` and ``pnfsmon condor submit``."""
    p.add_argument("--lease", type=float, default=DEFAULT_LEASE, metavar="S",
                   help=f"seconds a claimed file stays reserved (default: {DEFAULT_LEASE:g})")
    p.add_argument("--timeout", type=float, default=500.0, metavar="S",
                   help="seconds allowed to read one file (default: 500)")
    p.add_argument("--recheck-after", type=float, metavar="D",
                   help="this run only: take files last checked more than D days ago "
                        "(default: each file when its site's recheck_after has passed)")
    p.add_argument("--confirm-after", type=float, metavar="MIN",
                   help="minutes from a corrupted first read to the second read that "
                        "confirms it (0: at once; default: each site's confirm_after, "
                        "else 10)")
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


def _confirm_after(args: argparse.Namespace) -> tuple[float, tuple[tuple[str, float], ...]]:
    """(seconds for every site, (site, seconds) where the configuration says otherwise)."""
    if args.confirm_after is not None:
        if not args.confirm_after >= 0:  # nan too
            raise ConfigError("--confirm-after must be a number of minutes >= 0")
        return args.confirm_after * 60.0, ()
    settings = cli.settings(args)
    if args.site is not None:
        return settings.site(args.site).confirm_after, ()
    return DEFAULT_CONFIRM_AFTER, tuple((name, site.confirm_after)
                                        for name, site in settings.sites.items())


def check_options(args: argparse.Namespace) -> CheckOptions:
    """Validated worker options from parsed arguments."""
    recheck_days = args.recheck_after
    confirm_after, confirm_sites = _confirm_after(args)
    if args.timeout <= 0 or args.lease <= args.timeout:
        raise ConfigError("--timeout must be positive and --lease longer than --timeout")
    if min(recheck_days or 0.0, args.max_rate, args.max_per_pool) < 0 or args.poll <= 0:
        raise ConfigError("--recheck-after, --max-rate and --max-per-pool must not be "
                          "negative, --poll must be positive")
    return CheckOptions(timeout=args.timeout,
                        recheck_after=None if recheck_days is None else recheck_days * DAY,
                        forever=args.forever, poll=args.poll,
                        max_rate=args.max_rate * 1e6, max_per_pool=args.max_per_pool,
                        sweep_start=args.sweep_start, reader=args.reader, site=args.site,
                        confirm_after=confirm_after, confirm_after_sites=confirm_sites)


def check_options_as_args(args: argparse.Namespace) -> list[str]:
    """The same options as a ``pnfsmon check`` command line (for worker jobs)."""
    options = check_options(args)  # validate before they are sent to a thousand jobs
    out = ["--lease", f"{args.lease:g}", "--timeout", f"{args.timeout:g}"]
    # Only when given: without it each job takes every file at its own site's period,
    # which the database holds (``schema.schedule``), configuration file or not.
    if options.recheck_after is not None:
        out += ["--recheck-after", f"{options.recheck_after / DAY:g}"]
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
    # Jobs may run without the configuration file: they get the site's confirm_after (or
    # the one given) on their command line.
    if args.confirm_after is not None or args.site is not None:
        out += ["--confirm-after", f"{options.confirm_after / 60:g}"]
    # No --sweep-start: these arguments go into files a site keeps and resubmits (a nightly
    # DAG, a kept submit file), and an epoch written into them would freeze "due" at the
    # day they were written. Each job's sweep starts when the job starts.
    return out
