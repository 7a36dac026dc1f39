"""``pnfsmon incident list|show|release|dismiss``: the bursts of problem verdicts held from
Rucio (``schema.incidents``), and a person's decision about each."""

from __future__ import annotations

import argparse
import getpass
import json

from pnfsmon.schema import cli, incidents, paths
from pnfsmon.schema.errors import EXIT_OK, EXIT_PROBLEMS, ConfigError


def do_list(args: argparse.Namespace) -> int:
    """Look for new bursts (as every check run and every declare does), then list the open
    incidents (with --all, the decided ones too). Exits 1 while an incident is open."""
    settings = cli.settings(args)
    engine = cli.engine(args)
    incidents.detect(engine, settings.incidents)
    with engine.connect() as conn:
        found = incidents.listed(conn, site=args.site, everything=args.all)
    if args.json:
        print(json.dumps([i.as_json() for i in found], indent=2))
    else:
        for inc in found:
            print(inc.describe())
        if not found:
            print("no open incidents" if not args.all else "no incidents")
    still_open = [i for i in found if i.state == incidents.OPEN]
    if still_open and not args.json:
        print("held from Rucio until a person decides: pnfsmon incident show N, then "
              "release N (its files may be declared) or dismiss N (they are checked again)")
    return EXIT_PROBLEMS if still_open else EXIT_OK


def do_show(args: argparse.Namespace) -> int:
    """One incident and its files: the verdict that put each there, and its status now."""
    engine = cli.engine(args)
    with engine.connect() as conn:
        inc = incidents.get(conn, args.id)
        files = incidents.files_of(conn, args.id)
    print(inc.describe())
    for f in files:
        now = f.status.label if f.status is not None else "pruned"
        path = paths.display(f.path) if f.path is not None else f"(file {f.file_id})"
        print(f"  {f.verdict.label:<9}  {incidents.utc(f.checked)}  now {now:<9}  {path}")
    return EXIT_PROBLEMS if inc.state == incidents.OPEN else EXIT_OK


def _who(args: argparse.Namespace) -> str:
    who = args.by or getpass.getuser()
    if not who.strip():
        raise ConfigError("--by needs a name")
    return who


def do_release(args: argparse.Namespace) -> int:
    """A person judged the burst real: release the incident, so its files may be declared
    to Rucio (pnfsmon declare). Records who (--by, default the OS user) and when."""
    engine = cli.engine(args)
    inc = incidents.release(engine, args.id, _who(args))
    print(inc.describe())
    print(f"its {inc.files:,} files are no longer held: pnfsmon declare --site {inc.site} "
          "lists what would be declared")
    return EXIT_OK


def do_dismiss(args: argparse.Namespace) -> int:
    """A person judged the burst false (a flaky node, a pool that was down): dismiss the
    incident and queue its files to be checked again first; they stay held from Rucio
    until checked. Records who (--by, default the OS user) and when."""
    engine = cli.engine(args)
    inc, queued = incidents.dismiss(engine, args.id, _who(args))
    print(inc.describe())
    print(f"{queued:,} of its {inc.files:,} files queued to be checked again now (pnfsmon "
          "check); the rest are being checked, or gone or changed since")
    return EXIT_OK


def register(subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("incident", help="bursts of problems held from Rucio",
                              description=__doc__)
    sub = p.add_subparsers(dest="incident_command", required=True, metavar="ACTION")
    q = sub.add_parser("list", parents=parents, help="detect, then list incidents",
                       description=do_list.__doc__)
    q.add_argument("--site", help="only this site's incidents")
    q.add_argument("--all", action="store_true", help="released and dismissed ones too")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=do_list)
    q = sub.add_parser("show", parents=parents, help="one incident and its files",
                       description=do_show.__doc__)
    q.add_argument("id", type=int, metavar="N")
    q.set_defaults(func=do_show)
    for name, func, what in (("release", do_release, "its files may be declared"),
                             ("dismiss", do_dismiss, "its files are checked again")):
        q = sub.add_parser(name, parents=parents, help=what, description=func.__doc__)
        q.add_argument("id", type=int, metavar="N")
        q.add_argument("--by", help="who decides (default: the OS user)")
        q.set_defaults(func=func)
