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
import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import sqlalchemy as sa

from pnfsmon.schema import secrets
from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.sites import KEYS as SITE_KEYS
from pnfsmon.schema.sites import SECTION_PREFIX, Site, sites_from
from pnfsmon.schema.sites import defaults as site_defaults

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
class IncidentRule:
    """When a burst of problem verdicts becomes an incident (``schema.incidents``), for
    every site: at least ``min_problems`` problem files in one scope and window, and more
    than ``min_percent`` percent of the files that scope checked in that window. The window
    of a pool or a worker node is ``window`` seconds (whole UTC days by default); a site's
    is one clock hour. ``[pnfsmon]`` keys ``incident_min_problems``,
    ``incident_min_percent``, ``incident_window`` (hours)."""

    min_problems: int = 20
    min_percent: float = 5.0
    window: float = 24 * 3600.0


#: Every key the ``[pnfsmon]`` section may hold; anything else is a typo, and an error.
KEYS = ("db", "db_password_file", "prune_events_after", "prune_vanished_after",
        "mysql_local_infile", "max_crawl_drop", "worker_db", "worker_db_password_file",
        "db_ssl_ca", "db_ssl_cert", "db_ssl_key", *(f.name for f in fields(Thresholds)),
        "incident_min_problems", "incident_min_percent", "incident_window")


@dataclass(frozen=True)
class Settings:
    """One command's settings, read once: the database, the file they came from, and every
    ``[site NAME]`` section of it. Its repr never shows a password."""

    db_url: str
    db_password: str | None = field(default=None, repr=False)
    config_file: Path | None = None
    events_retention: float = DEFAULT_EVENTS_RETENTION  # days (``pnfsmon db prune``)
    vanished_retention: float = DEFAULT_VANISHED_RETENTION  # days
    # MariaDB/MySQL: may the crawl stage its listing with LOAD DATA LOCAL INFILE?
    mysql_local_infile: bool = True
    sites: Mapping[str, Site] = field(default_factory=dict, repr=False)
    # A site without a section: the defaults, with what [pnfsmon] sets for every site.
    site_defaults: Site = field(default_factory=lambda: Site(""), repr=False)
    # Where the database URL came from, for messages: "--db", "PNFSMON_DB", ...
    db_source: str = "the built-in default"
    watch: Thresholds = Thresholds()  # when status --nagios warns, and is critical
    incidents: IncidentRule = IncidentRule()  # when a burst of problems is held back

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
    tls: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"Settings(db_url={secrets.redacted_url(self.db_url)!r}, "
                f"config_file={self.config_file!r}, sites={sorted(self.sites)!r})")

    def site(self, name: str) -> Site:
        """The settings of site ``name`` (defaults if the file has no section for it)."""
        return self.sites.get(name) or replace(self.site_defaults, name=name)


def _find_file() -> Path | None:
    explicit = os.environ.get("PNFSMON_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"PNFSMON_CONFIG names {path}, which is not a readable file")
        return path.resolve()
    found = next((p for p in search_path() if p.is_file()), None)
    return found.resolve() if found else None


def _parse(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except (OSError, configparser.Error, UnicodeDecodeError) as err:
        first_line = str(err).splitlines()[0]
        raise ConfigError(f"cannot read configuration {path}: {first_line}") from None
    return parser


def _check_sections(parser: configparser.ConfigParser, path: Path) -> None:
    for section in parser.sections():
        if section.startswith(SECTION_PREFIX):
            check_keys(parser[section], SITE_KEYS, f"{path}: [{section}]")
            continue
        if section == SECTION:
            continue
        near = difflib.get_close_matches(section, [SECTION], n=1, cutoff=0.6)
        if not near and difflib.get_close_matches(section[:len(SECTION_PREFIX)],
                                                  [SECTION_PREFIX], n=1, cutoff=0.6):
            near = [f"{SECTION_PREFIX}{section.split(None, 1)[-1]}"]
        hint = f"; did you mean [{near[0]}]?" if near else \
            f"; known sections: [{SECTION}] and [{SECTION_PREFIX}NAME]"
        raise ConfigError(f"{path}: unknown section [{section}]{hint}")
    if parser.has_section(SECTION):
        for key in parser[SECTION]:
            if key in SITE_KEYS and key not in KEYS:
                raise ConfigError(f"{path}: [{SECTION}]: {key} is a site's setting: put it "
                                  f"in a [{SECTION_PREFIX}NAME] section")
        check_keys(parser[SECTION], KEYS, f"{path}: [{SECTION}]")


def check_keys(section: Mapping[str, str], known: tuple[str, ...], where: str) -> None:
    """Refuse a key that is not in ``known``, suggesting the nearest known one."""
    for key in section:
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"; did you mean {near[0]}?" if near else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")


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


def _is_sqlite(db_url: str) -> bool:
    return db_url.startswith("sqlite:")


def load(db_flag: str | None = None) -> Settings:
    """Settings for this run, from one reading of the configuration file. ``db_flag`` is the
    ``--db`` option, if given."""
    path = _find_file()
    parser = _parse(path) if path is not None else configparser.ConfigParser()
    if path is not None:
        _check_sections(parser, path)
    values = dict(parser.items(SECTION)) if parser.has_section(SECTION) else {}
    db_url, db_source = next(
        (value, where) for value, where in (
            (db_flag, "--db"), (os.environ.get("PNFSMON_DB"), "PNFSMON_DB"),
            (values.get("db"), f"db = in {path}"), (DEFAULT_DB, _default_source(path)))
        if value)
    password, source, from_file = None, None, None
    if not _is_sqlite(db_url):  # SQLite has no password: one in the environment is not ours
        password = os.environ.get("PNFSMON_DB_PASSWORD")
        source = "PNFSMON_DB_PASSWORD" if password is not None else None
        if password is None:
            if os.environ.get("PNFSMON_DB_PASSWORD_FILE"):
                from_file = Path(os.environ["PNFSMON_DB_PASSWORD_FILE"])
                source = f"the file {from_file} (PNFSMON_DB_PASSWORD_FILE)"
            elif values.get("db_password_file"):
                from_file = Path(values["db_password_file"])
                source = f"the file {from_file} (db_password_file in {path})"
            if from_file is not None:
                password = read_password_file(from_file)
    url_password = _url_password(db_url)
    if source is None and url_password is not None:
        source = "the database URL"
    elif source is not None and values.get("db") and (
            _url_user(db_url) != _url_user(values["db"])):
        # A password set up for the configuration's account, used for another one.
        source += (f", which the configuration {path} gives for user "
                   f"{_url_user(values['db'])!r}")
    secrets.register(password)
    secrets.register(url_password)
    worker_db = values.get("worker_db")
    secrets.register(_url_password(worker_db) if worker_db else None)
    return Settings(db_url=db_url, db_password=password, config_file=path,
                    password_source=source, password_file=from_file, worker_db=worker_db,
                    worker_db_password_file=values.get("worker_db_password_file"),
                    tls={key: values[f"db_ssl_{key}"] for key in ("ca", "cert", "key")
                         if values.get(f"db_ssl_{key}")},
                    events_retention=_days(values, "prune_events_after",
                                           DEFAULT_EVENTS_RETENTION, path),
                    vanished_retention=_days(values, "prune_vanished_after",
                                             DEFAULT_VANISHED_RETENTION, path),
                    mysql_local_infile=_yes(values, "mysql_local_infile", path),
                    sites=sites_from(parser), site_defaults=site_defaults(parser),
                    db_source=db_source,
                    watch=_thresholds(values, path),
                    incidents=_incident_rule(values, path))


def _default_source(path: Path | None) -> str:
    if path is not None:
        return f"the built-in default: {path} sets no db"
    searched = ", ".join(str(p) for p in search_path())
    return f"the built-in default: no configuration file in {searched}"


def _thresholds(values: dict[str, str], path: Path | None) -> Thresholds:
    default = Thresholds()
    given = {name: _days(values, name, getattr(default, name), path)
             for name in Thresholds.__dataclass_fields__}
    for what in ("overdue", "crawl_age", "check_age"):
        if given[f"{what}_warning"] > given[f"{what}_critical"]:
            raise ConfigError(f"{path}: {what}_warning must not be above {what}_critical")
    return Thresholds(**given)


def _incident_rule(values: dict[str, str], path: Path | None) -> IncidentRule:
    default = IncidentRule()
    least = _days(values, "incident_min_problems", default.min_problems, path)
    if least != int(least) or least < 1:
        raise ConfigError(f"{path}: incident_min_problems = {values['incident_min_problems']!r}"
                          " must be a whole number of at least 1")
    percent = _days(values, "incident_min_percent", default.min_percent, path)
    if percent >= 100:
        raise ConfigError(f"{path}: incident_min_percent must be below 100")
    hours = _days(values, "incident_window", default.window / 3600, path)
    if hours <= 0 or 24 % hours and hours % 24:
        raise ConfigError(f"{path}: incident_window = {values['incident_window']!r} hours: "
                          "use a divisor or a multiple of 24 (1, 2, 3, 4, 6, 8, 12, 24, 48...), "
                          "so that windows start at the same hours every day")
    return IncidentRule(int(least), percent, hours * 3600)


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
    if not math.isfinite(days) or days < 0:
        raise ConfigError(f"{path}: {key} = {text!r} is not a non-negative number")
    return days
