"""``pnfsmon declare --dark`` against a real Rucio server (``tests/rucio_server.py``): a
storage with catalog files and dark files (on storage, not in the catalog dump), compared
on days 0, 2 and 15; one dark file is registered in Rucio after all (the dump is stale).
Read back from Rucio's own database (its REST API has no call that lists quarantined
replicas). Also: a flagged compare holds everything back and restarts the clock, Rucio
unreachable, a lost answer, the CMS D.list without the client, the nightly DAG's dark
node run as the local universe runs it."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import subprocess
import uuid

import pytest
import rucio_server
import sqlalchemy as sa
from helpers import pnfsmon, random_bytes, write_file

from pnfsmon.catalog.compare import compare
from pnfsmon.catalog.inventory import load
from pnfsmon.crawler.crawl import crawl
from pnfsmon.declare.dark import NOTHING_TO_INSERT
from pnfsmon.schema.declarable import site_declarations
from pnfsmon.schema.sites import Site
from pnfsmon.schema.tables import quarantines

SITE = "T2_Test"
SCOPE = "cms"
DAY = 86400.0
T0 = 1_780_000_000.0  # the first compare; files were written a month before it
CATALOG = ["c1.root", "c2.root", "c3.root", "c4.root"]
DARK = ["d1.root", "d2.root"]  # on storage since before day 0, never in the catalog
LATE = "d3.root"  # written on day 0.5: found dark from day 2 on


def write_conf(tmp_path, store, rse, extra: str = ""):
    conf = tmp_path / "pnfsmon.conf"
    conf.write_text(f"[site {SITE}]\nnamespace = {store.parent}\nlfn_prefix = /store\n"
                    f"path_prefix = {store}\nmax_orphan_fraction = 0.5\n"
                    f"rucio_rse = {rse}\nrucio_scope = {SCOPE}\n{extra}")
    return conf


@pytest.fixture
def dark_site(engine, tree, tmp_path):
    """The storage and three compares (days 0, 2, 15): d1 and d2 dark for 15 days, d3 for
    13. Returns (site, store, env)."""
    store = tree / "store"
    for i, name in enumerate([*CATALOG, *DARK, LATE]):
        path = write_file(store / "mc" / name, random_bytes(1000 + i, i))
        when = T0 + 0.5 * DAY if name == LATE else T0 - 30 * DAY
        os.utime(path, (when, when))
    dump = tmp_path / "dump.txt"
    dump.write_text("".join(f"/store/mc/{n}\n" for n in CATALOG))
    site = Site(SITE, namespace=str(tree), lfn_prefix=b"/store",
                path_prefix=os.fsencode(store), max_orphan_fraction=0.5)
    load(engine, site, dump)
    crawl(engine, os.fsencode(tree), SITE)
    for day in (0, 2, 15):
        assert compare(engine, site, now=T0 + day * DAY).state == "published"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PNFSMON_", "RUCIO_"))}
    env["PNFSMON_DB"] = engine.url.render_as_string(hide_password=False)
    return site, store, env


def rucio_rse(rucio, monkeypatch, store, registered=()) -> tuple:
    """A non-deterministic RSE whose file protocol's prefix is the storage's parent (its
    paths are the LFNs), with ``registered`` dark files registered on it; (client, rse)."""
    monkeypatch.setenv("RUCIO_CONFIG", str(rucio.client_config))
    from rucio.client import Client
    from rucio.common.exception import Duplicate

    client = Client()
    rse = f"T2_DARK_{uuid.uuid4().hex[:8].upper()}"
    client.add_rse(rse, deterministic=False)
    client.add_protocol(rse, {
        "scheme": "file", "hostname": "localhost", "port": 0, "prefix": f"{store.parent}",
        "impl": "rucio.rse.protocols.posix.Default",
        "domains": {"lan": {"read": 1, "write": 1, "delete": 1},
                    "wan": {"read": 1, "write": 1, "delete": 1}}})
    with contextlib.suppress(Duplicate):
        client.add_scope("root", SCOPE)
    if registered:
        client.add_replicas(rse, [{"scope": SCOPE, "name": f"/store/mc/{n}", "bytes": 1000,
                                   "pfn": f"file://localhost:0{store}/mc/{n}"}
                                  for n in registered])
    return client, rse


def in_quarantine(rucio, client, rse: str) -> list[str]:
    """The paths in Rucio's quarantine for ``rse``, from Rucio's own database."""
    rse_id = client.get_rse(rse)["id"]
    with contextlib.closing(sqlite3.connect(rucio.work / "rucio.db")) as db:
        return sorted(p for (p,) in db.execute(
            "SELECT path FROM quarantined_replicas WHERE rse_id = ?", (rse_id,)))


def recorded(engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return sorted((bytes(r.name).decode(), r.outcome) for r in conn.execute(
            sa.select(quarantines.c.name, quarantines.c.outcome)))


def dark_lines(stdout: str) -> list[str]:
    return sorted(line.split()[1] for line in stdout.splitlines()
                  if line.startswith("  dark  "))


def test_dark_data_agreed_on_for_dark_after_goes_to_quarantine_once(
        rucio, dark_site, engine, tmp_path, monkeypatch):
    site, store, env = dark_site
    client, rse = rucio_rse(rucio, monkeypatch, store, registered=["d2.root"])
    env.update(PNFSMON_CONFIG=str(write_conf(tmp_path, store, rse)),
               RUCIO_CONFIG=str(rucio.client_config))

    r = pnfsmon("declare", "--site", SITE, "--dark", env=env, cwd=tmp_path)  # the dry run
    assert r.returncode == 1, r.stderr
    assert "2 dark files would quarantine (dry run" in r.stdout
    assert dark_lines(r.stdout) == ["/store/mc/d1.root", "/store/mc/d2.root"]
    assert "15.0 days" in r.stdout
    assert "1 dark files found for less than dark_after" in r.stdout  # d3: 13 days
    assert recorded(engine) == [] and in_quarantine(rucio, client, rse) == []

    r = pnfsmon("declare", "--site", SITE, "--dark", "--apply", env=env, cwd=tmp_path)
    assert r.returncode == 1, r.stderr  # Rucio holds d2: a person should look
    assert "1 quarantined, 1 registered replica" in r.stdout
    assert in_quarantine(rucio, client, rse) == ["/store/mc/d1.root"]
    assert recorded(engine) == [("/store/mc/d1.root", "quarantined"),
                                ("/store/mc/d2.root", "registered replica")]
    # The report's incidents & Rucio page counts them per site, by Rucio's answer.
    assert site_declarations(engine, site).quarantined == {"quarantined": 1,
                                                           "registered replica": 1}
    with engine.connect() as conn:
        rows = {bytes(r.name).decode(): r for r in conn.execute(sa.select(quarantines))}
    d1, d2 = rows["/store/mc/d1.root"], rows["/store/mc/d2.root"]
    assert (d1.rse, d1.scope, d1.since, d1.size) == (rse, SCOPE, T0, 1004)
    assert d1.answer is None and bytes(d1.path) == os.fsencode(store / "mc" / "d1.root")
    assert "Rucio holds cms:/store/mc/d2.root as a replica" in d2.answer
    assert "AVAILABLE" in d2.answer
    # Rucio kept the scope and name with the path, so its reaper checks them again.
    rse_id = client.get_rse(rse)["id"]
    with contextlib.closing(sqlite3.connect(rucio.work / "rucio.db")) as db:
        assert db.execute("SELECT scope, name FROM quarantined_replicas WHERE rse_id = ?",
                          (rse_id,)).fetchall() == [(SCOPE, "/store/mc/d1.root")]

    # Never twice: the next run sends nothing and says why.
    r = pnfsmon("declare", "--site", SITE, "--dark", "--apply", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "0 dark files to quarantine" in r.stdout
    assert "2 dark files were sent to the quarantine before" in r.stdout
    assert len(recorded(engine)) == 2 and in_quarantine(rucio, client, rse) == [
        "/store/mc/d1.root"]

    # Two days on, d3 has been dark for 15 days too; d1 was written again meanwhile
    # (a new file at that path): no quarantine on old evidence.
    os.utime(store / "mc" / "d1.root", (T0 + 16 * DAY, T0 + 16 * DAY))
    crawl(engine, os.fsencode(store.parent), SITE)
    assert compare(engine, site, now=T0 + 17 * DAY).state == "published"
    r = pnfsmon("declare", "--site", SITE, "--dark", "--apply", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert dark_lines(r.stdout) == ["/store/mc/d3.root"] and "1 quarantined" in r.stdout
    assert "1 dark files were written again or are gone" in r.stdout
    assert in_quarantine(rucio, client, rse) == ["/store/mc/d1.root", "/store/mc/d3.root"]


def test_a_flagged_compare_holds_dark_data_back_and_restarts_its_clock(
        rucio, dark_site, engine, tmp_path, monkeypatch):
    site, store, env = dark_site
    client, rse = rucio_rse(rucio, monkeypatch, store)
    env.update(PNFSMON_CONFIG=str(write_conf(tmp_path, store, rse, "quarantine = apply\n")),
               RUCIO_CONFIG=str(rucio.client_config))
    strict = dataclasses.replace(site, max_orphan_fraction=0.1)
    flagged = compare(engine, strict, now=T0 + 16 * DAY)
    assert flagged.state == "flagged"
    r = pnfsmon("declare", "--site", SITE, "--dark", env=env, cwd=tmp_path)  # quarantine = apply
    assert r.returncode == 1, r.stderr
    assert f"the latest compare (#{flagged.id}," in r.stdout and "was flagged" in r.stdout
    assert "nothing is quarantined until a compare is published" in r.stdout
    assert recorded(engine) == [] and in_quarantine(rucio, client, rse) == []

    # A published compare after it: the flagged one is no evidence, the clock restarts.
    assert compare(engine, site, now=T0 + 17 * DAY).state == "published"
    r = pnfsmon("declare", "--site", SITE, "--dark", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "0 dark files to quarantine" in r.stdout
    assert "3 dark files found for less than dark_after" in r.stdout
    assert recorded(engine) == [] and in_quarantine(rucio, client, rse) == []


def test_rucio_unreachable_exits_3_and_records_nothing(dark_site, engine, tmp_path):
    why = rucio_server.available()
    if why and "virtualenv" not in why:  # the client is all this needs
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    site, store, env = dark_site
    env.update(PNFSMON_CONFIG=str(write_conf(tmp_path, store, "T2_NOWHERE")),
               RUCIO_CONFIG=str(rucio_server.client_config(tmp_path / "rucio.cfg",
                                                           rucio_server.free_port())))
    r = pnfsmon("declare", "--site", SITE, "--dark", "--apply", env=env, cwd=tmp_path)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert r.stderr.splitlines()[-1].startswith("pnfsmon: error: Rucio is unreachable")
    assert recorded(engine) == []


def test_a_quarantine_whose_answer_was_lost_is_recorded_once(
        rucio, dark_site, engine, tmp_path, monkeypatch):
    """The quarantine reaches Rucio, its answer does not come back: exit 3, nothing
    recorded. Sent again, Rucio 41 answers a call that leaves it nothing to insert with a
    DatabaseException: the file is recorded once, "unclear", with what that means."""
    site, store, env = dark_site
    client, rse = rucio_rse(rucio, monkeypatch, store)
    env["PNFSMON_CONFIG"] = str(write_conf(tmp_path, store, rse))
    (tmp_path / "lossy").mkdir()
    with rucio_server.AnswerDropper(rucio.port, b"POST /replicas/quarantine") as dropper:
        env["RUCIO_CONFIG"] = str(rucio_server.client_config(
            tmp_path / "lossy" / "rucio.cfg", dropper.port))
        r = pnfsmon("declare", "--site", SITE, "--dark", "--apply", env=env, cwd=tmp_path)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert dropper.dropped and "Rucio became unreachable after 0 of 2" in r.stderr
    assert recorded(engine) == []
    assert in_quarantine(rucio, client, rse) == ["/store/mc/d1.root", "/store/mc/d2.root"]

    env["RUCIO_CONFIG"] = str(rucio.client_config)
    r = pnfsmon("declare", "--site", SITE, "--dark", "--apply", env=env, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "2 unclear" in r.stdout
    assert recorded(engine) == [("/store/mc/d1.root", "unclear"),
                                ("/store/mc/d2.root", "unclear")]
    with engine.connect() as conn:
        answers = conn.execute(sa.select(quarantines.c.answer)).scalars().all()
    assert all(a.startswith(NOTHING_TO_INSERT) for a in answers)
    assert in_quarantine(rucio, client, rse) == ["/store/mc/d1.root", "/store/mc/d2.root"]
    r = pnfsmon("declare", "--site", SITE, "--dark", "--apply", env=env, cwd=tmp_path)
    assert r.returncode == 0 and "2 dark files were sent to the quarantine before" in r.stdout


WITHOUT_CLIENT = "sys.modules['rucio'] = None; sys.argv[0] = 'pnfsmon'"


def test_without_the_client_the_cms_d_list_holds_the_dark_data(dark_site, engine, tmp_path):
    site, store, env = dark_site
    env["PNFSMON_CONFIG"] = str(write_conf(tmp_path, store, "T2_XX_Site"))
    out = tmp_path / "lists"
    r = pnfsmon("declare", "--site", SITE, "--dark", "--output", str(out),
                before=WITHOUT_CLIENT, env=env, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "nothing quarantined" in r.stderr and recorded(engine) == []
    [dark] = out.glob("T2_XX_Site_20*_D.list")
    [stats] = out.glob("T2_XX_Site_20*_stats.json")
    # The dark list of the latest compare: CMS's own tools apply their rule over runs.
    assert dark.read_text().splitlines() == ["/store/mc/d1.root", "/store/mc/d2.root",
                                             "/store/mc/d3.root"]
    assert json.loads(stats.read_text())["dark"] == 3
    # The plain declare run writes the same D.list beside its M.list.
    r = pnfsmon("declare", "--site", SITE, "--output", str(tmp_path / "b"),
                before=WITHOUT_CLIENT, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    [dark] = (tmp_path / "b").glob("T2_XX_Site_20*_D.list")
    assert len(dark.read_text().splitlines()) == 3


def test_the_nightly_dags_dark_node_runs_as_the_local_universe_runs_it(
        rucio, dark_site, engine, tmp_path, monkeypatch):
    """``condor dag`` gives a site with a rucio_rse and an inventory a dark node after its
    compare; run with only the environment HTCondor gives a local job, it finds Rucio's
    configuration, quarantines (the site says `quarantine = apply`), and its exit codes
    pass the DAG's POST script as the contract says: 1 (an answer) passes, 3 is retried."""
    if engine.dialect.name == "sqlite":
        pytest.skip("condor workers need a database server, not SQLite")
    htcondor2 = pytest.importorskip("htcondor2")
    from test_condor import job_argv, job_environment, read_dag

    from pnfsmon.condor import dag as dag_module

    site, store, env = dark_site
    client, rse = rucio_rse(rucio, monkeypatch, store, registered=["d2.root"])
    conf = write_conf(tmp_path, store, rse, "quarantine = apply\n")

    def write_dag(out, rucio_config):
        r = pnfsmon("condor", "dag", "--write", str(out), "--jobs", "1", "--site", SITE,
                    env={**env, "PNFSMON_CONFIG": str(conf),
                         "RUCIO_CONFIG": str(rucio_config)}, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        dag = read_dag(out / dag_module.DAG_FILE)
        return dag, htcondor2.Submit(dag["jobs"][f"{SITE}-dark:0"].read_text())

    def run_node(sub) -> int:
        job_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
                   **job_environment(sub["environment"])}
        if "PYTHONPATH" in os.environ:  # the code under test, as installed
            job_env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return subprocess.run([sub["executable"], *job_argv(sub["arguments"])],
                              cwd=sub["initialdir"], env=job_env, capture_output=True,
                              text=True, timeout=120).returncode

    def post_script_passes(dag, code: int) -> bool:
        post = dag["post"][f"{SITE}-dark:0"]
        return subprocess.run([*post[:-1], str(code)]).returncode == 0

    out = tmp_path / "nightly"
    dag, sub = write_dag(out, rucio.client_config)
    assert f"{SITE}-dark:0" in dag["children"][f"{SITE}-compare:0"]
    assert f"{SITE}-declare:0" in dag["children"][f"{SITE}-compare:0"]
    assert sub["universe"] == "local"
    assert job_argv(sub["arguments"])[:6] == ["declare", "--site", SITE, "--dark",
                                              "--output", str(out / "rucio")]
    assert job_environment(sub["environment"])["RUCIO_CONFIG"] == str(rucio.client_config)

    # Unreachable Rucio: 3, nothing recorded; the POST script has DAGMan retry it.
    dead = rucio_server.client_config(tmp_path / "dead.cfg", rucio_server.free_port())
    dead_dag, dead_sub = write_dag(tmp_path / "nightly-dead", dead)
    code = run_node(dead_sub)
    assert code == 3 and not post_script_passes(dead_dag, code)
    assert recorded(engine) == []

    code = run_node(sub)
    assert code == 1 and post_script_passes(dag, code)  # d2 is Rucio's: for a person
    assert in_quarantine(rucio, client, rse) == ["/store/mc/d1.root"]
    assert recorded(engine) == [("/store/mc/d1.root", "quarantined"),
                                ("/store/mc/d2.root", "registered replica")]
    assert list((out / "rucio").glob(f"{rse}_20*_D.list"))
    code = run_node(sub)  # the next night: nothing new
    assert code == 0 and post_script_passes(dag, code)
    assert len(recorded(engine)) == 2
