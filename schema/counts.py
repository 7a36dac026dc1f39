"""The ``status_counts`` ledger: how many files and bytes each (site, status) holds, kept
exact by every writer so that ``pnfsmon status`` (and Nagios, every few minutes) sums a
few thousand ledger rows instead of scanning ten million ``statuses`` rows.

Every statement that changes a file's status, size or first-check reference (the crawl's
ingest, a recorded verdict, a vanished file pruned) appends the difference here in the
same transaction, from the old values it read under lock: the ledger is exact as of the
last committed batch. Appending, never updating a counter row, means writers never wait
on each other here. ``fold`` (after a crawl, a prune, a report) replaces the rows with
one per key; ``recount`` rebuilds it from a scan (after filling ``statuses`` by hand)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import sqlalchemy as sa

from pnfsmon.schema import ages
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import meta, status_counts, statuses

FIRST_CHECK = "first_check"  # recorded_from when the first computed value is the reference
FOLD_AT = 2000  # ledger rows: fold when there are more

#: (site, status, first_check)
Key = tuple[str, int, bool]


def is_first(recorded_from: str | None) -> bool:
    return recorded_from == FIRST_CHECK


@dataclass
class Deltas:
    """Differences to append, summed per key."""

    files: Counter = field(default_factory=Counter)
    bytes: Counter = field(default_factory=Counter)

    def add(self, site: str, status: int, first: bool, size: int, n: int = 1) -> None:
        key = (site, int(status), bool(first))
        self.files[key] += n
        self.bytes[key] += size

    def remove(self, site: str, status: int, first: bool, size: int, n: int = 1) -> None:
        self.add(site, status, first, -size, -n)

    def write(self, conn: sa.Connection) -> None:
        rows = [{"site": k[0], "status": k[1], "first_check": k[2], "files": self.files[k],
                 "bytes": self.bytes[k]}
                for k in self.files.keys() | self.bytes.keys()
                if self.files[k] or self.bytes[k]]
        if rows:
            conn.execute(status_counts.insert(), rows)


@dataclass
class Totals:
    """Files and bytes per (site, status), and how many have a first-check reference."""

    files: Counter = field(default_factory=Counter)  # (site, Status) -> n
    bytes: Counter = field(default_factory=Counter)
    first_check: Counter = field(default_factory=Counter)  # site -> n

    def add(self, site: str, status: int, first: bool, files: int, size: int) -> None:
        key = (site, Status(status))
        self.files[key] += int(files)
        self.bytes[key] += int(size)
        if first:
            self.first_check[site] += int(files)

    def as_dict(self) -> dict:
        """Comparable form, without the zero entries a ledger may hold."""
        return {"files": {k: v for k, v in self.files.items() if v},
                "bytes": {k: v for k, v in self.bytes.items() if v},
                "first_check": {k: v for k, v in self.first_check.items() if v}}


def totals(conn: sa.Connection, site: str | None = None) -> Totals:
    """The ledger's sums: what ``statuses`` holds (of ``site``, or of every site), as of
    the last committed write."""
    c = status_counts.c
    out = Totals()
    query = (sa.select(c.site, c.status, c.first_check, sa.func.sum(c.files),
                       sa.func.sum(c.bytes))
             .group_by(c.site, c.status, c.first_check))
    if site is not None:
        query = query.where(c.site == site)
    for row in conn.execute(query):
        out.add(*row)
    return out


def _grouped_scan() -> sa.Select:
    """(site, status, first_check, files, bytes) from a full scan of ``statuses``."""
    s = statuses.c
    # A literal, not a bound parameter: PostgreSQL must see the GROUP BY expression as the
    # same one as in the SELECT list.
    first = sa.case((s.recorded_from == sa.literal_column(f"'{FIRST_CHECK}'"), True),
                    else_=False)
    return (sa.select(s.site, s.status, first, sa.func.count(),
                      sa.func.coalesce(sa.func.sum(s.size), 0))
            .group_by(s.site, s.status, first))


def scan(conn: sa.Connection) -> Totals:
    """The same sums from a full scan of ``statuses`` (the truth the ledger keeps)."""
    out = Totals()
    for row in conn.execute(_grouped_scan()):
        out.add(*row)
    return out


def _lock(conn: sa.Connection) -> None:
    """Serialise folds and recounts (SQLite's BEGIN IMMEDIATE already does)."""
    conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")
                 .with_for_update())


def fold(conn: sa.Connection, at: int = FOLD_AT) -> int:
    """Replace the ledger's rows by one per key if there are more than ``at``; returns
    how many rows were folded. Rows appended meanwhile are left for the next fold. The
    ``check_ages`` ledger (``schema.ages``) is folded on the same occasions."""
    ages.fold(conn, _lock)
    c = status_counts.c
    if conn.execute(sa.select(sa.func.count()).select_from(status_counts)).scalar() <= at:
        return 0
    _lock(conn)
    # Locked and read row by row: exactly the rows summed are the rows deleted, whatever
    # a writer appends meanwhile.
    rows = conn.execute(sa.select(c.id, c.site, c.status, c.first_check, c.files, c.bytes)
                        .with_for_update()).all()
    deltas = Deltas()
    for _id, site, status, first, files, size in rows:
        deltas.add(site, status, first, size, files)
    ids = [r.id for r in rows]
    for start in range(0, len(ids), 5000):
        conn.execute(status_counts.delete().where(c.id.in_(ids[start:start + 5000])))
    deltas.write(conn)
    return len(rows)


def recount(conn: sa.Connection) -> None:
    """Rebuild the ledger (and the ``check_ages`` one) from a scan of ``statuses``. Run it
    with no crawl or check going on (their differences would be lost)."""
    _lock(conn)
    ages.recount(conn)
    conn.execute(status_counts.delete())
    conn.execute(status_counts.insert().from_select(
        ["site", "status", "first_check", "files", "bytes"], _grouped_scan()))
