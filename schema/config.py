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
class Thresholds:
    """When the watchdog (``pnfsmon status --nagios``) warns and when it is critical, per
    site: overdue files in percent of the site's files, the age in days of the last complete
    crawl, and of the last check recorded while files are due. ``[pnfsmon]`` keys
    ``overdue_warning``, ``overdue_critical``, ``crawl_age_warning``, ... (same names)."""

    overdue_warning: float = 0.1
    overdue_critical: float = 1.0
    crawl_age_warning: float = 3.0
    crawl_age_critical: float = 7.0
    check_age_warning: float = 1.0
    check_age_critical: float = 3.0


@dataclass(frozen=True)
class Settings:
    db_url: str
    db_password: str | None = None
    config_file: Path | None = None
    events_retention: float = DEFAULT_EVENTS_RETENTION  # days (``pnfsmon db prune``)
    vanished_retention: float = DEFAULT_VANISHED_RETENTION  # days
    # MariaDB/MySQL: may the crawl stage its listing with LOAD DATA LOCAL INFILE?
    mysql_local_infile: bool = True
    watch: Thresholds = Thresholds()


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


def read_password_file(path: str, what: str = "DB") -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError as err:
        raise ConfigError(f"cannot read the {what} password file {path}: "
                          f"{err.strerror}") from None


def _url_password(db_url: str) -> str | None:
    try:
        return sa.make_url(db_url).password
    except sa.exc.ArgumentError:
        return None  # not a URL: create_engine says so, redacted


def load(db_flag: str | None = None) -> Settings:
    """Settings for this run. ``db_flag`` is the ``--db`` option, if given."""
    file_values, file_path = _read_file()
    db_url = db_flag or os.environ.get("PNFSMON_DB") or file_values.get("db") or DEFAULT_DB
    password = os.environ.get("PNFSMON_DB_PASSWORD")
    password_file = os.environ.get("PNFSMON_DB_PASSWORD_FILE") or file_values.get(
        "db_password_file"
    )
    if password is None and password_file:
        password = read_password_file(password_file)
    secrets.register(password)
    secrets.register(_url_password(db_url))
    return Settings(db_url=db_url, db_password=password, config_file=file_path,
                    events_retention=_days(file_values, "prune_events_after",
                                           DEFAULT_EVENTS_RETENTION, file_path),
                    vanished_retention=_days(file_values, "prune_vanished_after",
                                             DEFAULT_VANISHED_RETENTION, file_path),
                    mysql_local_infile=_yes(file_values, "mysql_local_infile", file_path),
                    watch=_thresholds(file_values, file_path))


def _thresholds(values: dict[str, str], path: Path | None) -> Thresholds:
    default = Thresholds()
    given = {name: _days(values, name, getattr(default, name), path)
             for name in Thresholds.__dataclass_fields__}
    for what in ("overdue", "crawl_age", "check_age"):
        if given[f"{what}_warning"] > given[f"{what}_critical"]:
            raise ConfigError(f"{path}: {what}_warning must not be above {what}_critical")
    return Thresholds(**given)


def _yes(values: dict[str, str], key: str, path: Path | None) -> bool:
    text = values.get(key, "yes").strip().lower()
    if text not in ("yes", "no", "true", "false", "on", "off", "1", "0"):
        raise ConfigError(f"{path}: {key} = {text!r} must be yes or no")
    return text in ("yes", "true", "on", "1")


def _days(values: dict[str, str], key: str, default: float, path: Path | None) -> float:
    """A non-negative number (of days, or a percentage for the overdue thresholds)."""
    text = values.get(key)
    if text is None:
        return default
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not days >= 0:
        raise ConfigError(f"{path}: {key} = {text!r} is not a non-negative number")
    return days
