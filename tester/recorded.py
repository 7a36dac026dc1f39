"""Ask the storage again for a file's recorded checksum, at check time: before a check
adopts its own first reading as the reference, it makes sure the storage truly keeps none
(the crawl may have listed the file before the storage computed one, or failed to read
it). Asked through the interface the crawl used (``statuses.recorded_from``): an XRootD
``query checksum`` (through the bindings, or ``xrdfs`` on a node without them, as the
xrdcp reader), XRootD's ``user.XrdCks.adler32`` xattr, dCache's dot-commands (PNFS layer 2,
Chimera checksums). Not asked where the operator told the crawl not to (``--checksums
none``, ``--no-xattr``)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass

from pnfsmon.schema import dcache, xrdcks
from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.lease import Claimed
from pnfsmon.schema.reference import ASK_AGAIN, Reference
from pnfsmon.schema.xrootd import (
    UNSUPPORTED,
    XRootDUrl,
    checksum_failure,
    client,
    client_environment,
    is_xrootd_url,
    parse_checksum_response,
)

ATTEMPTS = 4  # XRootD queries before the error stands...
FIRST_DELAY = 0.25  # ...seconds apart, doubled each time
XRDFS = os.environ.get("PNFSMON_XRDFS", "xrdfs")
_SERVER_ERROR = re.compile(r"\[(\d{4})\]")  # "[3011] Unable to checksum ..." in xrdfs's stderr


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


def _bindings() -> bool:
    try:
        import XRootD.client  # noqa: F401
    except ImportError:
        return False
    return True


def _query(url: bytes, timeout: float) -> Answer:
    where = XRootDUrl.parse(url)
    once = _bindings_query if _bindings() else _xrdfs_query
    delay, why = FIRST_DELAY, ""
    for _attempt in range(ATTEMPTS):
        errno_, message, response = once(where, max(1, int(timeout)))
        if errno_ is None:
            value = parse_checksum_response(response)
            return Answer(Reference.STORAGE if value else Reference.NONE_KEPT, "xrootd",
                          value)
        if errno_ == UNSUPPORTED:
            return Answer(Reference.NONE_KEPT, "xrootd")
        again, why = checksum_failure(errno_, message)
        if not again:
            break
        time.sleep(delay)
        delay *= 2
    return Answer(Reference.UNREADABLE, "xrootd", why=why)


def _bindings_query(where: XRootDUrl, timeout: int) -> tuple[int | None, str, bytes | None]:
    """One query: (None, "", response) or (error number, message, None)."""
    from XRootD.client.flags import QueryCode

    status, response = client().FileSystem(where.server).query(
        QueryCode.CHECKSUM, where.path, timeout=timeout)
    if status.ok:
        return None, "", response
    return status.errno, str(status.message), None


def _xrdfs_query(where: XRootDUrl, timeout: int) -> tuple[int | None, str, bytes | None]:
    """The same through ``xrdfs HOST query checksum PATH``."""
    try:
        done = subprocess.run([XRDFS, where.server, "query", "checksum", where.path],
                              capture_output=True, timeout=timeout + 5,
                              env=client_environment(), stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ConfigError(f"asking an XRootD server for a recorded checksum here needs the "
                          f"bindings or {XRDFS}: apt-get install xrootd-client, or dnf "
                          "install xrootd-client") from None
    except subprocess.TimeoutExpired:
        return 0, f"{XRDFS} did not answer within {timeout + 5} s", None
    if done.returncode == 0:
        return None, "", done.stdout
    message = done.stderr.decode("utf-8", "replace").strip()
    found = _SERVER_ERROR.search(message)
    return int(found.group(1)) if found else 0, message, None


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
