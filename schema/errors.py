"""Errors a person can act on. The top-level handler in ``pnfsmon.main`` prints the message as
one line and exits with the error's code; nothing else in the package prints tracebacks.

Exit codes (documented in the README):
  0  success, nothing wrong found
  1  success, but problems were found in the storage (``pnfsmon status`` and friends)
  2  a usage or configuration error: fix the command line or the configuration
  3  a transient failure (database or storage unreachable): retrying later may succeed
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_TRANSIENT = 3


class PnfsmonError(Exception):
    """Base class: a message for a person and the exit code the CLI returns."""

    exit_code = EXIT_USAGE


class ConfigError(PnfsmonError):
    """Bad configuration or command-line input."""


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


class Interrupted(PnfsmonError):
    """SIGTERM or SIGINT: work stopped at a safe point, leases were released."""

    exit_code = 130
