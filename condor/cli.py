"""``pnfsmon condor``: bundle the tester, submit worker jobs or a scheduled crawl, and
follow a sweep."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from pnfsmon.catalog.inventory import current_load
from pnfsmon.condor import bundle, dag, password, status, submit
from pnfsmon.crawler.namespaces import NAMESPACES
from pnfsmon.schema import cli, schedule
from pnfsmon.schema.cli import add_ignored_recheck_after, ignored_recheck_after
from pnfsmon.schema.errors import ConfigError
from pnfsmon.tester.options import add_check_options, check_options_as_args

DEFAULT_WORKDIR = "pnfsmon-condor"
log = logging.getLogger(__name__)


def _job_options(args: argparse.Namespace, check_args: list[str],
                 account: password.JobAccount | None = None) -> submit.JobOptions:
    if args.request_cpus < 1 or args.request_memory < 1 or args.request_disk < 1:
        raise ConfigError("--request-cpus, --request-memory and --request-disk must be "
                          "positive")
    if args.python and args.executable:
        raise ConfigError("--python runs the bundle; --executable replaces it: not both")
    return submit.JobOptions(
        jobs=getattr(args, "jobs", 1), request_cpus=args.request_cpus,
        request_memory_mb=args.request_memory, request_disk_kb=args.request_disk,
        batch_name=args.batch_name, accounting_group=args.accounting_group,
        requirements=args.requirements, python=args.python,
        container_image=args.container_image,
        check_args=[*check_args, "--log-interval", f"{args.log_interval:g}"],
        tls_files=list(account.tls_files) if account is not None else [],
    )


def _workdir(args: argparse.Namespace) -> Path:
    return Path(args.write or args.workdir).resolve()


@dataclass
class Prepared:
    executable: Path
    host: password.JobAccount  # the submit host's account (--db)
    worker: password.JobAccount  # the worker jobs' (--worker-db, else the host's)


def _prepare(args: argparse.Namespace) -> Prepared:
    """The executable and the accounts the jobs use; nothing written yet."""
    workdir = _workdir(args)
    settings = cli.settings(args)
    host = password.submit_host_account(settings, workdir)
    worker = password.worker_account(settings, getattr(args, "worker_db", None),
                                     getattr(args, "worker_db_password_file", None), workdir)
    executable = (Path(args.executable).resolve() if args.executable
                  else workdir / submit.BUNDLE)
    if args.executable:
        bundle.warn_if_stale(executable)
    jobs = worker or host
    if (warning := submit.local_host_warning(jobs.url)) is not None:
        log.warning("%s", warning)
    return Prepared(executable, host, jobs)


def write_job_files(args, workdir: Path, accounts: list[password.JobAccount]) -> list[Path]:
    """The bundle (unless a shared install is used), the logs directory and any password
    file that has to be written (outside ``workdir``); returns the password files
    written."""
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    if not args.executable:
        bundle.build(workdir / submit.BUNDLE)
    return [p for p in (a.write() for a in accounts) if p is not None]


def _finish(args, description: dict[str, str], count: int, account: password.JobAccount,
            name: str = submit.WORKERS_SUB) -> int:
    sub = submit.render(description)
    workdir = _workdir(args)
    if args.write:
        write_job_files(args, workdir, [account])
        path = workdir / name
        path.write_text(submit.submit_file_text(sub, count))
        print(f"wrote {path} and the bundle; the jobs transfer {account.describe()}; "
              f"submit with: condor_submit {path}")
        return 0
    if args.dry_run:
        print(str(sub).rstrip())
        print(f"# would queue {count} job(s); files transferred with each job:")
        transferred = [description["executable"]] if description.get(
            "transfer_executable") != "false" else []
        transferred += description.get("transfer_input_files", "").split(",")
        for path in filter(None, transferred):
            note = ("  (the DB password, mode 600)"
                    if account.password_file and path == str(account.password_file)
                    else "  (built by submit)" if path.endswith(submit.BUNDLE) else "")
            print(f"#   {path}{note}")
        print(f"# the jobs would transfer {account.describe()}")
        return 0
    written = write_job_files(args, workdir, [account])
    try:
        cluster = submit.submit_to_schedd(sub, count)
    except BaseException:
        for path in written:  # a failed submission leaves no copy of the password
            path.unlink(missing_ok=True)
        raise
    print(f"submitted {count} job(s) as cluster {cluster}; user log "
          f"{workdir / submit.USER_LOG}; they transfer {account.describe()}; follow with: "
          "pnfsmon condor status")
    return 0


def do_submit(args: argparse.Namespace) -> int:
    """Submit N worker jobs in one cluster. Each runs `pnfsmon check --workers 1` on its
    node and keeps claiming files until nothing is due, so more jobs mean a faster sweep.
    The DB password travels as a mode-600 file, never in the description."""
    if args.jobs < 1:
        raise ConfigError("--jobs must be at least 1")
    prepared = _prepare(args)
    opts = _job_options(args, check_options_as_args(args), prepared.worker)
    settings = cli.settings(args)
    if not (args.dry_run or args.write) and settings.config_file is not None:
        # The jobs claim by each site's period in the database (they may run without the
        # configuration file): bring it to the configuration's now. Without a file there
        # is nothing to bring, and no reason to need the database here.
        schedule.apply(cli.engine(args), settings)
    worker = prepared.worker
    description = submit.worker_description(prepared.executable, worker.url, _workdir(args),
                                            worker.password_file, opts,
                                            bundled=not args.executable)
    return _finish(args, description, args.jobs, worker)


def do_submit_crawl(args: argparse.Namespace) -> int:
    """Submit the crawler as a scheduled (crondor) job, for sites that run everything
    inside HTCondor. Others use scripts/ (crontab line, systemd timer)."""
    prepared = _prepare(args)
    opts = _job_options(args, [], prepared.host)
    host = prepared.host  # the crawl writes what a worker may not
    description = submit.crawl_description(prepared.executable, host.url, _workdir(args),
                                           host.password_file, opts, args.root, args.site,
                                           args.cron, namespace=args.namespace,
                                           bundled=not args.executable)
    return _finish(args, description, 1, host, name="pnfsmon-crawl.sub")


def do_dag(args: argparse.Namespace) -> int:
    """Write the nightly pipeline as a DAGMan workflow into DIR: per site a crawl, then
    --jobs worker jobs, then the catalog compare where the site has an inventory, and
    pnfsmon declare where it has a rucio_rse (and declare --dark after its compare); then
    the report. Sites: --site, or every site with a namespace in the configuration file. The
    crawl, compare and report run on the submit host (local universe). Submit with
    condor_submit_dag DIR/pnfsmon-nightly.dag, or with --cron every night by
    condor_submit DIR/pnfsmon-nightly-cron.sub."""
    if args.jobs < 1:
        raise ConfigError("--jobs must be at least 1")
    settings = cli.settings(args)
    names = ([args.site] if args.site else
             [s.name for s in settings.sites.values() if s.namespace])
    prepared = _prepare(args)
    opts = _job_options(args, [], prepared.worker)  # the pool jobs' options
    engine = cli.engine(args)
    schedule.apply(engine, settings)  # the periods the worker jobs claim by
    plans = []
    for name in names:
        # This site's claims (by its recheck_after in the database, see above).
        site_args = check_options_as_args(argparse.Namespace(**{**vars(args), "site": name}))
        with engine.connect() as conn:
            plans.append(dag.SitePlan(settings.site(name),
                                      current_load(conn, name) is not None, site_args))
    engine.dispose()
    workdir = _workdir(args)
    inputs = dag.DagInputs(
        workdir=workdir, db_url=prepared.host.local_url,  # local nodes: the submit host
        password_file=prepared.host.password_file,
        worker_db_url=prepared.worker.url, worker_password_file=prepared.worker.password_file,
        config_file=settings.config_file.resolve() if settings.config_file else None,
        local_pnfsmon=dag.local_pnfsmon(args.executable), bundle=prepared.executable,
        bundled=not args.executable, opts=opts,
        report_dir=Path(args.report_dir or workdir / "report").resolve(),
        log_interval=args.log_interval)
    workflow, report = dag.build(plans, inputs, args.jobs)
    write_job_files(args, workdir, [prepared.host, prepared.worker])
    written = dag.write(workflow, report, inputs, args.cron)
    print(f"wrote {written[0]} ({len(plans)} sites: {', '.join(p.site.name for p in plans)})"
          f"; the worker jobs transfer {prepared.worker.describe()}"
          f"; submit with: condor_submit_dag {written[0]}"
          + (f", or every night ({args.cron}): condor_submit {written[-1]}"
             if args.cron else ""))
    return 0


def do_bundle(args: argparse.Namespace) -> int:
    """Build the self-contained tester (a zipapp needing only python3 >= 3.10)."""
    cli.refuse_db(args, "condor bundle", "the bundle carries no database; submit "
                  "gives the jobs theirs")
    path = bundle.build(Path(args.output))
    print(f"bundle written to {path} ({path.stat().st_size / 1e6:.1f} MB); "
          f"run it with: python3 {path} check --workers 1 --db URL")
    return 0


def do_status(args: argparse.Namespace) -> int:
    """Jobs idle/running/held/done from the user log, files checked per hour and the ETA
    of the sweep from the database."""
    engine = cli.engine(args)
    bundle.warn_if_stale(Path(args.workdir) / submit.BUNDLE)
    user_log = Path(args.log) if args.log else Path(args.workdir) / submit.USER_LOG
    jobs = status.read_user_log(user_log) if user_log.exists() or args.log else None
    ignored_recheck_after(args)
    with engine.connect() as conn:
        progress = status.sweep_progress(conn)
    print(status.format_status(jobs, progress))
    if jobs is None:
        print(f"(no user log at {user_log}: job states unknown)", file=sys.stderr)
    return 0


def _site_options(p: argparse.ArgumentParser, *, dag: bool = False) -> None:
    if not dag:
        p.add_argument("--workdir", default=DEFAULT_WORKDIR,
                       help="where the bundle, logs and user log go (default: "
                            f"./{DEFAULT_WORKDIR})")
    p.add_argument("--executable", metavar="PATH",
                   help="a shared install's pnfsmon entry (CVMFS/NFS) instead of the bundle")
    p.add_argument("--request-cpus", type=int, default=1)
    p.add_argument("--request-memory", type=int, default=1024, metavar="MiB")
    p.add_argument("--request-disk", type=int, default=1024 * 1024, metavar="KiB")
    p.add_argument("--batch-name", default="pnfsmon", help="+JobBatchName (default: pnfsmon)")
    p.add_argument("--accounting-group", help="accounting_group for the jobs")
    p.add_argument("--requirements", metavar="EXPR",
                   help='extra requirements, e.g. \'(Machine =!= "pool1.example.org")\'')
    p.add_argument("--python", metavar="PATH",
                   help="the interpreter on the nodes that runs the bundle (>= 3.10; e.g. "
                        "on EL9 nodes, whose python3 is 3.9: /usr/bin/python3.11)")
    p.add_argument("--container-image", metavar="IMAGE",
                   help="run the jobs in this Apptainer image (HTCondor's container_image)")
    p.add_argument("--worker-db", metavar="URL",
                   help="the worker jobs' own database account (the worker role of `pnfsmon "
                        "db grants`), so the submit host's password never travels "
                        "(default: worker_db = in the configuration, else --db)")
    p.add_argument("--worker-db-password-file", metavar="FILE",
                   help="its password file, mode 600, transferred with each job "
                        "(default: worker_db_password_file = in the configuration)")
    if dag:
        return
    what = p.add_mutually_exclusive_group()
    what.add_argument("--dry-run", action="store_true",
                      help="print the description and the files it would transfer; submit "
                           "nothing")
    what.add_argument("--write", metavar="DIR",
                      help="write a submit file and the bundle into DIR (for condor_submit "
                           "DIR/FILE, from anywhere; no password in it); submit nothing")


def register(subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p_condor = subparsers.add_parser("condor", help="run workers as HTCondor jobs")
    sub = p_condor.add_subparsers(dest="condor_command", required=True, metavar="COMMAND")
    p = sub.add_parser("submit", parents=parents, help="submit worker jobs",
                       description=do_submit.__doc__)
    p.add_argument("--jobs", type=int, default=10, help="number of worker jobs (default: 10)")
    _site_options(p)
    add_check_options(p)
    p.set_defaults(func=do_submit)
    p = sub.add_parser("submit-crawl", parents=parents, help="submit a scheduled crawl",
                       description=do_submit_crawl.__doc__)
    p.add_argument("root", metavar="ROOT")
    p.add_argument("--site", default="local")
    p.add_argument("--cron", default="0 2 * * *",
                   help='schedule, 5 cron fields (default: "0 2 * * *")')
    p.add_argument("--namespace", choices=NAMESPACES,
                   help="passed to pnfsmon crawl (default: by ROOT)")
    _site_options(p)
    p.set_defaults(func=do_submit_crawl)
    p = sub.add_parser("dag", parents=parents, help="write the nightly pipeline as a DAG",
                       description=do_dag.__doc__)
    p.add_argument("--write", metavar="DIR", required=True,
                   help="where the DAG, its submit files, the bundle and logs go")
    p.add_argument("--jobs", type=int, default=10,
                   help="worker jobs per site (default: 10)")
    p.add_argument("--cron", metavar="SCHEDULE",
                   help='also write a crondor job that submits the DAG, e.g. "0 2 * * *"')
    p.add_argument("--report-dir", metavar="DIR",
                   help="where the report goes (default: DIR/report)")
    _site_options(p, dag=True)
    add_check_options(p)
    p.set_defaults(func=do_dag, workdir=None, dry_run=False)
    p = sub.add_parser("bundle", help=do_bundle.__doc__, description=do_bundle.__doc__)
    p.add_argument("output", metavar="OUTPUT", nargs="?", default="pnfsmon.pyz")
    p.set_defaults(func=do_bundle)
    p = sub.add_parser("status", parents=parents, help="jobs and sweep progress",
                       description=do_status.__doc__)
    p.add_argument("--workdir", default=DEFAULT_WORKDIR)
    p.add_argument("--log", help="the jobs' user log (default: WORKDIR/pnfsmon-jobs.log)")
    add_ignored_recheck_after(p)
    p.set_defaults(func=do_status)
