"""A pipeline's files are written once and run for months: the nightly DAG (resubmitted by
its crondor job) and a kept ``condor submit --write`` file. Each run must sweep from its own
start, not from the day the files were written: here the files are written and first run
with the clock 40 days back (``faketime``), then run again at today's time, and every file
must be checked again. The nodes run as HTCondor would run them (see ``test_condor``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import htcondor2
import pytest
import sqlalchemy as sa

from pnfsmon.condor import dag as dag_module
from pnfsmon.condor import submit
from pnfsmon.schema import db
from pnfsmon.schema.config import Settings
from pnfsmon.schema.tables import events, statuses
from tests.helpers import pnfsmon, random_bytes, write_file
from tests.test_condor import job_argv, job_environment, node_python, read_dag, run_as_worker_node

__all__ = ["node_python"]  # the session fixture, shared with test_condor

PAST = "-40d"  # the day the site wrote its files, and their first run
DAY = 86400.0

# CI installs faketime (.ci/run): there its absence fails instead of skipping.
pytestmark = pytest.mark.skipif(shutil.which("faketime") is None and not os.environ.get("CI"),
                                reason="needs faketime (Debian package faketime)")

# condor refuses SQLite (its workers run on other machines); here every node runs on this
# host, so the test writes the same files for SQLite through this driver.
_SQLITE_DRIVER = """
from pnfsmon.condor import password
refusing = password._account
def account(url, *args):
    if url.startswith("sqlite"):  # every node runs here: the file is as good as a server
        return password.JobAccount(url, None, None, False, (), url)
    return refusing(url, *args)
password._account = account
"""


def at(offset: str | None) -> list[str]:
    """The command prefix that runs a process tree with the clock moved by ``offset``."""
    return ["faketime", "-f", offset] if offset else []


@pytest.fixture
def site(tmp_path, db_url):
    """A site of 8 files written 60 days ago, its configuration, and the environment the
    submit host's commands run with."""
    tree = tmp_path / "site"
    old = time.time() - 60 * DAY
    for i in range(8):
        path = write_file(tree / f"d{i % 2}" / f"f{i}.dat", random_bytes(3000 + i, i),
                          record=True)
        os.utime(path, (old, old))
    conf = tmp_path / "pnfsmon.conf"
    conf.write_text(f"[site T2_A]\nnamespace = {tree}\ngrace = 0\nrecheck_after = 30\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")}
    env.update(PNFSMON_CONFIG=str(conf), PNFSMON_DB=db_url)
    return env


def pnfsmon_at(offset: str | None, env: dict, *args: str) -> subprocess.CompletedProcess:
    """``pnfsmon ARGS`` on the submit host, with the clock moved by ``offset``."""
    sqlite = env["PNFSMON_DB"].startswith("sqlite")
    return pnfsmon(*args, env=env, under=at(offset),
                   before=_SQLITE_DRIVER if sqlite else None)


def node_interpreter(db_url: str, node_python: str) -> str:
    """A bare node for MariaDB and SQLite; for PostgreSQL a node with the ``postgresql``
    extra installed (the bundle carries no compiled driver)."""
    return sys.executable if db_url.startswith("postgresql") else node_python


def checks_per_file(db_url: str) -> dict[bytes, int]:
    engine = db.create_engine(Settings(db_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(statuses.c.path, sa.func.count(events.c.id))
                .select_from(statuses.outerjoin(events, events.c.file_id == statuses.c.id))
                .group_by(statuses.c.path)).all()
    finally:
        engine.dispose()
    return {bytes(path): count for path, count in rows}


def test_the_nightly_dag_checks_every_file_again_a_month_later(tmp_path, db_url, site,
                                                               node_python):
    out = tmp_path / "nightly"
    r = pnfsmon_at(PAST, site, "condor", "dag", "--write", str(out), "--jobs", "2",
                   "--cron", "0 2 * * *", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    dag = read_dag(out / dag_module.DAG_FILE)
    subs = {name: htcondor2.Submit(path.read_text())
            for name, path in [*dag["jobs"].items(), dag["final"]]}
    for name, sub in subs.items():  # no epoch frozen into any node
        assert "--sweep-start" not in job_argv(sub["arguments"]), name
    python = node_interpreter(db_url, node_python)

    def run_dag(offset: str | None, run: str) -> None:
        """Every node in the written order (parents first), then the final node; each
        must pass its POST script, as DAGMan requires."""
        for name, sub in [*subs.items()]:
            if sub["universe"] == "vanilla":
                job = run_as_worker_node(sub, tmp_path, python, name=f"{run}-{name}",
                                         prefix=at(offset))
            else:
                job = subprocess.run(
                    [*at(offset), sub["executable"], *job_argv(sub["arguments"])],
                    cwd=sub["initialdir"], capture_output=True, text=True, timeout=300,
                    env={**site, **job_environment(sub.get("environment", '""'))})
            post = dag["post"].get(name, [str(out / dag_module.SUCCESS_SCRIPT), "$RETURN"])
            assert subprocess.run([*post[:-1], str(job.returncode)]).returncode == 0, (
                run, name, job.returncode, job.stdout[-2000:], job.stderr[-2000:])

    run_dag(PAST, "first")
    first = checks_per_file(db_url)
    assert len(first) == 8 and set(first.values()) == {1}
    run_dag(None, "second")  # today: 40 days after the first run, past recheck_after
    assert checks_per_file(db_url) == {path: 2 for path in first}


def test_a_kept_submit_file_checks_every_file_again_a_month_later(tmp_path, db_url, site,
                                                                  node_python):
    r = pnfsmon_at(PAST, site, "crawl", "--site", "T2_A")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "jobs"
    r = pnfsmon_at(PAST, site, "condor", "submit", "--write", str(out), "--jobs", "1",
                   "--site", "T2_A", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    sub = htcondor2.Submit((out / submit.WORKERS_SUB).read_text())
    assert "--sweep-start" not in job_argv(sub["arguments"])
    python = node_interpreter(db_url, node_python)
    for offset, run in ((PAST, "first"), (None, "second")):
        job = run_as_worker_node(sub, tmp_path, python, name=run, prefix=at(offset))
        assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-2000:]
        assert "checked 8 files" in job.stdout, (run, job.stdout[-2000:])
    assert set(checks_per_file(db_url).values()) == {2}
