"""The ``pnfsmon`` command: assembles the subcommands each package owns, sets up logging,
and turns errors into one line and an exit code (see ``pnfsmon.schema.errors``). No logic of its
own."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

import pnfsmon
import pnfsmon.schema.cli
from pnfsmon.schema import logs, outcome
from pnfsmon.schema.errors import ConfigError, Interrupted

NAGIOS_UNKNOWN = 3

#: Each command and the module that registers it. Only the modules of the commands named
#: on the command line are imported, every one for help or a mistyped command: a nightly
#: crawl loads neither the reports', HTCondor's nor Rucio's code (the start was a tenth of
#: a re-crawl's time, bench/crawl.py). Listed in the order help shows them.
COMMANDS = {
    "db": "pnfsmon.schema.cli",
    "crawl": "pnfsmon.crawler.cli",
    "inventory": "pnfsmon.catalog.cli",
    "compare": "pnfsmon.catalog.cli",
    "ack": "pnfsmon.crawler.ack",
    "check": "pnfsmon.tester.cli",
    "report": "pnfsmon.web.cli",
    "status": "pnfsmon.web.cli",
    "history": "pnfsmon.web.cli",
    "condor": "pnfsmon.condor.cli",
    "demo": "pnfsmon.demo.cli",
    "declare": "pnfsmon.declare.cli",
    "incident": "pnfsmon.declare.incident",
}


class _Misread(Exception):
    """A line the parser of only its named commands cannot read."""


class _NamedOnly(argparse.ArgumentParser):
    """The parser of the commands a line names: where it cannot read the line (a typo
    beside a word that is a command's name), the whole parser reads it again and says
    what is wrong, with every command to choose from."""

    def error(self, message: str):
        raise _Misread(message)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The command line's parser: with ``argv``, of only the commands it names, else (or
    when it asks for help before naming one) of all."""
    words = argv or []
    first = next((i for i, word in enumerate(words) if word in COMMANDS), len(words))
    named = set() if {"-h", "--help"} & set(words[:first]) else {
        COMMANDS[word] for word in words if word in COMMANDS}
    parser = (_NamedOnly if named else argparse.ArgumentParser)(
        prog="pnfsmon",
        allow_abbrev=False,  # `condor status --log` is not `--log-file`
        description="Storage-integrity monitor: crawl a namespace, verify every file's "
                    "Adler32, report what is missing or corrupted.",
    )
    parser.add_argument("--version", action="version",
                        version=f"pnfs-monitor {pnfsmon.__version__}")
    pnfsmon.schema.cli.add_common_options(parser, top_level=True)
    parents = [pnfsmon.schema.cli.common_options()]
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in dict.fromkeys(COMMANDS.values()):
        if module in named or not named:
            importlib.import_module(module).register(sub, parents)
    return parser


def _parse(argv: list[str]) -> argparse.Namespace:
    try:
        return build_parser(argv).parse_args(argv)
    except _Misread:
        return build_parser().parse_args(argv)


def _command(args: argparse.Namespace) -> str:
    """The subcommand's name as typed, e.g. ``db prune`` or ``inventory load``."""
    sub = getattr(args, "db_command", None) or getattr(args, "inventory_command", None)
    return f"{args.command} {sub}" if sub else args.command


def _on_sigterm(signum, frame):
    raise Interrupted("stopped by SIGTERM")


def main(argv: list[str] | None = None) -> int:
    """Run one command; whatever happens, return a code of the contract in
    ``pnfsmon.schema.errors`` (a Nagios check: a plugin code, UNKNOWN when it cannot tell)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = _parse(argv)
    except SystemExit as stop:
        if stop.code and "--nagios" in argv:  # plugin rules: bad arguments are UNKNOWN
            print("PNFSMON UNKNOWN - invalid arguments (see pnfsmon status --help)")
            return NAGIOS_UNKNOWN
        raise
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        logs.setup(verbose=args.verbose, quiet=args.quiet, log_file=args.log_file)
        if args.log_interval <= 0:
            raise ConfigError("--log-interval must be positive")
        return args.func(args)
    except SystemExit:
        raise
    except BaseException as err:  # noqa: BLE001 (every way out gets a code of the contract)
        code, line = outcome.classify(err, command=_command(args))
        logs.failed(line)
        if getattr(args, "nagios", False):
            print(f"PNFSMON UNKNOWN - {line.removeprefix('pnfsmon: ')}")
            return NAGIOS_UNKNOWN
        return code
