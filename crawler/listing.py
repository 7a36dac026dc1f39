"""What every namespace yields: one ``Listed`` per regular file, plus the counters a crawl
summary reports. Namespaces (``crawler.posix``, ``crawler.pnfs``, ``crawler.chimera``,
``crawler.xrootd``; chosen in ``crawler.namespaces``) produce these; ``crawler.ingest``
consumes them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pnfsmon.schema.paths import display

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Listed:
    path: bytes
    size: int
    mtime_ns: int
    recorded_adler32: str | None = None
    recorded_from: str | None = None
    pool: str | None = None
    nearline: bool = False  # only on tape (dCache locality NEARLINE, XRootD offline flag)


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
        self.files += 1
        self.bytes += item.size
        return item
