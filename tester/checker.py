"""Judge one file: open it through a reader, stream it through Adler32 under a timeout, and
turn what happened into a verdict. The rules:

- gone → ``missing``, once a second stat through the namespace agrees
  (``tester.confirm``); cannot be opened, stat'ed or read → ``unreadable`` (with the error);
  a stat that fails is a verdict too (``missing`` where the storage says the file is gone),
  never the end of the worker;
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

import logging
import threading
import time

from pnfsmon.schema.errors import StorageUnavailable
from pnfsmon.schema.lease import Claimed, Verdict
from pnfsmon.schema.paths import display
from pnfsmon.schema.reference import Reference
from pnfsmon.schema.status import Status
from pnfsmon.tester import confirm, recorded
from pnfsmon.tester.reading import Current, Reader, Unreachable
from pnfsmon.tester.stream import Streamer, checksum

log = logging.getLogger(__name__)


def _rewritten(item: Claimed, now: Current) -> bool:
    return now.mtime_ns is not None and now.mtime_ns != item.mtime_ns


def _reason(err: OSError) -> str:
    return err.strerror or str(err) or type(err).__name__


def _failed_stat(verdict, err: OSError, node: str | None, what: str,
                 bytes_read: int = 0) -> Verdict:
    """A stat that failed is a verdict on the file: missing where the storage says it is
    gone, unreadable (with the error) otherwise."""
    status = Status.MISSING if isinstance(err, FileNotFoundError) else Status.UNREADABLE
    return verdict(status, bytes_read, source_node=node, error=f"{what}: {_reason(err)}")


def _close(source, item: Claimed) -> None:
    """Close a source; a close that fails (EIO from a dying mount) is said, not fatal: it
    tells nothing about the file's content."""
    try:
        source.close()
    except OSError as err:
        log.warning("closing %s failed: %s", display(item.path), _reason(err))


def check_file(item: Claimed, reader: Reader, timeout: float,
               streamer: Streamer | None = None,
               stop: threading.Event | None = None) -> Verdict | None:
    """The verdict on one file, or None if ``stop`` was set while it was read (the file
    was not judged). Pass the worker's ``streamer`` to reuse its I/O thread. A file the
    read found gone is stat'ed again through the namespace before it is ``missing``
    (``tester.confirm.missing``)."""
    verdict = _read(item, reader, timeout, streamer, stop)
    if verdict is not None and verdict.status == Status.MISSING:
        return confirm.missing(item, verdict, timeout)
    return verdict


def _read(item: Claimed, reader: Reader, timeout: float, streamer: Streamer | None,
          stop: threading.Event | None) -> Verdict | None:
    started = time.monotonic()

    def verdict(status: Status, bytes_read: int = 0, **kw) -> Verdict:
        return Verdict(item.id, status, seconds=time.monotonic() - started, size=item.size,
                       bytes_read=bytes_read, source_pool=item.pool, **kw)

    try:
        source = reader.open(item)
    except FileNotFoundError:
        return verdict(Status.MISSING, error="no such file")
    except OSError as err:
        return verdict(Status.UNREADABLE, error=f"open: {_reason(err)}")
    node = source.source_node
    try:
        before = source.current()
    except OSError as err:  # a stale handle, a file deleted since the claim, a stat timeout
        _close(source, item)
        return _failed_stat(verdict, err, node, "stat")
    if _rewritten(item, before):
        _close(source, item)
        return verdict(Status.CHANGED, source_node=node, error="modified since listed")
    if before.size != item.size:
        _close(source, item)
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
    except OSError as err:  # read to its end, but the storage no longer answers for it
        after = err
    finally:
        _close(source, item)
    if isinstance(result.error, Unreachable):
        raise StorageUnavailable(f"storage unreachable while reading {display(item.path)}: "
                                 f"{result.error.strerror}")
    if isinstance(result.error, FileNotFoundError):  # a client program found it gone
        return verdict(Status.MISSING, result.bytes_read, source_node=node,
                       error=f"read: {result.error.strerror or 'no such file'}")
    if result.error is not None:
        err = result.error
        return verdict(Status.UNREADABLE, result.bytes_read, source_node=node,
                       error=f"read: {_reason(err)}")
    if isinstance(after, OSError):
        return _failed_stat(verdict, after, node, "stat after reading", result.bytes_read)
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
