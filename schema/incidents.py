"""Incidents, not floods: a failing disk or a flaky worker node makes hundreds of files look
bad at once, and a declared-bad replica costs a replica. A burst of problem verdicts is
held as one incident until a person releases it (its files may then be declared to Rucio)
or dismisses it (its files are checked again).

The rule (``config.IncidentRule``, thresholds in ``[pnfsmon]``): within one window, one
scope recorded at least ``incident_min_problems`` problem files (``INCIDENT_STATUSES``)
and more than ``incident_min_percent`` % of the files that scope checked there. Scopes,
in the order they are judged: a pool (``events.source_pool``) and a worker node
(``events.worker_node``), each per window of ``incident_window`` hours (UTC days by
default); the whole site, per clock hour. Windows are fixed (aligned to UTC midnight), so
the outcome depends on the checks recorded, never on when detection runs. The problems
counted are the checks of files that are a problem now (or lost since): a file read bad
and then ok again before detection ran is not held.

Idempotent: each problem check joins at most one incident (``incident_files.event_id`` is
unique), and only checks in no incident count toward a new one, so a burst is one incident
however often detection runs, and a burst seen by several scopes goes to the first. While
an incident is open it also takes its scope's later problem checks. Detection runs after
each ``pnfsmon check``, before every ``pnfsmon declare`` and in ``pnfsmon incident list``;
``status`` and the report only read (and work under the reader's SELECT rights).

Held from Rucio (``held``): the files of open incidents, and those of dismissed ones until
they are checked again."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from pnfsmon.schema.config import IncidentRule
from pnfsmon.schema.db import retrying, write_transaction
from pnfsmon.schema.durations import DAY
from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.lease import URGENT
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import events, incident_files, incidents, statuses

log = logging.getLogger(__name__)

#: The verdicts a burst is made of: judgements on the data that would be declared to Rucio,
#: and reads that disagreed (a flaky node or pool makes many at once).
INCIDENT_STATUSES: tuple[Status, ...] = (Status.CORRUPTED, Status.MISSING,
                                         Status.UNSTABLE_READ)

# Files whose checks detection reads: a problem now, or lost since (gone while one).
_NOW_PROBLEMS = (*INCIDENT_STATUSES, Status.LOST)

POOL, NODE, HOUR = "pool", "node", "hour"
KINDS = (POOL, NODE, HOUR)  # the order scopes are judged in: the narrowest cause first
OPEN, RELEASED, DISMISSED = "open", "released", "dismissed"
HOUR_SECONDS = 3600.0
#: How far back detection looks for checks in no incident. Detection runs after every
#: check run and before every declaration, so a week covers any gap but an unattended one.
LOOKBACK = 7 * DAY
_CHUNK = 1000


@dataclass(frozen=True)
class Incident:
    id: int
    site: str
    kind: str
    scope: str
    window_start: float
    window_end: float
    opened: float
    problems: int  # problem files when it opened
    checks: int  # files its scope checked in the window, then
    state: str
    decided_by: str | None
    decided_at: float | None
    files: int = 0  # problem files it holds now (it takes later ones while open)

    @property
    def where(self) -> str:
        """Its scope in words: ``pool p1 of T2_XX``, ``worker node wn12 of T2_XX``."""
        if self.kind == POOL:
            return f"pool {self.scope} of {self.site}"
        if self.kind == NODE:
            return f"worker node {self.scope} of {self.site}"
        return f"all of {self.site}"

    @property
    def percent(self) -> float:
        return 100.0 * self.problems / self.checks if self.checks else 0.0

    def as_json(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def describe(self) -> str:
        """One line, as ``incident list``, ``status`` and Nagios show it."""
        decided = (f"; {self.state} by {self.decided_by} at {utc(self.decided_at)}"
                   if self.state != OPEN else "")
        return (f"incident {self.id} [{self.state}] {self.where}: {self.files:,} problem "
                f"files ({self.problems:,} of {self.checks:,} checked, {self.percent:.1f} %, "
                f"between {utc(self.window_start)} and {utc(self.window_end)}); opened "
                f"{utc(self.opened)}{decided}")


@dataclass(frozen=True)
class IncidentFile:
    file_id: int
    path: bytes | None  # None: the file's row was pruned since
    verdict: Status  # of the check the incident holds
    checked: float
    status: Status | None  # the file's status now


@dataclass
class Detection:
    opened: list[Incident]
    joined: int = 0  # problem checks added to incidents already open


@dataclass(frozen=True)
class _Check:
    event_id: int
    file_id: int
    checked: float
    status: int
    site: str
    pool: str | None
    node: str


def _value(check: _Check, kind: str) -> str | None:
    return check.pool if kind == POOL else check.node if kind == NODE else check.site


def _window(rule: IncidentRule, kind: str, t: float) -> tuple[float, float]:
    length = HOUR_SECONDS if kind == HOUR else rule.window
    start = (t // length) * length
    return start, start + length


def _fresh_problems(conn: sa.Connection, since: float) -> list[_Check]:
    """Problem checks since ``since`` that no incident holds, oldest first. Read from the
    files whose status is a problem now (the (status, site) index), then their checks
    (the (file_id, checked) index): the cost follows the problem files, not the week's
    checks, so a detection after every check run stays cheap at ten million files. A file
    checked bad and then ok again before detection ran is no burst to hold."""
    e, f = events.c, incident_files.c
    rows = conn.execute(
        sa.select(e.id, e.file_id, e.checked, e.status, statuses.c.site, e.source_pool,
                  e.worker_node)
        .select_from(statuses.join(events, e.file_id == statuses.c.id)
                     .outerjoin(incident_files, f.event_id == e.id))
        .where(statuses.c.status.in_([int(s) for s in _NOW_PROBLEMS]),
               e.checked >= since, e.status.in_([int(s) for s in INCIDENT_STATUSES]),
               f.id.is_(None))
        .order_by(e.id))
    return [_Check(*row) for row in rows]


def _files_checked(conn: sa.Connection, site: str, kind: str, value: str,
                   start: float, end: float) -> int:
    e = events.c
    where = [statuses.c.site == site, e.checked >= start, e.checked < end]
    if kind == POOL:
        where.append(e.source_pool == value)
    elif kind == NODE:
        where.append(e.worker_node == value)
    return conn.execute(
        sa.select(sa.func.count(sa.distinct(e.file_id)))
        .select_from(events.join(statuses, statuses.c.id == e.file_id))
        .where(*where)).scalar() or 0


def _hold(conn: sa.Connection, incident_id: int, checks: Iterable[_Check]) -> int:
    rows = [{"incident_id": incident_id, "event_id": c.event_id, "file_id": c.file_id,
             "status": c.status, "checked": c.checked} for c in checks]
    for i in range(0, len(rows), _CHUNK):
        conn.execute(incident_files.insert(), rows[i:i + _CHUNK])
    return len(rows)


def _detect(conn: sa.Connection, rule: IncidentRule, now: float) -> Detection:
    align = max(rule.window, DAY)
    fresh = _fresh_problems(conn, ((now - LOOKBACK) // align) * align)
    result = Detection([])
    if not fresh:
        return result
    # An open incident takes its scope's later problem checks: nothing of a pool or a node
    # under investigation is declared until a person decides.
    taken: set[int] = set()
    for inc in _rows(conn, states=(OPEN,)):
        mine = [c for c in fresh if c.event_id not in taken and c.site == inc.site
                and c.checked >= inc.window_start and _value(c, inc.kind) == inc.scope]
        result.joined += _hold(conn, inc.id, mine)
        taken.update(c.event_id for c in mine)
    fresh = [c for c in fresh if c.event_id not in taken]
    groups: dict[tuple, list[_Check]] = defaultdict(list)
    for c in fresh:
        for kind in KINDS:
            value = _value(c, kind)
            if value:
                groups[(KINDS.index(kind), *_window(rule, kind, c.checked), c.site,
                        value)].append(c)
    for key in sorted(groups):
        order, start, end, site, value = key
        kind = KINDS[order]
        mine = [c for c in groups[key] if c.event_id not in taken]
        problems = len({c.file_id for c in mine})
        if problems < rule.min_problems:
            continue
        checked = _files_checked(conn, site, kind, value, start, end)
        if 100.0 * problems <= rule.min_percent * checked:
            continue
        values = {"site": site, "kind": kind, "scope": value[:255], "window_start": start,
                  "window_end": end, "opened": now, "problems": problems,
                  "checks": checked, "state": OPEN}
        new_id = conn.execute(incidents.insert().values(**values)).inserted_primary_key[0]
        _hold(conn, new_id, mine)
        taken.update(c.event_id for c in mine)
        inc = Incident(new_id, decided_by=None, decided_at=None, files=problems, **values)
        result.opened.append(inc)
        log.warning("incident %d opened: %s, %d problem files of %d checked (%.1f %%) "
                    "between %s and %s; its files are held from Rucio until a person "
                    "decides (pnfsmon incident show %d)", new_id, inc.where, problems,
                    checked, inc.percent, utc(start), utc(end), new_id)
    return result


def utc(t: float | None) -> str:
    """A time for people, in UTC (windows are UTC hours and days)."""
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def detect(engine: sa.Engine, rule: IncidentRule, now: float | None = None) -> Detection:
    """Open incidents for bursts among the checks of the last ``LOOKBACK`` that no
    incident holds yet, and add later problem checks to open ones. One transaction;
    running it again changes nothing until new checks are recorded."""
    now = time.time() if now is None else now

    def run() -> Detection:
        with write_transaction(engine) as conn:
            return _detect(conn, rule, now)

    for _attempt in range(5):
        try:
            return retrying(engine, run)
        except sa.exc.IntegrityError:
            # Another detection held the same checks at the same moment (the unique
            # event_id): its incident stands, and this one looks again.
            log.debug("another detection ran at the same time; looking again")
    return retrying(engine, run)


def _counted() -> sa.Subquery:
    return (sa.select(incident_files.c.incident_id,
                      sa.func.count(sa.distinct(incident_files.c.file_id)).label("files"))
            .group_by(incident_files.c.incident_id).subquery())


def _rows(conn: sa.Connection, *, states: Sequence[str] | None = None,
          site: str | None = None, ids: Sequence[int] | None = None,
          decided_since: float | None = None) -> list[Incident]:
    n = _counted()
    query = (sa.select(incidents, sa.func.coalesce(n.c.files, 0))
             .select_from(incidents.outerjoin(n, n.c.incident_id == incidents.c.id))
             .order_by(incidents.c.id))
    if states is not None:
        query = query.where(incidents.c.state.in_(list(states)))
    if site is not None:
        query = query.where(incidents.c.site == site)
    if ids is not None:
        query = query.where(incidents.c.id.in_(list(ids)))
    if decided_since is not None:
        query = query.where(sa.or_(incidents.c.state == OPEN,
                                   incidents.c.decided_at >= decided_since))
    return [Incident(*row) for row in conn.execute(query)]


def open_incidents(conn: sa.Connection, site: str | None = None) -> list[Incident]:
    """The incidents waiting for a person (served by the (state, site) index)."""
    return _rows(conn, states=(OPEN,), site=site)


def listed(conn: sa.Connection, *, site: str | None = None, everything: bool = False,
           decided_since: float | None = None) -> list[Incident]:
    """Open incidents; with ``everything``, decided ones too (those decided since
    ``decided_since``, if given)."""
    if not everything:
        return open_incidents(conn, site)
    return _rows(conn, site=site, decided_since=decided_since)


def get(conn: sa.Connection, incident_id: int) -> Incident:
    found = _rows(conn, ids=[incident_id])
    if not found:
        raise ConfigError(f"there is no incident {incident_id} (pnfsmon incident list --all "
                          "lists them)")
    return found[0]


def files_of(conn: sa.Connection, incident_id: int, limit: int | None = None
             ) -> list[IncidentFile]:
    """The problem files an incident holds, by path (a file checked twice in it: once)."""
    f, s = incident_files.c, statuses.c
    latest = (sa.select(f.file_id, sa.func.max(f.checked).label("checked"))
              .where(f.incident_id == incident_id).group_by(f.file_id).subquery())
    query = (sa.select(f.file_id, s.path, f.status, f.checked, s.status)
             .select_from(incident_files
                          .join(latest, sa.and_(latest.c.file_id == f.file_id,
                                                latest.c.checked == f.checked))
                          .outerjoin(statuses, s.id == f.file_id))
             .where(f.incident_id == incident_id)
             .order_by(s.path, f.file_id))
    if limit is not None:
        query = query.limit(limit)
    seen: set[int] = set()
    out = []
    for file_id, path, verdict, checked, now_status in conn.execute(query):
        if file_id in seen:
            continue
        seen.add(file_id)
        out.append(IncidentFile(file_id, None if path is None else bytes(path),
                                Status(verdict), checked,
                                None if now_status is None else Status(now_status)))
    return out


def held(conn: sa.Connection, site: str) -> set[int]:
    """The site's files that are not to be declared: those of its open incidents, and
    those of dismissed ones not checked again since the dismissal."""
    f, i = incident_files.c, incidents.c
    held_open = conn.execute(
        sa.select(f.file_id).distinct().join_from(incident_files, incidents,
                                                  i.id == f.incident_id)
        .where(i.state == OPEN, i.site == site)).scalars().all()
    unchecked = conn.execute(
        sa.select(f.file_id).distinct()
        .select_from(incident_files.join(incidents, i.id == f.incident_id)
                     .join(statuses, statuses.c.id == f.file_id))
        .where(i.state == DISMISSED, i.site == site,
               sa.or_(statuses.c.checked.is_(None), statuses.c.checked <= i.decided_at))
    ).scalars().all()
    return set(held_open) | set(unchecked)


def _decide(engine: sa.Engine, incident_id: int, state: str, by: str,
            now: float | None) -> tuple[Incident, int]:
    now = time.time() if now is None else now

    def run() -> tuple[Incident, int]:
        with write_transaction(engine) as conn:
            current = conn.execute(sa.select(incidents.c.state, incidents.c.decided_by,
                                             incidents.c.decided_at)
                                   .where(incidents.c.id == incident_id)
                                   .with_for_update()).first()
            if current is None:
                get(conn, incident_id)  # raises, naming the way to list them
            if current.state != OPEN:
                raise ConfigError(f"incident {incident_id} was already {current.state} by "
                                  f"{current.decided_by} at {utc(current.decided_at)}")
            conn.execute(incidents.update().where(incidents.c.id == incident_id)
                         .values(state=state, decided_by=by[:64], decided_at=now))
            requeued = 0
            if state == DISMISSED:
                ids = conn.execute(sa.select(incident_files.c.file_id).distinct().where(
                    incident_files.c.incident_id == incident_id)).scalars().all()
                for i in range(0, len(ids), _CHUNK):
                    # Files being checked, vanished or changed since are not waiting in
                    # the queue (claim_key NULL): their next verdict comes anyway.
                    requeued += conn.execute(
                        statuses.update().where(statuses.c.id.in_(ids[i:i + _CHUNK]),
                                                statuses.c.claim_key.is_not(None))
                        .values(claim_key=URGENT)).rowcount
            return get(conn, incident_id), requeued

    return retrying(engine, run)


def release(engine: sa.Engine, incident_id: int, by: str, now: float | None = None
            ) -> Incident:
    """A person judged the burst real: its files may be declared (``pnfsmon declare``)."""
    return _decide(engine, incident_id, RELEASED, by, now)[0]


def dismiss(engine: sa.Engine, incident_id: int, by: str, now: float | None = None
            ) -> tuple[Incident, int]:
    """A person judged the burst false (a flaky node, a pool that was down): its files go
    to the head of the queue and stay held until checked again. Returns the incident and
    how many files were queued."""
    return _decide(engine, incident_id, DISMISSED, by, now)
