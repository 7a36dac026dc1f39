"""``pnfsmon declare``: list (dry run) or declare a site's corrupted and missing files bad
in Rucio (``schema.declarable``, ``declare.apply``), with ``--dark`` its dark data to
Rucio's quarantine (``declare.dark``), or write the input files of rucio-admin and of the CMS
consistency tools (``declare.files``)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from pnfsmon.declare import apply as declaring
from pnfsmon.declare import dark as darkdata
from pnfsmon.declare import files
from pnfsmon.schema import cli, incidents, paths
from pnfsmon.schema.declarable import Candidate, plan
from pnfsmon.schema.errors import EXIT_OK, EXIT_PROBLEMS, ConfigError
from pnfsmon.schema.status import Status

log = logging.getLogger(__name__)


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t or 0))


def _line(c: Candidate) -> str:
    detail = (f"adler32 computed {c.computed_adler32 or 'none'} recorded "
              f"{c.recorded_adler32 or 'none'}, " if c.status == Status.CORRUPTED else "")
    return f"  {c.status.label:<9}  {paths.display(c.lfn)}  ({detail}checked {_when(c.checked)})"


def do_declare(args: argparse.Namespace) -> int:
    """List the site's confirmed corrupted and missing files that would be declared bad in
    Rucio, each with its reason (corrupted files a second read has not confirmed yet are
    listed as pending confirmation, never declared); with --apply (or the site's `declare =
    apply`), declare them through the Rucio client (its own rucio.cfg, RUCIO_CONFIG) and
    record Rucio's answers. A file is declared once; one that checked ok since is declared
    again only if it breaks again. Without the Rucio client, writes the lists for
    rucio-admin and the CMS consistency tools instead (--output). Files in an incident
    (pnfsmon incident list) are held until a person releases it. With --dark: the site's
    dark data (orphans of its compares) instead, to the quarantine of its RSE once compares
    at least dark_after days apart agree (--apply, or the site's `quarantine = apply`).
    Exits 1 if files are left to declare, pending confirmation or held, or Rucio did not
    take some, 3 if Rucio is unreachable."""
    settings = cli.settings(args)
    site = settings.site(args.site)
    if args.dark:
        return do_dark(args, site)
    apply_now = args.apply or (site.declare == "apply" and not args.dry_run)
    engine = cli.engine(args)
    # Bursts are held before anything is planned, whether or not the check runs that
    # recorded them looked for them (a --forever worker, a worker without the right).
    incidents.detect(engine, settings.incidents)
    found = plan(engine, site)
    where = f"RSE {site.rucio_rse or '(no rucio_rse)'}, scope {site.rucio_scope or '(none)'}"
    installed = declaring.client_installed()
    if apply_now and installed and found.to_declare:
        declaring.require_rucio_settings(site)
        client = declaring.connect()
        tally = declaring.apply(engine, site, found.to_declare, client, found.last_id)
        print(f"site {site.name}, {where}: sent {len(found.to_declare):,} files to Rucio: "
              + ", ".join(f"{n:,} {outcome}" for outcome, n in sorted(tally.items())))
        for c in found.to_declare:
            print(_line(c))
        problems = sum(n for o, n in tally.items() if o not in declaring.BAD_IN_RUCIO)
    else:
        verb = "to declare" if apply_now else "would declare (dry run; --apply declares)"
        print(f"site {site.name}, {where}: {len(found.to_declare):,} files {verb}")
        for c in found.to_declare:
            print(_line(c))
        problems = len(found.to_declare)
    if found.pending:
        print(f"{len(found.pending):,} corrupted files pending confirmation (a second read "
              "must agree before they are declared; `pnfsmon check --paths` re-reads now):")
        for c, due in found.pending:
            print(f"  pending confirmation  {paths.display(c.lfn)}  (corrupted, adler32 "
                  f"computed {c.computed_adler32 or 'none'}, first read {_when(c.checked)}, "
                  f"second read due {_when(due) if due else 'at once'})")
    if found.declared_before:
        print(f"{found.declared_before:,} corrupted or missing files were declared before "
              "(not declared again)")
    if found.held:
        print(f"{len(found.held):,} files held in incidents, not declared until a person "
              f"releases them (pnfsmon incident list --site {site.name}):")
        for c in found.held:
            print("  held" + _line(c)[1:])
    if found.unmapped:
        print(f"{len(found.unmapped):,} files outside the site's LFN mapping "
              "(lfn_prefix/path_prefix) or with a name that is not UTF-8: not declared")
    for r in found.recovered:
        print(f"checked ok since declared: {paths.display(bytes(r.name))} (declared "
              f"{_when(r.declared)}, ok {_when(r.checked)})")
    if args.output or (not installed and found.to_declare):
        if not installed:
            print("the Rucio client is not installed (pip install 'pnfs-monitor[rucio]'): "
                  "nothing declared; wrote the lists for rucio-admin and the CMS "
                  "consistency tools", file=sys.stderr)
        _write_lists(args, site, engine, found.to_declare, _dark_list(engine, site))
    return EXIT_PROBLEMS if problems or found.pending or found.held else EXIT_OK


def _dark_list(engine, site) -> tuple[list[bytes], str | None]:
    """The CMS D.list's LFNs (the latest published compare's dark files), or why none."""
    try:
        dark = darkdata.plan_dark(engine, site)
    except ConfigError as err:  # no compare: no dark list (not an error of declare's)
        return [], str(err)
    return dark.orphans, dark.withheld


def _write_lists(args, site, engine, candidates: list[Candidate],
                 dark: tuple[list[bytes], str | None]) -> None:
    written = files.write(site, candidates, Path(args.output or "."), dark=dark[0],
                          dark_note=dark[1])
    for path in written:
        print(f"wrote {path}")
    print(f"declare with: {files.command(site, written[0])}")


def _dark_line(d: darkdata.Dark, compared: float) -> str:
    size = f"{d.size:,} bytes, " if d.size is not None else ""
    return (f"  dark  {paths.display(d.lfn)}  ({size}dark since {_when(d.since)}, "
            f"{(compared - d.since) / 86400:.1f} days)")


def do_dark(args: argparse.Namespace, site) -> int:
    """``declare --dark``: the site's dark data that compares at least dark_after apart
    agree on, listed (dry run) or sent to the quarantine of its RSE and recorded."""
    apply_now = args.apply or (site.quarantine == "apply" and not args.dry_run)
    engine = cli.engine(args)
    found = darkdata.plan_dark(engine, site)
    where = f"RSE {site.rucio_rse or '(no rucio_rse)'}, scope {site.rucio_scope or '(none)'}"
    installed = declaring.client_installed()
    print(f"site {site.name}, {where}: dark data of compare #{found.compare_id} "
          f"({_when(found.compare_started)})")
    if found.withheld:
        print(f"nothing quarantined: {found.withheld}")
        problems = 1
    elif apply_now and installed and found.due:
        declaring.require_rucio_settings(site)
        client = declaring.connect()
        tally = darkdata.quarantine(engine, site, found, client)
        print(f"sent {len(found.due):,} dark files to the quarantine of {site.rucio_rse}: "
              + ", ".join(f"{n:,} {outcome}" for outcome, n in sorted(tally.items())))
        for d in found.due:
            print(_dark_line(d, found.compare_started))
        problems = sum(n for o, n in tally.items() if o != darkdata.QUARANTINED)
    else:
        verb = ("to quarantine" if apply_now
                else "would quarantine (dry run; --apply quarantines)")
        print(f"{len(found.due):,} dark files {verb}: found by every published compare "
              f"for at least {site.dark_after / 86400:g} days (dark_after)")
        for d in found.due:
            print(_dark_line(d, found.compare_started))
        problems = len(found.due)
    if found.waiting:
        due = min(d.since for d in found.waiting) + site.dark_after
        print(f"{len(found.waiting):,} dark files found for less than dark_after: not yet "
              f"(the first is due with a compare after {_when(due)})")
    if found.quarantined_before:
        print(f"{found.quarantined_before:,} dark files were sent to the quarantine before "
              "(not sent again)")
    if found.changed:
        print(f"{found.changed:,} dark files were written again or are gone since first "
              "found dark: not quarantined")
    if found.registered:
        print(f"{found.registered:,} dark files are in the catalog dump loaded since the "
              "compare: not quarantined")
    if found.unmapped:
        print(f"{found.unmapped:,} dark files have a name that is not UTF-8 (no Rucio "
              "name): not quarantined")
    if args.output or (not installed and found.due):
        if not installed:
            print("the Rucio client is not installed (pip install 'pnfs-monitor[rucio]'): "
                  "nothing quarantined; wrote the CMS consistency lists", file=sys.stderr)
        _write_lists(args, site, engine, plan(engine, site).to_declare,
                     (found.orphans, found.withheld))
    return EXIT_PROBLEMS if problems else EXIT_OK


def register(subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("declare", parents=parents,
                              help="declare a site's corrupted and missing files to Rucio",
                              description=do_declare.__doc__)
    p.add_argument("--site", required=True)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--apply", action="store_true",
                      help="declare them (default: the site's `declare` setting, dry-run)")
    mode.add_argument("--dry-run", action="store_true",
                      help="only list them, even if the site says `declare = apply`")
    p.add_argument("--dark", action="store_true",
                   help="dark data instead: orphans that the site's compares found for at "
                        "least dark_after days go to the quarantine of its RSE (with "
                        "--apply or the site's `quarantine = apply`)")
    p.add_argument("--output", metavar="DIR",
                   help="also write the rucio-admin and CMS consistency lists here "
                        "(without the Rucio client: always, default .)")
    p.set_defaults(func=do_declare)
