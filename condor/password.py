"""Which database account HTCondor jobs use, and where their password file is, with no copy
of a secret in a directory that may be put under version control.

Worker jobs run on batch nodes: with ``--worker-db URL`` (or ``worker_db =`` in the
configuration) they get their own account (the worker role of ``schema.grants``), and the
submit host's password never travels. The password a job needs is transferred as a file:

- when it comes from a file (``PNFSMON_DB_PASSWORD_FILE``, ``db_password_file``,
  ``--worker-db-password-file``, ``worker_db_password_file``), the job references that
  file by its absolute path: no copy is made;
- otherwise (``PNFSMON_DB_PASSWORD``, a password inside the URL) it is written, mode 600,
  into a private directory outside the job directory (``private_dir()``), and the output
  says where. A submission that fails removes what it wrote."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from pnfsmon.schema import secrets
from pnfsmon.schema.config import Settings, read_password_file
from pnfsmon.schema.db import TLS_FILE_PARAMETERS, parse_url, with_tls
from pnfsmon.schema.errors import ConfigError


def private_dir() -> Path:
    """Where passwords given without a file are written for jobs (mode 700): a directory
    of the operator's home, never a job directory that might be versioned."""
    return Path.home() / ".config" / "pnfsmon" / "job-passwords"


@dataclass(frozen=True)
class JobAccount:
    """A database account as jobs use it: the URL without password, and the password file
    they transfer (None: no password)."""

    url: str
    password_file: Path | None
    password: str | None  # only to write, when ``copy_needed``
    copy_needed: bool  # the password came without a file: write it to ``password_file``
    tls_files: tuple[str, ...] = ()  # the URL's TLS files, transferred (it names them bare)
    local_url: str = ""  # the URL on the submit host (TLS files by their full path)

    def write(self) -> Path | None:
        """Write the password file if one is needed; returns it if it was written."""
        if not self.copy_needed or self.password_file is None or self.password is None:
            return None
        self.password_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.password_file.parent, 0o700)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.password + "\n")
        os.chmod(self.password_file, 0o600)
        return self.password_file

    def describe(self) -> str:
        """Where the password file is, for the operator (never the password)."""
        if self.password_file is None:
            return "no password file"
        if self.copy_needed:
            return f"the password written to {self.password_file} (mode 600, outside DIR)"
        return f"the password file {self.password_file} (referenced, not copied)"


def _account(url_text: str, password: str | None, from_file: Path | None, workdir: Path,
             kind: str, tls: dict[str, str]) -> JobAccount:
    url = with_tls(parse_url(url_text), tls)
    if url.get_backend_name() == "sqlite":
        raise ConfigError("condor jobs run on other machines: they need a database "
                          "server (mysql+pymysql://… or postgresql+psycopg://…), not sqlite")
    if password is None:
        password = url.password
    local = secrets.without_password(url).render_as_string(hide_password=False)
    url, tls_files = _carried(url)
    bare = secrets.without_password(url).render_as_string(hide_password=False)
    if password is None:
        return JobAccount(bare, None, None, False, tls_files, local)
    if from_file is not None:
        return JobAccount(bare, from_file.resolve(), None, False, tls_files, local)
    return JobAccount(bare, private_file(workdir, kind), password, True, tls_files, local)


def _carried(url: sa.URL) -> tuple[sa.URL, tuple[str, ...]]:
    """The URL as the node sees it (TLS files by their basename in the job's scratch
    directory) and the files to transfer for it."""
    files = []
    query = dict(url.query)
    for name in TLS_FILE_PARAMETERS:
        if isinstance(query.get(name), str):
            path = Path(query[name]).resolve()
            if not path.is_file():
                raise ConfigError(f"the database URL's {name} {path} is not a file")
            files.append(str(path))
            query[name] = path.name
    return url.set(query=query), tuple(files)


def private_file(workdir: Path, kind: str) -> Path:
    """The written password file of a job directory and account (``db``, ``worker-db``):
    one each, replaced by every submission from that directory."""
    key = hashlib.sha256(f"{workdir.resolve()}\0{kind}".encode()).hexdigest()[:12]
    return private_dir() / f"{workdir.name}-{kind}-{key}.password"


def submit_host_account(settings: Settings, workdir: Path) -> JobAccount:
    """The account of ``--db``: the DAG's local nodes (crawl, compare, report) and, without
    a worker account, the worker jobs too."""
    return _account(settings.db_url, settings.db_password, settings.password_file, workdir,
                    "db", settings.tls)


def worker_account(settings: Settings, worker_db: str | None,
                   worker_password_file: str | None, workdir: Path) -> JobAccount | None:
    """The worker jobs' own account (flag, else configuration), or None if none is set.
    Its password comes from its own file or its URL, never from the submit host's."""
    url = worker_db or settings.worker_db
    path = worker_password_file or settings.worker_db_password_file
    if url is None:
        if path is not None:
            raise ConfigError("a worker password file without a worker database: give "
                              "--worker-db URL (or worker_db = in the configuration)")
        return None
    try:
        password = sa.make_url(url).password
    except (sa.exc.ArgumentError, ValueError):
        password = None  # parse_url below says what is wrong
    secrets.register(password)
    from_file = None
    if path is not None:
        from_file = Path(path)
        password = read_password_file(from_file, "worker DB")
        secrets.register(password)
    return _account(url, password, from_file, workdir, "worker-db", settings.tls)
