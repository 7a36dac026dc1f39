"""Per-site settings, one ``[site NAME]`` section each in the configuration file (in the
spirit of cax.json): where the site's namespace is, how its catalog names (LFNs) map to
storage paths, what the catalog comparison ignores, and its grace and recheck periods::

    [site T2_XX_Example]
    namespace = /pnfs/example.org/data/cms         # or root://host:1094//data/cms
    namespace_kind = pnfs                          # optional: posix|pnfs|chimera|xrootd
    lfn_prefix = /store
    path_prefix = /pnfs/example.org/data/cms/store
    ignore = /store/user/ /store/temp/ *.tmp       # prefixes, or fnmatch patterns
    grace = 2                                      # hours
    recheck_after = 30                             # days
    confirm_after = 10                             # minutes before a corrupted verdict's
                                                   # second read (0: at once)
    overdue_slack = 7                              # days past recheck_after: overdue
    max_missing_fraction = 0.05                    # above it, compare flags for a person
    max_orphan_fraction = 0.05
    max_crawl_drop = 0.10                          # more vanishing at once: crawl and
                                                   # compare refuse ([pnfsmon] for all)
    chimera_db = postgresql://monitor@chimera-db/chimera  # namespace_kind = chimera-db
    chimera_db_password_file = /etc/pnfsmon/chimera.password  # else ~/.pgpass
    parallel = 32                                  # calls in flight crawling a mount
                                                   # (default: 32 if NFS/FUSE/...; local:
                                                   # a walker process a CPU, 1: none)
    rucio_rse = T2_XX_Example                      # pnfsmon declare: the RSE, the scope of
    rucio_scope = cms                              # its LFNs, and dry-run (default) or
    declare = dry-run                              # apply without --apply
    dark_after = 14                                # days two compares must span before
    quarantine = dry-run                           # declare --dark quarantines an orphan;
                                                   # apply: without --apply
    incremental = yes                              # list only changed directories (default:
                                                   # yes for pnfs and chimera mounts, else no)
    full_crawl_every = 7                           # days: a full crawl at least this often

A site without a section has an identity mapping (LFN = path) and the defaults;
``max_crawl_drop`` in the ``[pnfsmon]`` section is every site's default."""

from __future__ import annotations

import configparser
import fnmatch
import math
import os
import re
from dataclasses import dataclass, field, fields

from pnfsmon.schema.durations import DEFAULT_RECHECK
from pnfsmon.schema.errors import ConfigError

SECTION_PREFIX = "site "
DEFAULT_GRACE = 2 * 3600.0  # seconds a file may still be being written
DEFAULT_PARALLEL = 32  # calls in flight on a mount: enough to hide an NFS/dCache round trip
# The share of a site that may vanish in one crawl, or the crawl be smaller than the one
# before for compare: a tenth is far beyond a night's deletions at a WLCG site, far below
# what a missing mount or a lost pool looks like.
DEFAULT_MAX_CRAWL_DROP = 0.10
# Seconds between a corrupted first read and its second, confirming one: long enough for a
# passing fault (a flaky door, a busy node) to pass, short against a night's checks.
DEFAULT_CONFIRM_AFTER = 600.0
# Dark data goes to quarantine (and Rucio's dark reaper deletes it) only once compares two
# weeks apart agree: a late registration or a catalog dump that missed files shows up
# well within that.
DEFAULT_DARK_AFTER = 14 * 86400.0
# Between full crawls of a site that is crawled incrementally: a week bounds how long a
# change no directory mtime shows (a file rewritten in place, a pool or locality change)
# goes unseen.
DEFAULT_FULL_CRAWL_EVERY = 7 * 86400.0


@dataclass(frozen=True)
class Site:
    name: str
    namespace: str | None = None
    namespace_kind: str | None = None
    lfn_prefix: bytes = b""
    path_prefix: bytes = b""
    ignore: tuple[str, ...] = field(default_factory=tuple)
    grace: float = DEFAULT_GRACE
    recheck_after: float = DEFAULT_RECHECK  # seconds
    confirm_after: float = DEFAULT_CONFIRM_AFTER  # seconds (the file says minutes)
    # seconds past recheck_after (past the grace window for a file never verified) after
    # which a file is overdue (the watchdog counts it)
    overdue_slack: float = 7 * 86400.0
    max_missing_fraction: float = 0.05
    max_orphan_fraction: float = 0.05
    max_crawl_drop: float = DEFAULT_MAX_CRAWL_DROP
    parallel: int | None = None  # calls in flight crawling a mount; None: by its filesystem
    chimera_db: str | None = None  # postgresql://ROLE@HOST/chimera (namespace chimera-db)
    chimera_db_password_file: str | None = None
    chimera_timezone: str | None = None  # of Chimera's timestamps (default: the DB's)
    rucio_rse: str | None = None  # the RSE whose replicas ``pnfsmon declare`` declares bad
    rucio_scope: str | None = None  # the scope of the site's LFNs in Rucio
    declare: str = "dry-run"  # dry-run | apply: what ``pnfsmon declare`` does by default
    # seconds between the first and the latest of the published compares that found an
    # orphan, without a break, before ``pnfsmon declare --dark`` may quarantine it (CMS's
    # rule: several runs, weeks apart, agree)
    dark_after: float = DEFAULT_DARK_AFTER
    quarantine: str = "dry-run"  # dry-run | apply: what ``pnfsmon declare --dark`` does
    # List only the directories that changed (``crawler.directories``); None: by the
    # namespace (yes for dCache's pnfs and chimera mounts, whose files are written once).
    incremental: bool | None = None
    full_crawl_every: float = DEFAULT_FULL_CRAWL_EVERY  # seconds between full crawls

    def to_path(self, lfn: bytes) -> bytes | None:
        """The storage path of a catalog name, or None if the mapping does not cover it."""
        if not lfn.startswith(self.lfn_prefix):
            return None
        return self.path_prefix + lfn[len(self.lfn_prefix):]

    def to_lfn(self, path: bytes) -> bytes | None:
        """The catalog name of a storage path, or None if outside the mapped area."""
        if not path.startswith(self.path_prefix):
            return None
        return self.lfn_prefix + path[len(self.path_prefix):]

    def ignored(self, lfn: bytes) -> bool:
        text = os.fsdecode(lfn)
        return any(fnmatch.fnmatchcase(text, pattern) if any(c in pattern for c in "*?[")
                   else text.startswith(pattern) for pattern in self.ignore)


def _number(section: configparser.SectionProxy, key: str, default: float, scale: float,
            name: str) -> float:
    try:
        value = float(section.get(key, default / scale)) * scale
    except ValueError:
        value = math.nan
    if not math.isfinite(value):  # nan would make every comparison with it false
        raise ConfigError(f"[{section.name}] {key} = {section.get(key)!r} is not a "
                          "number")
    if value < 0:
        raise ConfigError(f"[{section.name}] {key} must not be negative")
    return value


DECLARE_MODES = ("dry-run", "apply")


def _declare_mode(section: configparser.SectionProxy, name: str,
                  key: str = "declare") -> str:
    mode = section.get(key, "dry-run").strip()
    if mode not in DECLARE_MODES:
        raise ConfigError(f"[site {name}] {key} = {mode!r}: use dry-run or apply")
    return mode


def _yes_no(section: configparser.SectionProxy, key: str, name: str) -> bool | None:
    text = section.get(key)
    if text is None or not text.strip():
        return None
    value = text.strip().lower()
    if value in ("yes", "true", "on", "1"):
        return True
    if value in ("no", "false", "off", "0"):
        return False
    raise ConfigError(f"[site {name}] {key} = {text!r}: use yes or no")


def _parallel(section: configparser.SectionProxy, name: str) -> int | None:
    text = section.get("parallel")
    if text is None:
        return None
    if not re.fullmatch(r"[0-9]{1,6}", text.strip()) or int(text) < 1:
        raise ConfigError(f"[site {name}] parallel = {text!r} must be a whole number >= 1")
    return int(text)


def defaults(parser: configparser.ConfigParser) -> Site:
    """The settings of a site without a section: the defaults, with what ``[pnfsmon]``
    sets for every site (``max_crawl_drop``)."""
    return _default(parser, "")


def _default(parser: configparser.ConfigParser, name: str) -> Site:
    if not parser.has_section("pnfsmon"):
        return Site(name)
    drop = _number(parser["pnfsmon"], "max_crawl_drop", DEFAULT_MAX_CRAWL_DROP, 1.0,
                   name)
    return Site(name, max_crawl_drop=drop)


#: Every key a ``[site NAME]`` section may hold (one per setting of Site); anything else is a
#: typo, and an error.
KEYS = tuple(f.name for f in fields(Site) if f.name != "name")


def sites_from(parser: configparser.ConfigParser) -> dict[str, Site]:
    """Every ``[site NAME]`` section of the parsed configuration file."""
    sites = {}
    for section_name in parser.sections():
        if not section_name.startswith(SECTION_PREFIX):
            continue
        name = section_name[len(SECTION_PREFIX):].strip()
        section = parser[section_name]
        lfn_prefix = section.get("lfn_prefix", "")
        path_prefix = section.get("path_prefix", lfn_prefix)
        if bool(lfn_prefix) != bool(path_prefix):
            raise ConfigError(f"[site {name}] needs both lfn_prefix and path_prefix")
        default = _default(parser, name)
        sites[name] = Site(
            name=name,
            namespace=section.get("namespace") or None,
            namespace_kind=section.get("namespace_kind") or None,
            lfn_prefix=os.fsencode(lfn_prefix),
            path_prefix=os.fsencode(path_prefix),
            ignore=tuple(section.get("ignore", "").split()),
            grace=_number(section, "grace", default.grace, 3600.0, name),
            recheck_after=_number(section, "recheck_after", default.recheck_after, 86400.0,
                                  name),
            confirm_after=_number(section, "confirm_after", default.confirm_after, 60.0,
                                  name),
            overdue_slack=_number(section, "overdue_slack", default.overdue_slack, 86400.0,
                                  name),
            max_missing_fraction=_number(section, "max_missing_fraction",
                                         default.max_missing_fraction, 1.0, name),
            max_orphan_fraction=_number(section, "max_orphan_fraction",
                                        default.max_orphan_fraction, 1.0, name),
            max_crawl_drop=_number(section, "max_crawl_drop", default.max_crawl_drop, 1.0,
                                   name),
            parallel=_parallel(section, name),
            chimera_db=section.get("chimera_db") or None,
            chimera_db_password_file=section.get("chimera_db_password_file") or None,
            chimera_timezone=section.get("chimera_timezone") or None,
            rucio_rse=section.get("rucio_rse") or None,
            rucio_scope=section.get("rucio_scope") or None,
            declare=_declare_mode(section, name),
            dark_after=_number(section, "dark_after", default.dark_after, 86400.0, name),
            quarantine=_declare_mode(section, name, "quarantine"),
            incremental=_yes_no(section, "incremental", name),
            full_crawl_every=_number(section, "full_crawl_every", default.full_crawl_every,
                                     86400.0, name),
        )
    return sites
