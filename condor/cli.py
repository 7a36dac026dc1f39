"""``pnfsmon condor``: bundle the tester, submit worker jobs or a scheduled crawl, and
follow a sweep."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from condor import bundle, status, submit
from crawler.namespaces import NAMESPACES
from schema import cli
from schema.errors import ConfigError
from tester.cli import add_check_options, check_options_as_args

DEFAULT_WORKDIR = "pnfsmon-condor"


def _job_options(args: argparse.Namespace, check_args: list[str]) -> submit.JobOptions:
    if args.request_cpus < 1 or args.request_memory < 1 or args.request_disk < 1:
        raise ConfigError("--request-cpus, --request-memory and --request-disk must be "
                          "positive")
    return submit.JobOptions(
        jobs=getattr(args, "jobs", 1), request_cpus=args.request_cpus,
        request_memory_mb=args.request_memory, request_disk_kb=args.request_disk,
        batch_name=args.batch_name, accounting_group=args.accounting_group,
        requirements=args.requirements, check_args=check_args,
    )


def _prepare(args: argparse.Namespace) -> tuple[Path, str, Path | None, str | None]:
    """(executable, URL without password, password file to transfer, the password)."""
    workdir = Path(args.workdir).resolve()
    db_url, password = submit.split_secret(cli.settings(args))
    executable = (Path(args.executable).resolve() if args.executable
                  else workdir / "pnfsmon.pyz")
    password_file = workdir / submit.PASSWORD_FILE if password is not None else None
    return executable, db_url, password_file, password


def _finish(args, description: dict[str, str], count: int, password: str | None) -> int:
    sub = submit.render(description)
    workdir = Path(args.workdir).resolve()
    if args.dry_run:
        print(str(sub).rstrip())
        print(f"# would queue {count} job(s); files transferred with each job:")
        print(f"#   {description['executable']}"
              + ("" if args.executable else "  (built by submit)"))
        if "transfer_input_files" in description:
            print(f"#   {description['transfer_input_files']}  (the DB password, mode 600)")
        return 0
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    if not args.executable:
        bundle.build(workdir / "pnfsmon.pyz")
    if password is not None:
        submit.write_password_file(workdir, password)
    cluster = submit.submit_to_schedd(sub, count)
    print(f"submitted {count} job(s) as cluster {cluster}; user log "
          f"{workdir / submit.USER_LOG}; follow with: pnfsmon condor status")
    return 0


def do_submit(args: argparse.Namespace) -> int:
    """Submit N worker jobs in one cluster. Each runs `pnfsmon check --workers 1` on its
    node and keeps claiming files until nothing is due, so more jobs mean a faster sweep.
    The DB password travels as a mode-600 file, never in the description."""
    if args.jobs < 1:
        raise ConfigError("--jobs must be at least 1")
    executable, db_url, password_file, password = _prepare(args)
    opts = _job_options(args, check_options_as_args(args))
    description = submit.worker_description(executable, db_url, Path(args.workdir).resolve(),
                                            password_file, opts)
    return _finish(args, description, args.jobs, password)


def do_submit_crawl(args: argparse.Namespace) -> int:
    """Submit the crawler as a scheduled (crondor) job, for sites that run everything
    inside HTCondor. Others use scripts/ (crontab line, systemd timer)."""
    executable, db_url, password_file, password = _prepare(args)
    opts = _job_options(args, [])
    description = submit.crawl_description(executable, db_url, Path(args.workdir).resolve(),
                                           password_file, opts, args.root, args.site,
                                           args.cron, namespace=args.namespace)
    return _finish(args, description, 1, password)


def do_bundle(args: argparse.Namespace) -> int:
    """Build the self-contained tester (a zipapp needing only python3 >= 3.10)."""
    path = bundle.build(Path(args.output))
    print(f"bundle written to {path} ({path.stat().st_size / 1e6:.1f} MB); "
          f"run it with: python3 {path} check --workers 1 --db URL")
    return 0


def do_status(args: argparse.Namespace) -> int:
    """Jobs idle/running/held/done from the user log, files checked per hour and the ETA
    of the sweep from the database."""
    engine = cli.engine(args)
    log = Path(args.log) if args.log else Path(args.workdir) / submit.USER_LOG
    jobs = status.read_user_log(log) if log.exists() or args.log else None
    with engine.connect() as conn:
        progress = status.sweep_progress(conn, args.recheck_after * 86400)
    print(status.format_status(jobs, progress))
    if jobs is None:
        print(f"(no user log at {log}: job states unknown)", file=sys.stderr)
    return 0


def _site_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default=DEFAULT_WORKDIR,
                   help=f"where the bundle, logs and user log go (default: ./{DEFAULT_WORKDIR})")
    p.add_argument("--executable", metavar="PATH",
                   help="a shared install's pnfsmon entry (CVMFS/NFS) instead of the bundle")
    p.add_argument("--request-cpus", type=int, default=1)
    p.add_argument("--request-memory", type=int, default=1024, metavar="MiB")
    p.add_argument("--request-disk", type=int, default=1024 * 1024, metavar="KiB")
    p.add_argument("--batch-name", default="pnfsmon", help="+JobBatchName (default: pnfsmon)")
    p.add_argument("--accounting-group", help="accounting_group for the jobs")
    p.add_argument("--requirements", metavar="EXPR",
                   help='extra requirements, e.g. \'(Machine =!= "pool1.example.org")\'')
    p.add_argument("--dry-run", action="store_true",
                   help="print the description and the files it would transfer; submit nothing")


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
    p = sub.add_parser("bundle", help=do_bundle.__doc__, description=do_bundle.__doc__)
    p.add_argument("output", metavar="OUTPUT", nargs="?", default="pnfsmon.pyz")
    p.set_defaults(func=do_bundle)
    p = sub.add_parser("status", parents=parents, help="jobs and sweep progress",
                       description=do_status.__doc__)
    p.add_argument("--workdir", default=DEFAULT_WORKDIR)
    p.add_argument("--log", help="the jobs' user log (default: WORKDIR/pnfsmon-jobs.log)")
    p.add_argument("--recheck-after", type=float, default=30.0, metavar="D")
    p.set_defaults(func=do_status)
