"""Incidents, not floods: a burst of problem verdicts from one pool, one worker node or one
hour is one incident, held from ``declare`` until a person releases it, CRITICAL in Nagios
meanwhile, shown in ``status`` and the report; dismissing it re-queues its files. A handful
of problems never makes one, and detection run again makes nothing new.

Real files, a real crawl and the real tester; the pool is set on the listed rows (as a
dCache namespace records it) so the checks carry it as their ``source_pool``."""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from helpers import flip_bit, pnfsmon, pnfsmon_here, random_bytes, verdicts, write_file

from pnfsmon.crawler.crawl import crawl
from pnfsmon.schema import config, incidents
from pnfsmon.schema.config import IncidentRule
from pnfsmon.schema.db import write_transaction
from pnfsmon.schema.declarable import plan
from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.lease import URGENT, Lease
from pnfsmon.schema.sites import Site
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import incident_files, statuses
from pnfsmon.schema.tables import incidents as incidents_table
from pnfsmon.tester.posix_read import PosixReader
from pnfsmon.tester.worker import CheckOptions, run

SITE = "T2_Test"
RULE = IncidentRule()


def make_tree(tree, engine, files: int, rotten: int, pool: str = "pool-a"):
    """``files`` files on ``pool``, crawled; the first ``rotten`` get a flipped bit."""
    store = tree / "store"
    paths = [write_file(store / "mc" / f"f{i:03d}.root", random_bytes(2000, i), record=True)
             for i in range(files)]
    crawl(engine, os.fsencode(tree), SITE)
    with engine.begin() as conn:
        conn.execute(statuses.update().values(pool=pool))
    for p in paths[:rotten]:
        flip_bit(p, 500)
    return store, paths


def sweep(engine, node: str = "wn01", **options) -> None:
    """Check what is due; a corrupted verdict is confirmed by its second read at once."""
    options.setdefault("confirm_after", 0.0)
    run(Lease(engine, lease_seconds=120, node=node), PosixReader(),
        CheckOptions(timeout=30, recheck_after=0.0, **options))


def site_of(store) -> Site:
    return dataclasses.replace(Site(SITE, lfn_prefix=b"/store", path_prefix=os.fsencode(store)),
                               rucio_rse="T2_TEST_DISK", rucio_scope="cms")


def all_incidents(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.select(incidents_table).order_by(incidents_table.c.id)).all()


def environment(engine, tmp_path, store, monkeypatch) -> dict:
    conf = tmp_path / "pnfsmon.conf"
    conf.write_text(f"[site {SITE}]\nlfn_prefix = /store\npath_prefix = {store}\n"
                    "rucio_rse = T2_TEST_DISK\nrucio_scope = cms\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PNFSMON_", "RUCIO_"))}
    env.update(PNFSMON_DB=engine.url.render_as_string(hide_password=False),
               PNFSMON_CONFIG=str(conf))
    for name in ("PNFSMON_DB", "PNFSMON_CONFIG"):
        monkeypatch.setenv(name, env[name])
    return env


def test_a_burst_on_one_pool_is_one_incident_held_until_released(engine, tree, tmp_path,
                                                                 monkeypatch, capsys):
    store, _ = make_tree(tree, engine, 100, 25)
    sweep(engine)
    assert sorted(verdicts(engine).values()).count(Status.CORRUPTED) == 25

    found = incidents.detect(engine, RULE)
    assert [(i.kind, i.scope, i.site, i.problems, i.checks) for i in found.opened] == [
        ("pool", "pool-a", SITE, 25, 100)]
    # A second detection, and one by the command, make nothing new.
    again = incidents.detect(engine, RULE)
    assert again.opened == [] and again.joined == 0
    env = environment(engine, tmp_path, store, monkeypatch)
    r = pnfsmon_here(capsys, "incident", "list")
    assert r.returncode == 1, r.stderr
    number = found.opened[0].id
    assert f"incident {number} [open] pool pool-a of {SITE}: 25 problem files" in r.stdout
    assert "(25 of 100 checked, 25.0 %" in r.stdout
    assert len(all_incidents(engine)) == 1
    with engine.connect() as conn:
        # Both reads of each file (the first and the one that confirmed it) are held.
        assert conn.execute(sa.select(sa.func.count(sa.distinct(incident_files.c.file_id)),
                                      sa.func.count())).one() == (25, 50)

    # Held from declare: the dry run lists them as held, none to declare.
    assert len(plan(engine, site_of(store)).held) == 25
    r = pnfsmon_here(capsys, "declare", "--site", SITE)
    assert r.returncode == 1, r.stderr
    assert "0 files would declare" in r.stdout
    assert "25 files held in incidents" in r.stdout
    assert sum(line.startswith("  held corrupted  /store/mc/") for line in
               r.stdout.splitlines()) == 25
    assert len(all_incidents(engine)) == 1  # declare detected again: nothing new

    # CRITICAL in Nagios (25 problem files alone would be a WARNING), named in status.
    r = pnfsmon("status", "--nagios", env=env, cwd=tmp_path)
    assert r.returncode == 2, r.stdout
    assert r.stdout.startswith("PNFSMON CRITICAL") and f"incident {number} open" in r.stdout
    assert "pool pool-a of T2_Test" in r.stdout and " incidents=1;" in r.stdout
    r = pnfsmon_here(capsys, "status")
    assert r.returncode == 1 and f"incident {number} [open] pool pool-a" in r.stdout
    r = pnfsmon_here(capsys, "incident", "show", str(number))
    assert r.returncode == 1
    shown = [line for line in r.stdout.splitlines() if line.startswith("  corrupted")]
    assert len(shown) == 25 and all("now corrupted" in line for line in shown)

    # Released by a person: declarable; recorded who and when; Nagios back to WARNING.
    r = pnfsmon_here(capsys, "incident", "release", str(number), "--by", "alice")
    assert r.returncode == 0, r.stderr
    (row,) = all_incidents(engine)
    assert (row.state, row.decided_by) == ("released", "alice") and row.decided_at > 0
    planned = plan(engine, site_of(store))
    assert len(planned.to_declare) == 25 and planned.held == []
    r = pnfsmon_here(capsys, "status", "--nagios")
    assert r.returncode == 1 and "incident" not in r.stdout.split("|")[0]
    r = pnfsmon_here(capsys, "incident", "release", str(number))
    assert r.returncode == 2 and "already released by alice" in r.stderr
    r = pnfsmon_here(capsys, "incident", "list")
    assert r.returncode == 0 and "no open incidents" in r.stdout
    assert len(all_incidents(engine)) == 1


def test_dismissing_re_queues_the_files_and_holds_them_until_checked(engine, tree, tmp_path):
    store, paths = make_tree(tree, engine, 100, 25)
    sweep(engine)
    (opened,) = incidents.detect(engine, RULE).opened
    incident, queued = incidents.dismiss(engine, opened.id, "bob")
    assert incident.state == "dismissed" and incident.decided_by == "bob" and queued == 25
    with engine.connect() as conn:
        keys = conn.execute(sa.select(statuses.c.claim_key)
                            .where(statuses.c.status == int(Status.CORRUPTED))).scalars().all()
    assert keys == [URGENT] * 25
    # Not checked again yet: still held (a dismissed verdict is no verdict to declare).
    assert len(plan(engine, site_of(store)).held) == 25
    # The pool was at fault for some: 10 read fine now; 15 are still corrupted.
    for p in paths[:10]:
        flip_bit(p, 500)
    sweep(engine, urgent_only=True)
    assert sorted(verdicts(engine).values()).count(Status.CORRUPTED) == 15
    # 15 fresh problems make no new incident; the dismissed one holds nothing any more.
    assert incidents.detect(engine, RULE).opened == []
    planned = plan(engine, site_of(store))
    assert len(planned.to_declare) == 15 and planned.held == []
    assert len(all_incidents(engine)) == 1


def test_a_handful_of_problems_never_makes_an_incident(engine, tree):
    make_tree(tree, engine, 10, 3)
    sweep(engine)
    assert sorted(verdicts(engine).values()).count(Status.CORRUPTED) == 3  # 30 % of checks
    assert incidents.detect(engine, RULE).opened == []
    # Enough problems, but not more than the configured share of the pool's checks.
    assert incidents.detect(engine, IncidentRule(min_problems=3, min_percent=30)).opened == []
    (opened,) = incidents.detect(engine, IncidentRule(min_problems=3, min_percent=29)).opened
    assert (opened.kind, opened.problems, opened.checks) == ("pool", 3, 10)


def test_an_open_incident_takes_its_scopes_later_problems(engine, tree):
    """While a person has not decided, later problems of the scope are held too, below
    the thresholds; a burst the pool's incident took opens none for the node or hour."""
    store, paths = make_tree(tree, engine, 100, 25)
    sweep(engine)
    (opened,) = incidents.detect(engine, RULE).opened
    for p in paths[25:28]:
        flip_bit(p, 700)
    sweep(engine)  # all 100 again: 25 + 3 corrupted, one node, one hour
    found = incidents.detect(engine, RULE)
    # 25 reads of the known corrupted files, two of each of the 3 new ones (confirmed)
    assert found.opened == [] and found.joined == 31
    assert incidents.get(engine.connect(), opened.id).files == 28
    assert len(plan(engine, site_of(store)).held) == 28


def test_a_node_without_a_pool_burst_is_the_nodes_incident(engine, tree):
    """Files spread over pools, one worker node reads 25 of 100 wrong: the node."""
    store, paths = make_tree(tree, engine, 100, 25)
    with engine.begin() as conn:  # 25 pools of 4 files: no pool has 20 problems
        for i in range(25):
            conn.execute(statuses.update().where(statuses.c.path.in_(
                [paths[j] for j in range(i, 100, 25)])).values(pool=f"pool-{i}"))
    sweep(engine, node="wn-flaky")
    (opened,) = incidents.detect(engine, RULE).opened
    assert (opened.kind, opened.scope, opened.where) == (
        "node", "wn-flaky", f"worker node wn-flaky of {SITE}")


def test_the_rule_is_read_from_the_configuration(tmp_path, monkeypatch):
    conf = tmp_path / "pnfsmon.conf"
    monkeypatch.setenv("PNFSMON_CONFIG", str(conf))
    conf.write_text("[pnfsmon]\n")
    assert config.load().incidents == IncidentRule(20, 5.0, 86400.0)
    conf.write_text("[pnfsmon]\nincident_min_problems = 50\nincident_min_percent = 2.5\n"
                    "incident_window = 6\n")
    assert config.load().incidents == IncidentRule(50, 2.5, 6 * 3600.0)
    for bad, message in (("incident_min_problems = 2.5", "whole number"),
                         ("incident_min_percent = 100", "below 100"),
                         ("incident_window = 5", "divisor or a multiple of 24"),
                         ("incident_windows = 6", "did you mean incident_window")):
        conf.write_text(f"[pnfsmon]\n{bad}\n")
        with pytest.raises(ConfigError, match=message):
            config.load()


def test_the_report_shows_incidents_held_pending_and_declared(engine, tree, tmp_path):
    from pnfsmon.web.report import write_report

    store, _ = make_tree(tree, engine, 100, 25)
    sweep(engine)
    (opened,) = incidents.detect(engine, RULE).opened
    out = tmp_path / "report"
    write_report(engine, out, site_settings=lambda name: site_of(store))
    page = (out / "incidents.html").read_text()
    assert f"Incident {opened.id}: pool pool-a of {SITE}" in page and "open" in page
    assert page.count("/store/mc/f0") == 25
    row = page[page.index("<td>T2_Test</td>"):].split("</tr>")[0]
    cells = [c.split(">")[-1] for c in row.split("</td>")]
    assert cells[1] == "T2_TEST_DISK" and cells[4:6] == ["25", "0"]  # held, pending
    index = (out / "index.html").read_text()
    assert f"incident {opened.id}</a>: pool pool-a of {SITE}" in index
    incidents.release(engine, opened.id, "alice")
    write_report(engine, out, site_settings=lambda name: site_of(store))
    page = (out / "incidents.html").read_text()
    assert "Released by\nalice" in page
    row = page[page.index("<td>T2_Test</td>"):].split("</tr>")[0]
    cells = [c.split(">")[-1] for c in row.split("</td>")]
    assert cells[4:6] == ["0", "25"]


def test_two_detections_at_once_open_one_incident(engine, tree):
    """Detection A has opened the incident but not committed when B (another check run
    ending) starts: B waits for A's claim on the same checks, then finds them taken."""
    make_tree(tree, engine, 100, 25)
    sweep(engine)
    with ThreadPoolExecutor(1) as pool:
        with write_transaction(engine) as conn:  # A
            first = incidents._detect(conn, RULE, time.time())
            second = pool.submit(incidents.detect, engine, RULE)  # B
            # Give B the time to reach A's uncommitted rows (it waits there, or for
            # SQLite's write lock); B's outcome must not depend on how far it got.
            time.sleep(0.5)
        assert second.result(timeout=60).opened == []
    assert len(first.opened) == 1
    assert second.result().joined == 0
    assert len(all_incidents(engine)) == 1
    with engine.connect() as conn:
        # Both reads of each file (the first and the one that confirmed it) are held.
        assert conn.execute(sa.select(sa.func.count(sa.distinct(incident_files.c.file_id)),
                                      sa.func.count())).one() == (25, 50)
