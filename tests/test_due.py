"""Each file is due by its own site's ``recheck_after``, whichever way a command is run:
``check`` without ``--site`` claims every file at its own due time (``statuses.claim_key``),
``report``, ``status`` and ``condor status`` count as due exactly what the workers then
claim, and a changed ``recheck_after`` takes effect at the next command that reads the
configuration. The clock moves with ``faketime`` (FIELD-NOTES "Moving the clock")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import sqlalchemy as sa

from pnfsmon.schema import schedule
from pnfsmon.schema.config import Settings
from pnfsmon.schema.durations import DAY, DEFAULT_RECHECK
from pnfsmon.schema.lease import Lease, Verdict
from pnfsmon.schema.sites import Site
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import events, site_schedule, statuses
from tests.helpers import random_bytes, write_file

needs_faketime = pytest.mark.skipif(
    shutil.which("faketime") is None and not os.environ.get("CI"),
    reason="needs faketime (Debian package faketime)")


@pytest.fixture
def two_sites(tmp_path, engine, db_url):
    """Sites FAST (recheck_after 1 day) and SLOW (30 days), two files each written long ago,
    and ``run(offset, *args)``: ``pnfsmon ARGS`` with the clock moved by ``offset``."""
    conf = tmp_path / "pnfsmon.conf"
    for site in ("FAST", "SLOW"):
        for i in range(2):
            path = write_file(tmp_path / site / f"f{i}.dat", random_bytes(100 + i, i))
            os.utime(path, (time.time() - 90 * DAY,) * 2)
    configure(conf, tmp_path, fast=1, slow=30)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")}
    env.update(PNFSMON_CONFIG=str(conf), PNFSMON_DB=db_url)

    def run(offset: str | None, *args: str, code: int = 0) -> str:
        clock = ["faketime", "-f", offset] if offset else []
        r = subprocess.run([*clock, sys.executable, "-m", "pnfsmon", *args], env=env,
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert r.returncode == code, r.stdout + r.stderr
        return r.stdout + r.stderr

    return conf, run


def configure(conf, tmp_path, *, fast: float, slow: float) -> None:
    conf.write_text("".join(f"[site {name}]\nnamespace = {tmp_path / name}\ngrace = 0\n"
                            f"recheck_after = {days}\n"
                            for name, days in (("FAST", fast), ("SLOW", slow))))


def checks_per_site(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(
            sa.select(statuses.c.site, sa.func.count())
            .select_from(events.join(statuses, events.c.file_id == statuses.c.id))
            .group_by(statuses.c.site)).all())


def due_everywhere(run, offset: str, tmp_path) -> tuple[int, dict[str, int], int, str]:
    """What is due at ``offset``, as the report (its sweep, and each site in its
    watchdog), ``condor status`` and ``status`` say it."""
    out = tmp_path / f"report{offset}"
    run(offset, "report", str(out))
    summary = json.loads((out / "summary.json").read_text())
    per_site = {w["site"]: w["due"] for w in summary["watchdog"]}
    condor = run(offset, "condor", "status", "--workdir", str(tmp_path / "condor"))
    condor_due = int(condor.split("files due ")[1].split(",")[0])
    return summary["sweep"]["due"], per_site, condor_due, run(offset, "status")


@needs_faketime
def test_check_without_site_claims_each_file_at_its_own_due_time(two_sites, engine, tmp_path):
    conf, run = two_sites
    for site in ("FAST", "SLOW"):
        run(None, "crawl", "--site", site)
    assert "checked 4 files" in run(None, "check", "--workers", "1")  # all new
    assert "checked 0 files" in run("+12h", "check", "--workers", "1")  # none due yet
    # Two days on: FAST's files are due (1 day), SLOW's are not (30): everyone says so.
    sweep, per_site, condor, status = due_everywhere(run, "+2d", tmp_path)
    assert (sweep, per_site, condor) == (2, {"FAST": 2, "SLOW": 0}, 2)
    assert "2 files are not due until" in status and "(checked within the last 30 days)" in \
        status  # SLOW's, and nothing of FAST is waiting
    assert "checked 2 files" in run("+2d", "check", "--workers", "1")
    assert checks_per_site(engine) == {"FAST": 4, "SLOW": 2}
    # 31 days on: SLOW's first check is 31 days old, FAST's second 29: all are due.
    sweep, per_site, condor, _ = due_everywhere(run, "+31d", tmp_path)
    assert (sweep, per_site, condor) == (4, {"FAST": 2, "SLOW": 2}, 4)
    assert "checked 4 files" in run("+31d", "check", "--workers", "1")
    assert checks_per_site(engine) == {"FAST": 6, "SLOW": 4}
    # --recheck-after overrides for one run: files last checked more than 0 days ago.
    assert "checked 4 files" in run("+31d", "check", "--workers", "1", "--recheck-after", "0")


@needs_faketime
def test_a_changed_recheck_after_takes_effect(two_sites, engine, tmp_path):
    conf, run = two_sites
    run(None, "crawl", "--site", "FAST")
    run(None, "crawl", "--site", "SLOW")
    run(None, "check", "--workers", "1")
    with engine.connect() as conn:
        assert dict(conn.execute(sa.select(site_schedule)).all()) == {
            "FAST": DAY, "SLOW": 30 * DAY}
    # SLOW comes down to 1 day: two days on, its files are due too, for the report (which
    # reads the configuration and waits for no command) and for the check that applies it.
    configure(conf, tmp_path, fast=1, slow=1)
    out = run("+2d", "check", "--workers", "1", "-v")
    assert "checked 4 files" in out and "site SLOW: recheck_after 30 days -> 1 days" in out
    with engine.connect() as conn:
        assert conn.execute(sa.select(site_schedule.c.recheck_after)
                            .where(site_schedule.c.site == "SLOW")).scalar() == DAY
    # And back up to 30 days: the due times move out again, at the next crawl.
    configure(conf, tmp_path, fast=1, slow=30)
    run("+2d", "crawl", "--site", "FAST")
    sweep, per_site, condor, _ = due_everywhere(run, "+4d", tmp_path)
    assert (sweep, per_site, condor) == (2, {"FAST": 2, "SLOW": 0}, 2)
    assert "checked 2 files" in run("+4d", "check", "--workers", "1")


@pytest.mark.hand_written_rows
def test_a_verdict_is_due_again_after_its_sites_period(engine, tmp_path):
    """The recorded due time is the check's time plus the site's period (the default for a
    site without a row); a claim takes what is due by the key alone, or with
    ``recheck_after`` what was last checked that long before; ``schedule.apply`` moves due
    times only, never the 0 (due at once) of a released file."""
    with engine.begin() as conn:
        conn.execute(statuses.insert(), [
            {"site": site, "path": f"/{site}/{i}".encode(),
             "path_hash": bytes([n * 4 + i]) * 16, "size": 1, "mtime_ns": 1, "status": 0,
             "claim_key": 0.0, "crawl_gen": 1}
            for n, site in enumerate(("A", "B", "C")) for i in range(2)])
        conn.execute(site_schedule.insert(), [{"site": "A", "recheck_after": DAY},
                                              {"site": "B", "recheck_after": 7 * DAY}])
    lease = Lease(engine, lease_seconds=60)
    got = lease.claim(6, due_before=1000.0, now=1000.0)
    lease.record([Verdict(c.id, Status.OK, 0.1, 1, 1, computed_adler32="00020002")
                  for c in got if c.path.endswith(b"0")], now=1000.0)
    lease.release(c.id for c in got if c.path.endswith(b"1"))
    due = {b"/A/0": 1000 + DAY, b"/B/0": 1000 + 7 * DAY, b"/C/0": 1000 + DEFAULT_RECHECK}
    assert keys(engine) == {**due, b"/A/1": 0.0, b"/B/1": 0.0, b"/C/1": 0.0}

    def claimed(**kw) -> set[bytes]:
        taken = Lease(engine, lease_seconds=60).claim(9, due_before=1000 + 2 * DAY,
                                                      now=1000 + 2 * DAY, **kw)
        with engine.begin() as conn:  # put them back as they were
            for c in taken:
                conn.execute(statuses.update().where(statuses.c.id == c.id).values(
                    tag=None, tag_expiry=None, claim_key=due.get(c.path, 0.0)))
        return {c.path for c in taken}

    fresh = {b"/A/1", b"/B/1", b"/C/1"}
    assert claimed() == fresh | {b"/A/0"}  # due two days on: A's period is a day
    assert claimed(recheck_after=2 * DAY + 1) == fresh  # nothing checked that long before
    assert claimed(recheck_after=DAY) == fresh | {b"/A/0", b"/B/0", b"/C/0"}
    # The configuration's periods: B to 2 days, C (no row: the default) to 3 days.
    conf = tmp_path / "pnfsmon.conf"
    conf.write_text("[site A]\nrecheck_after = 1\n[site B]\nrecheck_after = 2\n"
                    "[site C]\nrecheck_after = 3\n")
    settings = Settings(str(engine.url), config_file=conf,
                        sites={name: replace(Site(name), recheck_after=days * DAY)
                               for name, days in (("A", 1), ("B", 2), ("C", 3))})
    assert schedule.apply(engine, replace(settings, config_file=None)) == []  # no file
    said = schedule.apply(engine, settings)
    assert len(said) == 2 and "site B: recheck_after 7 days -> 2 days" in said[0]
    assert keys(engine) == {b"/A/0": 1000 + DAY, b"/B/0": 1000 + 2 * DAY,
                            b"/C/0": 1000 + 3 * DAY, b"/A/1": 0.0, b"/B/1": 0.0, b"/C/1": 0.0}
    assert schedule.apply(engine, settings) == []  # already there


def keys(engine) -> dict[bytes, float]:
    with engine.connect() as conn:
        return {bytes(p): k for p, k in conn.execute(
            sa.select(statuses.c.path, statuses.c.claim_key))}
