"""What every namespace yields: one ``Listed`` per regular file, plus the counters a crawl
summary reports. Namespaces (``crawler.posix``, ``crawler.pnfs``, ``crawler.chimera``,
``crawler.xrootd``; chosen in ``crawler.namespaces``) produce these; ``crawler.ingest``
consumes them."""

from __future__ import annotations

from dataclasses import dataclass, field


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

    @property
    def unreadable_directories(self) -> int:
        return len(self.unreadable)

    def count(self, item: Listed) -> Listed:
        self.files += 1
        self.bytes += item.size
        return item
