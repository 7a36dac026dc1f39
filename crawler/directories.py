"""Incremental crawls: which directories a crawl lists, and the directory state a complete
crawl leaves for the next one.

In dCache a file is written once, and creating, deleting or renaming an entry moves its
directory's mtime (Chimera's ``createInodeInParent``/``decNlinkForDir``); completing a file
(its size and checksum set after the write) does not. So a directory whose mtime has not
moved since the last complete crawl holds the same files, with the same sizes and
checksums, unless one of them was still being written then. An incremental crawl stats
every directory that crawl saw (with the mount walk's concurrency, ``crawler.walk``, or
XRootD's requests in flight, ``crawler.xrootd``) and lists only:

- directories whose mtime moved, and new ones (found in a listed parent);
- directories whose mtime is within the grace (an NFS attribute cache may show it late);
- directories that held, at the last crawl, a file younger than the grace, an empty file
  or a file without a recorded checksum (an upload that may still complete), or whose own
  mtime was within the grace then, or (a namespace whose mtimes are whole seconds) within
  the second before it was listed (*unsettled*).

The files of the other directories are carried over in the database, set-based
(``crawler.ingest``): they count as listed. A directory that is gone takes its files with
it (the crawl's vanish step, with its drop guard). A directory that cannot be stat'ed is
unlisted: its files are neither carried over nor marked vanished, and the crawl is not
complete.

The state (``crawl_directories``) is written only when a crawl finishes complete, in the
transaction that marks it finished: a crawl that dies or is incomplete leaves the previous
complete crawl's state in force. A full crawl still runs every ``full_crawl_every`` days
(and with ``crawl --full``): what no directory mtime shows (a POSIX file rewritten in
place, a dCache pool or tape locality that changed) is seen then."""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from pnfsmon.crawler.listing import Listed
from pnfsmon.schema.paths import path_hash
from pnfsmon.schema.status import GONE
from pnfsmon.schema.tables import crawl_directories, crawls, statuses

FULL, INCREMENTAL = "full", "incremental"
BATCH = 1000  # directories per statement
#: Namespaces whose files are written once: crawled incrementally unless the site says no.
WRITE_ONCE = ("pnfs", "chimera")
#: Namespaces that can skip directories (mount walks, XRootD); others are always crawled
#: in full.
SKIPPING = ("pnfs", "chimera", "posix", "xrootd")


@dataclass(frozen=True)
class Known:
    """A directory as the last complete crawl saw it (and its listing's digest,
    ``crawler.digests``, if one can be trusted)."""

    mtime_ns: int
    unsettled: bool
    digest: bytes | None = None


@dataclass
class DirectoryPlan:
    """One crawl's directories: which to list, and what it saw of them. ``known`` None: a
    full crawl (every directory listed). Fed by the walk from its consuming thread only."""

    root: bytes
    known: dict[bytes, Known] | None
    started: float = field(default_factory=time.time)
    grace: float = 0.0
    why: str = ""  # why a full crawl is full
    previous: dict[bytes, Known] = field(default_factory=dict)  # the state in force
    listed: dict[bytes, list] = field(default_factory=dict)  # path -> [mtime_ns, unsettled]
    skipped: list[bytes] = field(default_factory=list)
    vanished: list[bytes] = field(default_factory=list)  # gone, confirmed (``settle``)
    candidates: list[bytes] = field(default_factory=list)  # gone by their own stat
    # An incremental crawl's listed directories: the subdirectories each listing held.
    children: dict[bytes, set[bytes]] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return FULL if self.known is None else INCREMENTAL

    def digests(self) -> dict[bytes, bytes]:
        """The saved digest of each directory that has one, by its name (no trailing
        slash, as ``crawler.ingest`` names a listed file's directory)."""
        return {_key(p): k.digest for p, k in self.previous.items() if k.digest is not None}

    def to_stat(self) -> list[bytes]:
        """The known directories, to be stat'ed (an incremental crawl) or none."""
        return sorted(self.known, reverse=True) if self.known is not None else []

    def is_new(self, directory: bytes) -> bool:
        """A subdirectory found in a listing: listed if the last crawl did not know it (a
        known one is stat'ed on its own)."""
        return self.known is None or directory not in self.known

    def must_list(self, directory: bytes, mtime_ns: int) -> bool:
        """A known directory stat'ed: list it, or skip it as unchanged."""
        known = self.known[directory]
        if known.mtime_ns != mtime_ns or known.unsettled or self._young(mtime_ns):
            return True
        self.skipped.append(directory)
        return False

    def gone(self, directory: bytes) -> None:
        """A known directory's stat found nothing, or no directory, there: gone once
        ``settle`` confirms it."""
        self.candidates.append(directory)

    def listing(self, directory: bytes, mtime_ns: int | None, *,
                asked: float | None = None, subdirectories: list[bytes] = ()) -> None:
        """A directory was listed; its mtime read before its entries, and the
        subdirectories it holds. ``asked``: when its listing was asked for, from a
        namespace whose mtimes are whole seconds (XRootD)."""
        if self.known is not None:
            self.children[_key(directory)] = {_key(d) for d in subdirectories}
        unsettled = mtime_ns is None or self._young(mtime_ns)
        if asked is not None and mtime_ns is not None and mtime_ns / 1e9 + 1 > asked:
            # A whole-second mtime does not move when the directory changes again within
            # the same second: a file created just after the listing, in the second of the
            # mtime read before it, would leave the mtime the next crawl compares equal,
            # and be missed until a full crawl. Only an mtime whose second had ended when
            # the listing was asked for is trusted (with the clocks of client and server
            # agreeing; the grace covers a skew).
            unsettled = True
        self.listed[directory] = [mtime_ns, unsettled]

    def file(self, directory: bytes, item: Listed) -> None:
        """A file listed in ``directory`` (``files`` for one)."""
        self.files(directory, (item,))

    def files(self, directory: bytes, items: Sequence[Listed]) -> None:
        """Files listed in ``directory`` (a mount walk's directory at once): one that may
        still change leaves it unsettled."""
        entry = self.listed.get(directory)
        if entry is not None and not entry[1] and any(map(self.may_change, items)):
            entry[1] = True

    def unsettled(self, directory: bytes) -> None:
        """A listed directory holds a file that may still change (``files``, told by a
        walker process that saw its files, ``crawler.walkers``)."""
        entry = self.listed.get(directory)
        if entry is not None:
            entry[1] = True

    def may_change(self, item: Listed) -> bool:
        """A file younger than the grace, empty, or without a recorded checksum: an upload
        that may still complete."""
        return item.size == 0 or item.recorded_adler32 is None or self._young(item.mtime_ns)

    def failed(self, directory: bytes) -> None:
        self.listed.pop(directory, None)

    def settle(self) -> list[tuple[bytes, str]]:
        """Once the walk is over: which directories found gone by their own stat are gone,
        and which are unlisted, returned with why (the walk counts them: their files are
        neither carried over nor vanished, and the crawl is not complete). One stat's
        "not found" (a redirector's, a door's, an NFS cache's, or a race with a re-create)
        would take every file below with it: it is confirmed by the parent, which must be
        gone too, or listed by this crawl without it; and by nothing below it answering.
        A directory skipped as unchanged whose parent this crawl listed without it (gone
        after its stat) is unlisted too, not carried over."""
        unlisted: list[tuple[bytes, str]] = []
        if self.known is None:
            return unlisted
        for directory in self.skipped:
            key = _key(directory)
            held = self.children.get(_key(os.path.dirname(key)))
            if held is not None and key not in held:
                unlisted.append((directory, "unchanged by its stat, but its parent's listing "
                                 "no longer holds it (not trusted: listed again next time)"))
        if not self.candidates:  # the usual night: nothing below is needed
            return unlisted
        alive = sorted(_key(d) for d in (*self.listed, *self.skipped))
        known, skipped = {_key(d) for d in self.known}, {_key(d) for d in self.skipped}
        confirmed: set[bytes] = set()
        for directory in sorted(self.candidates, key=_key):
            key = _key(directory)
            parent = _key(os.path.dirname(key))
            below = key.rstrip(b"/") + b"/"
            at = bisect.bisect_left(alive, below)
            why = ""
            if at < len(alive) and alive[at].startswith(below):
                why = "its stat found it gone, but a directory below it answered"
            elif parent in confirmed:
                pass
            elif parent in self.children:
                if key in self.children[parent]:
                    why = "its stat found it gone, but its parent's listing holds it"
            elif key == _key(self.root) or parent not in known:
                why = "its stat found it gone, and nothing above it can confirm that"
            elif parent in skipped:
                why = "its stat found it gone, but its parent's mtime did not move"
            else:
                continue  # below a directory this crawl could not list: spared anyway
            if why:
                unlisted.append((directory, why + " (not trusted: listed again next time)"))
            else:
                confirmed.add(key)
                self.vanished.append(directory)
        return unlisted

    def carried(self, unlisted: list[bytes]) -> list[bytes]:
        """The skipped directories whose files are carried over: not below a directory
        this crawl could not list or stat (as a full crawl would not have seen them)."""
        fences = [d.rstrip(b"/") + b"/" for d in unlisted]
        return [d for d in self.skipped
                if not any(d == f[:-1] or d.startswith(f) for f in fences)]

    def _young(self, mtime_ns: int) -> bool:
        return mtime_ns / 1e9 > self.started - self.grace


def _key(directory: bytes) -> bytes:
    """A directory's name for comparisons: without a trailing slash (a root given with
    one, a listing's entries without)."""
    return directory.rstrip(b"/") or directory[:1]


def _below(path: bytes, root: bytes) -> bool:
    base = root.rstrip(b"/")
    return path in (root, base) or path.startswith(base + b"/")


def load(engine: sa.Engine, site: str, root: bytes) -> dict[bytes, Known]:
    """The directory state in force for ``site`` below ``root``."""
    d = crawl_directories.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(d.path, d.mtime_ns, d.unsettled, d.digest)
                            .where(d.site == site)).all()
    return {bytes(p): Known(int(m), bool(u), None if h is None else bytes(h))
            for p, m, u, h in rows if _below(bytes(p), root)}


def plan(engine: sa.Engine, site: str, root: bytes, *, allowed: bool, full: bool = False,
         full_every: float, grace: float, started: float | None = None) -> DirectoryPlan:
    """The plan of one crawl of ``site`` below ``root``: incremental when ``allowed``, not
    forced ``full``, a state from a complete crawl is there, a full crawl ran within
    ``full_every`` seconds and every present file knows its directory; else full, with
    ``why``."""
    started = time.time() if started is None else started
    previous = load(engine, site, root)
    why = ""
    if not allowed:
        why = "not incremental for this namespace (incremental = yes in the site's section)"
    elif full:
        why = "--full"
    elif not previous:
        why = "no directory state from a complete crawl yet"
    else:
        c, s = crawls.c, statuses.c
        with engine.connect() as conn:
            last_full = conn.execute(
                sa.select(sa.func.max(c.started)).where(
                    c.site == site, c.root == root, c.kind == FULL, c.complete == sa.true(),
                    c.finished.is_not(None))).scalar()
            unplaced = conn.execute(
                sa.select(s.id).where(s.site == site, s.dir_hash.is_(None),
                                      s.status.not_in([int(g) for g in GONE])).limit(1)
            ).first()
        if last_full is None:
            why = "no complete full crawl recorded"
        elif started - last_full >= full_every:
            why = (f"due: the last full crawl was {(started - last_full) / 86400:.1f} days "
                   f"ago (full_crawl_every {full_every / 86400:g})")
        elif unplaced is not None:
            why = "files recorded without their directory (written by hand?)"
    return DirectoryPlan(root, None if why else previous, started=started, grace=grace,
                         why=why, previous=previous)


def save(conn: sa.Connection, site: str, crawl_id: int, directories: DirectoryPlan,
         digests: dict[bytes, bytes | None] | None = None) -> None:
    """Write the state a complete crawl leaves, in ``conn``'s transaction: its listed
    directories replace what the previous state said of them, with the ``digests`` of
    their listings (by name, ``crawler.ingest``); vanished ones go (a full crawl: every
    directory it did not list)."""
    d = crawl_directories.c
    digests = digests or {}
    if directories.known is None:
        stale = [p for p in directories.previous if p not in directories.listed]
    else:
        stale = directories.vanished
    drop = [path_hash(p) for p in (*stale, *(p for p in directories.listed
                                            if p in directories.previous))]
    for start in range(0, len(drop), BATCH):
        conn.execute(crawl_directories.delete().where(
            d.site == site, d.path_hash.in_(drop[start:start + BATCH])))
    rows = [{"site": site, "path_hash": path_hash(p), "path": p, "mtime_ns": m,
             "unsettled": bool(u), "crawl_id": crawl_id, "digest": digests.get(_key(p))}
            for p, (m, u) in directories.listed.items() if m is not None]
    for start in range(0, len(rows), BATCH):
        conn.execute(crawl_directories.insert(), rows[start:start + BATCH])
