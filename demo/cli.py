"""``pnfsmon demo``: crawl → check → report on a sample tree, with injected faults."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from pnfsmon.crawler.crawl import crawl
from pnfsmon.crawler.crawl import summary as crawl_summary
from pnfsmon.demo import tree
from pnfsmon.schema import db, migrate
from pnfsmon.schema.cli import common_options, refuse_db
from pnfsmon.schema.config import Settings
from pnfsmon.schema.errors import ConfigError
from pnfsmon.tester.pool import run_workers
from pnfsmon.tester.pool import summary as check_summary
from pnfsmon.tester.worker import CheckOptions


def do_demo(args: argparse.Namespace) -> int:
    """Build a sample tree in DIR, crawl it, check it, inject three faults (a flipped bit,
    a deleted file, a truncated file), check again and write the report. The demo keeps
    its own SQLite database in DIR: --db, $PNFSMON_DB and the configuration file are not
    used."""
    from pnfsmon.web.report import write_report

    refuse_db(args, "demo", "it makes its own SQLite database in DIR")
    base = Path(args.dir).resolve()
    if base.exists() and any(base.iterdir()):
        raise ConfigError(f"demo directory {base} exists and is not empty: name another "
                          "DIR, e.g. pnfsmon demo pnfsmon-demo-2")
    storage = base / "storage"
    storage.mkdir(parents=True)
    settings = Settings(db_url=f"sqlite:///{base / 'pnfsmon.sqlite'}")
    engine = db.create_engine(settings)
    migrate.upgrade(engine)
    files = tree.build(storage)
    print(f"built {len(files)} files in {storage}")
    root = os.fsencode(storage)
    started = time.monotonic()
    stats, ingest = crawl(engine, root, "demo")
    print(crawl_summary(root, "demo", stats, ingest, time.monotonic() - started))

    def check(label: str, recheck_after: float | None) -> None:
        started = time.monotonic()
        options = CheckOptions(timeout=60, recheck_after=recheck_after)
        tally = run_workers(settings, options, 2, 600.0)
        print(f"{label}: " + check_summary(tally, time.monotonic() - started))

    check("first check", None)  # what is due: every file, all new
    for what, path in tree.inject_faults(files).items():
        print(f"injected fault: {what}: {path}")
    check("second check", 0.0)  # everything again, now with the faults
    write_report(engine, base / "report")
    print(f"database: {base / 'pnfsmon.sqlite'}  (try: pnfsmon --db sqlite:///"
          f"{base / 'pnfsmon.sqlite'} status)")
    print(f"report: {base / 'report' / 'index.html'}")
    return 0


def register(subparsers, _parents: list[argparse.ArgumentParser]) -> None:
    # Its own parent: the logging options without --db, which the demo would not use.
    p = subparsers.add_parser("demo", parents=[common_options(database=False)],
                              help="run crawl, check and report on a sample tree",
                              description=do_demo.__doc__)
    p.add_argument("dir", metavar="DIR", nargs="?", default="pnfsmon-demo",
                   help="where to build it (default: ./pnfsmon-demo)")
    p.set_defaults(func=do_demo)
