"""The compare's confirm statements are planned as one keyed look-up per candidate on every
backend, even right after the rows were written (no statistics on them): PostgreSQL turned
the former ``path_hash IN (...)`` into a nested loop that scanned the previous compare's
rows once per candidate, quadratic (bench/compare_confirm.py times it; no test times)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from pnfsmon.catalog.compare import _carry_statement, _confirm_statement
from pnfsmon.schema.discrepancies import CompareState, Discrepancy
from pnfsmon.schema.tables import compares, discrepancies

ROWS = 3000


def _two_compares(engine: sa.Engine) -> tuple[int, int]:
    """Two compares of ROWS orphans each, 90 % the same files; no ANALYZE after."""
    with engine.begin() as conn:
        ids = [conn.execute(compares.insert().values(
            site="T1_XX", started=1000.0 + n, state=state.value)).inserted_primary_key[0]
            for n, state in enumerate((CompareState.PUBLISHED, CompareState.RUNNING))]
        for compare_id, offset in zip(ids, (0, ROWS // 10), strict=True):
            conn.execute(discrepancies.insert(), [
                {"compare_id": compare_id, "kind": Discrepancy.ORPHAN.value,
                 "path_hash": f"h{i:015d}".encode(), "lfn": b"/store/f", "path": b"/f",
                 "size": i, "confirmed": False, "since": 1000.0}
                for i in range(offset, offset + ROWS)])
    return ids[0], ids[1]


def _plan(conn: sa.Connection, statement: sa.Update) -> list[str]:
    """The backend's plan of ``statement`` (not run), one string per line or row."""
    sql = str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    explain = "EXPLAIN QUERY PLAN " if conn.dialect.name == "sqlite" else "EXPLAIN "
    return [" | ".join(str(v) for v in row) for row in conn.exec_driver_sql(explain + sql)]


def _looked_up_by_path_hash(backend: str, plan: list[str]) -> bool:
    text = "\n".join(plan)
    if backend == "postgresql":
        return "Nested Loop" not in text and "SubPlan" in text and \
            "path_hash = discrepancies.path_hash" in text
    if backend == "sqlite":
        return any("SEARCH discrepancies" in line and "path_hash=?" in line for line in plan)
    # MariaDB: the previous compare's rows, read once, are probed by key per candidate.
    return any("DEPENDENT SUBQUERY" in line and " | ref | " in line
               and "path_hash" in line for line in plan)


def test_confirm_looks_each_candidate_up_by_its_path_hash(engine):
    previous, new = _two_compares(engine)
    with engine.connect() as conn:
        for statement in (_confirm_statement(new, previous, Discrepancy.ORPHAN),
                          _confirm_statement(new, previous, Discrepancy.MISSING),
                          _carry_statement(new, previous, 1000.0)):
            plan = _plan(conn, statement)
            assert _looked_up_by_path_hash(conn.dialect.name, plan), "\n".join(plan)


def test_the_former_in_form_fails_the_check_on_postgresql(engine):
    """The check can fail: the former statement's plan does not pass it on PostgreSQL."""
    if engine.dialect.name != "postgresql":
        pytest.skip("the former form was quadratic on PostgreSQL only")
    previous, new = _two_compares(engine)
    d = discrepancies.c
    seen = (sa.select(d.path_hash).where(d.compare_id == previous,
                                         d.kind == Discrepancy.ORPHAN.value).subquery())
    former = (discrepancies.update()
              .where(d.compare_id == new, d.kind == Discrepancy.ORPHAN.value,
                     d.path_hash.in_(sa.select(seen.c.path_hash)))
              .values(confirmed=True))
    with engine.connect() as conn:
        plan = _plan(conn, former)
    assert not _looked_up_by_path_hash("postgresql", plan), "\n".join(plan)
