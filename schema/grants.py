"""Least privilege: the four database roles of pnfs-monitor, what each may do to which table,
and the GRANT statements that give exactly that (``pnfsmon db grants``).

- admin: ``db init``, ``db upgrade``, ``db prune`` (owns the schema; DDL and DELETE);
- crawler: ``crawl``, ``inventory load``, ``compare`` (and its staging tables), ``ack``,
  ``declare``, ``incident``;
- worker: ``check``: claim, renew, record, release, open incidents; no DDL, no DELETE, and
  UPDATE only of the ``statuses`` columns a verdict or a lease writes;
- reader: ``report``, ``status``, ``history``, Nagios: SELECT only.

The table below is the one statement of these rights: the GRANTs are rendered from it, the
CLI names the role a refused command needs from it, and the tests log in as each role."""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa

from pnfsmon.schema import tables
from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.migrate import ALEMBIC_TABLE

ROLES = ("admin", "crawler", "worker", "reader")
STAGE_SUFFIX = "_stage"  # MariaDB/MySQL: the crawls' staging tables' database, <db>_stage

#: The columns of ``statuses`` a worker writes: its lease (tag, tag_expiry, claim_key) and
#: its verdict. Never the file's identity (site, path, size, mtime, pool, crawl_gen).
WORKER_STATUS_COLUMNS = (
    "tag", "tag_expiry", "claim_key", "status", "computed_adler32", "recorded_adler32",
    "recorded_from", "reference", "checked", "worker_node", "source_node", "bytes_read", "error",
    "problem_seen", "confirm_due", "confirm_from",
)

_ALL_TABLES = tuple(t.name for t in tables.metadata.sorted_tables) + (ALEMBIC_TABLE,)


@dataclass(frozen=True)
class Right:
    """Privileges on one table; ``update_columns`` limits UPDATE to those columns."""

    table: str
    privileges: tuple[str, ...]
    update_columns: tuple[str, ...] = ()


def _rights(role: str) -> list[Right]:
    reads = [Right(t, ("SELECT",)) for t in _ALL_TABLES]
    if role == "admin":  # owns the schema: rendered as ownership, not table by table
        return [Right(t, ("ALL",)) for t in _ALL_TABLES]
    if role == "reader":
        return reads
    if role == "worker":
        return [
            Right(tables.meta.name, ("SELECT",)), Right(ALEMBIC_TABLE, ("SELECT",)),
            Right(tables.crawls.name, ("SELECT",)),
            Right(tables.statuses.name, ("SELECT", "UPDATE"), WORKER_STATUS_COLUMNS),
            Right(tables.events.name, ("SELECT", "INSERT")),
            Right(tables.status_counts.name, ("SELECT", "INSERT")),
            Right(tables.check_ages.name, ("SELECT", "INSERT")),
            # each site's period: read under a shared lock when recording (PostgreSQL asks
            # UPDATE rights for it), set by `check` from the configuration file
            Right(tables.site_schedule.name, ("SELECT", "INSERT", "UPDATE")),
            # incident detection after a check run: opens incidents, never decides them
            Right(tables.incidents.name, ("SELECT", "INSERT")),
            Right(tables.incident_files.name, ("SELECT", "INSERT")),
        ]
    if role == "crawler":
        write = {
            tables.crawls.name: ("INSERT", "UPDATE"),
            tables.statuses.name: ("INSERT", "UPDATE"),  # vanished files are marked, kept
            tables.events.name: (),
            # the ledger's fold replaces rows by their sums, under a lock on pnfsmon_meta
            # (PostgreSQL's SELECT ... FOR UPDATE asks for UPDATE rights on the table)
            tables.status_counts.name: ("INSERT", "DELETE"),
            tables.check_ages.name: ("INSERT", "DELETE"),  # the same, for the age ledger
            tables.meta.name: ("UPDATE",),
            tables.inventory_loads.name: ("INSERT", "UPDATE", "DELETE"),
            tables.inventory.name: ("INSERT", "DELETE"),
            tables.compares.name: ("INSERT", "UPDATE"),
            tables.discrepancies.name: ("INSERT", "UPDATE", "DELETE"),
            tables.acknowledgements.name: ("INSERT",),  # `pnfsmon ack`: kept for ever
            tables.declarations.name: ("INSERT",),  # pnfsmon declare
            tables.site_schedule.name: ("INSERT", "UPDATE"),  # crawl: each site's period
            # detection before declare; `pnfsmon incident release|dismiss`
            tables.incidents.name: ("INSERT", "UPDATE"),
            tables.incident_files.name: ("INSERT",),
            tables.quarantines.name: ("INSERT",),  # pnfsmon declare --dark
            # each complete crawl replaces what it listed of the directory state; a merge
            # forgets the digests of the directories whose rows it writes
            tables.crawl_directories.name: ("INSERT", "UPDATE", "DELETE"),
        }
        return [Right(t, ("SELECT",) + write.get(t, ())) for t in _ALL_TABLES]
    raise ConfigError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")


#: The role each command needs (the CLI names it when the database refuses one).
COMMAND_ROLES = {
    "db init": "admin", "db upgrade": "admin", "db prune": "admin",
    "crawl": "crawler", "inventory load": "crawler", "compare": "crawler", "ack": "crawler",
    "declare": "crawler", "incident": "crawler",
    "check": "worker",
    "report": "reader", "status": "reader", "history": "reader",
}

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,80}")
_HOST = re.compile(r"[A-Za-z0-9_.%:\-]{1,255}")


def _checked(value: str, pattern: re.Pattern, what: str) -> str:
    if not pattern.fullmatch(value):
        raise ConfigError(f"{what} {value!r} is not a plain name (letters, digits, . _ -)")
    return value


def grants(role: str, user: str, database: str, dialect: str, host: str = "%") -> list[str]:
    """The statements that give ``user`` exactly ``role``'s rights on ``database``."""
    _checked(user, _NAME, "user")
    _checked(database, _NAME, "database")
    _checked(host, _HOST, "host")
    rights = _rights(role)
    if dialect in ("mysql", "mariadb"):
        return _mysql(role, rights, user, database, host)
    if dialect == "postgresql":
        return _postgresql(role, rights, user, database)
    raise ConfigError(f"no GRANTs for {dialect!r}: use mysql, mariadb or postgresql")


def _mysql(role: str, rights: list[Right], user: str, database: str, host: str) -> list[str]:
    who = f"'{user}'@'{host}'"
    stage = f"`{database}{STAGE_SUFFIX}`"
    out = [f"CREATE USER IF NOT EXISTS {who};  -- then: SET PASSWORD FOR {who} = PASSWORD(...)"]
    if role == "admin":
        return out + [f"GRANT ALL PRIVILEGES ON `{database}`.* TO {who};",
                      f"GRANT ALL PRIVILEGES ON {stage}.* TO {who};"]
    for right in rights:
        privileges = [p if p != "UPDATE" or not right.update_columns
                      else f"UPDATE ({', '.join(right.update_columns)})"
                      for p in right.privileges]
        out.append(f"GRANT {', '.join(privileges)} ON `{database}`.`{right.table}` TO {who};")
    if role == "crawler":
        # Its staging tables, in a database of their own: DROP there cannot reach ours.
        out.append("GRANT CREATE, DROP, INDEX, SELECT, INSERT, UPDATE, DELETE "
                   f"ON {stage}.* TO {who};")
    return out


def _postgresql(role: str, rights: list[Right], user: str, database: str) -> list[str]:
    who = f'"{user}"'
    out = [f"CREATE ROLE {who} LOGIN;  -- then: \\password {user}",
           f'GRANT CONNECT ON DATABASE "{database}" TO {who};']
    if role == "admin":
        # The owner of the database owns its public schema (PostgreSQL 15+), so it may
        # create the tables and drop anything in it, the crawler's staging tables too.
        return out + [f'ALTER DATABASE "{database}" OWNER TO {who};',
                      f"GRANT ALL ON SCHEMA public TO {who};"]
    # CREATE only for the crawler's staging tables: only a table's owner may drop it, so
    # the crawler can drop its own tables and none of the monitor's.
    out.append(f"GRANT USAGE{', CREATE' if role == 'crawler' else ''} ON SCHEMA public "
               f"TO {who};")
    for right in rights:
        privileges = [p if p != "UPDATE" or not right.update_columns
                      else f"UPDATE ({', '.join(right.update_columns)})"
                      for p in right.privileges]
        out.append(f"GRANT {', '.join(privileges)} ON {right.table} TO {who};")
        if "INSERT" in right.privileges and _sequence(right.table):
            out.append(f"GRANT USAGE ON SEQUENCE {_sequence(right.table)} TO {who};")
    return out


def _sequence(table: str) -> str | None:
    """The sequence behind a table's autoincrement key (PostgreSQL SERIAL naming)."""
    found = tables.metadata.tables.get(table)
    if found is None:
        return None
    key = found.autoincrement_column
    return None if key is None else f"{table}_{key.name}_seq"


def require_admin(conn: sa.Connection) -> None:
    """Refuse at once, before any work, an account that could not finish an admin command
    (a prune that found nothing old would otherwise pass, and fail on the day it has work).
    Deletes nothing: the statements match no row, and are rolled back."""
    with conn.begin() as transaction:
        for table in (tables.events, tables.statuses):
            conn.execute(table.delete().where(sa.false()))
        transaction.rollback()


def refused_message(command: str | None, detail: str) -> str:
    """One line for a command the database refused: which role the command needs."""
    role = COMMAND_ROLES.get(command)
    need = (f"`pnfsmon {command}` needs the database role {role} "
            f"(`pnfsmon db grants --role {role} --user ...` prints its GRANTs)" if role else
            "`pnfsmon db grants` prints what each role may do")
    return f"the database refused it ({detail}): {need}"
