"""The ``pnfsmon`` command as an operator runs it: crawl → check → report on every backend,
the demo, one-line errors with meaningful exit codes, secrets kept out of output, and the
storage left exactly as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from pnfsmon.schema import db
from pnfsmon.schema.config import Settings
from tests.helpers import flip_bit, pnfsmon, random_bytes, write_file


def snapshot(root) -> dict:
    """Contents, sizes, mtimes and atimes of every file below ``root``."""
    out = {}
    for dirpath, _dirs, files in os.walk(os.fsencode(root)):
        for name in files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            fd = os.open(p, os.O_RDONLY | os.O_NOATIME)  # the snapshot must not touch atime
            try:
                data = os.read(fd, st.st_size + 1)
            finally:
                os.close(fd)
            out[p] = (data, st.st_size, st.st_mtime_ns, st.st_atime_ns)
    return out


def test_crawl_check_report_status_through_the_cli(db_url, tree, tmp_path):
    env = {"PNFSMON_DB": db_url}
    good = write_file(tree / "a" / "good.dat", random_bytes(70_000), record=True)
    bad = write_file(tree / "a" / "bad <&>\n.dat", random_bytes(70_000, seed=2), record=True)
    lost = write_file(os.path.join(os.fsencode(tree), b"b", b"lost\xff.dat"), b"lost",
                      record=True)
    for p in (good, bad, lost):  # atimes older than mtimes: relatime would update them
        st = os.stat(p)
        os.utime(p, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))

    r = pnfsmon("crawl", str(tree), "--site", "T2_XX", "--grace", "0", env=env)
    assert r.returncode == 0, r.stderr
    assert "3 files" in r.stdout and "new 3" in r.stdout

    flip_bit(bad, 5)
    os.unlink(lost)
    before = snapshot(tree)
    r = pnfsmon("check", "--workers", "2", env=env)
    assert r.returncode == 1, r.stderr  # problems found
    assert "ok 1, corrupted 1, missing 1" in r.stdout
    assert snapshot(tree) == before  # read-only: contents, sizes, mtimes and atimes

    out = tmp_path / "report"
    r = pnfsmon("report", str(out), env=env)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["corrupted"] == 1 and summary["counts"]["missing"] == 1
    assert summary["counts"]["ok"] == 1 and summary["counts"]["unchecked"] == 0
    assert (out / "corrupted.txt").read_text() == \
        "/".join([str(tree), "a", "bad%20<&>%0A.dat"]) + "\n"
    assert (out / "missing.txt").read_text().endswith("/b/lost%FF.dat\n")

    r = pnfsmon("--db", db_url, "status")
    assert r.returncode == 1 and "corrupted" in r.stdout and "T2_XX" in r.stdout


def test_demo_runs_end_to_end(tmp_path):
    r = pnfsmon("demo", str(tmp_path / "demo"))
    assert r.returncode == 0, r.stderr
    assert "second check" in r.stdout and "corrupted 2, missing 1" in r.stdout
    summary = json.loads((tmp_path / "demo" / "report" / "summary.json").read_text())
    assert summary["counts"]["corrupted"] == 2 and summary["counts"]["missing"] == 1
    assert (tmp_path / "demo" / "report" / "index.html").is_file()
    r = pnfsmon("demo", str(tmp_path / "demo"))  # refuses to overwrite
    assert r.returncode == 2 and "not empty" in r.stderr


def test_db_init_is_idempotent(db_url):
    """(Older and newer schemas: tests/test_migrations.py.)"""
    for command in ("init", "upgrade"):
        r = pnfsmon("db", command, "--db", db_url)
        assert r.returncode == 0 and "is current" in r.stdout


def test_ddl_for_a_dba():
    r = pnfsmon("db", "ddl", "--dialect", "mysql")
    assert r.returncode == 0
    assert "CREATE TABLE statuses" in r.stdout and "VARBINARY(16)" in r.stdout
    assert "CREATE INDEX ix_statuses_claim_key" in r.stdout
    assert pnfsmon("db", "ddl", "--dialect", "postgresql").stdout.count("BYTEA") >= 2
    r = pnfsmon("db", "ddl", "--dialect", "oracle9")
    assert r.returncode == 2 and r.stderr.startswith("pnfsmon: error: unknown dialect")


@pytest.mark.parametrize("args, code, message", [
    (["--db", "not a url", "status"], 2, "not a database URL"),
    (["--db", "oracle://u@h/db", "status"], 2, "unsupported database"),
    (["--db", "mysql+pymysql://root@127.0.0.1:1/x", "status"], 3, "unavailable"),
    (["crawl", "/no/such/root"], 2, "is not a directory"),
    (["status"], 2, "pnfsmon db init"),
    (["check", "--lease", "10", "--timeout", "60"], 2, "--lease longer"),
    (["crawl", "/", "--namespace", "xrootd"], 2, "needs a root://host:port//path URL"),
    (["crawl", "root://127.0.0.1:1//x", "--namespace", "pnfs"], 2, "are local mounts"),
    (["inventory", "load", "/no/dump.csv", "--site", "S"], 2, "no inventory file"),
    (["check", "--prefix", "/x", "--forever"], 2, "drop --forever"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, code, message):
    r = pnfsmon(*args, cwd=tmp_path)
    assert r.returncode == code, r.stderr
    assert message in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "pnfsmon.sqlite").exists()  # nothing created by a failed command


def test_password_comes_from_a_file_and_is_never_printed(tmp_path):
    secret = "s3cr3t-Pa55"
    pw = tmp_path / "db.password"
    pw.write_text(secret + "\n")
    pw.chmod(0o600)
    # Wrong password for root on the real MariaDB: the error must not echo it.
    env = {"PNFSMON_DB": "mysql+pymysql://root@127.0.0.1:3306/test",
           "PNFSMON_DB_PASSWORD_FILE": str(pw)}
    r = pnfsmon("status", env=env)
    assert r.returncode == 2 and "Access denied" in r.stderr
    assert secret not in r.stdout + r.stderr
    # A password inside a URL (a config file) is redacted in messages too.
    r = pnfsmon("--db", f"mysql+pymysql://root:{secret}@127.0.0.1:1/x", "status")
    assert r.returncode == 3 and secret not in r.stderr and "***" in r.stderr


def test_config_file_and_precedence(tmp_path, db_url):
    conf = tmp_path / "pnfsmon.conf"
    conf.write_text(f"[pnfsmon]\ndb = {db_url}\n")
    r = pnfsmon("status", cwd=tmp_path)  # found in the working directory
    assert r.returncode == 0, r.stderr
    r = pnfsmon("status", env={"PNFSMON_DB": "sqlite:////nonexistent/x.sqlite"}, cwd=tmp_path)
    assert r.returncode == 2 and "/nonexistent/x.sqlite" in r.stderr  # env beats the file
    r = pnfsmon("status", env={"PNFSMON_CONFIG": str(tmp_path / "missing.conf")})
    assert r.returncode == 2 and "missing.conf" in r.stderr
    conf.write_text("this is not ini\n")
    r = pnfsmon("status", cwd=tmp_path)
    assert r.returncode == 2 and "cannot read configuration" in r.stderr


def test_crawl_of_an_empty_root(engine, tree):
    """An empty root is a valid, complete crawl of zero files."""
    r = pnfsmon("crawl", str(tree),
                env={"PNFSMON_DB": engine.url.render_as_string(hide_password=False)})
    assert r.returncode == 0 and "0 files" in r.stdout
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM crawls")).scalar() == 1


def test_sigterm_stops_a_check_cleanly(tmp_path):
    """What condor_rm or systemd does: the check stops at a safe point, records what was
    checked, releases the rest (no lease left to wait for) and exits 130."""
    import signal
    import time

    import sqlalchemy as sa

    from pnfsmon.schema.tables import events, statuses
    from tests.helpers import write_file as wf

    for i in range(20_000):
        wf(tmp_path / "t" / f"d{i // 1000}" / f"f{i}", b"x" * 4096)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")}
    env["PNFSMON_DB"] = url
    for args in (["db", "init"], ["crawl", str(tmp_path / "t"), "--grace", "0"]):
        assert pnfsmon(*args, env={"PNFSMON_DB": url}).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "pnfsmon", "check", "--workers", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    engine = db.create_engine(Settings(url))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until it is really working
        with engine.connect() as conn:
            if conn.execute(sa.select(sa.func.count()).select_from(events)).scalar() > 500:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    with engine.connect() as conn:
        leased = conn.execute(sa.select(sa.func.count()).where(statuses.c.tag.is_not(None)))
        assert leased.scalar() == 0
        done = conn.execute(sa.select(sa.func.count()).where(statuses.c.status == 1)).scalar()
        n_events = conn.execute(sa.select(sa.func.count()).select_from(events)).scalar()
    assert 0 < done < 20_000  # it was stopped part-way...
    assert n_events == done  # ...and every check it made is recorded exactly once
    r = pnfsmon("check", env={"PNFSMON_DB": url})  # the next run finishes the sweep
    assert r.returncode == 0 and f"checked {20_000 - done:,} files" in r.stdout
    engine.dispose()
