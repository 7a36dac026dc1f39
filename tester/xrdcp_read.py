"""The xrdcp reader: ``xrdcp -s SRC -`` streams a ``root://`` file into the checksummer
(``tester.reading.PipeFile``), killed at the timeout. For worker nodes without the XRootD
Python bindings (the HTCondor bundle leaves compiled modules out): only the ``xrdcp``
client, which every XRootD site installs, is needed."""

from __future__ import annotations

import os

from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.lease import Claimed
from pnfsmon.schema.paths import display
from pnfsmon.schema.xrootd import client_environment, is_xrootd_url
from pnfsmon.tester.reading import PipeFile

XRDCP = os.environ.get("PNFSMON_XRDCP", "xrdcp")


class XrdcpFile(PipeFile):
    tool = "xrdcp"
    install = "the XRootD client: apt-get install xrootd-client, or dnf install xrootd-client"

    def __init__(self, url: bytes, size: int) -> None:
        super().__init__([XRDCP, "-s", url, "-"], size, env=client_environment())

    def unreachable(self, message: str) -> bool:
        # The client's own errors, not the server's: "[FATAL] Connection error",
        # "Socket error", "Operation expired" (no server answered in time).
        return any(s in message for s in ("Connection error", "Connection refused",
                                          "Socket error", "Operation expired"))


class XrdcpReader:
    name = "xrdcp"

    def open(self, item: Claimed) -> XrdcpFile:
        if not is_xrootd_url(item.path):
            raise ConfigError(f"--reader xrdcp needs root:// paths; {display(item.path)} is "
                              "local (crawl the site through XRootD, or use another reader)")
        return XrdcpFile(item.path, item.size)
