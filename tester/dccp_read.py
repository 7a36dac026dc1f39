"""The dccp reader, as the original PNFS monitor read files: ``dccp SRC -`` streams the file
to a pipe that the checksummer reads; nothing is written to disk. The process runs in its
own session with its stderr kept apart (``dccp 2>&1 | ...`` has been seen to spin); on a
timeout or stop it is killed. A non-zero exit is a read error, whatever was read before."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import tempfile

from schema.errors import ConfigError
from schema.lease import Claimed
from tester.readers import Current

DCCP = os.environ.get("PNFSMON_DCCP", "dccp")


class DccpFile:
    source_node = None

    def __init__(self, path: bytes, size: int) -> None:
        self.path = path
        self.listed_size = size
        # A /pnfs path can be asked for its size and mtime (and found gone) first;
        # a dcap:// URL cannot.
        self.local = not path.startswith(b"dcap://")
        if self.local:
            os.stat(path)  # FileNotFoundError: missing, before any process is started
        # Lives as long as the process; closed in close().
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [DCCP, path, "-"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=self.stderr, start_new_session=True)
        except FileNotFoundError:
            self.stderr.close()
            raise ConfigError(
                f"--reader dccp: {DCCP!r} not found (apt-get install dcap)") from None
        self.fd = self.proc.stdout.fileno()

    def readinto(self, buffer: memoryview) -> int:
        n = os.readv(self.fd, [buffer])
        if n == 0:
            code = self.proc.wait()
            if code != 0:
                self.stderr.seek(0)
                message = " ".join(self.stderr.read(4096).decode("utf-8", "replace").split())
                if "No such file" in message:
                    raise FileNotFoundError(errno.ENOENT, message)
                raise OSError(errno.EIO, f"dccp exited {code}: {message}")
        return n

    def current(self) -> Current:
        if not self.local:
            return Current(self.listed_size, None)
        st = os.stat(self.path)
        return Current(st.st_size, st.st_mtime_ns)

    def abort(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    def close(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stdout.close()
        proc.wait()
        self.stderr.close()


class DccpReader:
    name = "dccp"

    def open(self, item: Claimed) -> DccpFile:
        return DccpFile(item.path, item.size)
