"""The POSIX namespace: a local or mounted tree, walked by ``crawler.walk`` (many calls
in flight), each file's recorded checksum from XRootD's xattr where there is one.

Never follows symlinks (a link to a directory is not descended, a link to a file is not a
file), never opens a listed file (FIFOs and devices are skipped on their type alone), and
counts what it cannot list instead of failing. The dCache namespaces (``crawler.pnfs``,
``crawler.chimera``) walk their mounts the same way, describing each file their own way.

The xattr is read for every file, whatever an earlier one answered: a filesystem that keeps
no user xattrs (ENOTSUP) holds no recorded checksum for that file, and the files so
answered are counted and said in the log; a read that fails otherwise is retried, then the
file is marked as one whose recorded checksum could not be read."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator

from pnfsmon.crawler import walkers
from pnfsmon.crawler.directories import DirectoryPlan
from pnfsmon.crawler.listing import Listed, Packed, WalkStats
from pnfsmon.crawler.walk import DEFAULT_TIMEOUT, ParallelWalk, is_remote
from pnfsmon.schema import xrdcks
from pnfsmon.schema.paths import display
from pnfsmon.schema.reference import Reference

log = logging.getLogger(__name__)
SOURCE = "xrdcks"  # recorded_from: XRootD's checksum xattr
_STORAGE, _NONE_KEPT = Reference.STORAGE, Reference.NONE_KEPT


class PosixNamespace:
    """Plain files; the recorded checksum, where there is one, from XRootD's xattr."""

    name = "posix"

    def __init__(self, root: bytes, *, read_xattrs: bool = True,
                 parallel: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.root = root
        self.read_xattrs = read_xattrs
        self.parallel = parallel
        self.timeout = timeout
        self._lock = threading.Lock()  # the count below, from the walk's threads
        self.unsupported = 0  # files on a filesystem without user xattrs
        self.unsupported_example: tuple[bytes, str] | None = None  # the first, and why
        self.say_first = True  # (a walker process leaves saying it to its crawl)

    def parallel_walk(self) -> ParallelWalk:
        return ParallelWalk(self.root, self._describe, parallel=self.parallel,
                            timeout=self.timeout)

    def processes(self, plan: DirectoryPlan, saved: dict[bytes, bytes]) -> int:
        """Walker processes for a crawl under ``plan`` (``crawler.walkers``): one a CPU
        for a full crawl of a local filesystem walked one call at a time (``parallel``
        not set) when the last complete crawl saved digests (``saved``), so that most
        directories cross between processes as a few bytes a file, untouched; else 0,
        the walk in the crawl's process. (A first crawl is the database's work: walkers
        gained it nothing, bench/crawl.py. A mount's calls wait on its server, and its
        threads already keep many in flight.)"""
        if self.parallel is not None or plan.known is not None or not saved:
            return 0
        return 0 if is_remote(self.root) else walkers.cpus()

    def walk(self, stats: WalkStats, plan: DirectoryPlan | None = None) -> Iterator[Listed]:
        yield from self.parallel_walk().walk(stats, plan)
        self._say_unsupported(stats)

    def walk_directories(self, stats: WalkStats, plan: DirectoryPlan, processes: int,
                         saved: dict[bytes, bytes], include_nearline: bool
                         ) -> Iterator[tuple[bytes, Packed | list[Listed], bytes]]:
        """``walk`` in ``processes`` walker processes, a directory's files at once
        (``crawler.walkers``)."""
        yield from walkers.walk(self, stats, plan, processes, saved, include_nearline)
        self._say_unsupported(stats)

    def counted_unsupported(self, files: int, example: tuple[bytes, str] | None) -> None:
        """``files`` more on a filesystem without user xattrs (found by this process, or
        a walker's tally): the first one ever counted is said, with why."""
        with self._lock:
            first = self.unsupported == 0 and files > 0
            self.unsupported += files
            if first:
                self.unsupported_example = example
        if first and example is not None and self.say_first:
            log.warning("%s: %s not readable: %s (counted; asked again for every file)",
                        display(example[0]), xrdcks.XATTR_NAME, example[1])

    def _say_unsupported(self, stats: WalkStats) -> None:
        stats.xattrs_unsupported = self.unsupported
        if self.unsupported:
            log.warning("%s files are on a filesystem without user extended attributes: "
                        "they have no recorded checksum (%s not readable there)",
                        f"{self.unsupported:,}", xrdcks.XATTR_NAME)

    def _describe(self, fd: int, directory: bytes, name: bytes,
                  st: os.stat_result) -> tuple[Listed, None]:
        # os.path.join's generality costs a microsecond a file (a tenth of a re-crawl's walk)
        path = directory + name if directory[-1:] == b"/" else directory + b"/" + name
        if not self.read_xattrs:
            return Listed(path, st.st_size, st.st_mtime_ns), None
        try:
            recorded = xrdcks.read_at(fd, name, path, int(st.st_mtime))
        except xrdcks.XattrUnsupported as err:
            item = Listed(path, st.st_size, st.st_mtime_ns)
            item.recorded(SOURCE, None)  # none can be kept there
            self.counted_unsupported(1, (path, str(err)))
        except OSError as err:
            item = Listed(path, st.st_size, st.st_mtime_ns)
            item.not_read(SOURCE, f"{xrdcks.XATTR_NAME}: {err.strerror or err}")
        else:  # the common case, built at once (a crawl describes every file)
            # (positional: keywords cost a tenth of the call)
            item = Listed(path, st.st_size, st.st_mtime_ns, recorded, SOURCE, None, False,
                          _STORAGE if recorded else _NONE_KEPT)
        return item, None
