"""Where settings come from, with one precedence rule: command-line flag > environment
variable > configuration file > built-in default.

The file is INI, read from the first of: ``$PNFSMON_CONFIG`` (which must then exist),
``./pnfsmon.conf``, ``~/.config/pnfsmon/pnfsmon.conf``, ``/etc/pnfsmon/pnfsmon.conf``.
``pnfsmon.conf.example`` in the source tree documents every key.

The database password never needs to be on a command line: put it in a file named by
``db_password_file`` / ``PNFSMON_DB_PASSWORD_FILE`` (mode 600), or in ``PNFSMON_DB_PASSWORD``.
"""

from __future__ import annotations

import configparser
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from pnfsmon.schema import secrets
from pnfsmon.schema.errors import ConfigError

DEFAULT_DB = "sqlite:///pnfsmon.sqlite"
SECTION = "pnfsmon"


def search_path() -> list[Path]:
    return [
        Path("pnfsmon.conf"),
        Path.home() / ".config" / "pnfsmon" / "pnfsmon.conf",
        Path("/etc/pnfsmon/pnfsmon.conf"),
    ]


DEFAULT_EVENTS_RETENTION = 365.0  # days: checks older than this are pruned
DEFAULT_VANISHED_RETENTION = 90.0  # days: files gone longer than this are pruned


@dataclass(frozen=True)
class Settings:
    db_url: str
    db_password: str | None = None
    config_file: Path | None = None
    events_retention: float = DEFAULT_EVENTS_RETENTION  # days (``pnfsmon db prune``)
    vanished_retention: float = DEFAULT_VANISHED_RETENTION  # days
    # MariaDB/MySQL: may the crawl stage its listing with LOAD DATA LOCAL INFILE?
    mysql_local_infile: bool = True
    # Where the password came from, said when a login fails (never the password itself);
    # and the file, when it came from one (HTCondor jobs transfer that file, no copy).
    password_source: str | None = None
    password_file: Path | None = None
    # HTCondor worker jobs' own account (``condor submit``/``dag``): its URL and password
    # file, so that the submit host's password never travels.
    worker_db: str | None = None
    worker_db_password_file: str | None = None
    # TLS to the database server (``db_ssl_ca``, ``db_ssl_cert``, ``db_ssl_key``): the
    # server's certificate is verified against the CA; a client certificate is optional.
    tls: dict[str, str] = dataclasses.field(default_factory=dict)


def _read_file() -> tuple[dict[str, str], Path | None]:
    explicit = os.environ.get("PNFSMON_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"PNFSMON_CONFIG names {path}, which is not a readable file")
        candidates = [path]
    else:
        candidates = [p for p in search_path() if p.is_file()]
    if not candidates:
        return {}, None
    path = candidates[0]
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except (OSError, configparser.Error, UnicodeDecodeError) as err:
        first_line = str(err).splitlines()[0]
        raise ConfigError(f"cannot read configuration {path}: {first_line}") from None
    if not parser.has_section(SECTION):
        return {}, path
    return dict(parser.items(SECTION)), path


def read_password_file(path: str | Path, what: str = "DB") -> str:
    """The password in ``path``; refused, as ssh refuses a key, if group or others may
    read or change the file."""
    try:
        with open(path, encoding="utf-8") as fh:
            mode = os.fstat(fh.fileno()).st_mode & 0o777
            if mode & 0o077:
                raise ConfigError(
                    f"the {what} password file {path} is accessible by group or others "
                    f"(mode {mode:03o}): chmod 600 {path}")
            return fh.read().strip()
    except OSError as err:
        raise ConfigError(f"cannot read the {what} password file {path}: "
                          f"{err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the {what} password file {path} is not UTF-8 text") from None


def _url_user(db_url: str) -> str | None:
    try:
        return sa.make_url(db_url).username
    except (sa.exc.ArgumentError, ValueError):
        return None


def _url_password(db_url: str) -> str | None:
    try:
        return sa.make_url(db_url).password
    except (sa.exc.ArgumentError, ValueError):
        return None  # not a URL: create_engine says so, redacted


def load(db_flag: str | None = None) -> Settings:
    """Settings for this run. ``db_flag`` is the ``--db`` option, if given."""
    file_values, file_path = _read_file()
    db_url = db_flag or os.environ.get("PNFSMON_DB") or file_values.get("db") or DEFAULT_DB
    password = os.environ.get("PNFSMON_DB_PASSWORD")
    source = "PNFSMON_DB_PASSWORD" if password is not None else None
    from_file = None
    if password is None:
        if os.environ.get("PNFSMON_DB_PASSWORD_FILE"):
            from_file = Path(os.environ["PNFSMON_DB_PASSWORD_FILE"])
            source = f"the file {from_file} (PNFSMON_DB_PASSWORD_FILE)"
        elif file_values.get("db_password_file"):
            from_file = Path(file_values["db_password_file"])
            source = f"the file {from_file} (db_password_file in {file_path})"
        if from_file is not None:
            password = read_password_file(from_file)
    url_password = _url_password(db_url)
    if source is None and url_password is not None:
        source = "the database URL"
    elif source is not None and _url_user(db_url) != _url_user(
            file_values.get("db") or "") and file_values.get("db"):
        # A password set up for the configuration's account, used for another one.
        source += (f", which the configuration {file_path} gives for user "
                   f"{_url_user(file_values['db'])!r}")
    secrets.register(password)
    secrets.register(url_password)
    worker_db = file_values.get("worker_db")
    secrets.register(_url_password(worker_db) if worker_db else None)
    return Settings(db_url=db_url, db_password=password, config_file=file_path,
                    password_source=source, password_file=from_file, worker_db=worker_db,
                    worker_db_password_file=file_values.get("worker_db_password_file"),
                    tls={key: file_values[f"db_ssl_{key}"] for key in ("ca", "cert", "key")
                         if file_values.get(f"db_ssl_{key}")},
                    events_retention=_days(file_values, "prune_events_after",
                                           DEFAULT_EVENTS_RETENTION, file_path),
                    vanished_retention=_days(file_values, "prune_vanished_after",
                                             DEFAULT_VANISHED_RETENTION, file_path),
                    mysql_local_infile=_yes(file_values, "mysql_local_infile", file_path))


def _yes(values: dict[str, str], key: str, path: Path | None) -> bool:
    text = values.get(key, "yes").strip().lower()
    if text not in ("yes", "no", "true", "false", "on", "off", "1", "0"):
        raise ConfigError(f"{path}: {key} = {text!r} must be yes or no")
    return text in ("yes", "true", "on", "1")


def _days(values: dict[str, str], key: str, default: float, path: Path | None) -> float:
    text = values.get(key)
    if text is None:
        return default
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not math.isfinite(days) or days < 0:
        raise ConfigError(f"{path}: {key} = {text!r} is not a number of days")
    return days
