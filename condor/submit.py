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

Exit codes and what HTCondor does with them (see ``schema.errors``):
  0, 1  done (1: problems were found in the storage) — the job leaves the queue;
  3     transient (database or storage unreachable) — retried, up to ``max_retries``;
  2     bad configuration — held with a readable reason; retrying cannot help;
  5     the node's python3 is too old for the bundle — held, the reason naming the fix.
A job killed or evicted loses nothing: its leases expire and the files come back."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from pnfsmon.schema.config import Settings
from pnfsmon.schema.errors import ConfigError, DatabaseUnavailable
from pnfsmon.schema.extras import require
from pnfsmon.schema.secrets import without_password

PASSWORD_FILE = "db.password"  # its name in the job's scratch directory
BUNDLE = "pnfsmon.pyz"
USER_LOG = "pnfsmon-jobs.log"
WORKERS_SUB = "pnfsmon-workers.sub"
EXIT_OLD_PYTHON = 5  # the bundle's own check, before it imports anything (condor.bundle)
HOLD_SUBCODE_CONFIG = 2
HOLD_SUBCODE_PYTHON = 5


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


def split_secret(settings: Settings) -> tuple[str, str | None]:
    """(URL without password, password or None) for a job: never the password in argv."""
    url = sa.make_url(settings.db_url)
    if url.get_backend_name() == "sqlite":
        raise ConfigError("condor workers run on other machines: they need a database "
                          "server (mysql+pymysql://… or postgresql+psycopg://…), not sqlite")
    password = settings.db_password if settings.db_password is not None else url.password
    bare = without_password(url).render_as_string(hide_password=False)
    return bare, password


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


def write_password_file(workdir: Path, password: str) -> Path:
    """The password as a mode-600 file to transfer with the job."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / PASSWORD_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    os.chmod(path, 0o600)
    return path


def quote_args(args: list[str]) -> str:
    """HTCondor's "new" argument syntax: the whole string in double quotes, each argument
    in single quotes (a single quote inside doubled)."""
    return '"' + " ".join("'" + a.replace("'", "''").replace('"', '""') + "'"
                          for a in args) + '"'


def _hold_rules() -> dict[str, str]:
    """Exit 2 (configuration) and 5 (python3 too old) hold the job with a reason a person
    can act on; anything else but 0/1 is retried."""
    old = EXIT_OLD_PYTHON
    return {
        "on_exit_hold": f"ExitCode =?= 2 || ExitCode =?= {old}",
        "on_exit_hold_reason": (
            f'ifThenElse(ExitCode =?= {old}, "pnfs-monitor needs python3 >= 3.10 and the '
            "node's is older: submit with --python PATH (a newer interpreter on the nodes) "
            'or --container-image IMAGE (exit code 5)", "pnfs-monitor configuration error '
            '(exit code 2): see the job\'s error file")'),
        "on_exit_hold_subcode": (f"ifThenElse(ExitCode =?= {old}, {HOLD_SUBCODE_PYTHON}, "
                                 f"{HOLD_SUBCODE_CONFIG})"),
    }


def _common(executable: Path, arguments: list[str], workdir: Path,
            password_file: Path | None, opts: JobOptions, *, bundled: bool) -> dict[str, str]:
    """A job running pnfs-monitor on a pool node. ``bundled``: ``executable`` is the
    bundle (else a shared install's entry point)."""
    inputs = [str(password_file)] if password_file is not None else []
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
        "max_retries": str(opts.max_retries),
        "retry_until": "ExitCode =?= 0 || ExitCode =?= 1",
        **_hold_rules(),
    }
    if bundled and opts.python:
        desc["transfer_executable"] = "false"
    if opts.container_image:
        desc["universe"] = "container"
        desc["container_image"] = opts.container_image
    if inputs:
        desc["transfer_input_files"] = ",".join(inputs)
    if password_file is not None:
        desc["environment"] = f'"PNFSMON_DB_PASSWORD_FILE={PASSWORD_FILE}"'
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
    desc["on_exit_remove"] = "false"  # stay queued for the next run
    desc["+JobBatchName"] = f'"{opts.batch_name}-crawl"'
    desc["retry_until"] = "true"
    del desc["max_retries"]
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
