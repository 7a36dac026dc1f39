"""What confirming a compare's candidates costs (``catalog.compare._confirm``: the orphans
and missing files the previous compare found too become confirmed, and an orphan's
``since`` is carried from the previous published compare), on each database backend.

For each backend and each N: a fresh database, two compares of the site written as the
compare writes them (batches of 5,000 through ``insert_batch``), the previous one
published with N orphans and N/10 missing files, the new one with N orphans and N/10
missing files of which 90 % are the previous ones' (the rest new); then ``_confirm`` is
timed, right after the inserts as in a compare (PostgreSQL has had no chance to ANALYZE
the new rows: its planner knows nothing of them).

Baseline in the same run, on the same rows just before: ``count(path_hash)`` of both
compares' missing and orphan rows, an index range scan, i.e. the reading the confirm
cannot do without, linear whatever the planner thinks. (Not a count of the self-join on
the path hash: on PostgreSQL, with no statistics on the new rows, that join gets the same
quadratic nested loop as the former UPDATE.) The confirm writes rows as well, so the
ratio is not 1; what matters is that it stays the same from N to 10 N (a linear plan)
rather than growing tenfold (a quadratic one). ``--before`` also times the
statements as they were before this benchmark (an ``IN`` over a derived table, and a
correlated scalar subquery for ``since``), in a database of its own, for N up to
``--before-max`` (the quadratic form takes minutes beyond).

Asserts that every expected row was confirmed, no other, and that ``since`` was carried.

    python bench/compare_confirm.py [--n 5000 50000] [--before] \\
        [--url sqlite --url mysql+pymysql://root@127.0.0.1:3306/ \\
         --url postgresql+psycopg://postgres@127.0.0.1:5432/]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from pnfsmon.catalog import compare as compare_module
from pnfsmon.schema import db, migrate
from pnfsmon.schema.config import Settings
from pnfsmon.schema.discrepancies import CompareState, Discrepancy
from pnfsmon.schema.sites import Site
from pnfsmon.schema.tables import compares, discrepancies

SERVERS = ["mysql+pymysql://root@127.0.0.1:3306/",
           "postgresql+psycopg://postgres@127.0.0.1:5432/"]
SITE = Site(name="T1_XX")
PREVIOUS_STARTED = 1_700_000_000.0
NEW_STARTED = PREVIOUS_STARTED + 86400
EARLIER = PREVIOUS_STARTED - 5 * 86400  # the since of orphans the previous one carried


@contextmanager
def fresh_database(server: str, tmp: Path) -> Iterator[str]:
    """A new empty database on ``server`` ("sqlite": a file below ``tmp``), dropped after."""
    if server == "sqlite":
        yield f"sqlite:///{tmp / f'{uuid.uuid4().hex[:8]}.sqlite'}"
        return
    name = f"pnfsmon_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server + ("postgres" if server.startswith("postgres") else ""),
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield server + name
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        admin.dispose()


def digest(kind: str, i: int) -> bytes:
    return f"{kind[0]}{i:015d}".encode()


def fill(engine: sa.Engine, n: int) -> tuple[int, int, dict[str, set[bytes]], set[bytes]]:
    """The two compares; returns their ids, the path hashes each kind must confirm, and
    the orphans whose since the previous compare carried from an earlier one."""
    with engine.begin() as conn:
        previous = conn.execute(compares.insert().values(
            site=SITE.name, started=PREVIOUS_STARTED, finished=PREVIOUS_STARTED + 60,
            state=CompareState.PUBLISHED.value)).inserted_primary_key[0]
        new = conn.execute(compares.insert().values(
            site=SITE.name, started=NEW_STARTED,
            state=CompareState.RUNNING.value)).inserted_primary_key[0]
    expected: dict[str, set[bytes]] = {}
    carried: set[bytes] = set()
    for compare_id, started in ((previous, PREVIOUS_STARTED), (new, NEW_STARTED)):
        writer = compare_module._Writer(engine, compare_id, started)
        for kind, count in ((Discrepancy.ORPHAN, n), (Discrepancy.MISSING, n // 10)):
            # The new compare: 90 % of the previous one's files, and 10 % new ones.
            offset = 0 if compare_id == previous else count // 10
            for i in range(offset, offset + count):
                path = f"/store/data/{kind.value}/f{i:09d}.root".encode()
                writer.add(kind, digest(kind.value, i), path, path, 1000 + i)
            if compare_id == new:
                expected[kind.value] = {digest(kind.value, i) for i in range(offset, count)}
        writer.flush()
    # Every other orphan of the previous compare was first seen by an earlier one.
    with engine.begin() as conn:
        d = discrepancies.c
        conn.execute(discrepancies.update().where(
            d.compare_id == previous, d.kind == Discrepancy.ORPHAN.value,
            d.size % 2 == 0).values(since=EARLIER))
        carried = {bytes(h) for (h,) in conn.execute(sa.select(d.path_hash).where(
            d.compare_id == previous, d.since == EARLIER))}
    return previous, new, expected, carried


def baseline(engine: sa.Engine, previous: int, new: int) -> float:
    """``count(path_hash)`` of both compares' missing and orphan rows (best of 3)."""
    d = discrepancies.c
    query = sa.select(sa.func.count(d.path_hash)).where(
        d.compare_id.in_([previous, new]),
        d.kind.in_([kind.value for kind in compare_module.CONFIRMED_TWICE]))
    times = []
    with engine.connect() as conn:
        for _ in range(3):
            started = time.perf_counter()
            conn.execute(query).scalar()
            times.append(time.perf_counter() - started)
    return min(times)


def confirm_before(engine: sa.Engine, site: Site, compare_id: int, skip: bool) -> None:
    """The confirm's two statements as they were (an IN over a derived table, a
    correlated scalar subquery for since), for the before figures."""
    d = discrepancies.c
    with db.write_transaction(engine) as conn:
        previous = compare_module._previous(conn, site.name, compare_id)
        for kind in compare_module.CONFIRMED_TWICE:
            seen = (sa.select(d.path_hash)
                    .where(d.compare_id == previous, d.kind == kind.value).subquery())
            conn.execute(discrepancies.update()
                         .where(d.compare_id == compare_id, d.kind == kind.value,
                                d.path_hash.in_(sa.select(seen.c.path_hash)))
                         .values(confirmed=True))
        started = conn.execute(sa.select(compares.c.started)
                               .where(compares.c.id == previous)).scalar_one()
        before = (sa.select(d.path_hash, sa.func.coalesce(d.since, started).label("since"))
                  .where(d.compare_id == previous, d.kind == "orphan").subquery())
        conn.execute(
            discrepancies.update()
            .where(d.compare_id == compare_id, d.kind == "orphan", d.confirmed == sa.true())
            .values(since=sa.select(sa.func.min(before.c.since))
                    .where(before.c.path_hash == d.path_hash).scalar_subquery()))


def check(engine: sa.Engine, new: int, expected: dict[str, set[bytes]],
          carried: set[bytes]) -> None:
    """Every expected row confirmed and no other; since carried from the previous one."""
    d = discrepancies.c
    with engine.connect() as conn:
        for kind, hashes in expected.items():
            got = {bytes(h) for (h,) in conn.execute(sa.select(d.path_hash).where(
                d.compare_id == new, d.kind == kind, d.confirmed == sa.true()))}
            assert got == hashes, f"{kind}: {len(got)} confirmed, {len(hashes)} expected"
        for h, since, confirmed in conn.execute(sa.select(d.path_hash, d.since, d.confirmed)
                                                .where(d.compare_id == new,
                                                       d.kind == Discrepancy.ORPHAN.value)):
            want = (EARLIER if bytes(h) in carried else PREVIOUS_STARTED) if confirmed \
                else NEW_STARTED
            assert since == want, f"orphan {bytes(h)!r}: since {since}, expected {want}"


def measure(server: str, n: int, tmp: Path, confirm: Callable) -> tuple[float, float]:
    """(baseline, confirm) seconds for ``n`` orphans in a fresh database."""
    with fresh_database(server, tmp) as url:
        engine = db.create_engine(Settings(url))
        try:
            migrate.upgrade(engine)
            previous, new, expected, carried = fill(engine, n)
            base = baseline(engine, previous, new)
            started = time.perf_counter()
            confirm(engine, SITE, new, skip=False)
            seconds = time.perf_counter() - started
            check(engine, new, expected, carried)
        finally:
            engine.dispose()
    return base, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", action="append", default=None,
                    help="a server URL without a database (or 'sqlite'); repeatable; "
                         "default: sqlite, the local MariaDB and PostgreSQL")
    ap.add_argument("--n", type=int, nargs="+", default=[5000, 50000],
                    help="orphans in each of the two compares")
    ap.add_argument("--before", action="store_true",
                    help="also time the statements as they were before")
    ap.add_argument("--before-max", type=int, default=5000,
                    help="largest N the former statements are timed at")
    args = ap.parse_args()
    servers = args.url or ["sqlite", *SERVERS]
    with tempfile.TemporaryDirectory(prefix="pnfsmon-confirm-") as tmp:
        for server in servers:
            backend = server.split(":", 1)[0].split("+", 1)[0]
            first: tuple[float, float] | None = None
            for n in args.n:
                base, seconds = measure(server, n, Path(tmp), compare_module._confirm)
                growth = "" if first is None else (
                    f"; from N={args.n[0]:,}: {n / args.n[0]:.0f}x the rows, confirm "
                    f"{seconds / first[1]:.1f}x, row count {base / first[0]:.1f}x")
                first = first or (base, seconds)
                print(f"{backend:10} N={n:>7,}: confirm {seconds:8.3f} s, row count "
                      f"(baseline) {base:7.3f} s, {seconds / base:6.1f}x baseline{growth}",
                      flush=True)
                if args.before and n <= args.before_max:
                    base, seconds = measure(server, n, Path(tmp), confirm_before)
                    print(f"{backend:10} N={n:>7,}: former statements {seconds:8.3f} s, "
                          f"row count {base:7.3f} s, {seconds / base:6.1f}x baseline",
                          flush=True)


if __name__ == "__main__":
    main()
