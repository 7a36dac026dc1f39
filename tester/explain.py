"""Why a check judged nothing, or fewer files than it could have: its summary line says so
(files in their grace window and when the first comes due, files not due until a later
time because they were checked within ``recheck_after``, files other workers hold,
corrupted files waiting for the second read that confirms them), so a
newcomer who sees "checked 0 files" knows whether the tool is idle or broken."""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa

from pnfsmon.schema.backlog import backlog, periods_of
from pnfsmon.schema.durations import DAY
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import statuses
from pnfsmon.tester.worker import CheckOptions, Tally

log = logging.getLogger(__name__)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "?"


def _waiting_second_reads(conn: sa.Connection, now: float, site: str | None
                          ) -> tuple[int, float | None]:
    """Unconfirmed corruptions whose second read is not due yet (``tester.confirm``), and
    when the first is: read through ``ix_statuses_confirm_due``."""
    c = statuses.c
    query = sa.select(sa.func.count(), sa.func.min(c.confirm_due)).where(
        c.confirm_due > now, c.status == int(Status.CORRUPTED))
    if site is not None:
        query = query.where(c.site == site)
    n, first = conn.execute(query).one()
    return int(n or 0), first


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
            unconfirmed, first_due = _waiting_second_reads(conn, now, options.site)
    except sa.exc.SQLAlchemyError as err:
        # The verdicts are recorded: a database gone now must not turn the check into a
        # failure. Said on the summary line and in the log instead.
        log.warning("could not read what is waiting in the queue: %s", err)
        return "; what is waiting could not be read (database error, see the log)"
    reasons = []
    if unconfirmed:
        reasons.append(f"{unconfirmed:,} corrupted files wait for the second read that "
                       f"confirms them (the first is due at {_when(first_due)})")
    if b.in_grace:
        reasons.append(f"{b.in_grace:,} files wait out their grace window (written too "
                       f"recently to judge; the first is due at {_when(b.grace_until)})")
    if tally.checked:
        return "; " + ", ".join(reasons) if reasons else ""
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
