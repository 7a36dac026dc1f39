"""Confirm before acting: a verdict that would make a data manager declare a replica bad
is looked at twice before it is final.

- **Corrupted** (``settle``): a first read that finds a file corrupted is recorded as an
  unconfirmed corruption, and the file's second read is due ``confirm_after`` later
  (``statuses.confirm_due``; 0: at once). The second read is a fresh open through the
  worker that claims it, which is another worker where another runs (``schema.lease``).
  It confirms the corruption if it computes the same Adler32 (or again finds the same
  truncation). If the two reads disagree (another Adler32, or one ok and one corrupted),
  the verdict is ``unstable read``: not data at rest, but the hardware or the network
  between, for a person. A second read that cannot finish (timeout, unreadable, gone,
  rewritten) gives its own verdict, which is never declared. A read that agrees with a
  corruption confirmed before keeps it confirmed.
- **Missing** (``second_stat``): before a read's "no such file" becomes ``missing``, the
  path is stat'ed again through the namespace (``os.stat`` on a mount, an XRootD stat on
  the server). Found there with another mtime: rewritten (``changed``); found with the
  listed mtime: the two looks disagree (``unstable read``); a stat that fails otherwise
  cannot confirm (``unreadable``)."""

from __future__ import annotations

import dataclasses
import errno
import os
import subprocess

from pnfsmon.schema.errors import ConfigError, StorageUnavailable
from pnfsmon.schema.lease import Claimed, Verdict
from pnfsmon.schema.status import Status
from pnfsmon.schema.xrootd import XRootDUrl, client_environment, is_xrootd_url, raise_for
from pnfsmon.tester.reading import Current

XRDFS = os.environ.get("PNFSMON_XRDFS", "xrdfs")

Looked = Current | OSError


def settle(item: Claimed, verdict: Verdict, confirm_after: float) -> Verdict:
    """The verdict to record for ``item``, given what this read found (``verdict``) and
    what the row holds from an earlier read."""
    if item.unconfirmed:
        return _second(item, verdict)
    if verdict.status != Status.CORRUPTED:
        return verdict
    if item.status == Status.CORRUPTED and _agree(item.computed_adler32, verdict):
        return verdict  # confirmed before, and this read finds the same: it stays so
    note = ("unconfirmed: a second read is due at once" if confirm_after <= 0 else
            f"unconfirmed: a second read is due in {confirm_after / 60:g} min")
    return dataclasses.replace(verdict, confirm_after=max(confirm_after, 0.0),
                               error=_join(verdict.error, note))


def _agree(first_adler32: str | None, second: Verdict) -> bool:
    """Two corrupted reads agree when they computed the same Adler32 (None both times: the
    same truncation, judged before any byte was read)."""
    return second.status == Status.CORRUPTED and second.computed_adler32 == first_adler32


def _second(item: Claimed, verdict: Verdict) -> Verdict:
    first = item.computed_adler32 or "none (size differed)"
    by = item.confirm_from or "the crawl's listing"
    if _agree(item.computed_adler32, verdict):
        return dataclasses.replace(verdict, second_read=True, error=_join(
            verdict.error, f"confirmed by a second read (the first by {by})"))
    if verdict.status in (Status.CORRUPTED, Status.OK):
        seen = verdict.computed_adler32 or "none (size differed)"
        what = "ok" if verdict.status == Status.OK else "corrupted"
        return dataclasses.replace(verdict, status=Status.UNSTABLE_READ, second_read=True,
                                   error=f"two reads disagree: the first (by "
                                         f"{by}) found it corrupted, adler32 "
                                         f"{first}; the second found it {what}, adler32 "
                                         f"{seen}" + (f" ({verdict.error})" if verdict.error
                                                      else ""))
    # Timed out, unreadable, gone, rewritten, not judged: that verdict stands (none of
    # them is declared); the first read stays in the file's history.
    return dataclasses.replace(verdict, second_read=True, error=_join(
        verdict.error, f"second read of a corruption (adler32 {first}) not confirmed"))


def _join(error: str | None, note: str) -> str:
    return f"{error}; {note}" if error else note


def second_stat(item: Claimed, timeout: float) -> Looked:
    """A fresh stat of ``item``'s path through its namespace: what it looks like now, or
    the OSError the namespace answered (FileNotFoundError: not there). Raises
    StorageUnavailable when an XRootD server cannot be reached at all."""
    if is_xrootd_url(item.path):
        return _xrootd_stat(item.path, timeout)
    if b"://" in item.path:  # dcap:// and the like: no namespace to ask
        return OSError(errno.ENOTSUP, "no namespace to stat a URL of this kind in")
    try:
        st = os.stat(item.path)
    except OSError as err:
        return err
    return Current(st.st_size, st.st_mtime_ns)


def _xrootd_stat(url: bytes, timeout: float) -> Looked:
    where = XRootDUrl.parse(url)
    try:
        import XRootD.client  # noqa: F401
    except ImportError:
        return _xrdfs_stat(where, timeout)
    from pnfsmon.schema.xrootd import client

    status, info = client().FileSystem(where.server).stat(where.path,
                                                          timeout=max(1, int(timeout)))
    try:
        raise_for(status, str(where))
    except OSError as err:
        return err
    return Current(info.size, info.modtime * 10**9)


def _xrdfs_stat(where: XRootDUrl, timeout: float) -> Looked:
    """``xrdfs HOST stat PATH`` on a node without the bindings: its size (the mtime it
    prints is in local time, so it is not compared: None)."""
    try:
        done = subprocess.run([XRDFS, where.server, "stat", where.path],
                              capture_output=True, timeout=timeout + 5,
                              env=client_environment(), stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ConfigError(f"confirming a missing root:// file here needs the XRootD "
                          f"bindings or {XRDFS}: apt-get install xrootd-client, or dnf "
                          "install xrootd-client") from None
    except subprocess.TimeoutExpired:
        raise StorageUnavailable(f"{XRDFS} stat {where} did not answer within "
                                 f"{timeout + 5:g} s") from None
    text = done.stdout.decode("utf-8", "replace")
    message = " ".join(done.stderr.decode("utf-8", "replace").split())
    if done.returncode != 0:
        if "[3011]" in message or "no such file" in message.lower():
            return FileNotFoundError(errno.ENOENT, message)
        if "[3010]" in message:
            return PermissionError(errno.EACCES, message)
        if "[3" not in message:  # no server error code: the server was not reached
            raise StorageUnavailable(f"XRootD server for {where} unreachable: {message}")
        return OSError(errno.EIO, message)
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Size" and value.strip().isdigit():
            return Current(int(value.strip()), None)
    return OSError(errno.EIO, f"{XRDFS} stat gave no size: {text[:200]!r}")


def missing(item: Claimed, verdict: Verdict, timeout: float) -> Verdict:
    """A read found ``item`` gone (``verdict`` is ``missing``): the verdict after a second
    stat through the namespace."""
    looked = second_stat(item, timeout)
    if isinstance(looked, FileNotFoundError):
        return dataclasses.replace(verdict, error=_join(
            verdict.error, "confirmed: a second stat did not find it either"))
    if isinstance(looked, OSError):
        reason = looked.strerror or str(looked)
        return dataclasses.replace(verdict, status=Status.UNREADABLE, error=_join(
            verdict.error, f"not confirmed missing: the second stat failed ({reason})"))
    if looked.mtime_ns is not None and looked.mtime_ns != item.mtime_ns:
        return dataclasses.replace(verdict, status=Status.CHANGED, error=_join(
            verdict.error, "a second stat found it, modified since listed"))
    return dataclasses.replace(verdict, status=Status.UNSTABLE_READ, error=_join(
        verdict.error, f"but a second stat through the namespace found it "
                       f"({looked.size:,} bytes): the two looks disagree"))
