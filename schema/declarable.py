"""What ``pnfsmon declare`` would declare for a site: its confirmed corrupted and missing
files (and lost ones), each with the reason Rucio will keep, minus those declared before
(unless the file checked ok since), those outside the site's LFN mapping, and those held in
an open incident. A corrupted verdict that a second read has not confirmed yet
(``tester.confirm``) is pending confirmation: shown, never declared. A missing verdict is
final only after a second stat agreed, so every ``missing`` row is confirmed; a lost file
is gone from the namespace (a complete crawl's word), whatever its last read said. A read
model on the ground floor: ``declare`` acts on it, the report shows it (what is pending)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import sqlalchemy as sa

from pnfsmon.schema import incidents
from pnfsmon.schema.paths import is_utf8
from pnfsmon.schema.sites import Site
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import declarations, events, quarantines, statuses

#: Verdicts that are declared bad: a verdict on the data itself. A timeout or an unreadable
#: file says as much about the reader or the door as about the data: never declared.
# A lost file (gone from the namespace while missing or corrupted) is a lost replica too.
DECLARED_VERDICTS = (Status.CORRUPTED, Status.MISSING, Status.LOST)


@dataclass(frozen=True)
class Candidate:
    file_id: int
    path: bytes
    path_hash: bytes
    lfn: bytes
    status: Status
    computed_adler32: str | None
    recorded_adler32: str | None
    checked: float | None

    def reason(self, site: str) -> str:
        """The reason Rucio keeps with the bad replica (its column holds 255 characters):
        the verdict, the computed and recorded Adler32, and when it was found."""
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.checked or 0))
        if self.status == Status.CORRUPTED:
            return (f"pnfs-monitor {site}: corrupted, adler32 computed "
                    f"{self.computed_adler32 or 'none'} recorded "
                    f"{self.recorded_adler32 or 'none'}, checked {when}")[:255]
        # Missing files come in bunches (a lost disk): one reason per hour, so they go to
        # Rucio in batches; the exact time is in the declarations table.
        hour = time.strftime("%Y-%m-%dT%H:00Z", time.gmtime(self.checked or 0))
        if self.status == Status.LOST:
            return (f"pnfs-monitor {site}: lost (gone from the namespace while missing or "
                    f"corrupted), last checked {hour}")[:255]
        return f"pnfs-monitor {site}: missing (not found on storage), checked {hour}"[:255]


@dataclass
class Plan:
    site: str
    to_declare: list[Candidate] = field(default_factory=list)
    # paths outside the LFN mapping, or whose LFN is not UTF-8 (no Rucio name is)
    unmapped: list[bytes] = field(default_factory=list)
    held: list[Candidate] = field(default_factory=list)  # in an open incident
    # corrupted, not confirmed by a second read yet: (candidate, when its read is due)
    pending: list[tuple[Candidate, float]] = field(default_factory=list)
    declared_before: int = 0  # problem files already declared (and not ok since)
    recovered: list[sa.Row] = field(default_factory=list)  # declared, checked ok since
    last_id: int = 0  # the site's newest declaration when planned (see apply._record)


def held_by_incident(conn: sa.Connection, site: Site, file_ids: set[int]) -> set[int]:
    """The files among ``file_ids`` that are part of an open incident (or of a dismissed
    one, until checked again): never declared until a person releases the incident
    (``schema.incidents``). ``pnfsmon declare`` runs the detection first."""
    return file_ids & incidents.held(conn, site.name)


def _recovered_since(conn: sa.Connection, file_id: int, since: float) -> bool:
    return conn.execute(sa.select(sa.literal(1)).where(
        events.c.file_id == file_id, events.c.status == int(Status.OK),
        events.c.checked > since).limit(1)).first() is not None


def _last_declared(conn: sa.Connection, site: str) -> dict[bytes, float]:
    """When each file of the site was last declared (any answer from Rucio counts)."""
    rows = conn.execute(sa.select(declarations.c.path_hash, sa.func.max(declarations.c.declared))
                        .where(declarations.c.site == site)
                        .group_by(declarations.c.path_hash))
    return {bytes(h): when for h, when in rows}


def plan(engine: sa.Engine, site: Site) -> Plan:
    """Read what would be declared for ``site`` now (changes nothing)."""
    result = Plan(site.name)
    with engine.connect() as conn:
        result.last_id = conn.execute(sa.select(sa.func.max(declarations.c.id)).where(
            declarations.c.site == site.name)).scalar() or 0
        last = _last_declared(conn, site.name)
        rows = conn.execute(
            sa.select(statuses.c.id, statuses.c.path, statuses.c.path_hash, statuses.c.status,
                      statuses.c.computed_adler32, statuses.c.recorded_adler32,
                      statuses.c.checked, statuses.c.confirm_due)
            .where(statuses.c.site == site.name,
                   statuses.c.status.in_([int(s) for s in DECLARED_VERDICTS]))
            .order_by(statuses.c.path)).all()
        found = []
        for r in rows:
            path, path_hash = bytes(r.path), bytes(r.path_hash)
            when = last.get(path_hash)
            # Declared before: only a check that found the file ok since then makes a new
            # problem a new declaration (Rucio repaired it, and it broke again).
            if when is not None and not _recovered_since(conn, r.id, when):
                result.declared_before += 1
                continue
            lfn = site.to_lfn(path)
            if lfn is None or not is_utf8(lfn):  # a Rucio name is text: no such replica
                result.unmapped.append(path)
                continue
            candidate = Candidate(r.id, path, path_hash, lfn, Status(r.status),
                                  r.computed_adler32, r.recorded_adler32, r.checked)
            if r.status == Status.CORRUPTED and r.confirm_due is not None:
                result.pending.append((candidate, r.confirm_due))
                continue
            found.append(candidate)
        held = held_by_incident(conn, site, {c.file_id for c in found})
        result.to_declare = [c for c in found if c.file_id not in held]
        result.held = [c for c in found if c.file_id in held]
        result.recovered = conn.execute(
            sa.select(declarations.c.path, declarations.c.name, declarations.c.declared,
                      statuses.c.checked)
            .join(statuses, sa.and_(statuses.c.site == declarations.c.site,
                                    statuses.c.path_hash == declarations.c.path_hash))
            .where(declarations.c.site == site.name,
                   statuses.c.status == int(Status.OK),
                   statuses.c.checked > declarations.c.declared)
            .order_by(declarations.c.path)).all()
    return result


@dataclass(frozen=True)
class SiteDeclarations:
    """A site's standing with Rucio, for the report: what was declared (by Rucio's
    answer), what is held in incidents, what the next ``declare --apply`` would declare."""

    site: str
    rse: str | None
    declared: dict[str, int]  # declarations recorded, by outcome
    last_declared: float | None
    held: int
    pending: int  # what the next ``declare --apply`` would declare
    unconfirmed: int  # corrupted, waiting for the second read that confirms it
    declared_before: int  # problem files declared already (not declared again)
    unmapped: int
    recovered: int  # declared, and checked ok since
    quarantined: dict[str, int]  # dark files sent to quarantine (``declare --dark``), by outcome

    def as_json(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def site_declarations(engine: sa.Engine, site: Site) -> SiteDeclarations:
    """Read ``site``'s declarations and its plan (changes nothing; the incidents as the
    last detection left them)."""
    found = plan(engine, site)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(declarations.c.outcome, sa.func.count(), sa.func.max(declarations.c.declared))
            .where(declarations.c.site == site.name).group_by(declarations.c.outcome)).all()
        dark = dict(conn.execute(
            sa.select(quarantines.c.outcome, sa.func.count())
            .where(quarantines.c.site == site.name).group_by(quarantines.c.outcome)).all())
    return SiteDeclarations(
        site.name, site.rucio_rse, {outcome: n for outcome, n, _ in rows},
        max((last for _, _, last in rows), default=None), len(found.held),
        len(found.to_declare), len(found.pending), found.declared_before, len(found.unmapped),
        len(found.recovered), dark)
