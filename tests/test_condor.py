"""HTCondor: no daemon can be installed here, so everything around the one schedd call is
tested for real: the description the bindings render, the bundle run exactly as a worker
node runs it (empty scratch directory, only the transferred files, the same arguments and
environment, python3 from a clean venv without the project) against the real MariaDB, the
user-log reader, and that the password never appears in what is submitted."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from condor import bundle, status, submit
from crawler.cli import crawl
from schema import db, migrate
from schema.config import Settings
from schema.errors import ConfigError
from schema.status import Status
from tests.conftest import DB_SECRET
from tests.helpers import assert_no_secret, flip_bit, random_bytes, verdicts, write_file

SECRET = DB_SECRET


def job_argv(arguments: str) -> list[str]:
    """Split HTCondor's new-style ``arguments`` (double-quoted, single-quoted words)."""
    assert arguments.startswith('"') and arguments.endswith('"')
    return [w.replace("''", "'") for w in re.findall(r"'((?:[^']|'')*)'", arguments[1:-1])]


def job_environment(environment: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in environment.strip('"').split())


def test_worker_description_rendered_by_the_bindings(tmp_path):
    opts = submit.JobOptions(jobs=50, request_cpus=1, request_memory_mb=512,
                             request_disk_kb=200_000, batch_name="pnfsmon-T2",
                             accounting_group="group_ops.mon",
                             requirements='(Machine =!= "pool1.example.org")',
                             check_args=["--lease", "3600", "--timeout", "500"])
    desc = submit.worker_description(tmp_path / "pnfsmon.pyz", "mysql+pymysql://mon@db/pn",
                                     tmp_path, tmp_path / "db.password", opts)
    sub = submit.render(desc)
    text = str(sub)
    assert sub["request_memory"] == "512" and sub["request_disk"] == "200000"
    assert sub["accounting_group"] == "group_ops.mon"
    assert sub["requirements"] == '(Machine =!= "pool1.example.org")'
    assert 'MY.JobBatchName = "pnfsmon-T2"' in text
    assert job_argv(sub["arguments"]) == ["check", "--workers", "1", "--lease", "3600",
                                          "--timeout", "500", "--db",
                                          "mysql+pymysql://mon@db/pn"]
    assert sub["max_retries"] == "10"
    assert sub["retry_until"] == "ExitCode =?= 0 || ExitCode =?= 1"  # 3 (transient) retries
    assert sub["on_exit_hold"] == "ExitCode =?= 2"  # bad configuration: held, with reason
    assert "configuration error" in sub["on_exit_hold_reason"]
    assert sub["transfer_input_files"] == str(tmp_path / "db.password")
    assert job_environment(sub["environment"]) == {"PNFSMON_DB_PASSWORD_FILE": "db.password"}
    assert sub["log"].endswith(submit.USER_LOG)


# Every way a site hands pnfs-monitor its password: in the URL (flag, environment, config
# file), in PNFSMON_DB_PASSWORD, or in a password file. "@" and "!" are percent-encoded
# inside a URL, so both the typed and the encoded form are looked for.
SECRET_IN_URL = "mysql+pymysql://mon:" + urllib.parse.quote(SECRET, safe="") + "@db.example.org/pn"
PASSWORD_WAYS = {
    "url in --db": (["--db", SECRET_IN_URL], {}, None),
    "url in PNFSMON_DB": ([], {"PNFSMON_DB": SECRET_IN_URL}, None),
    "url in the config file": ([], {}, f"[pnfsmon]\ndb = {SECRET_IN_URL}\n"),
    "PNFSMON_DB_PASSWORD": ([], {"PNFSMON_DB": "mysql+pymysql://mon@db.example.org/pn",
                                 "PNFSMON_DB_PASSWORD": SECRET}, None),
    "password file": ([], {"PNFSMON_DB": "mysql+pymysql://mon@db.example.org/pn"},
                      "[pnfsmon]\ndb_password_file = {pwfile}\n"),
}


def condor_env(tmp_path, way: str) -> tuple[list[str], dict[str, str]]:
    """(extra arguments, environment) that give pnfsmon the password ``way``."""
    args, extra, config = PASSWORD_WAYS[way]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")}
    env.update(extra)
    if config is not None:
        pwfile = tmp_path / "pw"
        pwfile.write_text(SECRET + "\n")
        conf = tmp_path / "pnfsmon.conf"
        conf.write_text(config.format(pwfile=pwfile))
        env["PNFSMON_CONFIG"] = str(conf)
    return args, env


@pytest.mark.parametrize("way", PASSWORD_WAYS)
def test_the_password_never_appears_in_the_submission(tmp_path, way):
    args, env = condor_env(tmp_path, way)
    r = subprocess.run([sys.executable, "-m", "pnfsmon", "condor", "submit", "--jobs", "3",
                        "--dry-run", "--workdir", str(tmp_path / "w"), *args],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert_no_secret(r.stdout + r.stderr, SECRET)
    assert "queue" in r.stdout and "would queue 3 job(s)" in r.stdout
    assert "'--db' 'mysql+pymysql://mon@db.example.org/pn'" in r.stdout
    assert "'--sweep-start'" in r.stdout  # every job works on the same sweep
    assert "db.password  (the DB password, mode 600)" in r.stdout
    assert not (tmp_path / "w").exists()  # a dry run writes nothing


def test_split_secret_moves_the_password_out_of_the_url(tmp_path):
    for text in (SECRET_IN_URL, "mysql+pymysql://mon:plain@db/pn"):
        url, password = submit.split_secret(Settings(text))
        assert password in (SECRET, "plain")
        assert_no_secret(url, password)
        assert url.startswith("mysql+pymysql://mon@")
    path = submit.write_password_file(tmp_path / "w2", password)
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_text().strip() == "plain"


def test_sqlite_is_refused_for_condor_workers():
    with pytest.raises(ConfigError, match="database server"):
        submit.split_secret(Settings("sqlite:///x.sqlite"))


def test_scheduled_crawl_description(tmp_path):
    desc = submit.crawl_description(tmp_path / "pnfsmon.pyz", "mysql+pymysql://mon@db/pn",
                                    tmp_path, None, submit.JobOptions(), "/pnfs/x/data",
                                    "T2_XX", "30 2 * * 1-5")
    sub = submit.render(desc)
    assert (sub["cron_minute"], sub["cron_hour"], sub["cron_day_of_week"]) == ("30", "2", "1-5")
    assert sub["on_exit_remove"] == "false"
    assert job_argv(sub["arguments"])[:4] == ["crawl", "/pnfs/x/data", "--site", "T2_XX"]
    with pytest.raises(ConfigError, match="5 fields"):
        submit.crawl_description(tmp_path / "x", "u", tmp_path, None, submit.JobOptions(),
                                 "/r", "s", "@daily")




def test_job_runs_on_a_bare_worker_node(tmp_path, tree, mariadb_with_password):
    url = mariadb_with_password
    settings = Settings(url, db_password=SECRET)
    engine = db.create_engine(settings)
    migrate.upgrade(engine)
    good = [write_file(tree / f"f{i}.dat", random_bytes(10_000 + i, seed=i), record=True)
            for i in range(30)]
    crawl(engine, os.fsencode(tree), "s")
    flip_bit(good[7], 77)

    # The submit side, as `pnfsmon condor submit` prepares it.
    submit_dir = tmp_path / "submit"
    pyz = bundle.build(submit_dir / "pnfsmon.pyz")
    bare_url, password = submit.split_secret(settings)
    password_file = submit.write_password_file(submit_dir, password)
    desc = submit.worker_description(pyz, bare_url, submit_dir, password_file,
                                     submit.JobOptions(check_args=["--timeout", "60"]))
    sub = submit.render(desc)
    assert SECRET not in str(sub)

    # The worker node: a clean venv (no project, no zlib-ng, no SQLAlchemy), an empty
    # scratch directory holding only the transferred files, the job's arguments and
    # environment, nothing else.
    venv = tmp_path / "node-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for transferred in (sub["executable"], sub["transfer_input_files"]):
        shutil.copy2(transferred, scratch)
    assert sorted(p.name for p in scratch.iterdir()) == ["db.password", "pnfsmon.pyz"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(scratch), "_CONDOR_SCRATCH_DIR": str(scratch),
           **job_environment(sub["environment"])}
    job = subprocess.run([str(venv / "bin" / "python3"), Path(sub["executable"]).name,
                          *job_argv(sub["arguments"])],
                         cwd=scratch, env=env, capture_output=True, text=True, timeout=300)
    assert job.returncode == 1, job.stderr  # 1: done, and problems were found
    assert "ok 29, corrupted 1" in job.stdout
    assert "Adler32 from zlib (stdlib" in job.stderr  # the node has no zlib-ng: said so
    assert SECRET not in job.stdout + job.stderr
    found = verdicts(engine)
    assert found[good[7]] == Status.CORRUPTED
    assert sum(v == Status.OK for v in found.values()) == 29
    # What a bad configuration does on the node: exit 2, which the description holds.
    bad = subprocess.run([str(venv / "bin" / "python3"), "pnfsmon.pyz", "check", "--db",
                          bare_url + "_nonexistent"], cwd=scratch, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "pnfsmon: error:" in bad.stderr.splitlines()[-1]
    assert "Traceback" not in bad.stderr
    engine.dispose()


USER_LOG = """\
000 (1234.000.000) 2026-11-22 10:00:00 Job submitted from host: <192.0.2.1:9618>
...
000 (1234.001.000) 2026-11-22 10:00:00 Job submitted from host: <192.0.2.1:9618>
...
000 (1234.002.000) 2026-11-22 10:00:00 Job submitted from host: <192.0.2.1:9618>
...
001 (1234.000.000) 2026-11-22 10:00:05 Job executing on host: <192.0.2.7:9618?addrs=192.0.2.7-9618>
...
001 (1234.002.000) 2026-11-22 10:00:06 Job executing on host: <192.0.2.8:9618?addrs=192.0.2.8-9618>
...
005 (1234.000.000) 2026-11-22 10:10:00 Job terminated.
\t(1) Normal termination (return value 1)
\t\tUsr 0 00:01:00, Sys 0 00:00:10  -  Run Remote Usage
\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Local Usage
\t\tUsr 0 00:01:00, Sys 0 00:00:10  -  Total Remote Usage
\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Total Local Usage
\t0  -  Run Bytes Sent By Job
\t0  -  Run Bytes Received By Job
\t0  -  Total Bytes Sent By Job
\t0  -  Total Bytes Received By Job
...
012 (1234.001.000) 2026-11-22 10:00:09 Job was held.
\tpnfs-monitor configuration error (exit code 2): see the job's error file
\tCode 3 Subcode 2
...
"""


def test_user_log_reader(tmp_path, engine):
    log = tmp_path / "pnfsmon-jobs.log"
    log.write_text(USER_LOG)
    jobs = status.read_user_log(log)
    assert dict(jobs.states) == {"done": 1, "held": 1, "running": 1}
    assert dict(jobs.exit_codes) == {1: 1}
    assert "configuration error" in next(iter(jobs.hold_reasons))
    with engine.connect() as conn:
        progress = status.sweep_progress(conn, 30 * 86400)
    text = status.format_status(jobs, progress)
    assert "running 1, held 1, done 1" in text and "ETA unknown" in text
    with pytest.raises(ConfigError, match="no HTCondor user log"):
        status.read_user_log(tmp_path / "missing.log")


def test_condor_status_and_bundle_commands(tmp_path, db_url):
    log = tmp_path / "jobs.log"
    log.write_text(USER_LOG)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")},
           "PNFSMON_DB": db_url}
    r = subprocess.run([sys.executable, "-m", "pnfsmon", "condor", "status", "--log",
                        str(log)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "running 1, held 1, done 1" in r.stdout and "configuration error" in r.stdout
    r = subprocess.run([sys.executable, "-m", "pnfsmon", "condor", "bundle",
                        str(tmp_path / "b.pyz")], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and (tmp_path / "b.pyz").stat().st_size > 100_000
    assert os.access(tmp_path / "b.pyz", os.X_OK)
