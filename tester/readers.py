"""Which reader reads a file (``--reader``): ``posix``, ``xrootd`` (the XRootD client
bindings), ``xrdcp`` and ``dccp`` (client programs streaming into the checksummer), or
``auto`` (the default): files listed from XRootD through the bindings, or through
``xrdcp`` on a node without them (a worker running the HTCondor bundle), everything else
through POSIX. The log says which reader a worker uses for ``root://`` files."""

from __future__ import annotations

import enum
import logging

from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.lease import Claimed
from pnfsmon.schema.xrootd import is_xrootd_url
from pnfsmon.tester.posix_read import PosixReader
from pnfsmon.tester.reading import OpenFile, Reader

log = logging.getLogger(__name__)


class ReaderKind(str, enum.Enum):
    """How a worker reads files (``--reader``): a closed vocabulary."""

    AUTO = "auto"  # by the path: root:// through XRootD, the rest through POSIX
    POSIX = "posix"
    XROOTD = "xrootd"  # the XRootD client bindings
    XRDCP = "xrdcp"  # the XRootD client program
    DCCP = "dccp"  # dCache's dcap client


READERS = tuple(k.value for k in ReaderKind)  # as the command line spells them


def _xrootd_bindings() -> bool:
    try:
        import XRootD.client  # noqa: F401
    except ImportError:
        return False
    return True


def _remote_reader(timeout: float) -> Reader:
    """The reader for ``root://`` files here: the bindings, else ``xrdcp``."""
    if _xrootd_bindings():
        from pnfsmon.tester.xrootd_read import XRootDReader

        log.info("reading root:// files through the XRootD client bindings")
        return XRootDReader(timeout)
    from pnfsmon.tester.xrdcp_read import XrdcpReader

    log.info("no XRootD Python bindings here: reading root:// files with xrdcp")
    return XrdcpReader()


class AutoReader:
    """Each file by the namespace it was listed from: XRootD URLs through XRootD, local
    and mounted paths (posix, pnfs, chimera) through POSIX."""

    name = "auto"

    def __init__(self, timeout: float) -> None:
        self.posix = PosixReader()
        self.timeout = timeout
        self.remote: Reader | None = None

    def open(self, item: Claimed) -> OpenFile:
        if not is_xrootd_url(item.path):
            return self.posix.open(item)
        if self.remote is None:
            self.remote = _remote_reader(self.timeout)
        return self.remote.open(item)


def make_reader(name: str, timeout: float) -> Reader:
    """The reader called ``name`` (see ``ReaderKind``); ``timeout`` is the per-file one."""
    try:
        kind = ReaderKind(name)
    except ValueError:
        raise ConfigError(f"unknown reader {name!r}; known: {', '.join(READERS)}") from None
    if kind == ReaderKind.AUTO:
        return AutoReader(timeout)
    if kind == ReaderKind.POSIX:
        return PosixReader()
    if kind == ReaderKind.XROOTD:
        from pnfsmon.tester.xrootd_read import XRootDReader

        return XRootDReader(timeout)
    if kind == ReaderKind.XRDCP:
        from pnfsmon.tester.xrdcp_read import XrdcpReader

        return XrdcpReader()
    from pnfsmon.tester.dccp_read import DccpReader

    return DccpReader()
