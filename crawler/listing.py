"""What every namespace yields: one ``Listed`` per regular file, plus the counters a crawl
summary reports. Namespaces (``crawler.posix``, ``crawler.pnfs``, ``crawler.chimera``,
``crawler.xrootd``; chosen in ``crawler.namespaces``) produce these; ``crawler.ingest``
consumes them."""

from __future__ import annotations

import logging
import marshal
from collections.abc import Iterator
from dataclasses import dataclass, field

from pnfsmon.schema.paths import dir_hash, display
from pnfsmon.schema.reference import Reference

log = logging.getLogger(__name__)

NAMED = 10  # files named in the log, per kind of trouble, before the rest go to DEBUG
# Looked up once: an enum member read from its class costs 0.7 µs (Python 3.11), and these
# are read for every file listed, on the walk's thread.
_STORAGE, _NONE_KEPT, _UNREADABLE = Reference.STORAGE, Reference.NONE_KEPT, Reference.UNREADABLE


@dataclass(slots=True)
class Listed:
    path: bytes
    size: int
    mtime_ns: int
    recorded_adler32: str | None = None
    recorded_from: str | None = None  # the storage's interface that answered or was asked
    pool: str | None = None
    nearline: bool = False  # only on tape (dCache locality NEARLINE, XRootD offline flag)
    reference: Reference = Reference.NOT_ASKED
    unread: str | None = None  # why the recorded checksum could not be read (UNREADABLE)

    def recorded(self, source: str, adler32: str | None) -> None:
        """What the storage's ``source`` answered: its checksum, or that it keeps none."""
        self.recorded_from = source
        self.recorded_adler32 = adler32
        self.reference = _STORAGE if adler32 else _NONE_KEPT

    def not_read(self, source: str, why: str) -> None:
        """The storage's ``source`` keeps checksums, but this one could not be read."""
        self.recorded_from = source
        self.recorded_adler32 = None
        self.reference = _UNREADABLE
        self.unread = why


_REFERENCES = {int(r): r for r in Reference}


class Packed:
    """One directory's listed files packed into bytes, as a walker process
    (``crawler.walkers``) hands them over. A directory whose digest is the saved one stays
    packed: the ingest counts its files (``len``) and unpacks them (iterating) only if its
    merge cannot confirm it by its rows (``crawler.digests``). A ``Listed`` crosses a
    process as a tuple through marshal, at a fifth of pickle's cost."""

    __slots__ = ("dir_hash", "count", "data")

    def __init__(self, items: list[Listed]) -> None:
        self.dir_hash = dir_hash(items[0].path)
        self.count = len(items)
        self.data = marshal.dumps([
            (i.path, i.size, i.mtime_ns, i.recorded_adler32, i.recorded_from, i.pool,
             i.nearline, int(i.reference), i.unread) for i in items])

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Listed]:
        references = _REFERENCES
        return iter([Listed(path, size, mtime, recorded, source, pool, nearline,
                            references[reference], unread)
                     for path, size, mtime, recorded, source, pool, nearline, reference, unread
                     in marshal.loads(self.data)])


@dataclass
class WalkStats:
    files: int = 0
    directories: int = 0
    empty_directories: int = 0
    bytes: int = 0
    skipped: int = 0  # vanished between listing and stat, or not a regular file
    unreadable: list[bytes] = field(default_factory=list)  # directories that could not be listed
    # Files whose recorded metadata (pnfs layer 2, chimera checksums) could not be parsed:
    # (path, why). They are still listed, without a recorded checksum.
    malformed: list[tuple[bytes, str]] = field(default_factory=list)
    # Why the walk stopped before its end (a mount taken for dead), None if it did not.
    stopped: str | None = None
    # Files whose recorded checksum could not be read (errors left after retries): how
    # many, and the first few, named.
    checksums_unread: int = 0
    unread_examples: list[bytes] = field(default_factory=list)
    xattrs_unsupported: int = 0  # posix: files on a filesystem without user xattrs
    # An incremental crawl (``crawler.directories``): directories not listed (unchanged),
    # the files carried over from them (counted in ``files`` and ``bytes``), and
    # directories found gone.
    kind: str = "full"
    full_because: str = ""
    walkers: int = 0  # walker processes that walked it (``crawler.walkers``); 0: none
    skipped_directories: int = 0
    carried_files: int = 0
    vanished_directories: int = 0

    @property
    def unreadable_directories(self) -> int:
        return len(self.unreadable)

    def unlisted(self, directory: bytes, why: str) -> None:
        """A directory that could not be listed: said now, counted, and its subtree spared
        from being marked vanished."""
        log.warning("could not list %s: %s (its files are not marked vanished)",
                    display(directory), why)
        self.unreadable.append(directory)

    def bad_metadata(self, path: bytes, why: str) -> None:
        """A file whose recorded metadata could not be read: listed without it."""
        log.warning("%s: %s (listed without a recorded checksum)", display(path), why)
        self.malformed.append((path, why))

    def count(self, item: Listed) -> Listed:
        self.count_all((item,))
        return item

    def count_all(self, items: list[Listed] | tuple[Listed, ...]) -> None:
        """Count listed files (a directory's at once: a mount walk lists ten million)."""
        self.files += len(items)
        self.bytes += sum([item.size for item in items])
        for item in items:
            if item.reference is _UNREADABLE:
                self._unread(item)

    def _unread(self, item: Listed) -> None:
        self.checksums_unread += 1
        if len(self.unread_examples) < NAMED:
            self.unread_examples.append(item.path)
        log.log(logging.WARNING if self.checksums_unread <= NAMED else logging.DEBUG,
                "%s: the recorded checksum could not be read: %s (marked unreadable; "
                "its first check asks the storage again)", display(item.path),
                item.unread or "no reason given")
