"""Secrets on disk: HTCondor worker jobs get their own account (`--worker-db`), a job
directory written by `condor submit --write` holds no password, a failed submission leaves
none behind, a password file others may read is refused, and a failed login says where
its password came from."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import htcondor2
import pytest

from pnfsmon.condor import dag, password
from pnfsmon.condor.cli import _prepare
from pnfsmon.condor.submit import JobOptions
from pnfsmon.schema.sites import Site
from tests.helpers import assert_no_secret, pnfsmon

ADMIN_SECRET = "Adm1n-only!"
WORKER_SECRET = "W0rker-only!"
ADMIN_URL = "mysql+pymysql://pnfsmon_admin@db.example.org/pn"
WORKER_URL = "mysql+pymysql://pnfsmon_worker@db.example.org/pn"


def secret_file(path: Path, secret: str, mode: int = 0o600) -> Path:
    path.write_text(secret + "\n")
    path.chmod(mode)
    return path


def job_argv(sub) -> list[str]:
    return [w.strip("'") for w in sub["arguments"].strip('"').split()]


@pytest.mark.parametrize("where", ["flags", "configuration"])
def test_worker_jobs_get_their_own_account(tmp_path, where):
    admin = secret_file(tmp_path / "admin.password", ADMIN_SECRET)
    worker = secret_file(tmp_path / "worker.password", WORKER_SECRET)
    conf = tmp_path / "pnfsmon.conf"
    text = f"[pnfsmon]\ndb = {ADMIN_URL}\ndb_password_file = {admin}\n"
    args = []
    if where == "flags":
        args = ["--worker-db", WORKER_URL, "--worker-db-password-file", str(worker)]
    else:
        text += f"worker_db = {WORKER_URL}\nworker_db_password_file = {worker}\n"
    conf.write_text(text)
    out = tmp_path / "jobs"
    r = pnfsmon("condor", "submit", "--jobs", "4", "--write", str(out), *args,
                env={"PNFSMON_CONFIG": str(conf)}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    sub = htcondor2.Submit((out / "pnfsmon-workers.sub").read_text())
    assert job_argv(sub)[-2:] == ["--db", WORKER_URL]
    # The worker's own file travels, referenced where the operator keeps it, encrypted.
    assert sub["transfer_input_files"] == sub["encrypt_input_files"] == str(worker)
    assert "PNFSMON_DB_PASSWORD_FILE=worker.password" in sub["environment"]
    assert f"{worker} (referenced, not copied)" in r.stdout
    # The submit host's password is in nothing written, printed or transferred.
    for path in [*out.rglob("*"), *password.private_dir().rglob("*")]:
        if path.is_file():
            assert_no_secret(path.read_bytes().decode("latin-1"), ADMIN_SECRET, str(path))
            assert_no_secret(path.read_bytes().decode("latin-1"), WORKER_SECRET, str(path))
    assert_no_secret(r.stdout + r.stderr, ADMIN_SECRET)
    assert str(admin) not in (out / "pnfsmon-workers.sub").read_text()


def test_a_worker_password_inside_its_url_is_kept_out_of_the_job_directory(tmp_path):
    admin = secret_file(tmp_path / "admin.password", ADMIN_SECRET)
    out = tmp_path / "jobs"
    url = WORKER_URL.replace("pnfsmon_worker@", f"pnfsmon_worker:{WORKER_SECRET}@")
    r = pnfsmon("condor", "submit", "--write", str(out), "--worker-db", url,
                env={"PNFSMON_DB": ADMIN_URL, "PNFSMON_DB_PASSWORD_FILE": str(admin)})
    assert r.returncode == 0, r.stderr
    written = password.private_file(out, "worker-db")
    assert written.read_text().strip() == WORKER_SECRET
    assert written.stat().st_mode & 0o777 == 0o600
    assert written.parent.stat().st_mode & 0o777 == 0o700
    assert f"{written} (mode 600, outside DIR)" in r.stdout
    assert_no_secret(r.stdout + r.stderr, WORKER_SECRET)
    for path in out.rglob("*"):
        if path.is_file():
            assert_no_secret(path.read_bytes().decode("latin-1"), WORKER_SECRET, str(path))


def test_the_dag_gives_workers_their_account_and_local_nodes_the_hosts(tmp_path,
                                                                      monkeypatch):
    admin = secret_file(tmp_path / "admin.password", ADMIN_SECRET)
    worker = secret_file(tmp_path / "worker.password", WORKER_SECRET)
    conf = tmp_path / "pnfsmon.conf"
    conf.write_text(f"[pnfsmon]\ndb = {ADMIN_URL}\ndb_password_file = {admin}\n"
                    f"[site S]\nnamespace = {tmp_path}\n")
    out = tmp_path / "nightly"
    # `condor dag` reads the sites' inventories from a database server; here the DAG is
    # built from the same pieces the command uses, without one.
    monkeypatch.setenv("PNFSMON_CONFIG", str(conf))
    args = argparse.Namespace(db=None, write=str(out), workdir=None, executable=None,
                              worker_db=WORKER_URL, worker_db_password_file=str(worker))
    prepared = _prepare(args)
    inputs = dag.DagInputs(
        workdir=out, db_url=prepared.host.local_url, password_file=prepared.host.password_file,
        worker_db_url=prepared.worker.url,
        worker_password_file=prepared.worker.password_file, config_file=conf,
        local_pnfsmon=["pnfsmon"], bundle=prepared.executable, bundled=True,
        opts=JobOptions(), report_dir=out / "report", log_interval=300)
    workflow, report = dag.build([dag.SitePlan(Site("S"), False, [])], inputs, 2)
    layers = {layer.name: layer for layer in workflow.walk()}
    check = layers["S-check"].submit_description
    crawl = layers["S-crawl"].submit_description
    assert job_argv(check)[-2:] == ["--db", WORKER_URL]
    assert check["transfer_input_files"] == str(worker)
    assert job_argv(crawl)[-2:] == ["--db", ADMIN_URL]
    assert f"PNFSMON_DB_PASSWORD_FILE={admin}" in crawl["environment"]


def test_a_failed_submission_leaves_no_copy_of_the_password(tmp_path):
    """No schedd here: the submission fails, and the password written for it is gone."""
    r = pnfsmon("condor", "submit", "--jobs", "2", "--workdir", str(tmp_path / "w"),
                env={"PNFSMON_DB": ADMIN_URL, "PNFSMON_DB_PASSWORD": ADMIN_SECRET,
                     "HOME": os.environ["HOME"]}, cwd=tmp_path)
    assert r.returncode != 0 and "HTCondor refused the submission" in r.stderr
    left = [p for p in [*tmp_path.rglob("*"), *password.private_dir().rglob("*")]
            if p.is_file() and ADMIN_SECRET in p.read_bytes().decode("latin-1")]
    assert left == []
    assert password.private_dir().is_dir()  # it was written, then removed
    assert not password.private_file(tmp_path / "w", "db").exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_password_file_others_may_read_is_refused(tmp_path, mode):
    pw = secret_file(tmp_path / "db.password", ADMIN_SECRET, mode)
    r = pnfsmon("status", env={"PNFSMON_DB": "mysql+pymysql://mon@127.0.0.1:3306/x",
                               "PNFSMON_DB_PASSWORD_FILE": str(pw)})
    assert r.returncode == 2
    [line] = r.stderr.strip().splitlines()
    assert f"{pw} is accessible by group or others (mode {mode:03o}): chmod 600" in line
    assert ADMIN_SECRET not in r.stderr


def test_a_failed_login_says_where_its_password_came_from(tmp_path):
    """The configuration's password (for user mon) used with root given in --db: the
    real MariaDB refuses, and the line says whose password it was and from where."""
    pw = secret_file(tmp_path / "mon.password", ADMIN_SECRET)
    conf = tmp_path / "pnfsmon.conf"
    conf.write_text("[pnfsmon]\ndb = mysql+pymysql://mon@127.0.0.1:3306/test\n"
                    f"db_password_file = {pw}\n")
    r = pnfsmon("--db", "mysql+pymysql://root@127.0.0.1:3306/test", "status",
                env={"PNFSMON_CONFIG": str(conf)})
    assert r.returncode == 2
    [line] = r.stderr.strip().splitlines()
    assert "Access denied for user 'root'" in line
    assert (f"the password came from the file {pw} (db_password_file in {conf}), which "
            f"the configuration {conf} gives for user 'mon'") in line
    assert ADMIN_SECRET not in r.stderr
