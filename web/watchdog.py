"""The monitor watches itself, as Ceph raises "PGs not deep-scrubbed in time" from the scrub
stamps rather than trusting that the scheduler runs. Per site: the files overdue for a
check, the age of the oldest verification and a histogram of verification ages, the age of
the last complete crawl and of the last check recorded; and what a check is waiting for
(files in their grace window, files checked within ``recheck_after``).

Everything comes from the ``check_ages`` ledger (``schema.ages``), the ``crawls`` table and
two index reads (``schema.backlog``), never a scan of ``statuses``: ``status --nagios``
costs O(sites) at ten million files. Counts and ages are exact to the hour (the ledger's
unit). Ages are taken against the caller's clock (the application's, as leases are), never
the database server's, so moving the application's clock moves them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa

from pnfsmon.schema import ages
from pnfsmon.schema.backlog import in_grace, next_due
from pnfsmon.schema.config import Thresholds
from pnfsmon.schema.durations import DAY, HOUR
from pnfsmon.schema.sites import Site
from pnfsmon.schema.tables import crawls

#: The histogram's bins of verification age: (upper bound in days, label).
AGE_BINS: tuple[tuple[float, str], ...] = (
    (1, "< 1 d"), (7, "1-7 d"), (14, "7-14 d"), (30, "14-30 d"), (60, "30-60 d"),
    (90, "60-90 d"), (180, "90-180 d"), (365, "180-365 d"), (float("inf"), "> 1 y"),
)
OK, WARNING, CRITICAL = 0, 1, 2


@dataclass
class SiteWatch:
    """One site's coverage, as of ``now``."""

    site: str
    now: float
    recheck_after: float
    overdue_slack: float
    files: int = 0  # to be verified: listed, not vanished, not only on tape
    never_verified: int = 0  # waiting for a first verdict on their content
    overdue: int = 0
    due: int = 0  # due now (and for at least the hour)
    oldest_verification: float | None = None  # epoch seconds, to the hour
    histogram: list[int] = field(default_factory=lambda: [0] * len(AGE_BINS))
    last_check: float | None = None  # the last verdict a worker recorded
    first_crawl: float | None = None  # the start of the site's first crawl
    last_complete_crawl: float | None = None  # when it finished
    in_grace: int = 0  # listed, written too recently to judge
    grace_until: float | None = None  # when the first of them becomes due
    not_due: int = 0  # checked within recheck_after (to the hour)
    not_due_until: float | None = None  # when the first of them becomes due

    @property
    def overdue_percent(self) -> float:
        return 100.0 * self.overdue / self.files if self.files else 0.0

    @property
    def oldest_age(self) -> float | None:
        """Seconds since the oldest verification, None if nothing was ever verified."""
        return None if self.oldest_verification is None else self.now - self.oldest_verification

    @property
    def crawl_age(self) -> float | None:
        """Seconds since the last complete crawl ended, or since the first crawl started
        if none was ever complete."""
        since = self.last_complete_crawl or self.first_crawl
        return None if since is None else self.now - since

    @property
    def check_age(self) -> float | None:
        """Seconds since the last verdict recorded, or since the first crawl started if
        there was none."""
        since = self.last_check or self.first_crawl
        return None if since is None else self.now - since

    def as_json(self) -> dict:
        return {"site": self.site, "files": self.files, "never_verified": self.never_verified,
                "overdue": self.overdue, "due": self.due,
                "oldest_verification": self.oldest_verification,
                "verification_ages": {label: n for (_, label), n
                                      in zip(AGE_BINS, self.histogram, strict=True)},
                "last_check": self.last_check,
                "last_complete_crawl": self.last_complete_crawl,
                "in_grace": self.in_grace, "grace_until": self.grace_until,
                "not_due": self.not_due, "not_due_until": self.not_due_until,
                "recheck_after": self.recheck_after, "overdue_slack": self.overdue_slack}


def watch(conn: sa.Connection, now: float,
          site_settings: Callable[[str], Site] = Site) -> list[SiteWatch]:
    """Every site's coverage at ``now``; ``site_settings`` gives a site's recheck_after,
    grace and overdue_slack (the configuration's, by default the built-in ones)."""
    sites: dict[str, SiteWatch] = {}
    config: dict[str, Site] = {}

    def site(name: str) -> SiteWatch:
        if name not in sites:
            config[name] = settings = site_settings(name)
            sites[name] = SiteWatch(name, now, settings.recheck_after, settings.overdue_slack)
        return sites[name]

    for row in ages.totals(conn):
        w = site(row.site)
        settings = config[row.site]
        if row.last_recorded is not None:
            w.last_check = max(w.last_check or row.last_recorded, row.last_recorded)
        if not row.files:
            continue
        w.files += row.files
        # A bucket counts only when all of its hour is past the limit (never a false alarm).
        end = -float("inf") if row.hour is None else (row.hour + 1) * HOUR
        start = -float("inf") if row.hour is None else row.hour * HOUR
        if row.verified:
            due_at = end + settings.recheck_after
            if row.hour is not None:
                w.oldest_verification = min(w.oldest_verification or start, start)
            age_days = (now - start) / DAY
            w.histogram[next(i for i, (bound, _) in enumerate(AGE_BINS)
                             if age_days < bound)] += row.files
            if start >= now - settings.recheck_after:
                w.not_due += row.files
        else:
            due_at = end + settings.grace
            w.never_verified += row.files
        if due_at <= now:
            w.due += row.files
        if due_at + settings.overdue_slack <= now:
            w.overdue += row.files
    _crawls(conn, site)
    for name, (n, first) in in_grace(conn, now).items():
        w = site(name)
        w.in_grace, w.grace_until = n, first
    for w in sites.values():
        if w.not_due:
            w.not_due_until = next_due(conn, now, w.site)
    return sorted(sites.values(), key=lambda w: w.site)


def _crawls(conn: sa.Connection, site: Callable[[str], SiteWatch]) -> None:
    """The first crawl's start and the last complete crawl's end of each site (``crawls``
    holds a row per crawl: thousands after years, never millions)."""
    c = crawls.c
    for name, first, last in conn.execute(
            sa.select(c.site, sa.func.min(c.started),
                      sa.func.max(sa.case((c.complete, c.finished), else_=None)))
            .group_by(c.site)):
        w = site(name)
        w.first_crawl, w.last_complete_crawl = first, last


# -- judging it -----------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One threshold a site passed."""

    level: int  # WARNING or CRITICAL
    text: str


def _level(value: float, warning: float, critical: float) -> int:
    return CRITICAL if value > critical else WARNING if value > warning else OK


def judge(w: SiteWatch, limits: Thresholds) -> list[Finding]:
    """What passed its warning or critical threshold at this site."""
    out = []
    level = _level(w.overdue_percent, limits.overdue_warning, limits.overdue_critical)
    if level:
        out.append(Finding(level, f"{w.site}: {w.overdue:,} of {w.files:,} files overdue "
                                  f"({w.overdue_percent:.2f} %)"))
    if w.crawl_age is not None:
        days = w.crawl_age / DAY
        level = _level(days, limits.crawl_age_warning, limits.crawl_age_critical)
        if level:
            what = "no complete crawl" if w.last_complete_crawl else "no complete crawl ever"
            out.append(Finding(level, f"{w.site}: {what} for {days:.1f} days"))
    # Workers with nothing due record nothing: silence is a fault only while files wait.
    if w.check_age is not None and w.due:
        days = w.check_age / DAY
        level = _level(days, limits.check_age_warning, limits.check_age_critical)
        if level:
            out.append(Finding(level, f"{w.site}: no check recorded for {days:.1f} days "
                                      f"while {w.due:,} files are due"))
    return out


def histogram_text(w: SiteWatch) -> str:
    """``< 1 d 120, 1-7 d 3,000, ...`` (empty bins left out), with the never verified."""
    parts = [f"{label} {n:,}" for (_, label), n in zip(AGE_BINS, w.histogram, strict=True)
             if n]
    if w.never_verified:
        parts.append(f"never {w.never_verified:,}")
    return ", ".join(parts) or "none"
