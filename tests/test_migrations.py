"""The schema's history as Alembic revisions, on every backend: databases made by earlier
pnfs-monitor versions (their DDL kept in ``tests/old_schemas``, as ``pnfsmon db ddl``
printed it then) with real rows in them are refused until ``pnfsmon db upgrade``, which
brings them in place to exactly the schema a new database gets, keeping every row."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from pnfsmon.schema import ages, db, migrate, tables
from pnfsmon.schema.config import Settings
from pnfsmon.schema.errors import SchemaError
from pnfsmon.schema.paths import path_hash
from pnfsmon.schema.reference import Reference
from pnfsmon.schema.status import Status
from tests.helpers import drop_all, pnfsmon

OLD = Path(__file__).resolve().parent / "old_schemas"
DIALECT_FILE = {"sqlite": "sqlite", "mysql": "mysql", "mariadb": "mysql",
                "postgresql": "postgresql"}


@pytest.fixture
def empty(db_url):
    """(URL, engine) of an empty database of the parametrised backend."""
    drop_all(db_url)
    engine = db.create_engine(Settings(db_url))
    yield db_url, engine
    engine.dispose()


def schema_differences(engine: sa.Engine) -> list:
    """What Alembic's autogenerate finds between the database and ``schema.tables``."""
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), tables.metadata)


def create_old(engine: sa.Engine, version: int) -> None:
    """A database as pnfs-monitor schema version ``version`` created it."""
    sql = (OLD / f"v{version}.{DIALECT_FILE[engine.dialect.name]}.sql").read_text()
    with engine.begin() as conn:
        for statement in sql.split(";\n"):
            if statement.strip():
                conn.exec_driver_sql(statement)


def fill_old(engine: sa.Engine, version: int) -> None:
    """Rows a running site has: a crawl, files in several states (one with its first
    check as reference), checks including a corruption found and later repaired."""
    t = {name: sa.table(name, *(sa.column(c) for c in cols)) for name, cols in {
        "crawls": ("id", "site", "root", "started", "finished", "complete", "files",
                   "directories", "empty_directories", "unreadable_directories", "bytes",
                   "new", "changed", "vanished", "skipped"),
        "statuses": ("id", "site", "path", "path_hash", "size", "mtime_ns",
                     "recorded_adler32", "recorded_from", "status", "checked", "claim_key",
                     "crawl_gen"),
        "events": ("id", "file_id", "checked", "worker_node", "seconds", "size",
                   "bytes_read", "status"),
        "inventory_loads": ("id", "site", "source", "started", "finished", "complete",
                            "entries", "unmapped"),
        "inventory": ("id", "load_id", "lfn", "path", "path_hash", "size"),
    }.items()}
    files = [  # id, path, size, recorded, from, status
        (1, b"/d/ok", 100, "0000abcd", "xrdcks", Status.OK),
        (2, b"/d/rot", 200, "0000abce", "xrdcks", Status.CORRUPTED),
        (3, b"/d/new\xff", 300, None, None, Status.UNCHECKED),
        (4, b"/d/first", 400, "0000abcf", "first_check", Status.OK),
        (5, b"/d/gone", 500, None, None, Status.VANISHED),
        (6, b"/e/repaired", 600, "0000abd0", "xrdcks", Status.OK),
    ]
    with engine.begin() as conn:
        conn.execute(t["crawls"].insert().values(
            id=1, site="T2", root=b"/d", started=1000.0, finished=1100.0, complete=True,
            files=6, directories=2, empty_directories=0, unreadable_directories=0,
            bytes=2100, new=6, changed=0, vanished=0, skipped=0))
        conn.execute(t["statuses"].insert(), [
            dict(id=i, site="T2" if i < 6 else "T1", path=p, path_hash=bytes([i]) * 16,
                 size=n, mtime_ns=10**18, recorded_adler32=rec, recorded_from=src,
                 status=int(st), checked=None if st == Status.UNCHECKED else 2000.0 + i,
                 # a checked file's key: the time of its last check, until revision 0008
                 claim_key=0.0 if st == Status.UNCHECKED else (
                     None if st == Status.VANISHED else 2000.0 + i),
                 crawl_gen=1)
            for i, p, n, rec, src, st in files])
        conn.execute(t["events"].insert(), [
            dict(id=1, file_id=1, checked=2001.0, worker_node="wn1", seconds=0.1, size=100,
                 bytes_read=100, status=int(Status.OK)),
            dict(id=2, file_id=2, checked=2002.0, worker_node="wn1", seconds=0.1, size=200,
                 bytes_read=200, status=int(Status.CORRUPTED)),
            dict(id=3, file_id=6, checked=1500.0, worker_node="wn2", seconds=0.1, size=600,
                 bytes_read=600, status=int(Status.UNREADABLE)),
            dict(id=4, file_id=6, checked=2006.0, worker_node="wn2", seconds=0.1, size=600,
                 bytes_read=600, status=int(Status.OK)),
        ])
        if version >= 2:
            conn.execute(t["inventory_loads"].insert().values(
                id=1, site="T2", source="dump.csv", started=900.0, finished=901.0,
                complete=True, entries=1, unmapped=0))
            conn.execute(t["inventory"].insert().values(
                id=1, load_id=1, lfn=b"/store/ok", path=b"/d/ok", path_hash=b"\x01" * 16,
                size=100))


def test_the_revision_chain_is_the_one_the_code_needs():
    assert migrate.history() == list(tables.REVISIONS)


def test_every_revision_from_nothing_gives_the_schema_of_a_new_database(empty):
    url, engine = empty
    with engine.connect().execution_options(write=True) as conn:
        config = migrate.alembic_config(conn)
        command.upgrade(config, "head")
        command.downgrade(config, "base")  # every downgrade runs...
        assert set(sa.inspect(conn).get_table_names()) == {migrate.ALEMBIC_TABLE}
        command.upgrade(config, "head")  # ...and leaves nothing in the way of an upgrade
        conn.commit()
    assert schema_differences(engine) == []
    with engine.connect() as conn:
        migrate.check(conn)
    # A new database (`db init`: every table, then stamped) is the same schema.
    drop_all(url)
    assert migrate.upgrade(engine) == (None, tables.HEAD)
    assert schema_differences(engine) == []


@pytest.mark.parametrize("version", [1, 2])
def test_an_old_database_with_rows_is_upgraded_in_place(empty, version):
    url, engine = empty
    create_old(engine, version)
    fill_old(engine, version)
    r = pnfsmon("status", env={"PNFSMON_DB": url})
    assert r.returncode == 2 and "run `pnfsmon db upgrade`" in r.stderr
    assert r.stderr.count("\n") == 1
    r = pnfsmon("db", "upgrade", env={"PNFSMON_DB": url})
    assert r.returncode == 0, r.stderr
    assert f"upgraded schema from revision 000{version} to {tables.HEAD}" in r.stdout
    assert schema_differences(engine) == []
    with engine.connect() as conn:
        migrate.check(conn)
        rows = conn.execute(sa.select(tables.statuses.c.id, tables.statuses.c.path,
                                      tables.statuses.c.problem_seen)
                            .order_by(tables.statuses.c.id)).all()
        assert [(i, bytes(p)) for i, p, _ in rows][2] == (3, b"/d/new\xff")
        # Is or was a problem: the corrupted file, and the one read as unreadable once.
        assert {i for i, _, seen in rows if seen} == {2, 6}
        # A corrupted verdict made by one read is unconfirmed, its second read due (0010).
        assert conn.execute(sa.select(tables.statuses.c.id, tables.statuses.c.claim_key)
                            .where(tables.statuses.c.confirm_due == 0.0)).all() == [(2, None)]
        # Each reference's provenance: recorded by the storage, first read, or not known.
        assert dict(conn.execute(sa.select(tables.statuses.c.id,
                                           tables.statuses.c.reference)).all()) == {
            1: Reference.STORAGE, 2: Reference.STORAGE, 3: Reference.UNKNOWN,
            4: Reference.FIRST_READ, 5: Reference.UNKNOWN, 6: Reference.STORAGE}
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.events)
                            ).scalar() == 4
        if version >= 2:
            assert conn.execute(sa.select(tables.inventory.c.path)).scalar() == b"/d/ok"
        # A checked file's key becomes the time it is due: 30 days after its check (0008);
        # the corrupted one waits for its second read instead (0010).
        assert dict(conn.execute(sa.select(tables.statuses.c.id,
                                           tables.statuses.c.claim_key)).all()) == {
            1: 2001.0 + 30 * 86400, 2: None, 3: 0.0, 4: 2004.0 + 30 * 86400,
            5: None, 6: 2006.0 + 30 * 86400}
        # Each file knows its directory (0013).
        assert {bytes(p): bytes(h) for p, h in conn.execute(
            sa.select(tables.statuses.c.path, tables.statuses.c.dir_hash))} == {
            bytes(p): path_hash(os.path.dirname(bytes(p))) for _, p, _ in rows}
        # The check_ages ledger is filled from the rows there (0006).
        filled = ages.as_dict(ages.totals(conn))
        assert filled and filled == ages.as_dict(ages.scan(conn))
    r = pnfsmon("status", env={"PNFSMON_DB": url})
    assert r.returncode == 1, r.stderr  # the corrupted file: a problem
    assert "5 files listed" in r.stdout
    assert "1 file has its first computed checksum as reference" in r.stdout
    r = pnfsmon("db", "upgrade", env={"PNFSMON_DB": url})
    assert r.returncode == 0 and "is current" in r.stdout


def test_a_newer_or_foreign_database_is_refused(empty):
    url, engine = empty
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE {migrate.ALEMBIC_TABLE} SET version_num = '9999'")
    for args in (["status"], ["db", "upgrade"], ["db", "init"]):
        r = pnfsmon(*args, env={"PNFSMON_DB": url})
        assert r.returncode == 2 and "newer than this pnfs-monitor" in r.stderr, args
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    drop_all(url)
    r = pnfsmon("db", "upgrade", env={"PNFSMON_DB": url})  # nothing there: init is what to run
    assert r.returncode == 2 and "run `pnfsmon db init`" in r.stderr
    with engine.begin() as conn:
        tables.statuses.create(conn)
    with engine.connect() as conn, pytest.raises(SchemaError, match="not a pnfs-monitor"):
        migrate.database_revision(conn)


def test_the_ddl_a_dba_applies_by_hand_gives_a_current_database(empty):
    url, engine = empty
    r = pnfsmon("db", "ddl", "--dialect", DIALECT_FILE[engine.dialect.name],
                env={"PNFSMON_DB": url})
    assert r.returncode == 0
    with engine.begin() as conn:
        for statement in r.stdout.split(";\n"):
            if statement.strip():
                conn.exec_driver_sql(statement)
    with engine.connect() as conn:
        migrate.check(conn)
    assert schema_differences(engine) == []
