"""The HTCondor submit descriptions pnfs-monitor needs, built as data (a dict) and rendered
by the real bindings (``htcondor2.Submit``), so ``--dry-run`` shows exactly what would be
submitted and ``--write`` writes files ``condor_submit`` takes as they are. The one call
that needs a running schedd is ``submit_to_schedd``.

Secrets: the job gets the database URL without its password on its command line, and the
password as a file (mode 600) in ``transfer_input_files``; the environment holds only that
file's name. Nothing secret is in the description, its arguments or its environment.

What runs on the node: the bundle (``condor.bundle``), by its ``#!/usr/bin/env python3``
line or by the interpreter ``--python PATH`` names (WLCG worker nodes run EL9, whose
python3 is 3.9); or a shared install (``--executable``); optionally inside an Apptainer
image (``--container-image``).

Exit codes and what HTCondor does with them (the contract in ``schema.errors``):
  0, 1  done (1: problems were found in the storage): the job leaves the queue;
  3, 4  transient, or a bug: held, and released after ``RETRY_DELAY`` seconds while the job
        has started at most ``max_retries`` times; then it stays held with the reason;
  2, 5  configuration, or python3 too old: held with a reason a person can act on;
  killed by a signal (the OOM killer), or a code outside the contract (130: stopped):
        held, released like 3 and 4 (bounded).
The hold subcode is the exit code (128 + N for signal N).
A job killed or evicted loses nothing: its leases expire and the files come back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from pnfsmon.schema.errors import (
    CONTRACT,
    DONE,
    EXIT_INTERNAL,
    EXIT_OLD_PYTHON,
    EXIT_TRANSIENT,
    EXIT_USAGE,
    HELD,
    ConfigError,
    DatabaseUnavailable,
)
from pnfsmon.schema.extras import require

BUNDLE = "pnfsmon.pyz"
USER_LOG = "pnfsmon-jobs.log"
WORKERS_SUB = "pnfsmon-workers.sub"
RETRY_DELAY = 600  # seconds a job held for exit 3 or 4 waits before it is released
HOLD_BY_POLICY = 3  # HoldReasonCode of a hold by on_exit_hold
SIGNAL_SUBCODE = 128  # hold subcode of a job killed by signal N: 128 + N


@dataclass
class JobOptions:
    """What a site chooses for its jobs."""

    jobs: int = 1
    request_cpus: int = 1
    request_memory_mb: int = 1024
    request_disk_kb: int = 1024 * 1024
    batch_name: str = "pnfsmon"
    accounting_group: str | None = None
    requirements: str | None = None
    max_retries: int = 10
    python: str | None = None  # the interpreter on the node that runs the bundle
    container_image: str | None = None  # run the job inside this (Apptainer) image
    # tester options passed through to ``pnfsmon check``
    check_args: list[str] = field(default_factory=list)
    # files the database URL names (TLS CA, client certificate and key), by their
    # basename on the node; their transfer is encrypted like the password's
    tls_files: list[str] = field(default_factory=list)


#: Database hosts that, on a worker node, name the node itself.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "localhost.localdomain")


def local_host_warning(db_url: str) -> str | None:
    """Why a database URL will not reach the server from a worker node, or None."""
    host = sa.make_url(db_url).host
    if host is not None and host.lower() not in LOCAL_HOSTS and not host.startswith("127."):
        return None
    where = f"host {host}" if host else "a local socket (no host)"
    return (f"the jobs' database URL names {where}: on a worker node that is the node "
            "itself, not this machine; give the database server's name as the nodes "
            "reach it (e.g. mysql+pymysql://pnfsmon@dbhost.example.org/pnfsmon)")


def quote_args(args: list[str]) -> str:
    """HTCondor's "new" argument syntax: the whole string in double quotes, each argument
    in single quotes (a single quote inside doubled)."""
    return '"' + " ".join("'" + a.replace("'", "''").replace('"', '""') + "'"
                          for a in args) + '"'


def _any(attribute: str, codes) -> str:
    return " || ".join(f"{attribute} =?= {c}" for c in codes)


def _hold_reason(max_retries: int | None, delay: int) -> str:
    """One reason a person can act on, for each way a job can end held."""
    again = (f"released automatically after {delay} s while it has started at most "
             f"{max_retries} times, then held for good" if max_retries is not None else
             f"released automatically after {delay} s")
    reasons = {
        EXIT_USAGE: f"{CONTRACT[EXIT_USAGE].meaning}: fix it, then condor_release",
        EXIT_TRANSIENT: f"{CONTRACT[EXIT_TRANSIENT].meaning}: {again}",
        EXIT_INTERNAL: f"{CONTRACT[EXIT_INTERNAL].meaning}: {again}; please report it",
        EXIT_OLD_PYTHON: (f"{CONTRACT[EXIT_OLD_PYTHON].meaning}, and the node's is older: "
                          "submit with --python PATH (a newer interpreter on the nodes) or "
                          "--container-image IMAGE"),
    }
    expression = ('strcat("pnfs-monitor exit code ", ExitCode, ", outside its contract: '
                  f'see the job\'s error file; {again}")')
    for code, reason in reversed(reasons.items()):
        expression = (f'ifThenElse(ExitCode =?= {code}, "pnfs-monitor exit code {code}: '
                      f'{reason}", {expression})')
    return (f'ifThenElse(ExitBySignal =?= true, strcat("pnfs-monitor killed by signal ", '
            f'ExitSignal, " (9: out of memory? raise --request-memory): {again}"), '
            f'{expression})')


def exit_policy(max_retries: int | None, delay: int = RETRY_DELAY) -> dict[str, str]:
    """The submit commands that apply the exit-code contract (``schema.errors``): only 0
    and 1 end a job; every other end holds it with a reason and a subcode (the exit code,
    or 128 + the signal); holds for 3, 4 or a signal are released after ``delay`` seconds
    while the job has started at most ``max_retries`` times; 2 and 5 wait for a person.
    ``max_retries`` None: a crondor job, which starts every night anew (its schedule bounds
    the retries)."""
    # Released: 3, 4, a signal, a code outside the contract. Never 2 or 5.
    retried = " && ".join(f"HoldReasonSubCode =!= {c}" for c in HELD)
    bound = f"NumJobStarts <= {max_retries} && " if max_retries is not None else ""
    policy = {
        "max_retries": str(max_retries),
        "retry_until": _any("ExitCode", DONE),
        "on_exit_hold": f"ExitBySignal =?= true || !({_any('ExitCode', DONE)})",
        "on_exit_hold_reason": _hold_reason(max_retries, delay),
        "on_exit_hold_subcode": (f"ifThenElse(ExitBySignal =?= true, {SIGNAL_SUBCODE} + "
                                 "ExitSignal, ExitCode)"),
        "periodic_release": (f"HoldReasonCode =?= {HOLD_BY_POLICY} && ({retried}) && "
                             f"{bound}time() - EnteredCurrentStatus > {delay}"),
    }
    if max_retries is None:
        del policy["max_retries"]
    return policy


def _common(executable: Path, arguments: list[str], workdir: Path,
            password_file: Path | None, opts: JobOptions, *, bundled: bool) -> dict[str, str]:
    """A job running pnfs-monitor on a pool node. ``bundled``: ``executable`` is the
    bundle (else a shared install's entry point)."""
    secret_inputs = [str(password_file)] if password_file is not None else []
    secret_inputs += opts.tls_files
    inputs = list(secret_inputs)
    if bundled and opts.python:
        # The interpreter is on the node; the bundle travels as an input.
        inputs.insert(0, str(executable))
        arguments = [executable.name, *arguments]
        executable = Path(opts.python)
    desc = {
        "universe": "vanilla",
        "executable": str(executable),
        "arguments": quote_args(arguments),
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT",
        "output": str(workdir / "logs" / "$(ClusterId).$(ProcId).out"),
        "error": str(workdir / "logs" / "$(ClusterId).$(ProcId).err"),
        "log": str(workdir / USER_LOG),
        "request_cpus": str(opts.request_cpus),
        "request_memory": str(opts.request_memory_mb),
        "request_disk": str(opts.request_disk_kb),
        "+JobBatchName": f'"{opts.batch_name}"',
        **exit_policy(opts.max_retries),
    }
    if bundled and opts.python:
        desc["transfer_executable"] = "false"
    if opts.container_image:
        desc["universe"] = "container"
        desc["container_image"] = opts.container_image
    if inputs:
        desc["transfer_input_files"] = ",".join(inputs)
    if password_file is not None:
        # The file keeps its name in the job's scratch directory; its transfer is encrypted.
        desc["environment"] = f'"PNFSMON_DB_PASSWORD_FILE={Path(password_file).name}"'
    if secret_inputs:
        desc["encrypt_input_files"] = ",".join(secret_inputs)
    if opts.accounting_group:
        desc["accounting_group"] = opts.accounting_group
    if opts.requirements:
        desc["requirements"] = opts.requirements
    return desc


def worker_description(executable: Path, db_url: str, workdir: Path,
                       password_file: Path | None, opts: JobOptions, *,
                       bundled: bool = True) -> dict[str, str]:
    """N identical jobs, each running ``pnfsmon check --workers 1`` until nothing is due,
    logging its progress and every problem found to its stdout (the job's ``.out``)."""
    args = ["check", "--workers", "1", *opts.check_args, "--log-file", "-", "--db", db_url]
    return _common(executable, args, workdir, password_file, opts, bundled=bundled)


def crawl_description(executable: Path, db_url: str, workdir: Path,
                      password_file: Path | None, opts: JobOptions, root: str, site: str,
                      cron: str, namespace: str | None = None, *,
                      bundled: bool = True) -> dict[str, str]:
    """A crondor job: HTCondor starts ``pnfsmon crawl`` on the ``cron`` schedule."""
    crawl = ["crawl", root, "--site", site, "--log-file", "-", "--db", db_url]
    if namespace:
        crawl += ["--namespace", namespace]
    desc = _common(executable, crawl, workdir, password_file, opts, bundled=bundled)
    desc.update(cron_fields(cron))
    desc.update(exit_policy(None))  # it starts every night: no bound on its starts
    desc["on_exit_remove"] = "false"  # stay queued for the next run
    desc["+JobBatchName"] = f'"{opts.batch_name}-crawl"'
    desc["retry_until"] = "true"
    desc.pop("max_retries", None)
    return desc


def cron_fields(cron: str) -> dict[str, str]:
    """HTCondor's cron_* keys for a 5-field cron schedule."""
    fields = cron.split()
    if len(fields) != 5:
        raise ConfigError(f"--cron needs 5 fields (minute hour day month weekday): {cron!r}")
    return dict(zip(("cron_minute", "cron_hour", "cron_day_of_month", "cron_month",
                     "cron_day_of_week"), fields, strict=True))


def render(description: dict[str, str]):
    """The bindings' Submit object (raises ConfigError on a syntax error)."""
    htcondor2 = require("htcondor2", "pnfsmon condor")

    try:
        return htcondor2.Submit(description)
    except Exception as err:  # the bindings raise their own types for a bad description
        raise ConfigError(f"invalid submit description: {err}") from None


def submit_file_text(submit, count: int) -> str:
    """What ``condor_submit FILE`` takes: the description, ending in ``queue COUNT``."""
    submit.setQArgs(str(count))
    return f"{str(submit).rstrip()}\n"


def submit_to_schedd(submit, count: int) -> int:
    """Queue ``count`` jobs in one cluster; returns the cluster id. The only call here that
    needs a running HTCondor (none can be installed on the machines the tests run on)."""
    htcondor2 = require("htcondor2", "pnfsmon condor submit")

    try:
        result = htcondor2.Schedd().submit(submit, count=count)
    except Exception as err:  # no schedd, no permission, pool misconfigured
        raise DatabaseUnavailable(f"HTCondor refused the submission: {err}") from None
    return result.cluster()
