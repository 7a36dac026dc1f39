"""``pnfsmon condor dag``: the nightly pipeline as an HTCondor DAGMan workflow, built with the
bindings' own ``htcondor2.dags``:

    per site:  crawl ──► N worker jobs ──► compare (where the site has an inventory)
                                          ──► declare (where the site has a rucio_rse)
                                    compare ──► dark (``declare --dark``: both of these)
    then:      report (FINAL: it runs whatever happened to the sites)

The declare nodes come before the report, not after it: DAGMan's FINAL node can have no
children, and the report runs last so that it shows what was declared that night. They
run with the Rucio client's settings of the shell that wrote the DAG (``RUCIO_CONFIG``,
``RUCIO_HOME``, ``RUCIO_ACCOUNT``, ``X509_USER_PROXY``: a local-universe job gets no other
environment).

The crawl, the compare and the report run in the local universe, on the submit host,
where the namespace is mounted (or the Chimera database reachable), the configuration
file and the web directory are; the workers are pool jobs like ``condor submit``'s.

Exit codes (the contract in ``schema.errors``) decide, through a POST script, not through
job holds (a held node would stop the whole night, report included): a node succeeds on 0
or 1 (1: problems found, a complete answer) and on nothing else, DAGMan's negative
``$RETURN`` values included (-9: killed by the OOM killer; -1001: submission failed;
-1002: removed). 3, 4, a signal and a failed submission are retried ``NODE_RETRIES``
times, each retry after a delay (a PRE script); 2, 5 and a removal are not retried (a
person must act). A crawl that fails stops that site's branch (no check or compare on a
half crawl) and no other. ``--cron`` adds a crondor job that submits the DAG on a
schedule."""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from pnfsmon.condor import submit
from pnfsmon.schema.errors import DONE, HELD, ConfigError
from pnfsmon.schema.extras import require
from pnfsmon.schema.sites import Site

DAG_FILE = "pnfsmon-nightly.dag"
CRON_SUB = "pnfsmon-nightly-cron.sub"
SUCCESS_SCRIPT = "pnfsmon-node-succeeded"
RETRY_SCRIPT = "pnfsmon-node-retry-delay"
FINAL = "report"
NODE_RETRIES = 2
RETRY_DELAY = 300  # seconds before a node's retry (PNFSMON_RETRY_DELAY overrides)
NO_RETRY = 2  # the POST script's exit for "a person must act": RETRY ... UNLESS-EXIT 2
_SUCCESS = f"""#!/bin/sh
# DAGMan POST script, from pnfs-monitor's exit-code contract (pnfsmon.schema.errors).
# $1 is the node job's $RETURN: its exit code, or DAGMan's own negative values (-N: killed
# by signal N, -9 by the OOM killer; -1001: submission failed; -1002: removed).
case "$1" in
    {"|".join(str(c) for c in DONE)}) exit 0 ;;  # nothing wrong, or problems found: an answer
    {"|".join(str(c) for c in HELD)}|-1002) exit {NO_RETRY} ;;  # a person must act: not retried
    *) exit 1 ;;  # transient, a bug, killed, not submitted: retried (RETRY)
esac
"""
_RETRY = f"""#!/bin/sh
# DAGMan PRE script: before a node's retry ($1 = $RETRY > 0), wait, so that a database or
# mount that was unreachable has time to come back.
if [ "${{1:-0}}" -gt 0 ]; then
    sleep "${{PNFSMON_RETRY_DELAY:-{RETRY_DELAY}}}"
fi
exit 0
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
    worker_db_url: str  # the worker jobs' account (``--worker-db``), without password
    worker_password_file: Path | None
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


#: What Rucio's client reads from its environment (its configuration, its identity): kept
#: for the declare nodes as the shell that wrote the DAG had them.
RUCIO_ENVIRONMENT = ("RUCIO_CONFIG", "RUCIO_HOME", "RUCIO_ACCOUNT", "X509_USER_PROXY")


def _rucio_environment() -> list[str]:
    found = []
    for key in RUCIO_ENVIRONMENT:
        value = os.environ.get(key)
        if not value:
            continue
        if any(c.isspace() or c in "'\"" for c in value):
            raise ConfigError(f"{key}={value!r}: a path with spaces or quotes cannot go into "
                              "the declare nodes' environment; use another path")
        found.append(f"{key}={value}")
    return found


def _local(inputs: DagInputs, arguments: list[str], name: str,
           rucio: bool = False) -> dict[str, str]:
    """A local-universe node on the submit host running ``pnfsmon ARGS`` (``rucio``: with
    the Rucio client's environment)."""
    command = [*inputs.local_pnfsmon, *arguments, "--log-file", "-",
               "--log-interval", f"{inputs.log_interval:g}", "--db", inputs.db_url]
    environment = _rucio_environment() if rucio else []
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
    retried = {
        "retries": NODE_RETRIES, "retry_unless_exit": NO_RETRY,
        "pre": dags.Script(executable=str(inputs.workdir / RETRY_SCRIPT),
                           arguments=["$RETRY"]),
        "post": dags.Script(executable=str(inputs.workdir / SUCCESS_SCRIPT),
                            arguments=["$RETURN"]),
    }
    for plan in plans:
        name = plan.site.name
        crawl = dag.layer(
            name=node_name(name, "crawl"), **retried,
            submit_description=htcondor2.Submit(
                _local(inputs, ["crawl", "--site", name], node_name(name, "crawl"))))
        opts = submit.JobOptions(**{**inputs.opts.__dict__, "check_args": [
            *plan.check_args, "--log-interval", f"{inputs.log_interval:g}"]})
        worker = submit.worker_description(inputs.bundle, inputs.worker_db_url,
                                           inputs.workdir, inputs.worker_password_file, opts,
                                           bundled=inputs.bundled)
        for key in submit.exit_policy(opts.max_retries):  # the DAG's POST script decides
            del worker[key]
        workers = crawl.child_layer(
            name=node_name(name, "check"), **retried,
            submit_description=htcondor2.Submit(worker),
            vars=[{"worker": str(i)} for i in range(jobs)])
        last = workers
        if plan.inventory:
            last = workers.child_layer(
                name=node_name(name, "compare"), **retried,
                submit_description=htcondor2.Submit(_local(
                    inputs, ["compare", "--site", name, "--output",
                             str(inputs.workdir / "lists")], node_name(name, "compare"))))
        if plan.site.rucio_rse:
            # Dry run unless the site says `declare = apply`; the lists for rucio-admin and
            # the CMS tools are kept beside the compare's.
            last.child_layer(
                name=node_name(name, "declare"), **retried,
                submit_description=htcondor2.Submit(_local(
                    inputs, ["declare", "--site", name, "--output",
                             str(inputs.workdir / "rucio")], node_name(name, "declare"),
                    rucio=True)))
            if plan.inventory:
                # Dark data, from that night's compare: dry run unless the site says
                # `quarantine = apply`.
                last.child_layer(
                    name=node_name(name, "dark"), **retried,
                    submit_description=htcondor2.Submit(_local(
                        inputs, ["declare", "--site", name, "--dark", "--output",
                                 str(inputs.workdir / "rucio")], node_name(name, "dark"),
                        rucio=True)))
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
    scripts = []
    for name, text in ((SUCCESS_SCRIPT, _SUCCESS), (RETRY_SCRIPT, _RETRY)):
        script = workdir / name
        script.write_text(text)
        script.chmod(0o755)
        scripts.append(script)
    written = [dags.write_dag(dag, workdir, dag_file_name=DAG_FILE), *scripts]
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
