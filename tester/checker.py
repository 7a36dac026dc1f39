"""Judge one file: open it through a reader, stream it through Adler32 under a timeout, and
turn what happened into a verdict. The rules:

- gone → ``missing``; cannot be opened or read → ``unreadable`` (with the error);
- mtime differs from the listing → ``changed`` (a rewrite is not corruption; the next crawl
  re-queues it), also when it changes while being read;
- size differs but mtime does not → ``corrupted`` (truncation or extension behind our back);
- read not finished before the timeout → ``timeout`` (bytes read so far recorded);
- no reference checksum → the storage is asked again (``tester.recorded``): its recorded
  checksum, if it has one now, is the reference; if it keeps none, ``ok``, and the computed
  value becomes the reference; if it keeps one that cannot be read, the file is not judged
  (``unchecked``, with the reason) and its own reading does not become the reference;
- otherwise ``ok`` if the checksums match, ``corrupted`` if not."""

from __future__ import annotations

import threading
import time

from pnfsmon.schema.errors import StorageUnavailable
from pnfsmon.schema.lease import Claimed, Verdict
from pnfsmon.schema.paths import display
from pnfsmon.schema.reference import Reference
from pnfsmon.schema.status import Status
from pnfsmon.tester import recorded
from pnfsmon.tester.reading import Current, Reader, Unreachable
from pnfsmon.tester.stream import Streamer, checksum


def _rewritten(item: Claimed, now: Current) -> bool:
    return now.mtime_ns is not None and now.mtime_ns != item.mtime_ns


def check_file(item: Claimed, reader: Reader, timeout: float,
               streamer: Streamer | None = None,
               stop: threading.Event | None = None) -> Verdict | None:
    """The verdict on one file, or None if ``stop`` was set while it was read (the file
    was not judged). Pass the worker's ``streamer`` to reuse its I/O thread."""
    started = time.monotonic()

    def verdict(status: Status, bytes_read: int = 0, **kw) -> Verdict:
        return Verdict(item.id, status, seconds=time.monotonic() - started, size=item.size,
                       bytes_read=bytes_read, source_pool=item.pool, **kw)

    try:
        source = reader.open(item)
    except FileNotFoundError:
        return verdict(Status.MISSING, error="no such file")
    except OSError as err:
        return verdict(Status.UNREADABLE, error=f"open: {err.strerror or err}")
    node = source.source_node
    before = source.current()
    if _rewritten(item, before):
        source.close()
        return verdict(Status.CHANGED, source_node=node, error="modified since listed")
    if before.size != item.size:
        source.close()
        return verdict(Status.CORRUPTED, source_node=node,
                       error=f"size {before.size}, listed as {item.size}, mtime unchanged")

    deadline = started + timeout
    result = (streamer.checksum(source, deadline, stop) if streamer is not None
              else checksum(source, deadline, item.size, stop))
    if result.interrupted:  # as for a timeout, the source belongs to the abandoned read
        return None
    if result.timed_out:  # the source now belongs to the abandoned read (see checksum)
        return verdict(Status.TIMEOUT, result.bytes_read, source_node=node,
                       error=f"not read within {timeout:g} s")
    try:
        after = source.current()
    except OSError:
        after = before
    finally:
        source.close()
    if isinstance(result.error, Unreachable):
        raise StorageUnavailable(f"storage unreachable while reading {display(item.path)}: "
                                 f"{result.error.strerror}")
    if isinstance(result.error, FileNotFoundError):  # a client program found it gone
        return verdict(Status.MISSING, result.bytes_read, source_node=node,
                       error=f"read: {result.error.strerror or 'no such file'}")
    if result.error is not None:
        err = result.error
        return verdict(Status.UNREADABLE, result.bytes_read, source_node=node,
                       error=f"read: {err.strerror or err}")
    if _rewritten(item, after):
        return verdict(Status.CHANGED, result.bytes_read, source_node=node,
                       error="modified while being read")
    ok = dict(bytes_read=result.bytes_read, source_node=node,
              computed_adler32=result.adler32)
    if result.bytes_read != item.size:
        return verdict(Status.CORRUPTED, **ok,
                       error=f"read {result.bytes_read} bytes, listed as {item.size}")
    reference = item.recorded_adler32
    answer = recorded.ask(item, timeout)
    if answer is not None:
        ok.update(reference=answer.reference, recorded_adler32=answer.adler32,
                  recorded_from=answer.source)
        if answer.reference == Reference.UNREADABLE:
            return verdict(Status.UNCHECKED, **ok,
                           error=f"not judged: the recorded checksum could not be read "
                                 f"({answer.why}); asked again at the next check")
        reference = answer.adler32
    if reference is None:
        return verdict(Status.OK, **ok)  # recording makes this the reference (first check)
    if result.adler32 != reference:
        return verdict(Status.CORRUPTED, **ok,
                       error=f"adler32 {result.adler32}, recorded {reference}")
    return verdict(Status.OK, **ok)
