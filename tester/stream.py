"""Stream a source through Adler32 (zlib-ng) with read and checksum overlapped.

A reader thread fills buffers while the caller's thread checksums the previous one; both
``readinto`` and ``zlib_ng.adler32`` release the GIL, so a 2-core worker approaches the plain
read rate. The caller waits on the reader with the deadline as its timeout, so a read that
hangs in the kernel (a dead pool, a stuck NFS mount) still ends the check at the deadline;
the stuck thread is abandoned (it is a daemon) and closes the source when it returns."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from zlib_ng import zlib_ng

CHUNK = 4 * 1024 * 1024
_BUFFERS = 3  # one being checksummed, one being filled, one ready


class Source(Protocol):
    """An open file to verify: ``readinto`` returns 0 at the end, raises OSError on error."""

    def readinto(self, buffer: memoryview, /) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class StreamResult:
    adler32: str | None  # 8 lower-case hex digits; None if the read did not finish
    bytes_read: int
    timed_out: bool = False
    error: OSError | None = None


def adler32_hex(value: int) -> str:
    return f"{value & 0xFFFFFFFF:08x}"


def checksum(source: Source, deadline: float, size_hint: int | None = None) -> StreamResult:
    """Read ``source`` to its end before ``deadline`` (``time.monotonic()``), computing
    Adler32. ``size_hint`` (the expected size) keeps buffers small for small files.

    Ownership of ``source``: after a normal end or a read error the caller still owns it (to
    ask it questions, then close it). After a timeout the caller must not touch it again: the
    abandoned reading thread closes it when its read returns."""
    chunk = CHUNK if size_hint is None else min(CHUNK, max(64 * 1024, size_hint + 1))
    free: queue.SimpleQueue = queue.SimpleQueue()
    filled: queue.SimpleQueue = queue.SimpleQueue()
    handover = threading.Lock()
    state = {"abandoned": False, "reader_done": False}
    for _ in range(_BUFFERS):
        free.put(memoryview(bytearray(chunk)))

    def read_loop() -> None:
        try:
            while True:
                buf = free.get()
                if buf is None:
                    return
                n = source.readinto(buf)
                filled.put((buf, n))
                if n == 0:
                    return
        except OSError as err:
            filled.put((None, err))
        finally:
            with handover:
                state["reader_done"] = True
                if state["abandoned"]:
                    source.close()

    def abandon() -> None:
        with handover:
            if state["reader_done"]:
                source.close()
            else:
                state["abandoned"] = True

    threading.Thread(target=read_loop, name="pnfsmon-read", daemon=True).start()
    value = 1
    total = 0
    try:
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise queue.Empty
                buf, n = filled.get(timeout=remaining)
            except queue.Empty:
                abandon()
                return StreamResult(None, total, timed_out=True)
            if buf is None:
                return StreamResult(None, total, error=n)
            if n == 0:
                return StreamResult(adler32_hex(value), total)
            value = zlib_ng.adler32(buf[:n], value)
            total += n
            free.put(buf)
    finally:
        free.put(None)  # a reader waiting for a buffer stops instead of reading on
