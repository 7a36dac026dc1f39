"""Small helpers for building storage trees, running the ``pnfsmon`` command and reading
results in tests."""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path

import sqlalchemy as sa
from zlib_ng import zlib_ng

from pnfsmon.schema import xrdcks
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import statuses
from pnfsmon.tester.stream import adler32_hex

DB_SECRET = "Condor-S3cret!"  # the password of the mariadb_with_password user
#: The real database servers the tests use (each test session makes its own database).
SERVERS = {
    "mariadb": os.environ.get("PNFSMON_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/"),
    "postgresql": os.environ.get("PNFSMON_TEST_POSTGRESQL",
                                 "postgresql+psycopg://postgres@127.0.0.1:5432/"),
}
BACKENDS = os.environ.get("PNFSMON_TEST_BACKENDS", "sqlite,mariadb,postgresql").split(",")


#: Seconds a command may take before its test fails (a hung one must not hang the
#: session): generous, for a loaded 2-core machine.
COMMAND_TIMEOUT = 300


def free_port() -> int:
    """A port of 127.0.0.1 that nothing holds now, for a test's server (or a client that
    must find nobody there). Below the kernel's ephemeral range: a port the kernel hands
    out for 0 is free only until an outgoing connection takes it (the tests' database
    clients make many), and a server given it then failed to start. Another test's server
    may still draw the same port: the servers retry on "address already in use"."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    top = low if low > 11000 else 65536  # (a range that starts low leaves no room below)
    draw = random.SystemRandom()  # (not the tests' seeded generator: xdist workers alike)
    while True:
        port = draw.randrange(10000, top)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@contextlib.contextmanager
def port_taken_first(monkeypatch, module):
    """A port held by a listening socket, which ``module.free_port`` hands out first
    (twice, then free ones): a test server started meanwhile finds its port taken, as
    when another process binds the port between its choice and the server's bind."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        draws = iter([taken, taken])
        monkeypatch.setattr(module, "free_port", lambda: next(draws, None) or free_port())
        yield taken


def clean_environment(**variables: str) -> dict[str, str]:
    """The test run's environment without the ``PNFSMON_*`` and ``RUCIO_*`` settings of the
    operator or the test session, plus ``variables``: what a command a test starts sees."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PNFSMON_", "RUCIO_"))}
    env.update(variables)
    return env


def pnfsmon(*args: str | bytes, env: Mapping[str, str] | None = None,
            cwd: Path | str | None = None, timeout: float = COMMAND_TIMEOUT,
            before: str | None = None, under: Sequence[str] = (), text: bool = True
            ) -> subprocess.CompletedProcess:
    """``pnfsmon ARGS`` as an operator or a batch job runs it: a process of its own
    (``python -m pnfsmon``), its exit code, stdout and stderr (text, or bytes if not
    ``text``). Its environment is ``clean_environment()`` plus ``env``. ``before``: Python
    the process runs first, then ``pnfsmon.cli.main`` (to plant a bug, or hide a module as
    if its extra were not installed); ``under``: a command that runs it (``faketime -f
    +1d``, say)."""
    if before is None:
        python = ["-m", "pnfsmon"]
    else:
        python = ["-c", f"import sys\n{before}\nfrom pnfsmon.cli import main\n"
                        "sys.exit(main(sys.argv[1:]))"]
    return subprocess.run([*under, sys.executable, *python, *args],
                          env=clean_environment(**(env or {})), cwd=cwd,
                          capture_output=True, text=text, timeout=timeout)


def pnfsmon_here(capsys, *args: str) -> subprocess.CompletedProcess:
    """``pnfsmon ARGS`` run by ``pnfsmon.cli.main`` in the test's own process, for tests
    that run many cheap commands (a process start costs more than they do). It sees the
    test's environment: set ``PNFSMON_*`` with ``monkeypatch``. Same result shape as
    ``pnfsmon``."""
    from pnfsmon.cli import main
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def create_database_when_up(admin_url: str, name: str, wait: float = 30.0) -> None:
    """Create database ``name`` on a server that is still starting (a private mariadbd the
    test has just launched), trying until it answers or ``wait`` seconds have passed."""
    admin = sa.create_engine(admin_url)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS {name}")
                return
            except sa.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        admin.dispose()


def drop_all(url: str) -> None:
    """Drop pnfs-monitor's tables and its schema history, leaving an empty database."""
    from pnfsmon.schema import db, migrate
    from pnfsmon.schema.config import Settings
    from pnfsmon.schema.tables import metadata

    engine = db.create_engine(Settings(url))
    metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {migrate.ALEMBIC_TABLE}")
    engine.dispose()

def write_file(path: Path | bytes, data: bytes, *, record: bool = False,
               record_value: str | None = None) -> bytes:
    """Write ``data``; with ``record``, store an XRootD checksum xattr (the true value,
    or ``record_value``). Returns the path as bytes."""
    p = os.fsencode(path)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as fh:
        fh.write(data)
    if record:
        value = record_value or adler32_hex(zlib_ng.adler32(data))
        os.setxattr(p, xrdcks.XATTR_NAME, xrdcks.encode(value, int(os.stat(p).st_mtime)))
    return p


def secret_forms(secret: str) -> set[str]:
    """The password as typed and as it appears inside a URL (percent-encoded)."""
    return {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}


def assert_no_secret(text: str, secret: str, where: str = "output") -> None:
    for form in secret_forms(secret):
        assert form not in text, f"the password ({form!r}) is in the {where}"


def random_bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def flip_bit(path: bytes | Path, offset: int, keep_mtime: bool = True) -> None:
    """Silent bit rot: flip one bit and put the mtime back."""
    st = os.stat(path)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0x01]))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def verdicts(engine: sa.Engine) -> dict[bytes, Status]:
    with engine.connect() as conn:
        return {bytes(p): Status(s) for p, s in
                conn.execute(sa.select(statuses.c.path, statuses.c.status))}


def row(engine: sa.Engine, path: bytes):
    with engine.connect() as conn:
        return conn.execute(sa.select(statuses).where(statuses.c.path == path)).one()


def as_nobody(function, *args):
    """Run ``function(*args)`` in a forked child that dropped root to nobody (root reads
    everything, so permission tests need another user); return its pickled result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.write(w, pickle.dumps(function(*args)))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    if not data:
        raise RuntimeError(f"{function.__name__} failed in the unprivileged child")
    return pickle.loads(data)


def open_path_to(path: Path) -> None:
    """Let a service user (xrootd, mysql) reach ``path``: test temp dirs are private to
    root."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o005)


def lose_commit_answers(monkeypatch, lose: set[int], fail: frozenset[int] = frozenset()
                        ) -> list[bool]:
    """Batches stored through ``schema.db.insert_batch``: the write transactions numbered
    in ``lose`` (0 is the first) commit, and then their answer is lost, as when the
    connection drops between COMMIT and its reply: the caller sees a transient error
    although the rows are stored. Those numbered in ``fail`` fail the same way before their
    statements reach the server (nothing stored). Returns one entry per transaction, True
    where it failed."""
    import pymysql

    from pnfsmon.schema import db

    real = db.write_transaction
    seen: list[bool] = []

    def lost() -> sa.exc.OperationalError:
        return sa.exc.OperationalError(
            "COMMIT", {}, pymysql.err.OperationalError(2013, "Lost connection"))

    @contextlib.contextmanager
    def commit_then_lose_the_answer(engine):
        number = len(seen)
        seen.append(number in lose or number in fail)
        if number in fail:
            raise lost()
        with real(engine) as conn:
            yield conn
        if number in lose:
            raise lost()

    monkeypatch.setattr(db, "write_transaction", commit_then_lose_the_answer)
    return seen
