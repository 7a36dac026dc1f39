"""The ``pnfsmon`` command: assembles the subcommands each package owns, sets up logging,
and turns errors into one line and an exit code (see ``pnfsmon.schema.errors``). No logic of its
own."""

from __future__ import annotations

import argparse
import signal

from sqlalchemy import exc

import pnfsmon.condor.cli
import pnfsmon.crawler.ack
import pnfsmon.crawler.catalog_cli
import pnfsmon.crawler.cli
import pnfsmon.demo.cli
import pnfsmon.schema.cli
import pnfsmon.tester.cli
import pnfsmon.web.cli
from pnfsmon.schema import db, logs
from pnfsmon.schema.errors import EXIT_USAGE, ConfigError, Interrupted, PnfsmonError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pnfsmon",
        allow_abbrev=False,  # `condor status --log` is not `--log-file`
        description="Storage-integrity monitor: crawl a namespace, verify every file's "
                    "Adler32, report what is missing or corrupted.",
    )
    pnfsmon.schema.cli.add_common_options(parser, top_level=True)
    parents = [pnfsmon.schema.cli.common_options()]
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    pnfsmon.schema.cli.register(sub, parents)
    pnfsmon.crawler.cli.register(sub, parents)
    pnfsmon.crawler.catalog_cli.register(sub, parents)
    pnfsmon.crawler.ack.register(sub, parents)
    pnfsmon.tester.cli.register(sub, parents)
    pnfsmon.web.cli.register(sub, parents)
    pnfsmon.condor.cli.register(sub, parents)
    pnfsmon.demo.cli.register(sub, parents)
    return parser


def _on_sigterm(signum, frame):
    raise Interrupted("stopped by SIGTERM")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        logs.setup(verbose=args.verbose, quiet=args.quiet, log_file=args.log_file)
        if args.log_interval <= 0:
            raise ConfigError("--log-interval must be positive")
        return args.func(args)
    except PnfsmonError as err:
        logs.failed(f"pnfsmon: error: {err}")
        return err.exit_code
    except KeyboardInterrupt:
        logs.failed("pnfsmon: interrupted")
        return 130
    except exc.DBAPIError as err:
        if db.is_transient(err):
            logs.failed(f"pnfsmon: error: database unavailable: {db.describe(err)}")
            return 3
        logs.failed(f"pnfsmon: error: database error: {db.describe(err)}")
        return EXIT_USAGE

