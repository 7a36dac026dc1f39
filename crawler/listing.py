"""What every namespace yields: one ``Listed`` per regular file, plus the counters a crawl
summary reports. Namespaces (``crawler.posix`` and later pnfs, chimera, xrootd) produce
these; ``crawler.ingest`` consumes them."""

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


@dataclass
class WalkStats:
    files: int = 0
    directories: int = 0
    empty_directories: int = 0
    bytes: int = 0
    skipped: int = 0  # vanished between listing and stat, or not a regular file
    unreadable: list[bytes] = field(default_factory=list)  # directories that could not be listed

    @property
    def unreadable_directories(self) -> int:
        return len(self.unreadable)
