"""The Chimera database as a namespace: dCache's own tables in the real PostgreSQL, filled
like the tree a FUSE-emulated Chimera mount serves, give the same rows as crawling that
mount (paths with odd bytes, sizes, mtimes, checksums, nearline; pools, which only the
database knows); checks then read through the mount; bad input is one line, a lost
connection loses nothing; on every backend for pnfs-monitor's own database."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psycopg
import pytest
import sqlalchemy as sa

from pnfsmon.crawler.chimera import ChimeraNamespace
from pnfsmon.crawler.chimera_db import ChimeraDbNamespace
from pnfsmon.crawler.crawl import crawl
from pnfsmon.schema.lease import Lease
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import crawls, statuses
from pnfsmon.tester.readers import make_reader
from pnfsmon.tester.worker import CheckOptions, run
from tests.helpers import assert_no_secret, pnfsmon, random_bytes, verdicts, write_file

NAMES = [b"plain.root", b"with space.root", b"non-utf8-\xff\xfe.root", b"tab\there.root"]


@pytest.fixture
def chimera():
    from chimera_database import ChimeraDatabase

    try:
        database = ChimeraDatabase()
    except psycopg.OperationalError as err:
        pytest.skip(f"no PostgreSQL for a Chimera database: {err}")
    yield database
    database.drop()


def backing_tree(root) -> None:
    base = os.fsencode(root)
    for i, name in enumerate(NAMES * 3):
        path = os.path.join(base, b"data", b"run%d" % (i % 3), name)
        write_file(path, random_bytes(1000 + i, i))
        os.utime(path, ns=(10**18, 1_700_000_000_123_456_000 + i * 1000))  # microseconds
    os.makedirs(os.path.join(base, b"data", b"empty"))
    os.symlink(b"run0", os.path.join(base, b"data", b"link"))


def rows(engine, site: str) -> dict[bytes, tuple]:
    with engine.connect() as conn:
        return {bytes(r.path): (r.size, r.mtime_ns, r.recorded_adler32, r.recorded_from,
                                r.status, r.pool)
                for r in conn.execute(sa.select(statuses).where(statuses.c.site == site))}


def last_crawl(engine, site: str):
    with engine.connect() as conn:
        return conn.execute(sa.select(crawls).where(crawls.c.site == site)
                            .order_by(crawls.c.id.desc())).first()


def test_the_database_lists_what_the_mount_lists(engine, tmp_path, dcache, chimera):
    backing = tmp_path / "backing"
    backing_tree(backing)
    wrong, tape, lost = (b"data/run1/" + NAMES[1], b"data/run2/" + NAMES[2],
                         b"data/run0/" + NAMES[3])
    mount = dcache(backing, overrides={wrong: {"checksums": b"ADLER32:0badc0de\n"},
                                       tape: {"locality": b"NEARLINE\n"}})
    root = os.fsencode(mount.root)
    chimera.add_tree(backing, root, checksums={wrong: "badc0de"}, tape_only={tape},
                     pools={b"data/run0/" + NAMES[0]: ["pool_b", "pool_a"]})

    via_mount, _ = crawl(engine, ChimeraNamespace(root), "mount")
    via_db, _ = crawl(engine, ChimeraDbNamespace(root, chimera.url), "db")
    for counter in ("files", "directories", "empty_directories", "skipped", "bytes"):
        assert getattr(via_db, counter) == getattr(via_mount, counter), counter
    assert via_db.files == 12 and via_db.empty_directories == 1 and via_db.skipped == 1
    from_mount, from_db = rows(engine, "mount"), rows(engine, "db")
    assert {p: r[:5] for p, r in from_db.items()} == {p: r[:5] for p, r in from_mount.items()}
    # Pools: the mount has no dot-command for them; the database has t_locationinfo.
    assert from_db[os.path.join(root, b"data/run0/" + NAMES[0])][5] == "pool_a pool_b"
    assert from_db[os.path.join(root, tape)][4] == Status.NEARLINE
    assert {r[5] for p, r in from_db.items() if not p.endswith(tape)} >= {"pool_a"}

    # Checks read through the mount: the wrong checksum and a lost file are found.
    os.unlink(os.path.join(os.fsencode(backing), lost))
    run(Lease(engine, lease_seconds=60), make_reader("auto", 10),
        CheckOptions(timeout=10, recheck_after=0, site="db"))
    got = {p: s for p, s in verdicts(engine).items()}
    db_rows = rows(engine, "db")
    assert got[os.path.join(root, wrong)] == Status.CORRUPTED
    assert got[os.path.join(root, lost)] == Status.MISSING
    assert got[os.path.join(root, tape)] == Status.NEARLINE
    assert sum(r[4] == Status.OK for r in db_rows.values()) == 9


def test_a_read_only_role_with_a_password_file(db_url, engine, tmp_path, chimera):
    backing = tmp_path / "backing"
    backing_tree(backing)
    chimera.add_tree(backing, b"/pnfs/example.org/data")
    secret = "Ch1mera-S3cret!"
    role = f"monitor_{chimera.name}"
    with chimera.connect() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{secret}'")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    pwfile = tmp_path / "chimera.password"
    pwfile.write_text(secret + "\n")
    pwfile.chmod(0o600)
    url = chimera.url.replace("postgres@", f"{role}@")
    env = {"PNFSMON_DB": db_url, "PNFSMON_CHIMERA_DB_PASSWORD_FILE": str(pwfile)}
    try:
        r = pnfsmon("crawl", "/pnfs/example.org/data", "--namespace", "chimera-db",
                    "--chimera-db", url, "--site", "T1", "--log-file",
                    str(tmp_path / "log"), env=env)
        assert r.returncode == 0, r.stderr
        assert "12 files" in r.stdout and "new 12" in r.stdout
        assert_no_secret(r.stdout + r.stderr + (tmp_path / "log").read_text(), secret)
        # The role can only read; so does the crawl (a write would have failed the run).
        dsn = chimera.dsn.replace("user=postgres", f"user={role}") + f" password={secret}"
        with pytest.raises(psycopg.errors.InsufficientPrivilege), psycopg.connect(dsn) as conn:
            conn.execute("DELETE FROM t_locationinfo")
    finally:
        with chimera.connect() as conn:
            conn.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
            conn.execute(f"DROP ROLE {role}")


def test_bad_chimera_input_is_one_line(db_url, chimera):
    base = chimera.url.rsplit("/", 1)[0]
    cases = [  # (ROOT, --chimera-db, exit code, message)
        ("/pnfs", "not a url", 2, "not a Chimera database URL"),
        ("/pnfs", "mysql+pymysql://root@127.0.0.1/x", 2, "is PostgreSQL"),
        ("/pnfs", chimera.url.replace("postgres@", "nobody_here@"), 2, "nobody_here"),
        ("/pnfs", f"{base}/postgres", 2, "is not a Chimera database: no t_inodes"),
        ("/no/such/dir", chimera.url, 2, "is not in the Chimera namespace"),
        ("relative/dir", chimera.url, 2, "must be an absolute path"),
        ("/pnfs", "postgresql://postgres@127.0.0.1:1/chimera", 3, "unavailable"),
        ("/pnfs", None, 2, "needs the database"),
    ]
    for root, url, code, message in cases:
        extra = ["--chimera-db", url] if url else []
        r = pnfsmon("crawl", root, "--namespace", "chimera-db", *extra,
                    env={"PNFSMON_DB": db_url})
        assert r.returncode == code and message in r.stderr, (root, url, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_a_connection_lost_mid_listing_marks_nothing_vanished(db_url, engine, tmp_path,
                                                               chimera):
    backing = tmp_path / "backing"
    for i in range(20_000):
        write_file(backing / f"d{i // 1000}" / f"f{i}", b"")
    chimera.add_tree(backing, b"/pnfs/big")
    crawl(engine, ChimeraDbNamespace(b"/pnfs/big", chimera.url), "s")
    with chimera.connect() as conn:  # 2,000 files deleted: a complete crawl would vanish them
        conn.execute("DELETE FROM t_dirs d USING t_inodes i WHERE i.inumber = d.ichild "
                     "AND i.itype = 32768 AND d.iname LIKE 'f1___'")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")}
    env["PNFSMON_DB"] = db_url
    killed = 0
    deadline = time.monotonic() + 60
    # The listing's query waits on a lock held here until its connection is cut: however
    # slow or fast the machine, it is cut mid-listing, never after it ended.
    with psycopg.connect(chimera.dsn) as locker, psycopg.connect(
            chimera.dsn.replace(f"dbname={chimera.name}", "dbname=postgres"),
            autocommit=True) as admin:
        locker.execute("LOCK TABLE t_locationinfo IN ACCESS EXCLUSIVE MODE")
        proc = subprocess.Popen([sys.executable, "-m", "pnfsmon", "crawl", "/pnfs/big",
                                 "--namespace", "chimera-db", "--chimera-db", chimera.url,
                                 "--site", "s"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        while not killed and proc.poll() is None and time.monotonic() < deadline:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                f"datname = '{chimera.name}' AND query LIKE '%%t_locationinfo%%' "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()").fetchone()[0]
            time.sleep(0.05)
        locker.rollback()
    out, err = proc.communicate(timeout=60)
    assert killed, "the listing ended before it could be cut"
    assert proc.returncode == 3, out + err
    assert "Chimera database" in err and "nothing was marked vanished" in err
    assert err.count("\n") == 1
    assert Status.VANISHED not in set(verdicts(engine).values())
    dead = last_crawl(engine, "s")
    assert dead.finished is None and not dead.complete
