"""Errors a person can act on, and the one exit-code contract. The top-level handler in
``pnfsmon.cli.main`` prints an error's message as one line and exits with its code; nothing
else in the package prints tracebacks (an internal error's goes to the log).

The contract (README "Exit codes", docs/promises.md): what every command returns, and what a
batch system does with it. HTCondor submit descriptions, the DAG's POST script and node
retries, the systemd units and the cron wrapper are all written from ``CONTRACT``.

  code  meaning                                                    the batch system
  0     nothing wrong                                              done
  1     problems found in the storage (a complete answer)          done
  2     usage or configuration: a person must act                  held
  3     transient: database, server or mount unreachable,          retried later
        a worker lost
  4     internal error (a bug): traceback in the log, one line     retried a bounded number
        on stderr                                                  of times, then held
  5     python3 too old for pnfs-monitor                           held
  130   stopped by SIGTERM/SIGINT at a safe point (nothing lost)   run again later
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_TRANSIENT = 3
EXIT_INTERNAL = 4
EXIT_OLD_PYTHON = 5
EXIT_INTERRUPTED = 130

#: Codes that end a job or a DAG node: an answer was given.
DONE = (EXIT_OK, EXIT_PROBLEMS)
#: Codes a person must act on: held, never retried.
HELD = (EXIT_USAGE, EXIT_OLD_PYTHON)
#: Codes retried after a delay (a bounded number of times).
RETRIED = (EXIT_TRANSIENT, EXIT_INTERNAL)


@dataclass(frozen=True)
class ExitCode:
    code: int
    meaning: str  # for people: hold reasons, docs
    action: str  # "done", "held" or "retried"


CONTRACT: dict[int, ExitCode] = {c.code: c for c in (
    ExitCode(EXIT_OK, "nothing wrong", "done"),
    ExitCode(EXIT_PROBLEMS, "problems found in the storage (a complete answer)", "done"),
    ExitCode(EXIT_USAGE, "usage or configuration error: a person must act (see the error "
                         "file)", "held"),
    ExitCode(EXIT_TRANSIENT, "transient: database, server or mount unreachable, or a "
                             "worker lost", "retried"),
    ExitCode(EXIT_INTERNAL, "internal error (a bug): the traceback is in the job's log",
             "retried"),
    ExitCode(EXIT_OLD_PYTHON, "python3 too old: pnfs-monitor needs >= 3.10", "held"),
)}

class PnfsmonError(Exception):
    """Base class: a message for a person and the exit code the CLI returns."""

    exit_code = EXIT_USAGE


class ConfigError(PnfsmonError):
    """Bad configuration or command-line input."""


class PrivilegeError(ConfigError):
    """The database refused an operation: the account lacks the role the command needs
    (``schema.grants``). The CLI names that role."""


class DropRefused(PnfsmonError):
    """A crawl found too much of a site gone at once (more than ``max_crawl_drop``, or an
    empty root) and marked nothing vanished: a person must look (is the storage mounted?)
    and, if the files are really gone, allow it (``crawl --allow-drop``)."""


class SchemaError(PnfsmonError):
    """The database has no schema, or one this version cannot use."""


class DatabaseUnavailable(PnfsmonError):
    """The database could not be reached; the operation may be retried."""

    exit_code = EXIT_TRANSIENT


class StorageUnavailable(PnfsmonError):
    """The storage (an XRootD server, a dCache door) could not be reached: not a verdict on
    any file. Work stops, unchecked claims are released, and a later run may succeed."""

    exit_code = EXIT_TRANSIENT


class WorkerLost(PnfsmonError):
    """A worker process died without a word (killed, out of memory): its leases expire and
    its files come back; a later run finishes the sweep."""

    exit_code = EXIT_TRANSIENT


class Interrupted(PnfsmonError):
    """SIGTERM or SIGINT: work stopped at a safe point, leases were released."""

    exit_code = EXIT_INTERRUPTED


class InternalError(PnfsmonError):
    """A bug: an exception pnfs-monitor did not expect. Its traceback is in the log."""

    exit_code = EXIT_INTERNAL

