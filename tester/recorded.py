"""Ask the storage again for a file's recorded checksum, at check time: before a check
adopts its own first reading as the reference, it makes sure the storage truly keeps none
(the crawl may have listed the file before the storage computed one, or failed to read
it). Asked through the interface the crawl used (``statuses.recorded_from``): an XRootD
``query checksum``, XRootD's ``user.XrdCks.adler32`` xattr, dCache's dot-commands (PNFS
layer 2, Chimera checksums). Not asked where the operator told the crawl not to
(``--checksums none``, ``--no-xattr``)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from pnfsmon.schema import dcache, xrdcks
from pnfsmon.schema.lease import Claimed
from pnfsmon.schema.reference import ASK_AGAIN, Reference
from pnfsmon.schema.xrootd import (
    UNSUPPORTED,
    XRootDUrl,
    checksum_failure,
    client,
    is_xrootd_url,
    parse_checksum_response,
)

ATTEMPTS = 4  # XRootD queries before the error stands...
FIRST_DELAY = 0.25  # ...seconds apart, doubled each time


@dataclass(frozen=True)
class Answer:
    reference: Reference  # STORAGE, NONE_KEPT or UNREADABLE
    source: str  # the interface asked (statuses.recorded_from)
    adler32: str | None = None
    why: str | None = None  # UNREADABLE: what failed


def ask(item: Claimed, timeout: float) -> Answer | None:
    """What the storage records for ``item`` now; None where it is not to be asked (the
    file has a reference, or the operator said not to ask)."""
    if item.recorded_adler32 is not None or item.reference not in ASK_AGAIN:
        return None
    if is_xrootd_url(item.path):
        return _query(item.path, timeout)
    if item.recorded_from in ("pnfs", "chimera"):
        return _dot_command(item.path, item.recorded_from)
    return _xattr(item.path, item.mtime_ns)


def _query(url: bytes, timeout: float) -> Answer:
    from XRootD.client.flags import QueryCode

    where = XRootDUrl.parse(url)
    fs = client().FileSystem(where.server)
    delay, why = FIRST_DELAY, ""
    for _attempt in range(ATTEMPTS):
        status, response = fs.query(QueryCode.CHECKSUM, where.path,
                                    timeout=max(1, int(timeout)))
        if status.ok:
            value = parse_checksum_response(response)
            return Answer(Reference.STORAGE if value else Reference.NONE_KEPT, "xrootd",
                          value)
        if status.errno == UNSUPPORTED:
            return Answer(Reference.NONE_KEPT, "xrootd")
        again, why = checksum_failure(status.errno, status.message)
        if not again:
            break
        time.sleep(delay)
        delay *= 2
    return Answer(Reference.UNREADABLE, "xrootd", why=why)


def _xattr(path: bytes, mtime_ns: int) -> Answer:
    try:
        value = xrdcks.read(path, mtime_ns // 10**9)
    except xrdcks.XattrUnsupported:
        return Answer(Reference.NONE_KEPT, "xrdcks")
    except OSError as err:
        return Answer(Reference.UNREADABLE, "xrdcks",
                      why=f"{xrdcks.XATTR_NAME}: {err.strerror or err}")
    return Answer(Reference.STORAGE if value else Reference.NONE_KEPT, "xrdcks", value)


def _dot_command(path: bytes, source: str) -> Answer:
    try:
        value = dcache.recorded_adler32(path, source)
    except (OSError, dcache.MalformedMetadata) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        return Answer(Reference.UNREADABLE, source,
                      why=f"{os.fsdecode(os.path.basename(path))}: {reason}")
    return Answer(Reference.STORAGE if value else Reference.NONE_KEPT, source, value)
