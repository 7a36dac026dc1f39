"""One crawl of one root: walk a namespace and ingest what it lists into ``statuses`` as
one row of ``crawls``. The unit ``pnfsmon crawl``, the demo and the tests share; the CLI
adds only the options, the site's settings and the messages."""

from __future__ import annotations

import logging
from contextlib import closing

import sqlalchemy as sa

from pnfsmon.crawler import digests, directories
from pnfsmon.crawler.ingest import Ingest
from pnfsmon.crawler.listing import WalkStats
from pnfsmon.crawler.namespaces import Namespace
from pnfsmon.crawler.posix import PosixNamespace
from pnfsmon.schema.errors import Interrupted, StorageUnavailable
from pnfsmon.schema.paths import display
from pnfsmon.schema.progress import Progress, count, human_bytes, stopped_by
from pnfsmon.schema.sites import DEFAULT_FULL_CRAWL_EVERY
from pnfsmon.schema.tables import crawls

log = logging.getLogger(__name__)


def crawl(engine, root: bytes | Namespace, site: str, *, read_xattrs: bool = True,
          grace: float = 0.0, include_nearline: bool = False,
          progress: Progress | None = None, local_infile: bool = True,
          max_drop: float | None = None, incremental: bool = False, full: bool = False,
          full_every: float = DEFAULT_FULL_CRAWL_EVERY, now: float | None = None
          ) -> tuple[WalkStats, Ingest]:
    """Walk ``root`` (a local directory, or any namespace) and ingest it as one crawl of
    ``site``; the unit the CLI and the demo share. ``grace``: seconds after its last
    modification before a file may be judged (the CLI's default is two hours).
    ``max_drop``: the fraction of the site that may vanish at once (the CLI gives the
    site's ``max_crawl_drop``); above it, or when the root lists nothing, nothing is
    marked vanished and ``ingest.drop`` says why. None: no limit (``--allow-drop``).
    ``incremental``: list only the directories that changed since the last complete
    crawl (``crawler.directories``), unless ``full``, or the last full crawl is
    ``full_every`` seconds old at ``now`` (default: the clock), or the namespace cannot."""
    namespace = (PosixNamespace(root, read_xattrs=read_xattrs) if isinstance(root, bytes)
                 else root)
    skipping = namespace.name in directories.SKIPPING
    plan = directories.plan(engine, site, namespace.root, allowed=incremental and skipping,
                            full=full, full_every=full_every, grace=grace, started=now)
    if incremental and not skipping:
        plan.why = f"the {namespace.name} namespace is always crawled in full"
    stats = WalkStats(kind=plan.kind, full_because=plan.why)
    ingest = Ingest(engine, site, namespace.root, grace=grace,
                    include_nearline=include_nearline, local_infile=local_infile,
                    digests=plan.digests())

    def shown(walk, every: int = 256):
        # Looked at every 256 files, not each (a re-crawl's walk is a few microseconds a
        # file): at the slowest mount's pace that is still more than once a second.
        for n, item in enumerate(walk):
            if not n % every:
                progress.update(stats.files, f"{stats.directories:,} directories")
            yield item

    processes = (namespace.processes(plan, ingest.digests)
                 if isinstance(namespace, PosixNamespace) else 0)
    try:
        # In here: a mount walk sorts every known directory when it is made, and a signal
        # then must still leave the crawl incomplete, its staging table dropped.
        if processes:  # (closed at once, however the ingest ends: its walkers go)
            stats.walkers = processes
            with closing(namespace.walk_directories(stats, plan, processes, ingest.digests,
                                                    include_nearline)) as runs:
                ingest.add_directories(runs if progress is None else shown(runs, 1))
        else:
            walk = namespace.walk(stats, plan) if skipping else namespace.walk(stats)
            ingest.add_all(walk if progress is None else shown(walk))
        if progress is not None:
            progress.done()
        if stats.stopped is not None:  # what was listed is recorded; nothing is vanished
            raise StorageUnavailable(stats.stopped)
        if plan.known is not None:
            stats.carried_files, carried_bytes = ingest.carry_over(
                plan.carried(stats.unreadable))
            stats.files += stats.carried_files
            stats.bytes += carried_bytes
            stats.skipped_directories = len(plan.skipped)
            stats.vanished_directories = len(plan.vanished)
        ingest.mark_vanished(stats.unreadable, listed=stats.files, max_drop=max_drop)
        ingest.finish(stats, kind=plan.kind, skipped_directories=stats.skipped_directories,
                      when_complete=lambda conn: directories.save(
                          conn, site, ingest.crawl_id, plan, saved_digests(conn, site, ingest))
                      if skipping else None)
        if ingest.unchanged_directories:
            log.info("%s directories (%s files) listed as the last complete crawl left "
                     "them: compared by their digests", f"{len(ingest.unchanged_directories):,}",
                     f"{ingest.unchanged_files:,}")
    except (KeyboardInterrupt, Interrupted) as err:
        ingest.abandon()
        c = ingest.counts
        raise Interrupted(
            f"crawl stopped by {stopped_by(err)} after listing {count(stats.files, 'file')} "
            f"({c.new:,} new and {c.changed:,} changed recorded); it stays incomplete: "
            "nothing was marked vanished, and the next crawl lists everything again"
        ) from None
    except BaseException:
        ingest.abandon()
        raise
    return stats, ingest


def saved_digests(conn: sa.Connection, site: str, ingest: Ingest
                  ) -> dict[bytes, bytes | None] | None:
    """The directory digests a complete crawl leaves (``crawler.digests``): none if
    another crawl of the site ran beside it."""
    other = digests.overlapped(conn, site, ingest.crawl_id, ingest.started)
    if other is None:
        return ingest.listed_digests
    log.warning("crawl %d of site %s ran beside this one: no directory digests saved (the "
                "next full crawl compares every file, and saves them)", other, site)
    return None


def previous_files(engine, site: str, root: bytes) -> int | None:
    """How many files the last finished crawl of ``site`` below ``root`` listed."""
    with engine.connect() as conn:
        return conn.execute(
            sa.select(crawls.c.files)
            .where(crawls.c.site == site, crawls.c.root == root, crawls.c.finished.is_not(None))
            .order_by(crawls.c.id.desc()).limit(1)
        ).scalar()


def summary(root: bytes, site: str, stats: WalkStats, ingest: Ingest, seconds: float) -> str:
    c = ingest.counts
    rate = stats.files / max(seconds, 1e-9)
    if stats.kind == directories.INCREMENTAL:
        kind = (f"incremental crawl: {stats.directories:,} directories listed, "
                f"{stats.skipped_directories:,} skipped as unchanged "
                f"({stats.carried_files:,} files carried over), "
                f"{stats.vanished_directories:,} gone")
    else:
        kind = ("full crawl" + (f" ({stats.full_because})" if stats.full_because else "")
                + (f", walked by {stats.walkers} processes" if stats.walkers else ""))
    return (
        f"crawled {display(root)} (site {site}; {kind}) in {seconds:.1f} s: "
        f"{count(stats.files, 'file')}, "
        f"{count(stats.directories, 'directory', 'directories')} listed "
        f"({stats.empty_directories:,} empty, {stats.unreadable_directories:,} unreadable), "
        f"{human_bytes(stats.bytes)}; new {c.new:,}, changed {c.changed:,}, "
        f"vanished {c.vanished:,}"
        + (f" ({c.lost:,} lost: missing or corrupted when they went)" if c.lost else "")
        + (f", not marked vanished {ingest.withheld:,}" if ingest.withheld else "")
        + (f", truncated in place {c.truncated:,}" if c.truncated else "")
        + (f", back unchanged {c.returned:,}" if c.returned else "")
        + f", skipped {stats.skipped:,}; "
        f"recorded checksums unread {stats.checksums_unread:,}"
        + (f", xattrs unsupported {stats.xattrs_unsupported:,}"
           if stats.xattrs_unsupported else "")
        + f"; {rate:,.0f} files/s"
    )
