"""``pnfsmon condor dag``: the nightly pipeline as an HTCondor DAGMan workflow, built with the
bindings' own ``htcondor2.dags``:

    per site:  crawl ──► N worker jobs ──► compare (where the site has an inventory)
    then:      report (FINAL: it runs whatever happened to the sites)

The crawl, the compare and the report run in the local universe, on the submit host,
where the namespace is mounted (or the Chimera database reachable), the configuration
file and the web directory are; the workers are pool jobs like ``condor submit``'s. A
node succeeds on exit 0 or 1 (1: problems found, a complete answer), checked by a POST
script; a crawl that fails stops that site's branch (no check or compare on a half
crawl) and no other. Nodes are retried. ``--cron`` adds a crondor job that submits the
DAG on a schedule."""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from pnfsmon.condor import submit
from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.extras import require
from pnfsmon.schema.sites import Site

DAG_FILE = "pnfsmon-nightly.dag"
CRON_SUB = "pnfsmon-nightly-cron.sub"
SUCCESS_SCRIPT = "pnfsmon-node-succeeded"
FINAL = "report"
NODE_RETRIES = 2
_SUCCESS = """#!/bin/sh
# DAGMan POST script: a pnfs-monitor node succeeded if its job exited 0 (nothing wrong)
# or 1 (problems found in the storage: a complete answer). $1 is the job's exit code.
[ "$1" -le 1 ] 2>/dev/null
"""


@dataclass(frozen=True)
class SitePlan:
    site: Site
    inventory: bool  # the site has a catalog inventory to compare with
    check_args: list[str]  # its workers' `pnfsmon check` options (--site, its period)


def node_name(site: str, what: str) -> str:
    """A DAG node name for a site (DAGMan names: no spaces, no '+')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{site}-{what}")


@dataclass
class DagInputs:
    workdir: Path
    db_url: str  # without password
    password_file: Path | None
    config_file: Path | None  # the configuration the local nodes read
    local_pnfsmon: list[str]  # how to run pnfsmon on the submit host
    bundle: Path
    bundled: bool
    opts: submit.JobOptions
    report_dir: Path
    log_interval: float


def local_pnfsmon(executable: str | None) -> list[str]:
    """The command that runs pnfs-monitor on the submit host (the local-universe nodes)."""
    if executable:
        return [str(Path(executable).resolve())]
    found = shutil.which("pnfsmon")
    return [found] if found else [sys.executable, "-m", "pnfsmon"]


def _local(inputs: DagInputs, arguments: list[str], name: str) -> dict[str, str]:
    """A local-universe node on the submit host running ``pnfsmon ARGS``."""
    command = [*inputs.local_pnfsmon, *arguments, "--log-file", "-",
               "--log-interval", f"{inputs.log_interval:g}", "--db", inputs.db_url]
    environment = []
    if inputs.password_file is not None:
        environment.append(f"PNFSMON_DB_PASSWORD_FILE={inputs.password_file}")
    if inputs.config_file is not None:
        environment.append(f"PNFSMON_CONFIG={inputs.config_file}")
    desc = {
        "universe": "local",
        "executable": command[0],
        "arguments": submit.quote_args(command[1:]),
        "initialdir": str(inputs.workdir),
        "output": str(inputs.workdir / "logs" / f"{name}.$(Cluster).out"),
        "error": str(inputs.workdir / "logs" / f"{name}.$(Cluster).err"),
        "log": str(inputs.workdir / submit.USER_LOG),
        "+JobBatchName": f'"{inputs.opts.batch_name}-nightly"',
    }
    if environment:
        desc["environment"] = '"' + " ".join(environment) + '"'
    return desc


def build(plans: list[SitePlan], inputs: DagInputs, jobs: int):
    """The DAG (``htcondor2.dags.DAG``) of the nightly pipeline for ``plans``, and the
    final (report) node's description."""
    htcondor2 = require("htcondor2", "pnfsmon condor dag")
    dags = require("htcondor2.dags", "pnfsmon condor dag")

    if not plans:
        raise ConfigError("no site to run: name sites with --site, or give them a "
                          "namespace in the configuration file ([site NAME] namespace = ...)")
    dag = dags.DAG()
    success = dags.Script(executable=str(inputs.workdir / SUCCESS_SCRIPT),
                          arguments=["$RETURN"])
    for plan in plans:
        name = plan.site.name
        crawl = dag.layer(
            name=node_name(name, "crawl"), retries=1, post=success,
            submit_description=htcondor2.Submit(
                _local(inputs, ["crawl", "--site", name], node_name(name, "crawl"))))
        opts = submit.JobOptions(**{**inputs.opts.__dict__, "check_args": [
            *plan.check_args, "--log-interval", f"{inputs.log_interval:g}"]})
        workers = crawl.child_layer(
            name=node_name(name, "check"), retries=NODE_RETRIES, post=success,
            submit_description=htcondor2.Submit(submit.worker_description(
                inputs.bundle, inputs.db_url, inputs.workdir, inputs.password_file, opts,
                bundled=inputs.bundled)),
            vars=[{"worker": str(i)} for i in range(jobs)])
        if plan.inventory:
            workers.child_layer(
                name=node_name(name, "compare"), retries=1, post=success,
                submit_description=htcondor2.Submit(_local(
                    inputs, ["compare", "--site", name, "--output",
                             str(inputs.workdir / "lists")], node_name(name, "compare"))))
    report = htcondor2.Submit(_local(inputs, ["report", str(inputs.report_dir)], "report"))
    dag.final(name=FINAL, submit_description=report)
    return dag, report


def write(dag, report, inputs: DagInputs, cron: str | None) -> list[Path]:
    """The DAG file, its nodes' submit files, the POST script and, with ``cron``, the
    crondor job that submits the DAG on that schedule. Returns what was written."""
    htcondor2 = require("htcondor2", "pnfsmon condor dag")
    dags = require("htcondor2.dags", "pnfsmon condor dag")

    workdir = inputs.workdir
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    script = workdir / SUCCESS_SCRIPT
    script.write_text(_SUCCESS)
    script.chmod(0o755)
    written = [dags.write_dag(dag, workdir, dag_file_name=DAG_FILE), script]
    # The bindings write the layers' submit files, not the final node's.
    (workdir / f"{FINAL}.sub").write_text(str(report))
    if cron:
        submit_dag = shutil.which("condor_submit_dag") or "/usr/bin/condor_submit_dag"
        description = {
            "universe": "local",
            "executable": submit_dag,
            "arguments": submit.quote_args(["-force", "-batch-name", "pnfsmon-nightly",
                                            str(workdir / DAG_FILE)]),
            "initialdir": str(workdir),
            "output": str(workdir / "logs" / "nightly-cron.$(Cluster).out"),
            "error": str(workdir / "logs" / "nightly-cron.$(Cluster).err"),
            "log": str(workdir / "pnfsmon-cron.log"),
            "+JobBatchName": f'"{inputs.opts.batch_name}-nightly-cron"',
            "on_exit_remove": "false",  # stay queued for the next night
            **submit.cron_fields(cron),
        }
        path = workdir / CRON_SUB
        path.write_text(submit.submit_file_text(htcondor2.Submit(description), 1))
        written.append(path)
    return written
