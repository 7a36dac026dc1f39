"""The ``check_ages`` ledger: how many files of each site were last verified in each hour
(and how many wait for a first verdict on their content, by the hour they started waiting),
kept exact by every writer the way ``schema.counts`` keeps ``status_counts``. The watchdog
(``web.watchdog``: overdue files, the oldest verification, the histogram of verification
ages, the last check activity) sums a few thousand ledger rows instead of scanning ten
million ``statuses`` rows.

A file's place in the ledger follows from its row alone (``stamp``):
- ok or a problem (a verdict on its content): verified, in the hour of its last check;
- changed while being checked: waiting, since that check (the next crawl re-lists it);
- unchecked (new, or changed since its last check): waiting, since the start of the crawl
  that listed it (``crawl_gen``);
- vanished, lost or only on tape: not in the ledger (nothing is to be verified).

Writers append differences (never update a row, so they never wait on each other here);
``fold`` replaces the rows by one per key; ``recount`` rebuilds the ledger from a scan.
Hours, not seconds: the ledger stays a few hundred rows per site over a checking cycle, so
ages and counts are exact to the hour."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa

from pnfsmon.schema.durations import HOUR
from pnfsmon.schema.status import PROBLEMS, Status
from pnfsmon.schema.tables import check_ages, crawls, statuses

FOLD_AT = 2000  # fold when the ledger has more rows than this and than twice its keys
#: Statuses whose ``checked`` is a verdict on the file's current content.
VERIFIED = (Status.OK, *PROBLEMS)
#: Statuses outside the ledger: nothing of theirs is due.
UNWATCHED = (Status.VANISHED, Status.LOST, Status.NEARLINE)

#: (site, verified, hour)
Key = tuple[str, bool, "int | None"]


def hour_of(when: float | None) -> int | None:
    return None if when is None else math.floor(when / HOUR)


def stamp(status: int, checked: float | None, listed: float | None
          ) -> tuple[bool, int | None] | None:
    """(verified, hour) of a file with this status, last check and listing crawl's start;
    None when it is not in the ledger. See the module docstring."""
    status = Status(status)
    if status in UNWATCHED:
        return None
    if status in VERIFIED:
        return True, hour_of(checked)
    if status == Status.CHANGED:
        return False, hour_of(checked)
    return False, hour_of(listed)


@dataclass
class Deltas:
    """Differences to append, summed per key."""

    files: Counter = field(default_factory=Counter)

    def add(self, site: str, status: int, checked: float | None, listed: float | None,
            n: int = 1) -> None:
        place = stamp(status, checked, listed)
        if place is not None:
            self.files[(site, *place)] += n

    def remove(self, site: str, status: int, checked: float | None, listed: float | None
               ) -> None:
        self.add(site, status, checked, listed, -1)

    def write(self, conn: sa.Connection, recorded: float | None = None) -> None:
        """Append the differences; ``recorded``: the time a worker recorded verdicts (the
        site's last check activity), None for a crawl's changes."""
        rows = [{"site": k[0], "verified": k[1], "hour": k[2], "files": n,
                 "last_recorded": recorded}
                for k, n in self.files.items() if n or recorded is not None]
        if rows:
            conn.execute(check_ages.insert(), rows)


@dataclass(frozen=True)
class AgeRow:
    site: str
    verified: bool
    hour: int | None
    files: int
    last_recorded: float | None


def totals(conn: sa.Connection) -> list[AgeRow]:
    """The ledger's sums, one row per key (zero rows included: they may carry the site's
    last check activity)."""
    c = check_ages.c
    return [AgeRow(site, bool(verified), None if hour is None else int(hour), int(files),
                   recorded)
            for site, verified, hour, files, recorded in conn.execute(
                sa.select(c.site, c.verified, c.hour, sa.func.sum(c.files),
                          sa.func.max(c.last_recorded))
                .group_by(c.site, c.verified, c.hour))]


def listing_starts(conn: sa.Connection, gens: Iterable[int]) -> dict[int, float]:
    """When the crawls ``gens`` (``statuses.crawl_gen``) started. Read without a lock: a
    crawl's start never changes."""
    gens = sorted(set(gens))
    return dict(conn.execute(sa.select(crawls.c.id, crawls.c.started)
                             .where(crawls.c.id.in_(gens))).all()) if gens else {}


def _codes(group: Iterable[Status]) -> sa.ColumnElement:
    # Literals, not bound parameters: PostgreSQL must see the GROUP BY expressions as the
    # same ones as in the SELECT list.
    return sa.literal_column("(" + ", ".join(str(int(st)) for st in group) + ")")


def hour_sql(when: sa.ColumnElement, dialect: str) -> sa.ColumnElement:
    """``hour_of`` in SQL (SQLite's CAST truncates, which is the floor of a positive
    time; the others round, so they take the floor first)."""
    hours = when / sa.literal_column("3600.0")
    if dialect == "sqlite":
        return sa.cast(hours, sa.BigInteger)
    return sa.cast(sa.func.floor(hours), sa.BigInteger)


def grouped_scan(dialect: str) -> sa.Select:
    """(site, verified, hour, files, last_recorded) from a full scan of ``statuses``: the
    ``stamp`` of every row, in SQL. Each key's ``last_recorded`` is the latest check of
    the files in it."""
    s = statuses.c
    verified = s.status.op("IN")(_codes(VERIFIED))
    checked_kept = s.status.op("IN")(_codes((*VERIFIED, Status.CHANGED)))
    rows = (sa.select(s.site.label("site"),
                      sa.case((verified, sa.true()), else_=sa.false()).label("verified"),
                      hour_sql(sa.case((checked_kept, s.checked), else_=crawls.c.started),
                               dialect).label("hour"),
                      sa.case((checked_kept, s.checked), else_=None).label("last"))
            .select_from(statuses.outerjoin(crawls, crawls.c.id == s.crawl_gen))
            .where(s.status.op("NOT IN")(_codes(UNWATCHED)))
            .subquery())
    return (sa.select(rows.c.site, rows.c.verified, rows.c.hour, sa.func.count(),
                      sa.func.max(rows.c.last))
            .group_by(rows.c.site, rows.c.verified, rows.c.hour))


def scan(conn: sa.Connection) -> list[AgeRow]:
    """The same sums from a full scan of ``statuses`` (the truth the ledger keeps)."""
    return [AgeRow(site, bool(verified), None if hour is None else int(hour), int(files),
                   last)
            for site, verified, hour, files, last in conn.execute(
                grouped_scan(conn.dialect.name))]


def as_dict(rows: Iterable[AgeRow]) -> dict[Key, int]:
    """Comparable form: files per key, without the zero entries a ledger may hold."""
    return {(r.site, r.verified, r.hour): r.files for r in rows if r.files}


def _replace(conn: sa.Connection, rows: list[AgeRow], ids: list[int]) -> None:
    c = check_ages.c
    for start in range(0, len(ids), 5000):
        conn.execute(check_ages.delete().where(c.id.in_(ids[start:start + 5000])))
    newest: dict[str, float] = {}
    for r in rows:
        if r.last_recorded is not None:
            newest[r.site] = max(newest.get(r.site, r.last_recorded), r.last_recorded)
    # A key whose files all moved on is dropped, unless it holds its site's last check
    # activity (then it stays, with no files).
    keep = [{"site": r.site, "verified": r.verified, "hour": r.hour, "files": r.files,
             "last_recorded": r.last_recorded}
            for r in rows
            if r.files or (r.last_recorded is not None
                           and r.last_recorded == newest.get(r.site))]
    if keep:
        conn.execute(check_ages.insert(), keep)


def fold(conn: sa.Connection, lock: Callable[[sa.Connection], None], at: int = FOLD_AT
         ) -> int:
    """Replace the ledger's rows by one per key if there are more than ``at`` and than
    twice its keys; returns how many rows were folded. ``lock`` serialises folds (the one
    of ``counts.fold``, which calls this)."""
    c = check_ages.c
    n = conn.execute(sa.select(sa.func.count()).select_from(check_ages)).scalar()
    if n <= at:
        return 0
    keys = conn.execute(sa.select(sa.func.count()).select_from(
        sa.select(c.site, c.verified, c.hour).group_by(c.site, c.verified, c.hour)
        .subquery())).scalar()
    if n <= 2 * keys:
        return 0
    lock(conn)
    # Locked and read row by row: exactly the rows summed are the rows deleted.
    rows = conn.execute(sa.select(c.id, c.site, c.verified, c.hour, c.files,
                                  c.last_recorded).with_for_update()).all()
    files: Counter = Counter()
    recorded: dict[Key, float] = {}
    for _id, site, verified, hour, n_files, last in rows:
        key = (site, bool(verified), hour)
        files[key] += n_files
        if last is not None:
            recorded[key] = max(recorded.get(key, last), last)
    _replace(conn, [AgeRow(k[0], k[1], k[2], n, recorded.get(k)) for k, n in files.items()],
             [r.id for r in rows])
    return len(rows)


def recount(conn: sa.Connection) -> None:
    """Rebuild the ledger from a scan of ``statuses`` (``counts.recount`` calls it, under
    its lock)."""
    conn.execute(check_ages.delete())
    conn.execute(check_ages.insert().from_select(
        ["site", "verified", "hour", "files", "last_recorded"],
        grouped_scan(conn.dialect.name)))
