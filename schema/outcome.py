"""How a command ended: the exit code of the contract (``schema.errors``) and the one line
for stderr, for any exception. Used by ``pnfsmon.cli.main`` and by each worker process, so
both classify the same way. An exception nobody expected is a bug: its traceback goes to
the log, and the line says so."""

from __future__ import annotations

import logging

from sqlalchemy import exc

from pnfsmon.schema import db, grants, logs
from pnfsmon.schema.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_TRANSIENT,
    EXIT_USAGE,
    PnfsmonError,
    PrivilegeError,
)
from pnfsmon.schema.extras import missing_dependency

log = logging.getLogger(logs.TRACEBACK)


def classify(err: BaseException, command: str | None = None) -> tuple[int, str]:
    """(exit code, one line) for the error that ended a command or a worker; ``command``
    (e.g. ``db prune``) names the role a refused operation needs."""
    if isinstance(err, PrivilegeError):
        return err.exit_code, f"pnfsmon: error: {grants.refused_message(command, str(err))}"
    if isinstance(err, PnfsmonError):
        return err.exit_code, f"pnfsmon: error: {err}"
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "pnfsmon: interrupted"
    if isinstance(err, ImportError) and (config := missing_dependency(err)) is not None:
        return config.exit_code, f"pnfsmon: error: {config}"
    if isinstance(err, exc.DBAPIError) and not isinstance(err, exc.IntegrityError):
        if db.is_transient(err):
            return EXIT_TRANSIENT, f"pnfsmon: error: database unavailable: {db.describe(err)}"
        if db.is_refused(err):
            return classify(PrivilegeError(db.describe(err)), command)
        return EXIT_USAGE, f"pnfsmon: error: database error: {db.describe(err)}"
    log.error("internal error: %s", type(err).__name__, exc_info=err)
    first = (str(err).strip().splitlines() or [""])[0]
    return EXIT_INTERNAL, ("pnfsmon: internal error (a bug; the traceback is in the log): "
                           f"{type(err).__name__}: {first}")


def as_error(err: BaseException) -> PnfsmonError:
    """``err`` as a PnfsmonError carrying its code and line (a worker process sends it to
    the parent, which ends with that code)."""
    if isinstance(err, PnfsmonError):
        return err
    if db.is_refused(err):  # the parent names the role its command needs
        return PrivilegeError(db.describe(err))
    code, line = classify(err)
    error = PnfsmonError(line.removeprefix("pnfsmon: ").removeprefix("error: "))
    error.exit_code = code  # kept when pickled to the parent (it is in __dict__)
    return error
