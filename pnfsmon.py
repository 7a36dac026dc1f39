"""The ``pnfsmon`` command: assembles the subcommands each package owns and turns errors into
one line and an exit code (see ``schema.errors``). No logic of its own beyond ``demo``,
which strings crawl → check → report together on a sample tree."""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sys
import time
from pathlib import Path

from sqlalchemy import exc

import condor.cli
import crawler.catalog_cli
import crawler.cli
import schema.cli
import tester.cli
import web.cli
from schema import db, migrate
from schema.config import Settings
from schema.errors import EXIT_USAGE, ConfigError, Interrupted, PnfsmonError
from schema.secrets import scrub

DEMO_FILES = 40


def _build_demo_tree(root: Path) -> list[Path]:
    """A small tree with odd names; half the files carry an XRootD-style recorded checksum."""
    from zlib_ng import zlib_ng

    from crawler import xrdcks
    from tester.stream import adler32_hex

    rng = random.Random(2006)
    dirs = [root / "data" / "run1", root / "data" / "run2", root / "mc" / "odd names"]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    (root / "empty").mkdir(exist_ok=True)
    files = []
    for i in range(DEMO_FILES):
        name = [f"file{i:03d}.root", f"f {i} <&>.dat", f"tab\t{i}.dat"][i % 3]
        path = dirs[i % len(dirs)] / name
        data = rng.randbytes(rng.randrange(1, 256 * 1024))
        path.write_bytes(data)
        if i % 2 == 0:
            record = xrdcks.encode(adler32_hex(zlib_ng.adler32(data)), int(path.stat().st_mtime))
            # Without user xattrs here, the first check becomes the reference instead.
            with contextlib.suppress(OSError):
                os.setxattr(path, xrdcks.XATTR_NAME, record)
        files.append(path)
    return files


def _inject_faults(files: list[Path]) -> dict[str, Path]:
    """Flip a bit, delete a file, truncate a file; mtimes restored as silent rot would."""
    flipped, deleted, truncated = files[3], files[7], files[10]
    for path, action in ((flipped, "flip"), (truncated, "truncate")):
        st = path.stat()
        with open(path, "r+b") as fh:
            if action == "flip":
                fh.seek(st.st_size // 2)
                byte = fh.read(1)
                fh.seek(st.st_size // 2)
                fh.write(bytes([byte[0] ^ 0x10]))
            else:
                fh.truncate(st.st_size // 2)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    deleted.unlink()
    return {"corrupted (bit flip)": flipped, "missing": deleted,
            "corrupted (truncated)": truncated}


def do_demo(args: argparse.Namespace) -> int:
    """Build a sample tree in DIR, crawl it, check it, inject three faults (a flipped bit,
    a deleted file, a truncated file), check again and write the report."""
    from tester.worker import CheckOptions
    from web.report import write_report

    base = Path(args.dir).resolve()
    if base.exists() and any(base.iterdir()):
        raise ConfigError(f"demo directory {base} exists and is not empty: name another")
    storage = base / "storage"
    storage.mkdir(parents=True)
    settings = Settings(db_url=f"sqlite:///{base / 'pnfsmon.sqlite'}")
    engine = db.create_engine(settings)
    migrate.upgrade(engine)
    files = _build_demo_tree(storage)
    print(f"built {len(files)} files in {storage}")
    root = os.fsencode(storage)
    started = time.monotonic()
    stats, ingest = crawler.cli.crawl(engine, root, "demo")
    print(crawler.cli.summary(root, "demo", stats, ingest, time.monotonic() - started))

    def check(label: str, recheck_after: float) -> None:
        started = time.monotonic()
        options = CheckOptions(timeout=60, recheck_after=recheck_after)
        tally = tester.cli.run_workers(settings, options, 2, 600.0)
        print(f"{label}: " + tester.cli.summary(tally, time.monotonic() - started))

    check("first check", 30 * 86400.0)
    for what, path in _inject_faults(files).items():
        print(f"injected fault: {what}: {path}")
    check("second check", 0.0)  # everything again, now with the faults
    write_report(engine, base / "report")
    print(f"database: {base / 'pnfsmon.sqlite'}  (try: pnfsmon --db sqlite:///"
          f"{base / 'pnfsmon.sqlite'} status)")
    print(f"report: {base / 'report' / 'index.html'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pnfsmon",
        description="Storage-integrity monitor: crawl a namespace, verify every file's "
                    "Adler32, report what is missing or corrupted.",
    )
    schema.cli.add_common_options(parser, top_level=True)
    parents = [schema.cli.common_options()]
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    schema.cli.register(sub, parents)
    crawler.cli.register(sub, parents)
    crawler.catalog_cli.register(sub, parents)
    tester.cli.register(sub, parents)
    web.cli.register(sub, parents)
    condor.cli.register(sub, parents)
    p = sub.add_parser("demo", help="run crawl, check and report on a sample tree",
                       description=do_demo.__doc__)
    p.add_argument("dir", metavar="DIR", nargs="?", default="pnfsmon-demo",
                   help="where to build it (default: ./pnfsmon-demo)")
    p.set_defaults(func=do_demo)
    return parser


def _on_sigterm(signum, frame):
    raise Interrupted("stopped by SIGTERM")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.func(args)
    except PnfsmonError as err:
        print(scrub(f"pnfsmon: error: {err}"), file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("pnfsmon: interrupted", file=sys.stderr)
        return 130
    except exc.DBAPIError as err:
        if db.is_transient(err):
            print(f"pnfsmon: error: database unavailable: {db.describe(err)}", file=sys.stderr)
            return 3
        print(f"pnfsmon: error: database error: {db.describe(err)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
