"""``pnfsmon inventory load`` and ``pnfsmon compare``: the site's catalog view, and its
comparison with the last crawl (``catalog.inventory``, ``catalog.compare``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pnfsmon.catalog import compare as comparison
from pnfsmon.catalog import inventory
from pnfsmon.schema import cli
from pnfsmon.schema.discrepancies import write_lists
from pnfsmon.schema.errors import EXIT_OK, EXIT_PROBLEMS, ConfigError
from pnfsmon.schema.progress import human_bytes


def do_inventory_load(args: argparse.Namespace) -> int:
    """Load FILE (a plain list of LFNs, CSV or JSON Lines; .gz/.bz2 too) as the site's
    catalog inventory. Replaces the previous inventory only when the whole file loaded."""
    path = Path(args.file)
    if not path.is_file():
        raise ConfigError(f"no inventory file {path}")
    settings = cli.settings(args)
    site = settings.site(args.site)
    engine = cli.engine(args)
    result = inventory.load(engine, site, path, args.format)
    print(f"loaded {result.entries:,} catalog files for site {site.name} from {path}"
          + (f"; {result.unmapped:,} outside the site's LFN mapping were left out"
             if result.unmapped else "")
          + (f"; replaced {result.replaced:,} entries of the previous inventory"
             if result.replaced else ""))
    return EXIT_OK


def do_compare(args: argparse.Namespace) -> int:
    """Compare the site's last crawl with its catalog inventory: files missing at the site,
    orphans (on storage, not in the catalog) and mismatches (size or Adler32), written as
    SITE_missing.txt, SITE_orphan.txt and SITE_mismatch.txt in --output. Refuses to list
    missing or orphan files after an incomplete crawl; lists a file only when two
    consecutive compares found it; flags too many for a person. Exits 1 if anything is
    listed, refused or flagged."""
    settings = cli.settings(args)
    site = settings.site(args.site)
    engine = cli.engine(args)
    result = comparison.compare(engine, site)
    lists = write_lists(engine, result.id, site.name, Path(args.output))
    c, z, n = result.counts, result.sizes, result.candidates
    print(f"compare {result.id} of site {site.name}: {result.state}; "
          f"missing {c['missing']:,} ({human_bytes(z['missing'])}), "
          f"orphan {c['orphan']:,} ({human_bytes(z['orphan'])}), "
          f"mismatch {c['mismatch']:,}; left out: {result.young:,} younger than the grace "
          f"window, {result.ignored:,} ignored")
    waiting = n["missing"] + n["orphan"] - c["missing"] - c["orphan"]
    if waiting and result.state != "refused":
        print(f"{waiting:,} more missing or orphan files were seen for the first time: "
              "listed if the next compare finds them too")
    if result.reason:
        print(f"{result.state}: {result.reason}")
    for path in lists:
        print(f"wrote {path}")
    found = any(c.values()) or result.state != "published"
    return EXIT_PROBLEMS if found else EXIT_OK


def register(subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("inventory", help="the catalog's view of a site")
    sub = p.add_subparsers(dest="inventory_command", required=True, metavar="COMMAND")
    p = sub.add_parser("load", parents=parents, help="load a catalog dump for a site",
                       description=do_inventory_load.__doc__)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--site", required=True, help="the site the dump describes")
    p.add_argument("--format", choices=inventory.FORMATS, default="auto",
                   help="lines, csv or jsonl (default: by the file name)")
    p.set_defaults(func=do_inventory_load)
    p = subparsers.add_parser("compare", parents=parents,
                              help="compare a site's crawl with its catalog",
                              description=do_compare.__doc__)
    p.add_argument("--site", required=True)
    p.add_argument("--output", default=".", metavar="DIR",
                   help="where SITE_missing.txt, SITE_orphan.txt, SITE_mismatch.txt go "
                        "(default: .)")
    p.set_defaults(func=do_compare)
