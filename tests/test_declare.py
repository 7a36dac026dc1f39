"""``pnfsmon declare`` against a real Rucio server (``tests/rucio_server.py``): replicas on a
non-deterministic RSE whose protocol matches the site's paths, a tree with real corruption
(a flipped bit) and real losses (a deleted file), checked by the real tester; then the dry
run, ``--apply``, and Rucio's own REST API read back. Also: a second run declares nothing,
an unknown replica, a declaration whose answer was lost, a file that checks ok again,
Rucio unreachable, the lists written without the Rucio client, and a corrupted verdict no
second read has confirmed yet, which is pending, never declared."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import uuid

import helpers
import pytest
import rucio_server
import sqlalchemy as sa
from helpers import flip_bit, pnfsmon, random_bytes, verdicts, write_file

from pnfsmon.crawler.crawl import crawl
from pnfsmon.declare.apply import ALREADY, DECLARED, UNCLEAR, UNKNOWN, apply, outcomes
from pnfsmon.schema import config
from pnfsmon.schema.declarable import plan
from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.lease import Lease, request_now
from pnfsmon.schema.sites import Site
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import declarations, statuses
from pnfsmon.tester.posix_read import PosixReader
from pnfsmon.tester.worker import CheckOptions, run

SITE = "T2_Test"
SCOPE = "cms"


def sweep(engine, confirm_after: float = 0.0) -> None:
    """Check what is due; corrupted verdicts are confirmed by their second read at once
    (``confirm_after`` 0), unless the test gives them time."""
    run(Lease(engine, lease_seconds=120), PosixReader(),
        CheckOptions(timeout=30, recheck_after=0.0, confirm_after=confirm_after))


def rucio_client(rucio, monkeypatch):
    """A Rucio client of the test server, as root. Rucio reads its configuration once per
    process, so the commands under test run as subprocesses with their own."""
    monkeypatch.setenv("RUCIO_CONFIG", str(rucio.client_config))
    from rucio.client import Client

    return Client()


def new_rse(client, prefix: str) -> str:
    """A non-deterministic RSE whose file protocol's prefix is the site's storage."""
    from rucio.common.exception import Duplicate

    rse = f"T2_TEST_{uuid.uuid4().hex[:8].upper()}"
    client.add_rse(rse, deterministic=False)
    client.add_protocol(rse, {
        "scheme": "file", "hostname": "localhost", "port": 0, "prefix": prefix,
        "impl": "rucio.rse.protocols.posix.Default",
        "domains": {"lan": {"read": 1, "write": 1, "delete": 1},
                    "wan": {"read": 1, "write": 1, "delete": 1}}})
    with contextlib.suppress(Duplicate):  # one scope for the session's RSEs
        client.add_scope("root", SCOPE)
    return rse


def bad_names(rucio, rse: str) -> set[str]:
    """The names Rucio holds as BAD on ``rse``, read through its REST API."""
    return {json.loads(line)["name"]
            for line in rucio.get_lines(f"/replicas/bad/states?state=B&rse={rse}")}


@pytest.fixture
def site_setup(tmp_path, tree, engine, db_url):
    """The storage: good files, two with a flipped bit, one deleted, one corrupted that
    Rucio does not know; crawled and checked. Returns (files, conf, env)."""
    store = tree / "store"
    files = {name: write_file(store / "mc" / name, random_bytes(4000, i), record=True)
             for i, name in enumerate(["ok1.root", "ok2.root", "ok3.root", "rot1.root",
                                       "rot2.root", "lost.root", "stray.root"])}
    crawl(engine, os.fsencode(tree), SITE)
    flip_bit(files["rot1.root"], 100)
    flip_bit(files["rot2.root"], 3000)
    flip_bit(files["stray.root"], 7)
    os.unlink(files["lost.root"])
    sweep(engine)
    assert {os.path.basename(p).decode(): s for p, s in verdicts(engine).items()} == {
        "ok1.root": Status.OK, "ok2.root": Status.OK, "ok3.root": Status.OK,
        "rot1.root": Status.CORRUPTED, "rot2.root": Status.CORRUPTED,
        "lost.root": Status.MISSING, "stray.root": Status.CORRUPTED}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PNFSMON_", "RUCIO_"))}
    env["PNFSMON_DB"] = engine.url.render_as_string(hide_password=False)
    return store, files, env


def write_conf(tmp_path, store, rse: str | None, extra: str = ""):
    conf = tmp_path / "pnfsmon.conf"
    conf.write_text(f"[site {SITE}]\nlfn_prefix = /store\npath_prefix = {store}\n"
                    + (f"rucio_rse = {rse}\nrucio_scope = {SCOPE}\n" if rse else "") + extra)
    return conf


def recorded(engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return sorted((bytes(r.name).decode(), r.outcome) for r in conn.execute(
            sa.select(declarations.c.name, declarations.c.outcome)))


def test_a_test_rucio_whose_port_is_taken_before_it_binds_starts_on_another(
        rucio, tmp_path, monkeypatch):
    """A port chosen free can be taken before the server binds it (as an XRootD test
    server's was in CI): the test Rucio then starts on another port, and serves."""
    with helpers.port_taken_first(monkeypatch, rucio_server) as taken:
        server = rucio_server.RucioServer(tmp_path / "rucio")
        try:
            server.start()
            assert server.port != taken
            assert "address already in use" in (tmp_path / "rucio" / "server.log"
                                                ).read_text().lower()
            assert server.token()
        finally:
            server.stop()


def test_declare_apply_makes_exactly_the_bad_replicas_bad(rucio, site_setup, engine,
                                                          tmp_path, monkeypatch):
    store, files, env = site_setup
    client = rucio_client(rucio, monkeypatch)
    rse = new_rse(client, f"{store}/")
    client.add_replicas(rse, [
        {"scope": SCOPE, "name": f"/store/mc/{n}", "bytes": 4000, "adler32": "00000001",
         "pfn": f"file://localhost:0{store}/mc/{n}"}
        for n in ("ok1.root", "ok2.root", "ok3.root", "rot1.root", "rot2.root", "lost.root")])
    env.update(PNFSMON_CONFIG=str(write_conf(tmp_path, store, rse)),
               RUCIO_CONFIG=str(rucio.client_config))

    r = pnfsmon("declare", "--site", SITE, env=env, cwd=tmp_path)  # the dry run
    assert r.returncode == 1, r.stderr
    assert "4 files would declare (dry run" in r.stdout
    lines = [line.split() for line in r.stdout.splitlines() if line.startswith("  ")]
    assert sorted((w[0], w[1]) for w in lines) == [
        ("corrupted", "/store/mc/rot1.root"), ("corrupted", "/store/mc/rot2.root"),
        ("corrupted", "/store/mc/stray.root"), ("missing", "/store/mc/lost.root")]
    rot1 = next(line for line in r.stdout.splitlines() if "rot1.root" in line)
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT computed_adler32, recorded_adler32 FROM statuses "
                                   "WHERE status = 2")).first()
    assert "adler32 computed" in rot1 and "recorded" in rot1 and "checked 20" in rot1
    assert row.computed_adler32 != row.recorded_adler32
    assert recorded(engine) == [] and bad_names(rucio, rse) == set()

    r = pnfsmon("declare", "--site", SITE, "--apply", env=env, cwd=tmp_path)
    assert r.returncode == 1, r.stderr  # Rucio did not know one of them
    assert "3 declared, 1 unknown replica" in r.stdout
    assert bad_names(rucio, rse) == {"/store/mc/rot1.root", "/store/mc/rot2.root",
                                     "/store/mc/lost.root"}
    states = {r["name"]: r["states"][rse] for r in client.list_replicas(
        [{"scope": SCOPE, "name": f"/store/mc/{n}"} for n in ("ok1.root", "ok2.root",
                                                             "ok3.root", "rot1.root")],
        all_states=True)}
    assert states == {"/store/mc/ok1.root": "AVAILABLE", "/store/mc/ok2.root": "AVAILABLE",
                      "/store/mc/ok3.root": "AVAILABLE", "/store/mc/rot1.root": "BAD"}
    assert recorded(engine) == [
        ("/store/mc/lost.root", "declared"), ("/store/mc/rot1.root", "declared"),
        ("/store/mc/rot2.root", "declared"), ("/store/mc/stray.root", "unknown replica")]
    with engine.connect() as conn:
        rows = {bytes(r.name).decode(): r for r in conn.execute(sa.select(declarations))}
    rot = rows["/store/mc/rot1.root"]
    assert rot.rse == rse and rot.scope == SCOPE and rot.status == int(Status.CORRUPTED)
    assert rot.computed_adler32 in rot.reason and rot.recorded_adler32 in rot.reason
    assert rot.declared >= rot.checked
    assert "Unknown replica" in rows["/store/mc/stray.root"].answer

    # A second run declares nothing new, and says why.
    r = pnfsmon("declare", "--site", SITE, "--apply", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "0 files to declare" in r.stdout and "4 corrupted or missing files were " \
        "declared before" in r.stdout
    assert len(recorded(engine)) == 4

    # A file that checks ok again (here: the bit flipped back) is reported as such.
    flip_bit(files["rot1.root"], 100)
    sweep(engine)
    r = pnfsmon("declare", "--site", SITE, env=env, cwd=tmp_path)
    assert "checked ok since declared: /store/mc/rot1.root" in r.stdout
    assert r.returncode == 0 and "0 files would declare" in r.stdout
    # Broken again after that ok check: a new problem, to be declared again.
    flip_bit(files["rot1.root"], 200)
    sweep(engine)
    r = pnfsmon("declare", "--site", SITE, env=env, cwd=tmp_path)
    assert r.returncode == 1 and "1 files would declare" in r.stdout
    assert "  corrupted  /store/mc/rot1.root" in r.stdout


def test_a_declaration_whose_answer_was_lost_is_recorded_once(rucio, site_setup, engine,
                                                              tmp_path, monkeypatch):
    """The declarations reach Rucio but their answer never comes back (a proxy drops it):
    exit 3, nothing recorded; the next run gets "Already declared", and that is the one
    record of each file."""
    store, files, env = site_setup
    client = rucio_client(rucio, monkeypatch)
    rse = new_rse(client, f"{store}/")
    names = [f"/store/mc/{n}" for n in ("ok1.root", "rot1.root", "rot2.root", "lost.root",
                                         "stray.root")]
    client.add_replicas(rse, [{"scope": SCOPE, "name": n, "bytes": 4000,
                               "pfn": f"file://localhost:0{store}{n[6:]}"} for n in names])
    env["PNFSMON_CONFIG"] = str(write_conf(tmp_path, store, rse))
    (tmp_path / "lossy").mkdir()
    with rucio_server.AnswerDropper(rucio.port) as dropper:
        env["RUCIO_CONFIG"] = str(rucio_server.client_config(
            tmp_path / "lossy" / "rucio.cfg", dropper.port))
        r = pnfsmon("declare", "--site", SITE, "--apply", env=env, cwd=tmp_path)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert dropper.dropped and "Rucio became unreachable after 0 of 4" in r.stderr
    assert recorded(engine) == []
    # The first batch (files go in path order: the missing file's) reached Rucio and was
    # declared; with its answer lost, the run stopped there.
    assert bad_names(rucio, rse) == {"/store/mc/lost.root"}

    env["RUCIO_CONFIG"] = str(rucio.client_config)
    r = pnfsmon("declare", "--site", SITE, "--apply", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "1 already declared, 3 declared" in r.stdout
    assert recorded(engine) == [
        ("/store/mc/lost.root", "already declared"), ("/store/mc/rot1.root", "declared"),
        ("/store/mc/rot2.root", "declared"), ("/store/mc/stray.root", "declared")]
    assert bad_names(rucio, rse) == set(names) - {"/store/mc/ok1.root"}
    r = pnfsmon("declare", "--site", SITE, "--apply", env=env, cwd=tmp_path)
    assert r.returncode == 0 and "0 files to declare" in r.stdout
    assert len(recorded(engine)) == 4


def test_two_runs_at_once_record_each_file_once(rucio, site_setup, engine, tmp_path,
                                               monkeypatch):
    """Run A plans; run B declares and records everything; then A sends its plan: Rucio
    tells A "Already declared", and A records nothing over B's records."""
    store, files, env = site_setup
    client = rucio_client(rucio, monkeypatch)
    rse = new_rse(client, f"{store}/")
    client.add_replicas(rse, [{"scope": SCOPE, "name": f"/store/mc/{n}", "bytes": 4000,
                               "pfn": f"file://localhost:0{store}/mc/{n}"}
                              for n in ("rot1.root", "rot2.root", "lost.root")])
    conf = write_conf(tmp_path, store, rse)
    env.update(PNFSMON_CONFIG=str(conf), RUCIO_CONFIG=str(rucio.client_config))
    site = dataclasses.replace(Site(SITE, lfn_prefix=b"/store", path_prefix=os.fsencode(store)),
                               rucio_rse=rse, rucio_scope=SCOPE)
    planned = plan(engine, site)
    assert len(planned.to_declare) == 4
    r = pnfsmon("declare", "--site", SITE, "--apply", env=env, cwd=tmp_path)  # run B
    assert "3 declared, 1 unknown replica" in r.stdout
    before = recorded(engine)
    tally = apply(engine, site, planned.to_declare, client, planned.last_id)  # run A
    assert tally == {"already declared": 3, "unknown replica": 1}
    assert recorded(engine) == before and len(before) == 4


def test_rucio_unreachable_exits_3_and_records_nothing(site_setup, engine, tmp_path):
    why = rucio_server.available()
    if why and "virtualenv" not in why:  # the client is all this needs
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    store, files, env = site_setup
    env.update(PNFSMON_CONFIG=str(write_conf(tmp_path, store, "T2_TEST_NOWHERE")),
               RUCIO_CONFIG=str(rucio_server.client_config(tmp_path / "rucio.cfg",
                                                           rucio_server.free_port())))
    r = pnfsmon("declare", "--site", SITE, "--apply", env=env, cwd=tmp_path)
    assert r.returncode == 3, (r.stdout, r.stderr)
    # The last line is ours (the Rucio client logs its own attempts before it).
    assert r.stderr.splitlines()[-1].startswith("pnfsmon: error: Rucio is unreachable")
    assert recorded(engine) == []


def test_an_account_rucio_does_not_allow_to_declare_is_a_persons_job(
        rucio, site_setup, engine, tmp_path, monkeypatch):
    """Rucio refuses (AccessDenied: with the generic policy only root declares bad
    replicas): exit 2, one line naming Rucio's refusal, nothing recorded or declared."""
    store, files, env = site_setup
    client = rucio_client(rucio, monkeypatch)
    rse = new_rse(client, f"{store}/")
    client.add_replicas(rse, [{"scope": SCOPE, "name": "/store/mc/rot1.root", "bytes": 4000,
                               "pfn": f"file://localhost:0{store}/mc/rot1.root"}])
    account = f"mon{uuid.uuid4().hex[:8]}"
    client.add_account(account, "USER", "monitor@example.org")
    client.add_identity(account, identity=account, authtype="USERPASS",
                        email="monitor@example.org", password="Another-s3cret")
    (tmp_path / "user").mkdir()
    cfg = rucio_server.client_config(tmp_path / "user" / "rucio.cfg", rucio.port)
    cfg.write_text(cfg.read_text().replace(f"username = {rucio_server.ACCOUNT}",
                                           f"username = {account}")
                   .replace(f"account = {rucio_server.ACCOUNT}", f"account = {account}")
                   .replace(f"password = {rucio_server.PASSWORD}", "password = Another-s3cret"))
    env.update(PNFSMON_CONFIG=str(write_conf(tmp_path, store, rse)), RUCIO_CONFIG=str(cfg))
    r = pnfsmon("declare", "--site", SITE, "--apply", env=env, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.splitlines()[-1].startswith("pnfsmon: error: Rucio refused to declare")
    assert "AccessDenied" in r.stderr
    assert recorded(engine) == [] and bad_names(rucio, rse) == set()


WITHOUT_CLIENT = "sys.modules['rucio'] = None; sys.argv[0] = 'pnfsmon'"


def test_without_the_client_the_lists_for_rucio_admin_and_cms_are_written(
        site_setup, engine, tmp_path):
    store, files, env = site_setup
    env["PNFSMON_CONFIG"] = str(write_conf(tmp_path, store, "T2_XX_Site",
                                           "declare = apply\n"))
    out = tmp_path / "lists"
    r = pnfsmon("declare", "--site", SITE, "--output", str(out), env=env, cwd=tmp_path,
                before=WITHOUT_CLIENT)
    assert r.returncode == 1, r.stderr
    assert "the Rucio client is not installed" in r.stderr and "nothing declared" in r.stderr
    assert recorded(engine) == []
    lfns = (out / "T2_XX_Site_declare_bad.lfns").read_text().splitlines()
    assert sorted(lfns) == ["/store/mc/lost.root", "/store/mc/rot1.root",
                            "/store/mc/rot2.root", "/store/mc/stray.root"]
    assert "rucio-admin replicas declare-bad --lfns" in r.stdout
    assert f"--scope {SCOPE} --rse T2_XX_Site" in r.stdout
    table = (out / "T2_XX_Site_declare_bad.tsv").read_text().splitlines()
    assert len(table) == 5 and any(line.startswith("/store/mc/lost.root\tmissing")
                                   for line in table)
    missing = sorted(out.glob("T2_XX_Site_20*_M.list"))
    dark = sorted(out.glob("T2_XX_Site_20*_D.list"))
    stats = sorted(out.glob("T2_XX_Site_20*_stats.json"))
    assert len(missing) == len(dark) == len(stats) == 1
    assert missing[0].read_text() == "/store/mc/lost.root\n" and dark[0].read_text() == ""
    assert json.loads(stats[0].read_text())["missing"] == 1


def test_the_declare_setting_is_dry_run_or_apply(tmp_path, monkeypatch):
    conf = tmp_path / "pnfsmon.conf"
    monkeypatch.setenv("PNFSMON_CONFIG", str(conf))
    conf.write_text(f"[site {SITE}]\nrucio_rse = T2_XX\nrucio_scope = cms\n")
    site = config.load().site(SITE)
    assert (site.rucio_rse, site.rucio_scope, site.declare) == ("T2_XX", "cms", "dry-run")
    conf.write_text(f"[site {SITE}]\ndeclare = yes\n")
    with pytest.raises(ConfigError, match="use dry-run or apply"):
        config.load()


def test_an_answer_that_names_no_file_of_the_batch_declares_none_for_sure():
    """Rucio's two forms of a replica name its file; anything else (a form this version
    does not know) leaves every file of the batch "unclear", with Rucio's words."""
    names = ["/store/a", "/store/b", "/store/c"]
    answer = {"T2_XX": ["cms:/store/a Already declared",
                        "('cms', '/store/b') Unknown replica"]}
    assert outcomes(answer, names, "cms") == {
        "/store/a": (ALREADY, "cms:/store/a Already declared"),
        "/store/b": (UNKNOWN, "('cms', '/store/b') Unknown replica"),
        "/store/c": (DECLARED, "")}
    answer["T2_XX"].append("/store/c: some new complaint")
    result = outcomes(answer, names, "cms")
    assert result["/store/c"] == (UNCLEAR, "/store/c: some new complaint")
    assert result["/store/a"][0] == ALREADY


def test_files_outside_the_mapping_or_not_utf8_are_counted_never_declared(engine, tree,
                                                                          tmp_path):
    store = tree / "store"
    rotten = [write_file(os.fsencode(store) + b"/mc/rot.root", random_bytes(900, 1),
                         record=True),
              write_file(os.fsencode(store) + b"/mc/bad\xff.root", random_bytes(900, 2),
                         record=True),
              write_file(tree / "other" / "x.root", random_bytes(900, 3), record=True)]
    crawl(engine, os.fsencode(tree), SITE)
    for path in rotten:
        flip_bit(path, 10)
    sweep(engine)
    assert sorted(verdicts(engine).values()) == [Status.CORRUPTED] * 3
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PNFSMON_", "RUCIO_"))}
    env.update(PNFSMON_DB=engine.url.render_as_string(hide_password=False),
               PNFSMON_CONFIG=str(write_conf(tmp_path, store, "T2_XX_Site")))
    r = pnfsmon("declare", "--site", SITE, env=env, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "1 files would declare" in r.stdout and "  corrupted  /store/mc/rot.root" in r.stdout
    assert "2 files outside the site's LFN mapping" in r.stdout


def test_the_nightly_dag_declares_for_sites_with_an_rse(engine, tmp_path):
    """A site with a rucio_rse gets a declare node after its checks (and its compare),
    dry run unless the site says `declare = apply` (the command reads that itself); a
    site without one gets none."""
    if engine.dialect.name == "sqlite":
        pytest.skip("condor workers need a database server, not SQLite")
    htcondor2 = pytest.importorskip("htcondor2")
    from test_condor import job_argv, read_dag

    from pnfsmon.condor import dag as dag_module

    conf = tmp_path / "pnfsmon.conf"
    conf.write_text(f"[site T2_A]\nnamespace = {tmp_path}\nrucio_rse = T2_A_DISK\n"
                    f"rucio_scope = cms\n[site T2_B]\nnamespace = {tmp_path}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PNFSMON_", "RUCIO_"))}
    env.update(PNFSMON_CONFIG=str(conf),
               PNFSMON_DB=engine.url.render_as_string(hide_password=False))
    out = tmp_path / "nightly"
    r = pnfsmon("condor", "dag", "--write", str(out), "--jobs", "2", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    dag = read_dag(out / dag_module.DAG_FILE)
    assert dag["children"]["T2_A-check:0"] == ["T2_A-declare:0"]
    assert "T2_B-declare:0" not in dag["jobs"]
    assert dag["retries"]["T2_A-declare:0"] == 2
    sub = htcondor2.Submit(dag["jobs"]["T2_A-declare:0"].read_text())
    assert sub["universe"] == "local"
    argv = job_argv(sub["arguments"])
    assert argv[:5] == ["declare", "--site", "T2_A", "--output", str(out / "rucio")]


def test_an_unconfirmed_corruption_is_pending_never_declared(rucio, engine, tree, tmp_path,
                                                              monkeypatch):
    """One corruption confirmed by its second read, one whose second read is not due yet
    (``confirm_after`` 10 minutes): only the first is declared; the second is shown as
    pending confirmation, and declared once a second read agreed."""
    store = tree / "store"
    files = {name: write_file(store / "mc" / name, random_bytes(4000, i), record=True)
             for i, name in enumerate(["sure.root", "unsure.root", "ok.root"])}
    crawl(engine, os.fsencode(tree), SITE)
    flip_bit(files["sure.root"], 100)
    sweep(engine)  # read twice at once: confirmed
    flip_bit(files["unsure.root"], 100)
    sweep(engine, confirm_after=600)  # read once: its second read is due in 10 minutes
    with engine.connect() as conn:
        rows = {os.path.basename(bytes(r.path)).decode(): r for r in conn.execute(
            sa.select(statuses.c.path, statuses.c.status, statuses.c.confirm_due))}
    assert rows["sure.root"].status == rows["unsure.root"].status == Status.CORRUPTED
    assert rows["sure.root"].confirm_due is None and rows["unsure.root"].confirm_due

    client = rucio_client(rucio, monkeypatch)
    rse = new_rse(client, f"{store}/")
    client.add_replicas(rse, [{"scope": SCOPE, "name": f"/store/mc/{n}", "bytes": 4000,
                               "pfn": f"file://localhost:0{store}/mc/{n}"} for n in files])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PNFSMON_", "RUCIO_"))}
    env.update(PNFSMON_DB=engine.url.render_as_string(hide_password=False),
               PNFSMON_CONFIG=str(write_conf(tmp_path, store, rse)),
               RUCIO_CONFIG=str(rucio.client_config))
    found = plan(engine, Site(SITE, lfn_prefix=b"/store", path_prefix=os.fsencode(store)))
    assert [bytes(c.lfn) for c in found.to_declare] == [b"/store/mc/sure.root"]
    assert [bytes(c.lfn) for c, _due in found.pending] == [b"/store/mc/unsure.root"]

    r = pnfsmon("declare", "--site", SITE, "--apply", env=env, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "1 declared" in r.stdout
    assert "1 corrupted files pending confirmation" in r.stdout
    assert "  pending confirmation  /store/mc/unsure.root  (corrupted" in r.stdout
    assert bad_names(rucio, rse) == {"/store/mc/sure.root"}
    assert recorded(engine) == [("/store/mc/sure.root", "declared")]

    # Its second read, asked for now, agrees: confirmed, and declared by the next run.
    request_now(engine, paths=[files["unsure.root"]])
    sweep(engine, confirm_after=600)
    r = pnfsmon("declare", "--site", SITE, "--apply", env=env, cwd=tmp_path)
    assert r.returncode == 0 and "pending confirmation" not in r.stdout, r.stdout
    assert bad_names(rucio, rse) == {"/store/mc/sure.root", "/store/mc/unsure.root"}


def test_nothing_from_a_held_incident_is_declared(rucio, engine, tree, tmp_path, monkeypatch):
    """Two corrupted files are declared; then 25 more go bad at once on one worker node:
    an incident, and `declare --apply` declares none of it (Rucio's REST API agrees) until
    a person releases it; then exactly those, once."""
    store = tree / "store"
    names = [f"b{i:02d}.root" for i in range(40)]
    files = {n: write_file(store / "mc" / n, random_bytes(3000, 100 + i), record=True)
             for i, n in enumerate(names)}
    crawl(engine, os.fsencode(tree), SITE)
    for n in names[:2]:
        flip_bit(files[n], 10)
    sweep(engine)
    client = rucio_client(rucio, monkeypatch)
    rse = new_rse(client, f"{store}/")
    client.add_replicas(rse, [{"scope": SCOPE, "name": f"/store/mc/{n}", "bytes": 3000,
                               "pfn": f"file://localhost:0{store}/mc/{n}"} for n in names])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PNFSMON_", "RUCIO_"))}
    env.update(PNFSMON_DB=engine.url.render_as_string(hide_password=False),
               PNFSMON_CONFIG=str(write_conf(tmp_path, store, rse)),
               RUCIO_CONFIG=str(rucio.client_config))
    r = pnfsmon("declare", "--site", SITE, "--apply", env=env, cwd=tmp_path)
    assert r.returncode == 0 and "2 declared" in r.stdout, (r.stdout, r.stderr)

    for n in names[2:27]:
        flip_bit(files[n], 10)
    sweep(engine)  # all 40 again, on this node, within the hour: 27 corrupted
    r = pnfsmon("declare", "--site", SITE, "--apply", env=env, cwd=tmp_path)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "0 files to declare" in r.stdout and "25 files held in incidents" in r.stdout
    assert "incident 1 opened: worker node" in r.stderr
    declared = {f"/store/mc/{n}" for n in names[:2]}
    assert bad_names(rucio, rse) == declared and len(recorded(engine)) == 2

    r = pnfsmon("incident", "release", "1", "--by", "alice", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = pnfsmon("declare", "--site", SITE, "--apply", env=env, cwd=tmp_path)
    assert r.returncode == 0 and "sent 25 files to Rucio: 25 declared" in r.stdout, r.stdout
    assert bad_names(rucio, rse) == {f"/store/mc/{n}" for n in names[:27]}
    assert len(recorded(engine)) == 27
    r = pnfsmon("declare", "--site", SITE, "--apply", env=env, cwd=tmp_path)
    assert r.returncode == 0 and "0 files to declare" in r.stdout
