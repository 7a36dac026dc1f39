"""The schema's history, applied. ``pnfsmon db init`` creates a new database as Rucio does
(every table from ``schema.tables``, then the Alembic history stamped at its head);
``pnfsmon db upgrade`` runs the Alembic revisions in ``schema/migrations/versions`` on a
database made by an older pnfs-monitor, in place. Every other command checks that the
database is at ``tables.HEAD`` and refuses otherwise, saying what to run.

The check reads the revision with plain SQL and does not import Alembic, so the HTCondor
worker bundle does without it. Databases from before the Alembic history carry their
version only in ``pnfsmon_meta`` (``schema_version`` 1 or 2): ``db upgrade`` stamps the
matching revision and goes on from there."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from pnfsmon.schema import tables
from pnfsmon.schema.errors import SchemaError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
ALEMBIC_TABLE = "alembic_version"
#: ``pnfsmon_meta.schema_version`` of databases made before the Alembic history.
LEGACY = {"1": "0001", "2": "0002"}


@dataclass(frozen=True)
class DatabaseRevision:
    revision: str | None  # None: no pnfs-monitor tables at all
    stamped: bool  # False: only the pre-Alembic schema_version says it


def database_revision(conn: sa.Connection) -> DatabaseRevision:
    """Where the database stands; SchemaError if it is newer than this code or not ours."""
    inspector = sa.inspect(conn)
    if inspector.has_table(ALEMBIC_TABLE):
        revision = conn.execute(sa.text(f"SELECT version_num FROM {ALEMBIC_TABLE}")).scalar()
        if revision is not None and revision not in tables.REVISIONS:
            raise newer_schema(revision)
        return DatabaseRevision(revision, True)
    if inspector.has_table(tables.meta.name):
        version = conn.execute(
            sa.select(tables.meta.c.value).where(tables.meta.c.key == "schema_version")
        ).scalar()
        if version in LEGACY:
            return DatabaseRevision(LEGACY[version], False)
        raise newer_schema(f"version {version}")
    if inspector.has_table(tables.statuses.name):
        raise SchemaError("the database has a statuses table but no pnfs-monitor schema "
                          "version: it is not a pnfs-monitor database, or not one to upgrade")
    return DatabaseRevision(None, False)


def newer_schema(revision: str) -> SchemaError:
    return SchemaError(f"the database schema is at {revision}, newer than this pnfs-monitor "
                       f"understands ({tables.HEAD}): upgrade pnfs-monitor")


def check(conn: sa.Connection) -> None:
    """Refuse a database without our schema, or at another revision than ``tables.HEAD``."""
    state = database_revision(conn)
    if state.revision is None:
        raise SchemaError("the database has no pnfs-monitor tables: run `pnfsmon db init`")
    if state.revision != tables.HEAD:
        raise SchemaError(f"the database schema is at revision {state.revision}, this "
                          f"pnfs-monitor needs {tables.HEAD}: run `pnfsmon db upgrade`")


def alembic_config(conn: sa.Connection | None = None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def upgrade(engine: sa.Engine, *, create: bool = True) -> tuple[str | None, str]:
    """Bring the database to ``tables.HEAD``; a new database is created there when
    ``create``. Safe to run again. Returns (revision before, revision after)."""
    from alembic import command

    with engine.connect().execution_options(write=True) as conn:
        if conn.dialect.name == "sqlite":
            # A batch migration copies a table and drops the old one: with foreign keys
            # on, that drop would cascade to events. (Only outside a transaction.)
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
        state = database_revision(conn)
        conn.rollback()
        if state.revision is None:
            if not create:
                raise SchemaError("the database has no pnfs-monitor tables: run "
                                  "`pnfsmon db init`")
            with conn.begin():
                tables.metadata.create_all(conn)
                conn.execute(tables.meta.insert().values(
                    key="schema_version", value=str(tables.SCHEMA_VERSION)))
            command.stamp(alembic_config(conn), tables.HEAD)
            conn.commit()
            log.debug("created schema revision %s", tables.HEAD)
            return None, tables.HEAD
        config = alembic_config(conn)
        if not state.stamped:
            command.stamp(config, state.revision)
        command.upgrade(config, tables.HEAD)
        conn.commit()
        if conn.dialect.name == "sqlite":
            conn.invalidate()  # not back to the pool with foreign keys off
        if state.revision != tables.HEAD:
            log.debug("upgraded schema from revision %s to %s", state.revision, tables.HEAD)
        return state.revision, tables.HEAD


def history() -> list[str]:
    """The revisions in ``schema/migrations/versions``, oldest first (for the tests)."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    return [s.revision for s in reversed(list(scripts.walk_revisions()))]
