"""The monitor watches itself: the check_ages ledger kept exact by crawls and checks, overdue
files, the oldest verification and the age histogram, the last complete crawl and the last
check activity, Nagios going WARNING then CRITICAL as the application's clock moves on with
the workers stopped, the Prometheus gauges and the report; and a check that judged nothing
saying why."""

from __future__ import annotations

import json
import os
import time

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from pnfsmon.crawler.crawl import crawl
from pnfsmon.schema import ages, counts
from pnfsmon.schema.config import Thresholds
from pnfsmon.schema.lease import Lease
from pnfsmon.schema.sites import Site
from pnfsmon.schema.tables import check_ages
from pnfsmon.tester.checker import check_file
from pnfsmon.tester.posix_read import PosixReader
from pnfsmon.tester.worker import CheckOptions, run
from pnfsmon.web.cli import NAGIOS_CRITICAL, NAGIOS_OK, NAGIOS_WARNING, nagios_line
from pnfsmon.web.report import write_report
from pnfsmon.web.summary import summarize
from pnfsmon.web.watchdog import watch
from tests.helpers import pnfsmon, write_file

DAY = 86400.0
#: Thresholds that only the overdue files can pass.
ONLY_OVERDUE = Thresholds(overdue_warning=10, overdue_critical=50, crawl_age_warning=1e6,
                          crawl_age_critical=1e6, check_age_warning=1e6,
                          check_age_critical=1e6)


def old_files(tree, n: int, prefix: str = "f") -> list[bytes]:
    """``n`` files written long ago (outside any grace window)."""
    paths = []
    for i in range(n):
        p = write_file(tree / f"{prefix}{i}.dat", f"{prefix}{i}".encode())
        os.utime(p, (time.time() - 10 * DAY, time.time() - 10 * DAY))
        paths.append(p)
    return paths


def check_some(engine, n: int, now: float) -> int:
    """Claim ``n`` due files and record their verdicts as of ``now`` (a worker whose
    clock says ``now``)."""
    lease = Lease(engine, lease_seconds=600)
    claimed = lease.claim(n, due_before=now, now=now)
    verdicts = [check_file(c, PosixReader(), 30.0) for c in claimed]
    return len(lease.record(verdicts, now=now))


def nagios(engine, now: float, limits: Thresholds, **site) -> tuple[int, str]:
    with engine.connect() as conn:
        s = summarize(conn, sweep=False, now=now, site_settings=lambda name: Site(name, **site))
    return nagios_line(s, 1, 100, 1e9, now=now, limits=limits)


def test_the_ledger_follows_crawls_checks_changes_and_vanished_files(engine, tree):
    paths = old_files(tree, 6)
    root = os.fsencode(tree)
    crawl(engine, root, "s")
    t0 = time.time()
    assert check_some(engine, 4, t0) == 4
    with engine.connect() as conn:
        [w] = watch(conn, t0)
        assert (w.files, w.never_verified, w.histogram[0]) == (6, 2, 4)
        assert w.last_check == t0 and w.oldest_verification == (t0 // 3600) * 3600
    write_file(paths[0], b"rewritten, longer")  # changed: waits again, unverified
    os.unlink(paths[1])  # vanished: out of the ledger
    crawl(engine, root, "s")
    with engine.connect() as conn:
        [w] = watch(conn, time.time())
        assert w.files == 5 and w.never_verified + sum(w.histogram) == 5
        assert w.never_verified >= 2  # the changed file waits again
        assert ages.as_dict(ages.totals(conn)) == ages.as_dict(ages.scan(conn))
    # A fold keeps the sums and the last check activity.
    with engine.begin() as conn:
        before = ages.as_dict(ages.totals(conn))
        for _ in range(3):
            ages.Deltas().write(conn, recorded=t0 - 1)  # rows that fold away
        assert ages.fold(conn, counts._lock, at=0) > 0
        assert ages.as_dict(ages.totals(conn)) == before
        assert max(r.last_recorded or 0 for r in ages.totals(conn)) == t0
        assert conn.execute(sa.select(sa.func.count()).select_from(check_ages)).scalar() \
            <= len(before) + 1


def test_overdue_files_warn_then_go_critical(engine, tree):
    old_files(tree, 10)
    crawl(engine, os.fsencode(tree), "s")
    t0 = time.time()
    assert check_some(engine, 4, t0) == 4
    assert check_some(engine, 6, t0 + 2 * DAY) == 6
    # recheck_after 30 days + slack 7: the first four are overdue 37 days (and the hour of
    # their bucket) after their check, the other six two days later.
    late = t0 + 37 * DAY + 3600
    code, line = nagios(engine, late - 7200, ONLY_OVERDUE)
    assert code == NAGIOS_OK and " overdue=0;" in line
    code, line = nagios(engine, late, ONLY_OVERDUE)
    assert code == NAGIOS_WARNING, line
    assert "s: 4 of 10 files overdue (40.00 %)" in line and " overdue=4;" in line
    code, line = nagios(engine, late + 2 * DAY, ONLY_OVERDUE)
    assert code == NAGIOS_CRITICAL and " overdue=10;" in line
    assert "oldest_check_days=39.0" in line.split("|")[1]
    # A shorter slack brings it forward.
    code, _ = nagios(engine, late - 6 * DAY, ONLY_OVERDUE, overdue_slack=DAY)
    assert code == NAGIOS_WARNING


def test_never_checked_files_are_overdue_after_the_grace_and_the_slack(engine, tree):
    old_files(tree, 3)
    crawl(engine, os.fsencode(tree), "s")
    t0 = time.time()
    grace = Site("s").grace
    assert nagios(engine, t0 + 7 * DAY, ONLY_OVERDUE)[0] == NAGIOS_OK
    code, line = nagios(engine, t0 + 7 * DAY + grace + 3600, ONLY_OVERDUE)
    assert code == NAGIOS_CRITICAL and "3 of 3 files overdue" in line


def test_stopped_workers_and_crawls_warn_then_go_critical(engine, tree):
    """Workers stopped with files due: no check recorded for a day is a WARNING, for three
    days CRITICAL; no complete crawl for three days a WARNING, for seven CRITICAL."""
    old_files(tree, 5)
    crawl(engine, os.fsencode(tree), "s")
    run(Lease(engine, lease_seconds=60), PosixReader(), CheckOptions(timeout=30))
    t0 = time.time()
    limits = Thresholds()
    one_day = {"recheck_after": DAY}
    assert nagios(engine, t0, limits, **one_day)[0] == NAGIOS_OK
    # Nothing due (recheck_after 30 days): silent workers are no fault.
    assert nagios(engine, t0 + 2.5 * DAY, limits)[0] == NAGIOS_OK
    code, line = nagios(engine, t0 + 2.5 * DAY, limits, **one_day)
    assert code == NAGIOS_WARNING and "no check recorded for 2.5 days while 5 files" in line
    code, line = nagios(engine, t0 + 3.5 * DAY, limits, **one_day)
    assert code == NAGIOS_CRITICAL and "no check recorded for 3.5 days" in line
    assert "no complete crawl for 3.5 days" in line
    code, line = nagios(engine, t0 + 7.5 * DAY, limits)
    assert code == NAGIOS_CRITICAL and "no complete crawl for 7.5 days" in line


def test_status_nagios_as_the_clock_moves_on(engine, tree, tmp_path):
    """The command itself, its clock moved forward by faketime (the database server's
    clock does not move): OK, then WARNING, then CRITICAL, with the perfdata."""
    old_files(tree, 4)
    config = tmp_path / "pnfsmon.conf"
    config.write_text("[site T2_Here]\nrecheck_after = 1\noverdue_slack = 1\n")
    env = {"PNFSMON_DB": engine.url.render_as_string(hide_password=False)}
    configured = {**env, "PNFSMON_CONFIG": str(config)}
    assert pnfsmon("crawl", str(tree), "--site", "T2_Here", env=env).returncode == 0
    r = pnfsmon("check", "--workers", "1", env=configured)
    assert r.returncode == 0, r.stderr
    r = pnfsmon("status", "--nagios", env=configured)
    assert r.returncode == NAGIOS_OK and " overdue=0;;;0 oldest_check_days=0.0" in r.stdout
    r = pnfsmon("status", "--nagios", env=configured, under=["faketime", "-f", "+36h"])
    assert r.returncode == NAGIOS_WARNING, r.stdout
    assert "T2_Here: no check recorded for 1.5 days while 4 files are due" in r.stdout
    r = pnfsmon("status", "--nagios", env=configured, under=["faketime", "-f", "+80h"])
    assert r.returncode == NAGIOS_CRITICAL, r.stdout
    assert "T2_Here: 4 of 4 files overdue (100.00 %)" in r.stdout
    assert " overdue=4;;;0 oldest_check_days=3.3" in r.stdout
    # The thresholds come from the configuration.
    config.write_text(config.read_text() + "[pnfsmon]\ncheck_age_warning = 2\n"
                      "check_age_critical = 9\noverdue_critical = 100\n"
                      "overdue_warning = 100\ncrawl_age_warning = 9\n"
                      "crawl_age_critical = 9\n")
    r = pnfsmon("status", "--nagios", "--max-crawl-age", "1000", env=configured,
                under=["faketime", "-f", "+80h"])
    assert r.returncode == NAGIOS_WARNING and "no check recorded for 3.3 days" in r.stdout
    r = pnfsmon("status", env=configured, under=["faketime", "-f", "+80h"])
    assert "site T2_Here: 4 of 4 files overdue" in r.stdout
    assert "verification ages: 1-7 d 4" in r.stdout


def test_report_and_prometheus_show_the_watchdog(engine, tree, tmp_path):
    old_files(tree, 3)
    write_file(tree / "young.dat", b"y")  # in the grace window
    crawl(engine, os.fsencode(tree), "T2_<Site>", grace=Site("s").grace)
    t0 = time.time()
    check_some(engine, 2, t0 - 40 * DAY)
    out = tmp_path / "report"
    s = write_report(engine, out)
    [w] = s.watch
    assert (w.overdue, w.never_verified, w.histogram[4], w.in_grace) == (2, 2, 2, 1)  # 30-60 d
    index = (out / "index.html").read_text()
    assert "Watchdog" in index and "T2_&lt;Site&gt;: 2 of 4 files overdue" in index
    assert "1 in the grace window, the first due " in index
    assert "Files by age of their last verification" in index  # the plot
    [site] = json.loads((out / "summary.json").read_text())["watchdog"]
    assert (site["overdue"], site["in_grace"], site["verification_ages"]["30-60 d"]) == (2, 1, 2)
    families = {f.name: f for f in text_string_to_metric_families(
        (out / "pnfsmon.prom").read_text())}
    value = {name: families[name].samples[0] for name in (
        "pnfsmon_files_overdue", "pnfsmon_oldest_verification_age_seconds",
        "pnfsmon_last_crawl_age_seconds", "pnfsmon_last_check_activity_age_seconds")}
    assert value["pnfsmon_files_overdue"].labels == {"site": "T2_<Site>"}
    assert value["pnfsmon_files_overdue"].value == 2
    assert 40 * DAY <= value["pnfsmon_oldest_verification_age_seconds"].value < 40 * DAY + 7200
    assert value["pnfsmon_last_crawl_age_seconds"].value < 600
    assert value["pnfsmon_last_check_activity_age_seconds"].value > 40 * DAY - 600


def test_a_check_that_judged_nothing_says_why(engine, tree):
    for i in range(3):
        write_file(tree / f"young{i}.dat", b"y")  # written just now: in the grace window
    old_files(tree, 2)
    env = {"PNFSMON_DB": engine.url.render_as_string(hide_password=False)}
    assert pnfsmon("crawl", str(tree), "--site", "s", env=env).returncode == 0
    r = pnfsmon("check", "--workers", "1", env=env)
    assert r.returncode == 0, r.stderr
    assert "checked 2 files" in r.stdout
    assert "; 3 files wait out their grace window (written too recently to judge; the first " \
           "is due at " in r.stdout
    r = pnfsmon("check", "--workers", "1", env=env)
    assert r.returncode == 0, r.stderr
    due = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 30 * DAY))
    assert r.stdout.startswith("checked 0 files")
    assert "nothing was due: 3 files wait out their grace window" in r.stdout
    assert f"2 files are not due until {due}" in r.stdout
    assert "(checked within the last 30 days)" in r.stdout
    r = pnfsmon("status", env=env)
    assert "3 files wait out their grace window" in r.stdout
    assert "2 files are not due until" in r.stdout
    r = pnfsmon("check", "--workers", "1", "--site", "elsewhere", env=env)
    assert r.returncode == 2 and "--site elsewhere: no such site" in r.stderr  # a typo
    # (a configured site with no files yet says "run pnfsmon crawl first":
    # test_config.py::test_an_unknown_site_or_an_empty_prefix_is_an_error)
