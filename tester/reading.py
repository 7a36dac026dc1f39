"""What every reader shares: the types (``Current``, ``OpenFile``, ``Reader``) and the one
way to read a file through a client program (``dccp SRC -``, ``xrdcp SRC -``): streamed
into the checksummer through a pipe, nothing written anywhere. The readers themselves are
one small module each (``posix_read``, ``xrootd_read``, ``dccp_read``, ``xrdcp_read``);
``tester.readers`` chooses among them.

A reader's ``open`` raises FileNotFoundError when the file is gone (verdict ``missing``)
and another OSError when it cannot be opened (``unreadable``); the returned source can say
what the file looks like now (``current``), so the checker can tell a rewrite from
corruption."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Protocol

from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.lease import Claimed
from pnfsmon.tester.stream import Source


@dataclass(frozen=True)
class Current:
    """What the storage says about the file (its size and mtime)."""

    size: int
    mtime_ns: int | None  # None where the access method cannot tell


class OpenFile(Source, Protocol):
    source_node: str | None

    def current(self) -> Current:
        """Size and mtime now (while the file is open)."""
        ...


class Reader(Protocol):
    name: str

    def open(self, item: Claimed) -> OpenFile: ...


class Unreachable(OSError):
    """The client program could not reach the storage at all: no verdict on the file
    (the checker turns it into ``StorageUnavailable``: the batch is released, exit 3)."""


class PipeFile:
    """A client program streaming one file to its stdout (``TOOL SRC -``), run in its own
    session with stderr kept apart (``dccp 2>&1 | ...`` has been seen to spin): the
    checksummer reads the pipe; on a timeout or a stop the whole process group is killed.
    A non-zero exit is a read error (a missing file when the tool says so), whatever was
    read before. ``current()`` is the listed size with no mtime: the tool cannot say."""

    source_node = None
    tool = "?"
    install = "?"  # what to install when the tool is missing

    def __init__(self, command: list, size: int, env: dict[str, str] | None = None) -> None:
        self.listed_size = size
        self.proc: subprocess.Popen | None = None
        # Lives as long as the process; closed in close().
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=self.stderr, start_new_session=True, env=env)
        except FileNotFoundError:
            self.stderr.close()
            raise ConfigError(f"{command[0]!r} not found ({self.install})") from None
        self.fd = self.proc.stdout.fileno()

    def readinto(self, buffer: memoryview) -> int:
        n = os.readv(self.fd, [buffer])
        if n == 0:
            code = self.proc.wait()
            if code != 0:
                self.stderr.seek(0)
                message = " ".join(self.stderr.read(4096).decode("utf-8", "replace").split())
                if "no such file" in message.lower() or "not found" in message.lower():
                    raise FileNotFoundError(errno.ENOENT, message)
                if self.unreachable(message):
                    raise Unreachable(errno.EHOSTUNREACH, f"{self.tool}: {message}")
                raise OSError(errno.EIO, f"{self.tool} exited {code}: {message}")
        return n

    def current(self) -> Current:
        return Current(self.listed_size, None)

    def unreachable(self, message: str) -> bool:
        """Does the tool's error say that no server could be reached?"""
        return False

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
