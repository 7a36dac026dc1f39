"""The dccp reader, as the original PNFS monitor read files: ``dccp SRC -`` streams the file
to a pipe that the checksummer reads (``tester.reading.PipeFile``). A ``/pnfs`` path is
asked for its size and mtime (and found gone) before any process starts; a ``dcap://`` URL
cannot be."""

from __future__ import annotations

import os

from pnfsmon.schema.lease import Claimed
from pnfsmon.tester.reading import Current, PipeFile

DCCP = os.environ.get("PNFSMON_DCCP", "dccp")


class DccpFile(PipeFile):
    tool = "dccp"
    install = "--reader dccp: apt-get install dcap"

    def __init__(self, path: bytes, size: int) -> None:
        self.path = path
        self.local = not path.startswith(b"dcap://")
        if self.local:
            os.stat(path)  # FileNotFoundError: missing, before any process is started
        super().__init__([DCCP, path, "-"], size)

    def current(self) -> Current:
        if not self.local:
            return super().current()
        st = os.stat(self.path)
        return Current(st.st_size, st.st_mtime_ns)


class DccpReader:
    name = "dccp"

    def open(self, item: Claimed) -> DccpFile:
        return DccpFile(item.path, item.size)
