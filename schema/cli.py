"""Command-line plumbing shared by every package's subcommands (the ``--db`` option and how
a command gets its engine), and the ``pnfsmon db`` subcommands themselves."""

from __future__ import annotations

import argparse
import logging as _logging
import sys
import time

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from pnfsmon.schema import config, db, grants, logs, migrate, prune, tables
from pnfsmon.schema.errors import ConfigError

_log = _logging.getLogger(__name__)


def add_common_options(parser: argparse.ArgumentParser, *, top_level: bool,
                       database: bool = True) -> None:
    """Options every command takes, before or after the subcommand's name. Below the top
    level their default is SUPPRESS, so an option given before the subcommand survives.
    ``database=False`` leaves ``--db`` out, for a command that uses no configured
    database (``demo``; see ``refuse_db``)."""
    default = None if top_level else argparse.SUPPRESS
    if database:
        parser.add_argument(
            "--db", metavar="URL", default=default,
            help="database URL (default: $PNFSMON_DB, the configuration file, or "
                 f"{config.DEFAULT_DB}); better without the password: it comes from "
                 "$PNFSMON_DB_PASSWORD or a file named by $PNFSMON_DB_PASSWORD_FILE",
        )
    logging = parser.add_argument_group("logging")
    logging.add_argument("-v", "--verbose", action="store_true",
                         default=False if top_level else argparse.SUPPRESS,
                         help="also log DEBUG lines")
    logging.add_argument("-q", "--quiet", action="store_true",
                         default=False if top_level else argparse.SUPPRESS,
                         help="log only warnings and errors (no progress lines)")
    logging.add_argument("--log-file", metavar="FILE", default=default,
                         help="also append the log (with times and levels) to FILE; "
                              "- logs to stdout instead of stderr")
    logging.add_argument("--log-interval", metavar="S", type=float,
                         default=logs.DEFAULT_INTERVAL if top_level else argparse.SUPPRESS,
                         help="seconds between progress lines when not on a terminal "
                              f"(default: {logs.DEFAULT_INTERVAL:g})")


def common_options(*, database: bool = True) -> argparse.ArgumentParser:
    """A parent parser with the common options, for ``add_parser(parents=[...])``."""
    parent = argparse.ArgumentParser(add_help=False)
    add_common_options(parent, top_level=False, database=database)
    return parent


def refuse_db(args: argparse.Namespace, command: str, why: str) -> None:
    """For a command without ``--db``: one given before its name is an error, not ignored."""
    if getattr(args, "db", None) is not None:
        raise ConfigError(f"{command} takes no --db: {why}")


def add_ignored_recheck_after(parser: argparse.ArgumentParser) -> None:
    """``--recheck-after`` of ``report`` and ``condor status``: each file is due by its own
    site's recheck_after now, so the option is accepted (kept cron lines still run) and
    ignored, with a warning."""
    parser.add_argument("--recheck-after", type=float, metavar="D", help=argparse.SUPPRESS)


def ignored_recheck_after(args: argparse.Namespace) -> None:
    if getattr(args, "recheck_after", None) is not None:
        _log.warning("--recheck-after is ignored: files are due by their own site's "
                     "recheck_after (the configuration file's [site NAME] sections)")


def settings(args: argparse.Namespace) -> config.Settings:
    """The command's settings: the configuration file is read once per command, then kept
    with its arguments for every part of the command that asks."""
    if getattr(args, "_settings", None) is None:
        args._settings = config.load(getattr(args, "db", None))
    return args._settings


def engine(args: argparse.Namespace, *, check: bool = True) -> sa.Engine:
    """The checked engine for a subcommand's arguments."""
    return db.open_database(settings(args), check=check)


def _say_upgraded(eng: sa.Engine, old: str | None, new: str) -> None:
    where = eng.url.render_as_string(hide_password=True)
    if old is None:
        print(f"created schema revision {new} in {where}")
    elif old != new:
        print(f"upgraded schema from revision {old} to {new} in {where}")
    else:
        print(f"schema revision {new} is current in {where}")


def do_db_init(args: argparse.Namespace) -> int:
    """Create the tables in an empty database (on a server a DBA makes the database
    itself: see the README's Database setup; a SQLite file is created). On a database
    that has them it does what `db upgrade` does (nothing if the schema is current): safe
    to run again."""
    eng = engine(args, check=False)
    _say_upgraded(eng, *migrate.upgrade(eng))
    return 0


def do_db_upgrade(args: argparse.Namespace) -> int:
    """Upgrade the schema of a database made by an older pnfs-monitor to this version, in
    place (Alembic revisions); safe to run again. Stop the workers and crawls first."""
    eng = engine(args, check=False)
    _say_upgraded(eng, *migrate.upgrade(eng, create=False))
    return 0


def do_db_prune(args: argparse.Namespace) -> int:
    """Delete checks (events) older than a retention, keeping every file's last check and
    every check of a file that is or was a problem; and files vanished for longer than
    another retention, with their checks. In short batches: workers and crawls may run
    meanwhile. Defaults: prune_events_after and prune_vanished_after in the configuration
    file, else 365 and 90 days."""
    settings_ = settings(args)
    events_days = (settings_.events_retention if args.events_older_than is None
                   else args.events_older_than)
    vanished_days = (settings_.vanished_retention if args.vanished_older_than is None
                     else args.vanished_older_than)
    if min(events_days, vanished_days) < 0:
        raise ConfigError("--events-older-than and --vanished-older-than must not be "
                          "negative")
    eng = engine(args)
    with eng.connect() as conn:  # a refusal names the admin role (schema.outcome)
        grants.require_admin(conn)
    started = time.monotonic()
    done = prune.prune(eng, events_days=events_days, vanished_days=vanished_days,
                       keep_problem_history=not args.prune_problem_history)
    kept = ("the last check of every file" if args.prune_problem_history else
            "the last check of every file and every check of files that are or were "
            "problems")
    logs.result(f"pruned {done.events:,} checks older than {events_days:g} days (kept "
                f"{kept}) and {done.vanished:,} files vanished more than {vanished_days:g} "
                f"days ago (with their {done.vanished_events:,} checks) in "
                f"{time.monotonic() - started:.1f} s")
    return 0


#: The dialects ``db ddl`` prints: the databases pnfs-monitor runs on.
DDL_DIALECTS = ("mysql", "mariadb", "postgresql", "sqlite")


def ddl(dialect_name: str) -> str:
    """The CREATE statements for a dialect, as a DBA would apply them."""
    if dialect_name not in DDL_DIALECTS:
        raise ConfigError(f"unknown dialect {dialect_name!r}: use {', '.join(DDL_DIALECTS)}")
    dialect = sa.create_mock_engine(f"{dialect_name}://", executor=None).dialect
    out = []
    for table in tables.metadata.sorted_tables:
        out.append(str(CreateTable(table).compile(dialect=dialect)).strip() + ";")
        out.extend(
            str(CreateIndex(ix).compile(dialect=dialect)).strip() + ";"
            for ix in sorted(table.indexes, key=lambda i: i.name or "")
        )
    out.append(f"INSERT INTO {tables.meta.name} VALUES ('schema_version', "
               f"'{tables.SCHEMA_VERSION}');")
    # What `pnfsmon db upgrade` reads to know where a database hand-made from this stands.
    out.append(f"CREATE TABLE {migrate.ALEMBIC_TABLE} (version_num VARCHAR(32) NOT NULL, "
               f"CONSTRAINT {migrate.ALEMBIC_TABLE}_pkc PRIMARY KEY (version_num));")
    out.append(f"INSERT INTO {migrate.ALEMBIC_TABLE} VALUES ('{tables.HEAD}');")
    return "\n\n".join(out) + "\n"


def do_db_ddl(args: argparse.Namespace) -> int:
    """Print the schema's DDL for a dialect, for a DBA to review or apply by hand (it
    connects to no database)."""
    refuse_db(args, "db ddl", "it prints the schema for --dialect and connects to nothing")
    sys.stdout.write(ddl(args.dialect))
    return 0


def do_db_grants(args: argparse.Namespace) -> int:
    """Print the statements that create a database account with exactly one role's rights
    (admin: db init/upgrade/prune; crawler: crawl, inventory, compare; worker: check;
    reader: report, status, history, Nagios), for MariaDB/MySQL and PostgreSQL. The
    database is the one of --db unless --database names it; no password is printed or
    taken: set it yourself. Apply them again after `pnfsmon db upgrade`."""
    database = args.database
    dialects = [args.dialect] if args.dialect else []
    if database is None or not dialects:
        url = db.parse_url(settings(args).db_url)
        database = database or url.database
        if not dialects:
            backend = url.get_backend_name()
            dialects = [backend] if backend in ("mysql", "mariadb", "postgresql") else [
                "mysql", "postgresql"]
    if not database or database.endswith((".sqlite", ".db")) or "/" in database:
        raise ConfigError("name the server database with --database (or a MariaDB/"
                          "PostgreSQL URL in --db): SQLite has no accounts")
    for dialect in dialects:
        if len(dialects) > 1:
            print(f"-- {dialect}")
        print("\n".join(grants.grants(args.role, args.user, database, dialect, args.host)))
    return 0


def register(subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p_db = subparsers.add_parser("db", help="create or inspect the database schema")
    db_sub = p_db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    p_init = db_sub.add_parser("init", parents=parents, help=do_db_init.__doc__,
                               description=do_db_init.__doc__)
    p_init.set_defaults(func=do_db_init)
    p_up = db_sub.add_parser("upgrade", parents=parents, help=do_db_upgrade.__doc__,
                             description=do_db_upgrade.__doc__)
    p_up.set_defaults(func=do_db_upgrade)
    p_prune = db_sub.add_parser("prune", parents=parents, help="delete old checks and "
                                "long-vanished files", description=do_db_prune.__doc__)
    p_prune.add_argument("--events-older-than", type=float, metavar="DAYS",
                         help="retention of checks (default: prune_events_after, else "
                              f"{config.DEFAULT_EVENTS_RETENTION:g})")
    p_prune.add_argument("--vanished-older-than", type=float, metavar="DAYS",
                         help="retention of vanished files (default: prune_vanished_after, "
                              f"else {config.DEFAULT_VANISHED_RETENTION:g})")
    p_prune.add_argument("--prune-problem-history", action="store_true",
                         help="also prune old checks of files that are or were problems "
                              "(their last check is still kept)")
    p_prune.set_defaults(func=do_db_prune)
    p_grants = db_sub.add_parser("grants", parents=parents, help="print GRANTs for a role",
                                 description=do_db_grants.__doc__)
    p_grants.add_argument("--role", required=True, choices=grants.ROLES)
    p_grants.add_argument("--user", required=True, help="the account's name")
    p_grants.add_argument("--host", default="%",
                          help="MariaDB/MySQL: where the account connects from (default: "
                               "%%, anywhere; PostgreSQL decides that in pg_hba.conf)")
    p_grants.add_argument("--database", metavar="NAME",
                          help="the database (default: the one of --db)")
    p_grants.add_argument("--dialect", choices=("mysql", "mariadb", "postgresql"),
                          help="default: the backend of --db, else both")
    p_grants.set_defaults(func=do_db_grants)
    p_ddl = db_sub.add_parser("ddl", help=do_db_ddl.__doc__, description=do_db_ddl.__doc__)
    p_ddl.add_argument("--dialect", default="mysql", metavar="|".join(DDL_DIALECTS),
                       help="the database's dialect (default: mysql)")
    p_ddl.set_defaults(func=do_db_ddl)
