"""Logging for commands that run unattended (cron, systemd, HTCondor jobs): every line has
a time and a level, goes to stderr (or stdout with ``--log-file -``, as an HTCondor job's
``.out``) and, with ``--log-file FILE``, to that file as well. ``--verbose`` adds DEBUG
lines, ``--quiet`` keeps only warnings and errors. Every line passes
``schema.secrets.scrub``, so a password can never be logged.

A command's outcome is printed as it always was: its result (the crawl or check summary)
on stdout, where cron mails it, or the error that ended it as one plain line on stderr
(``pnfsmon: error: ...``). It is logged too, but only to the log file (with its time), so
a terminal does not show it twice."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from pnfsmon.schema.errors import ConfigError, Interrupted
from pnfsmon.schema.secrets import scrub

FORMAT = "%(asctime)s %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %Z"  # with its zone: a log is read elsewhere, later
OUTCOME = "pnfsmon.outcome"  # results and final errors: already printed, so file only
TRACEBACK = "pnfsmon.traceback"  # an internal error's: to the log file if there is one
POOL = "sqlalchemy.pool"
DEFAULT_INTERVAL = 300.0  # seconds between progress lines in a log


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class _KeepStops:
    """A stop request (SIGTERM raises ``Interrupted`` wherever the main thread is) that
    lands while a line is being written must stop the command: logging's own
    ``handleError`` would print it as a "Logging error" and carry on."""

    def handleError(self, record: logging.LogRecord) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, Interrupted):
            raise err
        super().handleError(record)


class _File(_KeepStops, logging.FileHandler):
    pass


class _Console(_KeepStops, logging.StreamHandler):
    """stderr (or stdout); on a terminal, first erases a progress line drawn there."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.erase = "\r\x1b[K" if stream.isatty() else ""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and record.name.startswith(POOL):
            record = _one_line(record)
        return self.erase + super().format(record)


def _one_line(record: logging.LogRecord) -> logging.LogRecord:
    """SQLAlchemy's pool logs a connection it could not reset (the server killed it, say)
    with a traceback; the command handles the loss itself (retries, then exit 3). On the
    console that is one line; a log file keeps the traceback."""
    err = record.exc_info[1]
    detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return logging.makeLogRecord({
        **record.__dict__, "exc_info": None, "exc_text": None, "args": None,
        "msg": f"database connection dropped ({record.getMessage()}): "
               f"{type(err).__name__}{': ' + detail if detail else ''}"})


def _not_an_outcome(record: logging.LogRecord) -> bool:
    return record.name != OUTCOME


def setup(*, verbose: bool = False, quiet: bool = False, log_file: str | None = None) -> None:
    """Configure the root logger for one command (again if called again)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "pnfsmon", False)]:
        root.removeHandler(handler)
        handler.close()
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    formatter = _Formatter(FORMAT, DATE_FORMAT)
    console = _Console(sys.stdout if log_file == "-" else sys.stderr)
    console.setLevel(level)
    console.addFilter(_not_an_outcome)
    handlers: list[logging.Handler] = [console]
    failure = None
    if log_file and log_file != "-":
        # The log is that file: stderr keeps the one line that says what ended the command.
        console.addFilter(lambda record: record.name != TRACEBACK)
        try:
            file_handler = _File(log_file, encoding="utf-8")  # appends
        except OSError as err:
            # Raised once the console handler is in place: without any handler, logging's
            # last resort would print the error a second time.
            failure = ConfigError(f"cannot write the log file {log_file}: {err.strerror}")
        else:
            file_handler.setLevel(logging.DEBUG if verbose else logging.INFO)
            handlers.append(file_handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.pnfsmon = True  # ours, to be replaced by the next setup()
        root.addHandler(handler)
    root.setLevel(min(h.level for h in handlers))
    # Alembic says what it does at INFO ("Context impl ..."): only when asked. SQLAlchemy
    # would log every statement at INFO: never.
    logging.getLogger("alembic").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    if failure is not None:
        raise failure


def result(text: str) -> None:
    """A command's result: printed on stdout, logged (with its time) to the log file."""
    print(text, flush=True)
    logging.getLogger(OUTCOME).info(text)


def failed(line: str) -> None:
    """The error that ends a command: one line on stderr, logged to the log file."""
    print(scrub(line), file=sys.stderr, flush=True)
    logging.getLogger(OUTCOME).error(line)
