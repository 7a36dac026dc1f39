"""``pnfsmon ack``: a person acknowledges lost files (gone from the namespace while missing
or corrupted). Each leaves the lost list, becomes ``vanished`` (pruned like any vanished
file in time), and an ``acknowledgements`` row records what it was, who (the OS user) and
when; that record is never pruned. A lost file that comes back needs no acknowledgement:
the crawl gives it its status back and it is checked again."""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa

from pnfsmon.schema import cli, counts, logs
from pnfsmon.schema.db import retrying, write_transaction
from pnfsmon.schema.errors import EXIT_OK, EXIT_PROBLEMS, ConfigError
from pnfsmon.schema.paths import display, path_hash
from pnfsmon.schema.progress import warn_list
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import acknowledgements, crawls, statuses
from pnfsmon.schema.xrootd import is_xrootd_url

log = logging.getLogger(__name__)

BATCH = 1000
LOST, VANISHED = int(Status.LOST), int(Status.VANISHED)


@dataclass
class Acked:
    files: int = 0
    bytes: int = 0
    not_lost: list[bytes] = field(default_factory=list)  # named, but no lost file has it


def who() -> str:
    """The OS user running this (and who ran sudo, if that is how)."""
    try:
        name = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        name = f"uid {os.geteuid()}"
    sudo = os.environ.get("SUDO_USER")
    if sudo and os.geteuid() == 0 and sudo != name:
        name = f"{sudo} (sudo as {name})"
    return name[:64]


def _ack(conn: sa.Connection, condition, by: str, now: float, limit: int | None = None
         ) -> list:
    """Acknowledge the lost rows matching ``condition`` (at most ``limit``) in ``conn``'s
    transaction; returns them."""
    s = statuses.c
    query = (sa.select(s.id, s.site, s.path, s.path_hash, s.size, s.reference,
                       s.prior_status)
             .where(condition, s.status == LOST).with_for_update())
    if limit is not None:
        query = query.order_by(s.id).limit(limit)
    rows = conn.execute(query).all()
    if not rows:
        return []
    conn.execute(statuses.update().where(s.id.in_([r.id for r in rows]), s.status == LOST)
                 .values(status=VANISHED))
    conn.execute(acknowledgements.insert(), [
        {"site": r.site, "path": bytes(r.path), "path_hash": bytes(r.path_hash),
         "status": r.prior_status if r.prior_status is not None else LOST, "size": r.size,
         "acked_by": by, "acked_at": now} for r in rows])
    deltas = counts.Deltas()
    for r in rows:
        deltas.remove(r.site, LOST, r.reference, r.size)
        deltas.add(r.site, VANISHED, r.reference, r.size)
    deltas.write(conn)
    return rows


def acknowledge(engine: sa.Engine, *, paths: Iterable[bytes] = (), site: str | None = None,
                everything: bool = False, by: str | None = None,
                now: float | None = None) -> Acked:
    """Acknowledge the lost files named by ``paths`` (of ``site``, or of every site that
    has them), or with ``everything`` all of ``site``'s; in batches, each one short
    transaction."""
    by = by or who()
    now = time.time() if now is None else now
    s = statuses.c
    done = Acked()

    def run(condition, limit: int | None = None) -> list:
        def once() -> list:
            with write_transaction(engine) as conn:
                return _ack(conn, condition, by, now, limit)
        rows = retrying(engine, once)
        done.files += len(rows)
        done.bytes += sum(r.size for r in rows)
        return rows

    if everything:
        if site is None:
            raise ValueError("acknowledging everything needs a site")
        while len(run(s.site == site, BATCH)) == BATCH:
            pass
        return done
    with engine.connect() as conn:
        # The unique index is (site, path_hash): naming the sites lets it serve the lookup.
        sites = ([site] if site is not None else
                 conn.execute(sa.select(crawls.c.site).distinct()).scalars().all())
    batch: dict[bytes, bytes] = {}

    def flush() -> None:
        rows = run(sa.and_(s.site.in_(sites), s.path_hash.in_(list(batch)),
                           s.path.in_(list(batch.values()))))
        found = {bytes(r.path) for r in rows}
        done.not_lost.extend(p for p in batch.values() if p not in found)
        batch.clear()

    for path in paths:
        batch[path_hash(path)] = path
        if len(batch) >= BATCH:
            flush()
    if batch:
        flush()
    return done


def do_ack(args: argparse.Namespace) -> int:
    """Acknowledge lost files (gone from the namespace while missing or corrupted): they
    leave the lost list of the report, status and Nagios, and who acknowledged them (the OS
    user) and when is recorded for good. Name the files as crawled, or --all lost files of
    --site. Exits 1 if a named file is not a lost one."""
    if args.all == bool(args.paths):
        raise ConfigError("name the lost files (PATH...) or give --all --site S, not both")
    if args.all and args.site is None:
        raise ConfigError("--all needs --site S: acknowledge one site's lost files at a time")
    paths = [p if is_xrootd_url(p) else os.path.abspath(p) for p in map(os.fsencode,
                                                                          args.paths)]
    engine = cli.engine(args)
    done = acknowledge(engine, paths=paths, site=args.site, everything=args.all)
    where = f" of site {args.site}" if args.site else ""
    logs.result(f"acknowledged {done.files:,} lost files{where} "
                f"({done.bytes:,} bytes) as {who()}")
    if done.not_lost:
        warn_list(f"{len(done.not_lost):,} named files are not lost files{where} (not in the "
                  "database, or not lost)", [display(p) for p in done.not_lost])
        return EXIT_PROBLEMS
    return EXIT_OK


def register(subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("ack", parents=parents, help="acknowledge lost files",
                              description=do_ack.__doc__)
    p.add_argument("paths", metavar="PATH", nargs="*",
                   help="a lost file's path (or root:// URL) as crawled")
    p.add_argument("--all", action="store_true", help="every lost file of --site")
    p.add_argument("--site", help="only this site's files (needed with --all)")
    p.set_defaults(func=do_ack)
