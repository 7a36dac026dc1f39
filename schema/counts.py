"""The ``status_counts`` ledger: how many files and bytes each (site, status) holds, kept
exact by every writer so that ``pnfsmon status`` (and Nagios, every few minutes) sums a
few thousand ledger rows instead of scanning ten million ``statuses`` rows.

Every statement that changes a file's status, size or reference provenance (the crawl's
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
from pnfsmon.schema.reference import Reference
from pnfsmon.schema.status import GONE, Status
from pnfsmon.schema.tables import meta, status_counts, statuses

FIRST_CHECK = "first_check"  # recorded_from when the first computed value is the reference
FOLD_AT = 2000  # ledger rows: fold when there are more

#: (site, status, reference)
Key = tuple[str, int, int]


@dataclass
class Deltas:
    """Differences to append, summed per key."""

    files: Counter = field(default_factory=Counter)
    bytes: Counter = field(default_factory=Counter)

    def add(self, site: str, status: int, reference: int, size: int, n: int = 1) -> None:
        key = (site, int(status), int(reference))
        self.files[key] += n
        self.bytes[key] += size

    def remove(self, site: str, status: int, reference: int, size: int, n: int = 1) -> None:
        self.add(site, status, reference, -size, -n)

    def write(self, conn: sa.Connection) -> None:
        rows = [{"site": k[0], "status": k[1], "reference": k[2], "files": self.files[k],
                 "bytes": self.bytes[k]}
                for k in self.files.keys() | self.bytes.keys()
                if self.files[k] or self.bytes[k]]
        if rows:
            conn.execute(status_counts.insert(), rows)


@dataclass
class Totals:
    """Files and bytes per (site, status), and listed (not vanished) files per (site,
    reference provenance)."""

    files: Counter = field(default_factory=Counter)  # (site, Status) -> n
    bytes: Counter = field(default_factory=Counter)
    references: Counter = field(default_factory=Counter)  # (site, Reference) -> n

    def add(self, site: str, status: int, reference: int, files: int, size: int) -> None:
        key = (site, Status(status))
        self.files[key] += int(files)
        self.bytes[key] += int(size)
        if status not in GONE:
            self.references[(site, Reference(reference))] += int(files)

    def with_reference(self, reference: Reference) -> int:
        """Listed files of every site whose reference has this provenance."""
        return sum(n for (_site, ref), n in self.references.items() if ref == reference)

    @property
    def first_check(self) -> Counter:
        """site -> files whose reference is their first computed checksum."""
        return Counter({site: n for (site, ref), n in self.references.items()
                        if ref == Reference.FIRST_READ and n})

    def as_dict(self) -> dict:
        """Comparable form, without the zero entries a ledger may hold."""
        return {"files": {k: v for k, v in self.files.items() if v},
                "bytes": {k: v for k, v in self.bytes.items() if v},
                "references": {k: v for k, v in self.references.items() if v}}


def totals(conn: sa.Connection, site: str | None = None) -> Totals:
    """The ledger's sums: what ``statuses`` holds (of ``site``, or of every site), as of
    the last committed write."""
    c = status_counts.c
    out = Totals()
    query = (sa.select(c.site, c.status, c.reference, sa.func.sum(c.files),
                       sa.func.sum(c.bytes))
             .group_by(c.site, c.status, c.reference))
    if site is not None:
        query = query.where(c.site == site)
    for row in conn.execute(query):
        out.add(*row)
    return out


def _grouped_scan() -> sa.Select:
    """(site, status, reference, files, bytes) from a full scan of ``statuses``."""
    s = statuses.c
    return (sa.select(s.site, s.status, s.reference, sa.func.count(),
                      sa.func.coalesce(sa.func.sum(s.size), 0))
            .group_by(s.site, s.status, s.reference))


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
    rows = conn.execute(sa.select(c.id, c.site, c.status, c.reference, c.files, c.bytes)
                        .with_for_update()).all()
    deltas = Deltas()
    for _id, site, status, reference, files, size in rows:
        deltas.add(site, status, reference, size, files)
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
        ["site", "status", "reference", "files", "bytes"], _grouped_scan()))
