"""Stream a source through Adler32 (zlib-ng; stdlib zlib gives the same values where zlib-ng
is not installed, e.g. a worker node running the bundle) with read and checksum overlapped.

Each worker owns one ``Streamer``: a long-lived I/O thread fills buffers while the worker's
thread checksums the previous one; both ``readinto`` and ``zlib_ng.adler32`` release the
GIL, so a 2-core worker approaches the plain read rate. The worker waits on the I/O thread
with the deadline as its timeout, so a read that hangs in the kernel (a dead pool, a stuck
NFS mount) still ends the check at the deadline: that I/O thread is abandoned (a daemon; it
closes its source when the read returns) and a fresh one serves the next file."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Protocol

try:
    from zlib_ng.zlib_ng import adler32
    ADLER32_IMPLEMENTATION = "zlib-ng"
except ImportError:  # a worker node running the bundle without the compiled zlib-ng
    from zlib import adler32

    ADLER32_IMPLEMENTATION = "zlib (stdlib; zlib-ng is not installed: about 2.5x slower)"

CHUNK = 4 * 1024 * 1024
STOP_POLL = 0.25  # seconds between looks at the stop flag while a read is in progress
_BUFFERS = 3  # one being checksummed, one being filled, one ready


class Source(Protocol):
    """An open file to verify: ``readinto`` returns 0 at the end, raises OSError on error.

    A source may also have ``abort()``: called from the worker's thread when its read is
    abandoned (timeout, stop), to make a blocked ``readinto`` return (dccp: kill the
    process). Plain files have none; their read returns when the kernel lets it."""

    def readinto(self, buffer: memoryview, /) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class StreamResult:
    adler32: str | None  # 8 lower-case hex digits; None if the read did not finish
    bytes_read: int
    timed_out: bool = False
    error: OSError | None = None
    interrupted: bool = False  # the worker was asked to stop: no verdict


def adler32_hex(value: int) -> str:
    return f"{value & 0xFFFFFFFF:08x}"


class _Job:
    """One file's read, shared between the worker's thread and the I/O thread."""

    def __init__(self, source: Source, free: queue.SimpleQueue) -> None:
        self.source = source
        self.free = free
        self.filled: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.abandoned = False
        self.finished = False


class _IoThread:
    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="pnfsmon-read", daemon=True).start()

    def _serve(self) -> None:
        while (job := self.jobs.get()) is not None:
            self._read(job)
            if job.abandoned:
                return  # the worker has moved on to a fresh I/O thread

    @staticmethod
    def _read(job: _Job) -> None:
        try:
            while True:
                buf = job.free.get()
                if buf is None:
                    return
                n = job.source.readinto(buf)
                job.filled.put((buf, n))
                if n == 0:
                    return
        except OSError as err:
            job.filled.put((None, err))
        finally:
            with job.lock:
                job.finished = True
                if job.abandoned:
                    job.source.close()


class Streamer:
    """A worker's checksum engine: its I/O thread and its reusable buffers."""

    def __init__(self, chunk: int = CHUNK, max_rate: float = 0.0) -> None:
        self.chunk = chunk
        self.max_rate = max_rate  # bytes/s over all files this worker reads; 0: no limit
        self._io: _IoThread | None = None
        self._buffers: list[memoryview] = []
        self._rate_clock = 0.0  # when the bytes read so far are "paid for" at max_rate

    def _throttle(self, n: int, deadline: float, stop: threading.Event | None) -> None:
        """Sleep so this worker's reads stay at or below ``max_rate`` (never past the
        deadline: a throttled read must still be able to time out honestly), waking up
        for a stop request."""
        now = time.monotonic()
        self._rate_clock = max(self._rate_clock, now) + n / self.max_rate
        pause = min(self._rate_clock, deadline) - now
        if pause > 0:
            if stop is None:
                time.sleep(pause)
            else:
                stop.wait(pause)

    def checksum(self, source: Source, deadline: float,
                 stop: threading.Event | None = None) -> StreamResult:
        """Read ``source`` to its end before ``deadline`` (``time.monotonic()``), or until
        ``stop`` is set (checked after every chunk, and at least every ``STOP_POLL``
        seconds while a read stalls).

        Ownership of ``source``: after a normal end or a read error the caller still owns it
        (to ask it questions, then close it). After a timeout the caller must not touch it
        again: the abandoned I/O thread closes it when its read returns."""
        if self._io is None:
            self._io = _IoThread()
            self._buffers = [memoryview(bytearray(self.chunk)) for _ in range(_BUFFERS)]
        free: queue.SimpleQueue = queue.SimpleQueue()
        for buf in self._buffers:
            free.put(buf)
        job = _Job(source, free)
        self._io.jobs.put(job)
        value = 1
        total = 0
        try:
            while True:
                remaining = deadline - time.monotonic()
                try:
                    if remaining <= 0:
                        raise queue.Empty
                    wait = remaining if stop is None else min(remaining, STOP_POLL)
                    buf, n = job.filled.get(timeout=wait)
                except queue.Empty:
                    if stop is not None and stop.is_set():
                        self._abandon(job)
                        return StreamResult(None, total, interrupted=True)
                    if time.monotonic() < deadline:
                        continue
                    self._abandon(job)
                    return StreamResult(None, total, timed_out=True)
                if buf is None:
                    return StreamResult(None, total, error=n)
                if n == 0:
                    return StreamResult(adler32_hex(value), total)
                value = adler32(buf[:n], value)
                total += n
                if self.max_rate:
                    self._throttle(n, deadline, stop)
                free.put(buf)
                if stop is not None and stop.is_set():  # data flowing: look after each chunk
                    self._abandon(job)
                    return StreamResult(None, total, interrupted=True)
        finally:
            free.put(None)  # an I/O thread waiting for a buffer stops instead of reading on

    def _abandon(self, job: _Job) -> None:
        with job.lock:
            if job.finished:
                job.source.close()
            else:
                job.abandoned = True
                # Its thread and buffers stay with the stuck read; start afresh next time.
                self._io = None
                abort = getattr(job.source, "abort", None)
                if abort is not None:
                    abort()
                return
        # The read ended just as the deadline passed: the thread is free for the next file.

    def close(self) -> None:
        if self._io is not None:
            self._io.jobs.put(None)
            self._io = None


def checksum(source: Source, deadline: float, size_hint: int | None = None,
             stop: threading.Event | None = None) -> StreamResult:
    """One-off :meth:`Streamer.checksum` (buffers sized by ``size_hint``)."""
    chunk = CHUNK if size_hint is None else min(CHUNK, max(64 * 1024, size_hint + 1))
    streamer = Streamer(chunk)
    try:
        return streamer.checksum(source, deadline, stop)
    finally:
        streamer.close()
