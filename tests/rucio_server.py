"""A real Rucio server (the ``rucio`` package from PyPI, in its own virtualenv: it pins
SQLAlchemy 2.0.x, so never in ours) on 127.0.0.1 over plain HTTP, with userpass auth and a
SQLite database, for the ``pnfsmon declare`` tests. ``.ci/run`` builds the virtualenv."""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from helpers import free_port

#: Starts tried, each on another port, when the port was taken between choosing and binding.
STARTS = 5
VENV = Path(os.environ.get("PNFSMON_TEST_RUCIO_VENV", "/opt/pnfsmon-rucio-venv"))
ACCOUNT, PASSWORD = "root", "pnfsmon-test-secret"

_ALEMBIC_INI = """[alembic]
script_location = {migrations}
sqlalchemy.url = {url}

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""


def available() -> str | None:
    """None if a server can be started here, else why not."""
    if not (VENV / "bin" / "flask").exists():
        return f"no Rucio server virtualenv at {VENV} (.ci/run builds it)"
    try:
        import rucio.client  # noqa: F401
    except ImportError:
        return "rucio-clients is not installed (the test extra has it)"
    return None


def client_config(path: Path, port: int) -> Path:
    """A client ``rucio.cfg`` for a server on ``port`` (RUCIO_CONFIG names it)."""
    path.write_text(
        "[client]\n"
        f"rucio_host = http://127.0.0.1:{port}\nauth_host = http://127.0.0.1:{port}\n"
        f"auth_type = userpass\nusername = {ACCOUNT}\npassword = {PASSWORD}\n"
        f"account = {ACCOUNT}\nrequest_retries = 0\n"
        f"auth_token_file_path = {path.parent / 'token'}\n")
    return path


class RucioServer:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.config = work / "server.cfg"
        self.client_config = work / "client" / "rucio.cfg"  # root's, for the tests

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTHON", "RUCIO_"))}
        env["RUCIO_CONFIG"] = str(self.config)
        return env

    def start(self) -> RucioServer:
        self.work.mkdir(parents=True, exist_ok=True)
        migrations = glob.glob(str(VENV / "lib" / "python3*" / "site-packages" / "rucio" / "db"
                                   / "sqla" / "migrate_repo"))[0]
        alembic = self.work / "alembic.ini"
        database = f"sqlite:///{self.work / 'rucio.db'}"
        alembic.write_text(_ALEMBIC_INI.format(migrations=migrations, url=database))
        self.config.write_text(
            f"[common]\nlogdir = {self.work}\nloglevel = WARNING\n"
            f"[database]\ndefault = {database}\n"
            f"[alembic]\ncfg = {alembic}\n"
            f"[bootstrap]\nuserpass_identity = {ACCOUNT}\nuserpass_pwd = {PASSWORD}\n"
            "[policy]\npermission = generic\nschema = generic\nlfn2pfn_algorithm_default = "
            "hash\n"
            "[api]\nendpoints = accounts, auth, dids, ping, replicas, rses, scopes\n")
        with open(self.work / "bootstrap.log", "wb") as log:
            subprocess.run(
                [str(VENV / "bin" / "python"), "-c",
                 "from rucio.db.sqla.util import build_database, create_base_vo, "
                 "create_root_account; build_database(); create_base_vo(); "
                 "create_root_account()"],
                env=self._environment(), check=True, stdin=subprocess.DEVNULL, cwd=self.work,
                stdout=subprocess.DEVNULL, stderr=log)
        log = self.work / "server.log"
        for _ in range(STARTS):
            start = log.stat().st_size if log.exists() else 0
            if self._serve():
                return self
            with open(log, "rb") as out:  # what this start said
                said = out.read()[start:].decode(errors="replace")
            if "address already in use" not in said.lower():
                break
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
        self.stop()
        raise RuntimeError(f"the Rucio server did not start on port {self.port}:\n"
                           f"{said[-3000:]}")

    def _serve(self) -> bool:
        """Start the server on ``self.port``: True once it answers, False if it ended
        (its log says why) or did not answer within a minute."""
        self.stop()
        # (Appended to: the log keeps why an earlier start failed.)
        with open(self.work / "server.log", "ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [str(VENV / "bin" / "flask"), "--app", "rucio.web.rest.flaskapi.v1.main",
                 "run", "--host", "127.0.0.1", "--port", str(self.port), "--with-threads"],
                env=self._environment(), stdin=subprocess.DEVNULL, cwd=self.work,
                stdout=log, stderr=subprocess.STDOUT)
        self.client_config.parent.mkdir(exist_ok=True)
        client_config(self.client_config, self.port)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(f"{self.url}/ping", timeout=2):
                return True
            time.sleep(0.1)
        return False

    def token(self) -> str:
        request = urllib.request.Request(f"{self.url}/auth/userpass", headers={
            "X-Rucio-Account": ACCOUNT, "X-Rucio-Username": ACCOUNT,
            "X-Rucio-Password": PASSWORD})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.headers["X-Rucio-Auth-Token"]

    def get_lines(self, path: str) -> list[str]:
        """A streamed JSON-lines answer of the REST API, line by line."""
        request = urllib.request.Request(f"{self.url}{path}",
                                         headers={"X-Rucio-Auth-Token": self.token()})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return [line for line in answer.read().decode().splitlines() if line.strip()]

    def stop(self) -> None:
        if self.process is None:
            return
        process, self.process = self.process, None
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class AnswerDropper:
    """A loopback proxy to the server that passes everything except the answers to
    declarations: once a connection has sent ``POST /replicas/bad`` (or ``request``), it is
    closed when the server starts to answer, so the declaration is made and its answer
    lost."""

    def __init__(self, port: int, request: bytes = b"POST /replicas/bad") -> None:
        self.request = request
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.dropped = 0

    def __enter__(self) -> AnswerDropper:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            declared = threading.Event()
            threading.Thread(target=self._up, args=(client, server, declared,
                                                    self.request), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, declared),
                             daemon=True).start()

    @staticmethod
    def _up(client: socket.socket, server: socket.socket, declared: threading.Event,
            request: bytes) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(1 << 16):
                if request in data:
                    declared.set()
                server.sendall(data)
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    def _down(self, server: socket.socket, client: socket.socket,
              declared: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(1 << 16):
                if declared.is_set():
                    self.dropped += 1
                    break
                client.sendall(data)
        for s in (client, server):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
