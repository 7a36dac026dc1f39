"""Least privilege on real servers: one account per role (admin, crawler, worker, reader),
made from what `pnfsmon db grants` prints, in a database of its own on MariaDB and on
PostgreSQL. Every command runs under its role; the server refuses a worker's DROP, DELETE
and UPDATE of a column that is not its own; a command under too small a role fails with
one line naming the role it needs."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from pnfsmon.schema import grants
from tests.helpers import BACKENDS, SERVERS, assert_no_secret, pnfsmon, write_file

SERVER_BACKENDS = [b for b in ("mariadb", "postgresql") if b in BACKENDS]
PASSWORD = "Role-S3cret!"


def _statements(text: str) -> list[str]:
    """The statements of `db grants` output, without its comments."""
    return [line.split(";")[0] + ";" for line in text.splitlines()
            if line.strip() and not line.startswith("--")]


class Accounts:
    """A fresh database and one account per role on one server; all dropped at the end."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        tag = uuid.uuid4().hex[:8]
        self.database = f"pnfsmon_priv_{tag}"
        self.users = {role: f"pm_{role}_{tag}" for role in grants.ROLES}
        root = SERVERS[backend] + ("" if backend == "mariadb" else "postgres")
        self.root = sa.create_engine(root, isolation_level="AUTOCOMMIT")
        self.dialect = "mysql" if backend == "mariadb" else "postgresql"
        with self.root.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {self.database}")
        # As an operator does it: the admin account, which creates the tables, then the
        # others' GRANTs, which name those tables.
        self.apply("admin", self.users["admin"])
        r = pnfsmon("db", "init", env={"PNFSMON_DB": self.url("admin"),
                                       "PNFSMON_DB_PASSWORD": PASSWORD})
        assert r.returncode == 0, r.stderr
        for role in ("crawler", "worker", "reader"):
            self.apply(role, self.users[role])

    def apply(self, role: str, user: str) -> None:
        r = pnfsmon("db", "grants", "--role", role, "--user", user, "--host", "127.0.0.1",
                    "--database", self.database, "--dialect", self.dialect)
        assert r.returncode == 0, r.stderr
        # PostgreSQL grants on tables from inside their database.
        inside = (self.root if self.dialect == "mysql" else sa.create_engine(
            self.root.url.set(database=self.database), isolation_level="AUTOCOMMIT"))
        with inside.connect() as conn:
            for sql in _statements(r.stdout):
                if self.dialect == "postgresql" and sql.startswith("GRANT CONNECT"):
                    conn.exec_driver_sql(f"ALTER ROLE \"{user}\" PASSWORD '{PASSWORD}'")
                conn.exec_driver_sql(sql)
            if self.dialect == "mysql":
                conn.exec_driver_sql(
                    f"SET PASSWORD FOR '{user}'@'127.0.0.1' = PASSWORD('{PASSWORD}')")
        if inside is not self.root:
            inside.dispose()

    def url(self, role: str) -> str:
        """The role's URL, without its password (that comes from the environment)."""
        driver = "mysql+pymysql" if self.backend == "mariadb" else "postgresql+psycopg"
        port = 3306 if self.backend == "mariadb" else 5432
        return f"{driver}://{self.users[role]}@127.0.0.1:{port}/{self.database}"

    def engine(self, role: str) -> sa.Engine:
        return sa.create_engine(sa.make_url(self.url(role)).set(password=PASSWORD))

    def close(self) -> None:
        with self.root.connect() as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{self.database}' AND pid <> pg_backend_pid()")
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {self.database}")
            for user in self.users.values():
                if self.dialect == "mysql":
                    conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")
                    conn.exec_driver_sql(
                        f"DROP DATABASE IF EXISTS {self.database}{grants.STAGE_SUFFIX}")
                else:
                    conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{user}"')
        self.root.dispose()


@pytest.fixture(scope="module", params=SERVER_BACKENDS)
def accounts(request):
    made = Accounts(request.param)
    yield made
    made.close()


@pytest.fixture(scope="module")
def site(accounts, tmp_path_factory):
    """A small tree under a site section with a catalog mapping, and the CLI as each role."""
    base = tmp_path_factory.mktemp("privilege")
    tree = base / "store"
    for i in range(6):
        write_file(tree / f"d{i % 2}" / f"f{i}.dat", bytes([i]) * (100 + i))
    conf = base / "pnfsmon.conf"
    conf.write_text(f"[site S]\nnamespace = {tree}\nlfn_prefix = /store\n"
                    f"path_prefix = {tree}\ngrace = 0\n"
                    # one problem is a burst here: incidents are opened under each role
                    "[pnfsmon]\nincident_min_problems = 1\n")
    dump = base / "dump.txt"
    dump.write_text("".join(f"/store/d{i % 2}/f{i}.dat\n" for i in range(6)))

    def run(role: str, *args: str):
        env = {"PNFSMON_DB": accounts.url(role), "PNFSMON_DB_PASSWORD": PASSWORD,
               "PNFSMON_CONFIG": str(conf)}
        return pnfsmon(*args, env=env, cwd=base)

    return run, tree, dump, base


def test_every_command_runs_under_its_role(accounts, site):
    run, tree, dump, base = site
    steps = [
        ("admin", ["db", "init"], 0),
        ("crawler", ["crawl", "--site", "S", "--grace", "0"], 0),
        ("crawler", ["crawl", "--site", "S", "--grace", "0"], 0),  # a re-crawl: staging
        ("crawler", ["inventory", "load", str(dump), "--site", "S"], 0),
        ("worker", ["check", "--workers", "1", "--recheck-after", "0"], 0),
        ("crawler", ["compare", "--site", "S", "--output", str(base / "lists")], 0),
        ("crawler", ["compare", "--site", "S", "--output", str(base / "lists")], 0),
        ("crawler", ["declare", "--site", "S", "--dark"], 0),  # nothing dark for long
        ("reader", ["report", str(base / "report")], 0),
        ("reader", ["status"], 0),
        ("reader", ["status", "--nagios"], 0),
        ("reader", ["history", str(tree / "d0" / "f0.dat")], 0),
        ("admin", ["db", "prune"], 0),
        ("admin", ["db", "upgrade"], 0),
    ]
    for role, args, code in steps:
        r = run(role, *args)
        assert r.returncode == code, (role, args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        assert_no_secret(r.stdout + r.stderr, PASSWORD, f"{role} {args}")
    assert (base / "report" / "index.html").is_file()
    # A file lost (missing when it vanished), then acknowledged by a person.
    (tree / "d1" / "f5.dat").unlink()
    for role, args, code in [
        ("worker", ["check", "--workers", "1", "--recheck-after", "0"], 1),
        ("crawler", ["incident", "list"], 1),
        ("reader", ["status", "--nagios"], 2),
        ("crawler", ["incident", "dismiss", "1", "--by", "ops"], 0),
        ("crawler", ["crawl", "--site", "S", "--grace", "0", "--allow-drop"], 0),
        ("crawler", ["ack", "--all", "--site", "S"], 0),
    ]:
        r = run(role, *args)
        assert r.returncode == code, (role, args, r.stdout, r.stderr)
        assert_no_secret(r.stdout + r.stderr, PASSWORD, f"{role} {args}")
        # The worker's check opened the incident (its detection, under the worker role).
        assert "could not look for bursts" not in r.stderr
        assert role != "worker" or "incident 1 opened" in r.stderr


REFUSED = [
    ("DROP TABLE events", "worker"),
    ("DELETE FROM events", "worker"),
    ("DELETE FROM statuses", "worker"),
    ("UPDATE statuses SET path = path", "worker"),
    ("UPDATE statuses SET size = 0", "worker"),
    ("UPDATE statuses SET site = 'x'", "worker"),
    ("INSERT INTO crawls SELECT * FROM crawls", "worker"),
    ("CREATE TABLE evil (a INTEGER)", "worker"),
    ("UPDATE statuses SET status = 1", "reader"),
    ("DELETE FROM events", "reader"),
    ("DROP TABLE statuses", "crawler"),
    ("DELETE FROM statuses", "crawler"),
    ("DELETE FROM events", "crawler"),
]


def test_the_server_refuses_what_a_role_may_not_do(accounts):
    for sql, role in REFUSED:
        engine = accounts.engine(role)
        with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError) as refused:
            conn.exec_driver_sql(sql)
        code = refused.value.orig.args[0] if accounts.backend == "mariadb" else \
            refused.value.orig.sqlstate
        assert code in (1142, 1143, 1044, "42501"), (sql, role, refused.value)
        engine.dispose()
    # What a worker does write it may: its lease and verdict columns.
    engine = accounts.engine("worker")
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE statuses SET tag = NULL, status = status, "
                             "error = error WHERE 1 = 0")
    engine.dispose()


@pytest.mark.parametrize("role, args, needed", [
    ("reader", ["check", "--workers", "1"], "worker"),
    ("worker", ["crawl", "--site", "S"], "crawler"),
    ("reader", ["inventory", "load", "DUMP", "--site", "S"], "crawler"),
    ("crawler", ["db", "prune"], "admin"),
    ("reader", ["db", "prune"], "admin"),
    ("worker", ["report", "OUT"], "reader"),
])
def test_too_small_a_role_is_one_line_naming_the_role(accounts, site, role, args, needed):
    run, tree, dump, base = site
    args = [str(dump) if a == "DUMP" else str(base / "out") if a == "OUT" else a
            for a in args]
    r = run(role, *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"needs the database role {needed}" in lines[0], lines[0]
    assert PASSWORD not in r.stderr + r.stdout
