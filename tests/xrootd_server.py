"""A real XRootD server (Debian's ``xrootd``) on 127.0.0.1 for tests and benchmarks: a temp
config exporting one directory, run as the ``xrootd`` user (it refuses root), stopped by
the PID it writes. ``xrootd.chksum adler32`` makes it answer checksum queries from its
``user.XrdCks.adler32`` cache, as production servers do."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from helpers import free_port, open_path_to

XROOTD = shutil.which("xrootd") or "/usr/bin/xrootd"


def available() -> str | None:
    """None if a server can be started here, else why not."""
    if not os.path.exists(XROOTD):
        return "xrootd-server is not installed (.ci/run installs it)"
    if os.geteuid() != 0:
        return "starting xrootd as the xrootd user needs root"
    try:
        pwd.getpwnam("xrootd")
    except KeyError:
        return "no xrootd user (installed with xrootd-server)"
    try:
        import XRootD.client  # noqa: F401
    except ImportError:
        return "the xrootd client wheel is not installed"
    return None


#: Starts tried, each on another port, when the port was taken between choosing and binding.
STARTS = 5


class XRootDServer:
    def __init__(self, data: Path, work: Path, name: str = "pnfsmon-test") -> None:
        self.data = data
        self.work = work
        self.name = name
        self.port = 0  # chosen at start
        self.url = ""
        self.pid: int | None = None
        self.admin: Path | None = None

    def start(self) -> XRootDServer:
        # Its admin socket's path must fit a Unix socket (about 100 bytes): a short
        # directory of its own, not one below pytest's (deep with xdist) temporary tree.
        self.admin = Path(tempfile.mkdtemp(prefix="xrd-"))
        try:
            return self._start(self.admin)
        except BaseException:
            self.stop()  # whatever started; and its admin directory, always
            shutil.rmtree(self.admin, ignore_errors=True)
            raise

    @property
    def log(self) -> Path:
        """Its log: xrootd puts the file given with -l in a directory named by -n."""
        return self.work / self.name / "xrootd.log"

    def _start(self, admin: Path) -> XRootDServer:
        self.work.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)
        user = pwd.getpwnam("xrootd")
        for own in (self.work, admin):  # its log and admin files
            os.chown(own, user.pw_uid, user.pw_gid)
        open_path_to(self.work)
        open_path_to(self.data)
        for _ in range(STARTS):
            self.port = free_port()
            self.url = f"root://127.0.0.1:{self.port}"
            config = self.work / "xrootd.cfg"
            config.write_text(
                f"all.export /\noss.localroot {self.data}\nxrd.port {self.port}\n"
                f"xrootd.chksum adler32\nall.adminpath {admin}\nall.pidpath {admin}\n")
            # With -b it says why it failed only in its log, and exits 1.
            if subprocess.run(["runuser", "-u", "xrootd", "--", XROOTD, "-c", str(config),
                               "-l", str(self.work / "xrootd.log"), "-b", "-n", self.name],
                              stdin=subprocess.DEVNULL).returncode == 0:
                break
            said = self.log.read_text(errors="replace") if self.log.exists() else ""
            if "address already in use" not in said:
                raise RuntimeError(f"xrootd failed to start on port {self.port}:\n"
                                   f"{said[-2000:]}")
        else:
            raise RuntimeError(f"xrootd found every port it was given taken ({STARTS})")
        pidfile = admin / self.name / "xrootd.pid"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                self.pid = int(pidfile.read_text())
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            time.sleep(0.05)
        said = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        raise RuntimeError(f"xrootd did not start on port {self.port}:\n{said}")

    def give(self, *paths: Path) -> None:
        """Hand files and directories to the xrootd user, as a real server's data is
        (so it can keep its checksum cache in their xattrs)."""
        user = pwd.getpwnam("xrootd")
        for top in paths:
            for dirpath, dirnames, filenames in os.walk(top):
                for name in [*dirnames, *filenames]:
                    os.lchown(os.path.join(dirpath, name), user.pw_uid, user.pw_gid)
            os.lchown(top, user.pw_uid, user.pw_gid)

    def stop(self) -> None:
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)
        if self.admin is not None:
            shutil.rmtree(self.admin, ignore_errors=True)

    def __enter__(self) -> XRootDServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
