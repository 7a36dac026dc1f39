"""Why a check judged nothing, or fewer files than it could have: its summary line says so
(files in their grace window and when the first comes due, files not due until a later
time because they were checked within ``recheck_after``, files other workers hold), so a
newcomer who sees "checked 0 files" knows whether the tool is idle or broken."""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa

from pnfsmon.schema.backlog import backlog, periods_of
from pnfsmon.schema.durations import DAY
from pnfsmon.tester.worker import CheckOptions, Tally

log = logging.getLogger(__name__)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "?"


def why(engine: sa.Engine, options: CheckOptions, tally: Tally,
        now: float | None = None) -> str:
    """What to add to the summary line ("" when the check judged all it could)."""
    if options.urgent_only:
        return ""
    now = time.time() if now is None else now
    try:
        with engine.connect() as conn:
            b = backlog(conn, now, options.site, options.recheck_after)
            periods = set(periods_of(conn, options.site, options.recheck_after).values())
    except sa.exc.SQLAlchemyError as err:
        # The verdicts are recorded: a database gone now must not turn the check into a
        # failure. Said on the summary line and in the log instead.
        log.warning("could not read what is waiting in the queue: %s", err)
        return "; what is waiting could not be read (database error, see the log)"
    reasons = []
    if b.in_grace:
        reasons.append(f"{b.in_grace:,} files wait out their grace window (written too "
                       f"recently to judge; the first is due at {_when(b.grace_until)})")
    if tally.checked:
        return "; " + reasons[0] if reasons else ""
    if b.not_due:
        within = (f"the last {periods.pop() / DAY:g} days" if len(periods) == 1
                  else "their site's recheck_after")
        reasons.append(f"{b.not_due:,} files are not due until {_when(b.not_due_until)} "
                       f"(checked within {within})")
    if b.leased:
        reasons.append(f"{b.leased:,} files are being checked by other workers")
    if not b.watched:
        where = f" of site {options.site}" if options.site else ""
        reasons.append(f"no files{where} to check: run pnfsmon crawl first")
    return "; nothing was due: " + ", ".join(reasons) if reasons else ""
