"""HTCondor: no daemon can be installed here, so everything around the one schedd call is
tested for real: the description the bindings render, the bundle run exactly as a worker
node runs it (empty scratch directory, only the transferred files, the same arguments and
environment, python3 from a clean venv without the project) against the real MariaDB, the
user-log reader, and that the password never appears in what is submitted."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import htcondor2
import pytest

from pnfsmon.condor import bundle, password, status, submit
from pnfsmon.condor import dag as dag_module
from pnfsmon.crawler.crawl import crawl
from pnfsmon.crawler.namespaces import open_namespace
from pnfsmon.schema import db, migrate
from pnfsmon.schema.config import Settings
from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.status import Status
from tests.helpers import (
    DB_SECRET,
    assert_no_secret,
    flip_bit,
    pnfsmon,
    random_bytes,
    verdicts,
    write_file,
)

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
                                          "--timeout", "500", "--log-file", "-", "--db",
                                          "mysql+pymysql://mon@db/pn"]
    assert sub["max_retries"] == "10"
    assert sub["retry_until"] == "ExitCode =?= 0 || ExitCode =?= 1"  # only 0 and 1 end it
    # Every other end is held with a reason (test_exit_codes evaluates them for each code).
    assert "configuration error" in sub["on_exit_hold_reason"]
    assert "--python PATH" in sub["on_exit_hold_reason"]
    assert "--container-image IMAGE" in sub["on_exit_hold_reason"]
    assert sub["transfer_input_files"] == str(tmp_path / "db.password")
    assert job_environment(sub["environment"]) == {"PNFSMON_DB_PASSWORD_FILE": "db.password"}
    assert sub["encrypt_input_files"] == str(tmp_path / "db.password")
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
        pwfile.chmod(0o600)
        conf = tmp_path / "pnfsmon.conf"
        conf.write_text(config.format(pwfile=pwfile))
        env["PNFSMON_CONFIG"] = str(conf)
    return args, env


@pytest.mark.parametrize("way", PASSWORD_WAYS)
def test_the_password_never_appears_in_the_submission(tmp_path, way):
    args, env = condor_env(tmp_path, way)
    r = pnfsmon("condor", "submit", "--jobs", "3", "--dry-run", "--workdir",
                str(tmp_path / "w"), *args, env=env)
    assert r.returncode == 0, r.stderr
    assert_no_secret(r.stdout + r.stderr, SECRET)
    assert "queue" in r.stdout and "would queue 3 job(s)" in r.stdout
    assert "'--db' 'mysql+pymysql://mon@db.example.org/pn'" in r.stdout
    assert "--sweep-start" not in r.stdout  # each run sweeps from its own start
    sent = expected_password_file(tmp_path, way, tmp_path / "w")
    assert f"{sent}  (the DB password, mode 600)" in r.stdout
    assert not (tmp_path / "w").exists()  # a dry run writes nothing
    assert not password.private_dir().exists()


def expected_password_file(tmp_path: Path, way: str, workdir: Path) -> Path:
    """The operator's own file, referenced; else a file of the private directory."""
    if way == "password file":
        return tmp_path / "pw"
    return password.private_file(workdir, "db")


def test_the_jobs_account_moves_the_password_out_of_the_url(tmp_path):
    for text in (SECRET_IN_URL, "mysql+pymysql://mon:plain@db/pn"):
        account = password.submit_host_account(Settings(text), tmp_path / "w2")
        assert account.password in (SECRET, "plain")
        assert_no_secret(account.url, account.password)
        assert account.url.startswith("mysql+pymysql://mon@")
    path = account.write()
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_text().strip() == "plain"


def test_sqlite_is_refused_for_condor_workers(tmp_path):
    with pytest.raises(ConfigError, match="database server"):
        password.submit_host_account(Settings("sqlite:///x.sqlite"), tmp_path)


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




def run_as_worker_node(sub, tmp_path, python: str, *extra_argv: str, name: str = "node",
                       timeout: float = 300, prefix: list[str] = ()
                       ) -> subprocess.CompletedProcess:
    """Run a job as an HTCondor worker node would: an empty scratch directory holding only
    the transferred files, the job's arguments and environment, nothing else; ``python``
    is the node's interpreter (the bundle's ``#!/usr/bin/env python3`` finds it first on
    PATH), unless the description names its own (``--python``); ``prefix`` wraps the
    command (``faketime``)."""
    scratch = tmp_path / f"scratch-{name}"
    scratch.mkdir()
    transferred = [p for p in sub.get("transfer_input_files", "").split(",") if p]
    if sub.get("transfer_executable", "true") != "false":
        transferred.append(sub["executable"])
    for path in transferred:
        shutil.copy2(path, scratch)
    env = {"PATH": f"{Path(python).parent}:/usr/bin:/bin", "HOME": str(scratch),
           "_CONDOR_SCRATCH_DIR": str(scratch)}
    if "environment" in sub:
        env.update(job_environment(sub["environment"]))
    argv = job_argv(sub["arguments"])
    command = ([sub["executable"], *argv] if sub.get("transfer_executable") == "false"
               else [python, Path(sub["executable"]).name, *argv])
    return subprocess.run([*prefix, *command, *extra_argv], cwd=scratch, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def node_python(tmp_path_factory) -> str:
    """python3 of a clean venv: no project, no zlib-ng, no SQLAlchemy, no XRootD."""
    venv = tmp_path_factory.mktemp("node") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return str(venv / "bin" / "python3")


def test_job_runs_on_a_bare_worker_node(tmp_path, tree, mariadb_with_password, node_python):
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
    account = password.submit_host_account(settings, submit_dir)
    desc = submit.worker_description(pyz, account.url, submit_dir, account.write(),
                                     submit.JobOptions(check_args=["--timeout", "60"]))
    sub = submit.render(desc)
    assert_no_secret(str(sub), SECRET, "submit description")

    job = run_as_worker_node(sub, tmp_path, node_python)
    assert job.returncode == 1, job.stdout + job.stderr  # 1: done, and problems were found
    assert "ok 29, corrupted 1" in job.stdout
    assert "Adler32 from zlib (stdlib" in job.stdout  # no zlib-ng on the node: said so
    assert f"WARNING corrupted {good[7].decode()}: adler32" in job.stdout  # as it is found
    assert_no_secret(job.stdout + job.stderr, SECRET, "job's output")
    found = verdicts(engine)
    assert found[good[7]] == Status.CORRUPTED
    assert sum(v == Status.OK for v in found.values()) == 29
    # What a bad configuration does on the node: exit 2, which the description holds.
    bad = subprocess.run([node_python, "pnfsmon.pyz", "check", "--db",
                          account.url + "_nonexistent"], cwd=tmp_path / "scratch-node",
                         env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "pnfsmon: error:" in bad.stderr.splitlines()[-1]
    assert "Traceback" not in bad.stderr
    engine.dispose()


def test_a_node_without_xrootd_bindings_reads_with_xrdcp(tmp_path, xrootd, node_python,
                                                         mariadb_with_password):
    """A worker node with the bundle and no XRootD Python bindings, against the real
    XRootD server: it reads root:// files through xrdcp and says so; its stdout shows
    progress lines and every problem as it is found."""
    top = xrootd.data / "condor-node"
    files = {f"d{i % 3}/f{i}.root": random_bytes(1_500_000 + i, i) for i in range(24)}
    for name, data in files.items():  # with the checksum xattr the server keeps as cache
        write_file(top / name, data, record=True)
    xrootd.give(top)
    settings = Settings(mariadb_with_password, db_password=SECRET)
    engine = db.create_engine(settings)
    migrate.upgrade(engine)
    url = f"{xrootd.url}//condor-node"
    crawl(engine, open_namespace(url), "s")  # the server answers from its checksum cache
    flip_bit(top / "d1" / "f1.root", 1000)
    (top / "d2" / "f2.root").unlink()
    try:
        pyz = bundle.build(tmp_path / "submit" / "pnfsmon.pyz")
        account = password.submit_host_account(settings, tmp_path / "submit")
        sub = submit.render(submit.worker_description(
            pyz, account.url, tmp_path / "submit", account.write(),
            submit.JobOptions(check_args=["--timeout", "60", "--log-interval", "0.2",
                                          "--max-rate", "40"])))  # about 1 s: progress
        job = run_as_worker_node(sub, tmp_path, node_python)
        assert job.returncode == 1, job.stdout + job.stderr
        out = job.stdout
        assert "no XRootD Python bindings here: reading root:// files with xrdcp" in out
        assert "ok 22, corrupted 1, missing 1" in out
        assert re.search(r"INFO check: [\d,]+ files, [\d,]+/s; .* read, .*, \d+ problems", out)
        assert f"WARNING corrupted {url}/d1/f1.root: adler32" in out
        assert f"WARNING missing {url}/d2/f2.root" in out
        assert_no_secret(out + job.stderr, SECRET, "job's output")
    finally:
        engine.dispose()


OLD_PYTHON = "/root/.pyenv/versions/3.9.18/bin/python3"  # as on EL9 worker nodes


@pytest.mark.skipif(not os.path.exists(OLD_PYTHON), reason="no python 3.9 here")
def test_a_node_python_too_old_is_held_with_the_way_out(tmp_path, mariadb_with_password):
    """EL9's python3 is 3.9: the bundle says so, exits 5, and the description holds the
    job with a reason naming --python and --container-image. With --python, the bundle
    travels as an input and the named interpreter runs it."""
    pyz = bundle.build(tmp_path / "submit" / "pnfsmon.pyz")
    desc = submit.worker_description(pyz, mariadb_with_password, tmp_path / "submit", None,
                                     submit.JobOptions(python=OLD_PYTHON))
    sub = submit.render(desc)
    assert sub["executable"] == OLD_PYTHON and sub["transfer_executable"] == "false"
    assert sub["transfer_input_files"] == str(pyz)
    assert job_argv(sub["arguments"])[:2] == ["pnfsmon.pyz", "check"]
    job = run_as_worker_node(sub, tmp_path, OLD_PYTHON)
    assert job.returncode == submit.EXIT_OLD_PYTHON
    assert "needs python3 >= 3.10" in job.stderr and "3.9" in job.stderr
    assert "--python PATH" in job.stderr and "--container-image IMAGE" in job.stderr
    assert "ExitCode =?= 5" in sub["on_exit_hold_reason"]
    image = submit.render(submit.worker_description(
        pyz, mariadb_with_password, tmp_path, None,
        submit.JobOptions(container_image="/cvmfs/unpacked.cern.ch/el9-python3.11")))
    assert (image["universe"], image["container_image"]) == (
        "container", "/cvmfs/unpacked.cern.ch/el9-python3.11")


@pytest.mark.parametrize("way", PASSWORD_WAYS)
def test_submit_writes_files_condor_submit_takes_from_anywhere(tmp_path, way):
    args, env = condor_env(tmp_path, way)
    out = tmp_path / "jobs"
    r = pnfsmon("condor", "submit", "--jobs", "7", "--write", str(out), "--timeout", "100",
                *args, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (out / submit.WORKERS_SUB).read_text()
    assert_no_secret(text + r.stdout + r.stderr, SECRET)
    for path in out.rglob("*"):  # the bundle too: no file of DIR holds the password
        if path.is_file():
            assert_no_secret(path.read_bytes().decode("latin-1"), SECRET, str(path))
    sent = expected_password_file(tmp_path, way, out)
    assert sent.read_text().strip() == SECRET and sent.stat().st_mode & 0o777 == 0o600
    assert str(sent) in r.stdout  # the output says where the password is
    assert ("referenced, not copied" if way == "password file" else "outside DIR") in r.stdout
    queues = [line for line in text.splitlines() if line.split()[:1] == ["queue"]]
    assert queues == ["queue 7"]  # --jobs 7, and nothing else queued
    sub = htcondor2.Submit(text)  # the bindings parse it as condor_submit would
    for key in ("executable", "log", "output", "error"):
        assert Path(sub[key]).is_absolute() and str(out) in sub[key], key
    assert sub["transfer_input_files"] == sub["encrypt_input_files"] == str(sent)
    assert job_environment(sub["environment"]) == {"PNFSMON_DB_PASSWORD_FILE": sent.name}
    assert sorted(p.name for p in out.iterdir()) == ["logs", "pnfsmon-workers.sub",
                                                      "pnfsmon.pyz"]
    assert job_argv(sub["arguments"])[-2:] == ["--db", "mysql+pymysql://mon@db.example.org/pn"]


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
    env = {"PNFSMON_DB": db_url}
    r = pnfsmon("condor", "status", "--log", str(log), env=env)
    assert r.returncode == 0, r.stderr
    assert "running 1, held 1, done 1" in r.stdout and "configuration error" in r.stdout
    r = pnfsmon("condor", "bundle", str(tmp_path / "b.pyz"), env=env)
    assert r.returncode == 0 and (tmp_path / "b.pyz").stat().st_size > 100_000
    assert os.access(tmp_path / "b.pyz", os.X_OK)


def read_dag(path: Path) -> dict:
    """The nodes (name → submit file), edges, retries, POST scripts and final node of a
    DAG file, as DAGMan reads them."""
    dag = {"jobs": {}, "children": {}, "retries": {}, "post": {}, "final": None}
    for line in path.read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "JOB":
            dag["jobs"][words[1]] = path.parent / words[2]
        elif words[0] == "PARENT":
            at = words.index("CHILD")
            for parent in words[1:at]:
                dag["children"].setdefault(parent, []).extend(words[at + 1:])
        elif words[0] == "RETRY":
            dag["retries"][words[1]] = int(words[2])
        elif words[0] == "SCRIPT" and words[1] == "POST":
            dag["post"][words[2]] = words[3:]
        elif words[0] == "FINAL":
            dag["final"] = (words[1], path.parent / words[2])
    return dag


def test_the_nightly_dag_runs_in_order_and_a_failed_crawl_stops_only_its_branch(
        tmp_path, mariadb_with_password, node_python):
    tree = tmp_path / "site-a"
    files = [write_file(tree / "store" / f"d{i % 2}" / f"f{i}.root",
                        random_bytes(5000 + i, i), record=True) for i in range(12)]
    flip_bit(files[4], 10)
    conf = tmp_path / "pnfsmon.conf"
    conf.write_text(f"[site T2_A]\nnamespace = {tree}\nlfn_prefix = /store\n"
                    f"path_prefix = {tree}/store\ngrace = 0\n"
                    "[site T2_B]\nnamespace = /no/such/storage\n")
    dump = tmp_path / "dump.txt"
    dump.write_text("".join(f"/store/d{i % 2}/f{i}.root\n" for i in range(12)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")}
    env.update(PNFSMON_CONFIG=str(conf), PNFSMON_DB=mariadb_with_password,
               PNFSMON_DB_PASSWORD=SECRET)
    out = tmp_path / "nightly"

    for args in (["db", "init"], ["inventory", "load", "--site", "T2_A", str(dump)],
                 ["condor", "dag", "--write", str(out), "--jobs", "2", "--cron", "0 2 * * *",
                  "--timeout", "60"]):
        r = pnfsmon(*args, env=env)
        assert r.returncode == 0, (args, r.stderr)
    assert "2 sites: T2_A, T2_B" in r.stdout

    # Read back: the DAG, and every node's description through the bindings.
    dag = read_dag(out / dag_module.DAG_FILE)
    assert dag["children"]["T2_A-crawl:0"] == ["T2_A-check:0", "T2_A-check:1"]
    assert dag["children"]["T2_A-check:0"] == ["T2_A-compare:0"]
    assert dag["children"]["T2_B-crawl:0"] == ["T2_B-check:0", "T2_B-check:1"]
    assert "T2_B-compare:0" not in dag["jobs"]  # no inventory for B
    assert dag["retries"]["T2_A-check:0"] == 2 and dag["final"][0] == "report"
    subs = {name: htcondor2.Submit(path.read_text())
            for name, path in [*dag["jobs"].items(), dag["final"]]}
    for name, sub in subs.items():
        local = "check" not in name
        assert sub["universe"] == ("local" if local else "vanilla"), name
    assert job_argv(subs["T2_A-check:0"]["arguments"])[:4] == ["check", "--workers", "1",
                                                               "--lease"]
    assert "--site" in job_argv(subs["T2_A-check:0"]["arguments"])
    cron = htcondor2.Submit((out / dag_module.CRON_SUB).read_text())
    assert (cron["cron_minute"], cron["cron_hour"]) == ("0", "2")
    assert cron["executable"].endswith("condor_submit_dag")
    assert str(out / dag_module.DAG_FILE) in cron["arguments"]
    # No password in anything written but the password file.
    for path in out.rglob("*"):
        if path.is_file():
            assert_no_secret(path.read_bytes().decode("latin-1"), SECRET, str(path))

    # Run it as DAGMan would: nodes in order, each checked by its POST script, retried,
    # the descendants of a failed node skipped, the final node always.
    failed: set[str] = set()
    ran: list[str] = []

    def run_node(name: str, sub) -> int:
        if sub["universe"] == "vanilla":
            return run_as_worker_node(sub, tmp_path, node_python, name=name).returncode
        job_env = {**os.environ, **job_environment(sub.get("environment", '""'))}
        return subprocess.run([sub["executable"], *job_argv(sub["arguments"])],
                              cwd=sub["initialdir"], env=job_env, capture_output=True,
                              timeout=300).returncode

    parents: dict[str, list[str]] = {}
    for parent, children in dag["children"].items():
        for child in children:
            parents.setdefault(child, []).append(parent)
    for name in dag["jobs"]:  # written parents before children
        if any(p in failed or p not in ran for p in parents.get(name, [])):
            failed.add(name)  # not run: an ancestor failed
            continue
        for _attempt in range(1 + dag["retries"].get(name, 0)):
            code = run_node(name, subs[name])
            post = dag["post"][name]
            ok = subprocess.run([*post[:-1], str(code)]).returncode == 0
            if ok:
                break
        if ok:
            ran.append(name)
        else:
            failed.add(name)
    assert run_node("report", subs["report"]) == 0
    assert "T2_B-crawl:0" in failed and "T2_B-check:0" in failed
    assert {"T2_A-crawl:0", "T2_A-check:0", "T2_A-check:1", "T2_A-compare:0"} <= set(ran)

    summary = json.loads((out / "report" / "summary.json").read_text())
    site_a = next(s for s in summary["sites"] if s["site"] == "T2_A")
    assert site_a["counts"]["ok"] == 11 and site_a["counts"]["corrupted"] == 1
    assert site_a["catalog"] is not None  # the compare ran
    assert all(s["site"] != "T2_B" for s in summary["sites"])  # never crawled
