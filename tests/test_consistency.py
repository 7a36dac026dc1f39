"""Consistency with the catalog on real crawls of generated trees against generated
inventories: known missing, orphan, mismatched, young and ignored files; two consecutive
compares before anything is listed; refusal after an incomplete or shrunken crawl; the
flag for too many; atomic inventory loads; the CLI driven by a site section."""

from __future__ import annotations

import bz2
import json
import os
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from helpers import random_bytes, write_file
from zlib_ng import zlib_ng

from pnfsmon.catalog.compare import compare
from pnfsmon.catalog.inventory import BadDump, current_load, load
from pnfsmon.crawler.crawl import crawl
from pnfsmon.schema import config, xrdcks
from pnfsmon.schema.discrepancies import write_lists
from pnfsmon.schema.paths import decode_line
from pnfsmon.schema.sites import Site
from pnfsmon.schema.tables import compares
from pnfsmon.tester.stream import adler32_hex
from pnfsmon.web.report import write_report

OLD = time.time() - 5 * 3600


def adler(data: bytes) -> str:
    return adler32_hex(zlib_ng.adler32(data))


@pytest.fixture
def site_tree(tree):
    """Storage under TREE/data/cms/store, the catalog's /store; returns (site, catalog)."""
    store = tree / "data" / "cms" / "store"
    files = {
        "mc/a.root": random_bytes(1000, 1),
        "mc/b.root": random_bytes(2000, 2),  # catalog says another size
        "mc/c.root": random_bytes(3000, 3),  # catalog says another checksum
        "mc/odd <&> 'q'.root": random_bytes(500, 4),
        "mc/orphan.root": random_bytes(700, 5),  # not in the catalog
        "mc/fresh.root": random_bytes(800, 6),  # not in the catalog, but just written
        "temp/t.root": random_bytes(10, 7),  # not in the catalog, ignored
    }
    for name, data in files.items():
        path = write_file(store / name, data)
        if name != "mc/fresh.root":
            os.utime(path, (OLD, OLD))
        # The storage records each checksum (XRootD's xattr, valid for this mtime).
        os.setxattr(path, xrdcks.XATTR_NAME,
                    xrdcks.encode(adler(data), int(os.stat(path).st_mtime)))
    write_file(tree / "data" / "other" / "z.root", b"outside the mapping")
    catalog = [
        {"name": "/store/mc/a.root", "size": 1000, "adler32": adler(files["mc/a.root"])},
        {"name": "/store/mc/b.root", "size": 2001},
        {"name": "/store/mc/c.root", "size": 3000, "adler32": "0000beef"},
        {"name": "/store/mc/odd <&> 'q'.root", "size": 500},
        {"name": "/store/mc/gone.root", "size": 12345},  # lost by the site
        {"name": "/store/mc/new.root", "size": 1, "created": time.time()},  # not there yet
        {"name": "/store/user/x.root", "size": 5},  # ignored
        {"name": "/elsewhere/y.root", "size": 5},  # outside the LFN mapping
    ]
    site = Site("T2_Test", lfn_prefix=b"/store", path_prefix=os.fsencode(store),
                ignore=("/store/user/", "/store/temp/"), grace=3600.0,
                max_missing_fraction=0.5, max_orphan_fraction=0.5)
    return site, catalog


def write_dump(path, catalog) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for record in catalog:
            fh.write(json.dumps(record) + "\n")


def listed(path) -> list[bytes]:
    return sorted(decode_line(line) for line in
                  path.read_text().splitlines(keepends=True))


def test_missing_orphan_mismatch_after_two_compares(engine, tree, tmp_path, site_tree):
    site, catalog = site_tree
    dump = tmp_path / "dump.jsonl"
    write_dump(dump, catalog)
    loaded = load(engine, site, dump)
    assert (loaded.entries, loaded.unmapped) == (7, 1)
    crawl(engine, os.fsencode(tree / "data"), site.name)

    first = compare(engine, site)
    assert first.state == "published"
    # Seen once: candidates, not listed yet. Mismatches need no second look.
    assert first.candidates == {"missing": 1, "orphan": 1, "mismatch": 2}
    assert first.counts == {"missing": 0, "orphan": 0, "mismatch": 2}
    assert (first.young, first.ignored) == (2, 2)  # new + fresh; user/x + temp/t

    second = compare(engine, site)
    assert second.counts == {"missing": 1, "orphan": 1, "mismatch": 2}
    assert second.sizes["missing"] == 12345
    out = tmp_path / "lists"
    write_lists(engine, second.id, site.name, out)
    assert listed(out / "T2_Test_missing.txt") == [b"/store/mc/gone.root"]
    assert listed(out / "T2_Test_orphan.txt") == [b"/store/mc/orphan.root"]
    assert listed(out / "T2_Test_mismatch.txt") == [b"/store/mc/b.root", b"/store/mc/c.root"]

    # The report shows the site's catalog counts and publishes the same lists.
    report = tmp_path / "report"
    summary = write_report(engine, report)
    assert summary.sites[0].compare.missing == 1
    page = (report / "consistency.html").read_text()
    assert "T2_Test_missing.txt" in page and "published" in page
    assert listed(report / "consistency" / "T2_Test_orphan.txt") == [b"/store/mc/orphan.root"]
    assert 'pnfsmon_catalog_files{kind="missing",site="T2_Test"} 1.0' in (
        report / "pnfsmon.prom").read_text()

    # The orphan is registered in the catalog after all: the next compare drops it.
    catalog.append({"name": "/store/mc/orphan.root", "size": 700})
    write_dump(dump, catalog)
    load(engine, site, dump)
    third = compare(engine, site)
    assert third.counts["orphan"] == 0 and third.counts["missing"] == 1


def test_a_compare_that_dies_is_marked_failed(engine, tree, tmp_path, site_tree,
                                             monkeypatch):
    """A compare that ends in an error is failed, not left running for ever; one whose
    process died (nothing could mark it) is marked by the next compare, a day on."""
    from pnfsmon.catalog import compare as compare_module

    site, catalog = site_tree
    dump = tmp_path / "dump.jsonl"
    write_dump(dump, catalog)
    load(engine, site, dump)
    crawl(engine, os.fsencode(tree / "data"), site.name)

    def broken(*args):
        raise RuntimeError("the disk under the server filled up")
        yield  # a generator, as the real one

    with monkeypatch.context() as m:
        m.setattr(compare_module, "_catalog_side", broken)
        with pytest.raises(RuntimeError):
            compare(engine, site)
    with engine.connect() as conn:
        state, reason, finished = conn.execute(
            sa.select(compares.c.state, compares.c.reason, compares.c.finished)
            .order_by(compares.c.id.desc())).first()
    assert (state, finished is not None) == ("failed", True)
    assert reason == "failed: RuntimeError: the disk under the server filled up"

    # A process killed mid-compare leaves "running"; the next compare a day later ends it.
    with engine.begin() as conn:
        conn.execute(compares.insert().values(site=site.name, started=time.time() - 2 * 86400,
                                              state="running"))
    assert compare(engine, site).state == "published"
    with engine.connect() as conn:
        states = conn.execute(sa.select(compares.c.state).order_by(compares.c.id)).scalars()
        assert list(states) == ["failed", "failed", "published"]


def test_incomplete_or_shrunken_crawl_is_refused(engine, tree, tmp_path, site_tree):
    site, catalog = site_tree
    dump = tmp_path / "dump.jsonl"
    write_dump(dump, catalog)
    load(engine, site, dump)
    crawl(engine, os.fsencode(tree / "data"), site.name)
    compare(engine, site)
    # Half the tree disappears from the listing (an unmounted pool, say).
    store = tree / "data" / "cms" / "store" / "mc"
    hidden = tree / "hidden"
    store.rename(hidden)
    crawl(engine, os.fsencode(tree / "data"), site.name)
    refused = compare(engine, site)
    assert refused.state == "refused" and "fewer than the one before" in refused.reason
    assert refused.counts["missing"] == refused.counts["orphan"] == 0
    assert refused.candidates["missing"] == 0  # not even looked for
    out = tmp_path / "lists"
    write_lists(engine, refused.id, site.name, out)
    assert not (out / "T2_Test_missing.txt").exists()
    assert not (out / "T2_Test_orphan.txt").exists()


def test_too_many_is_flagged_for_a_person(engine, tree, tmp_path, site_tree):
    site, catalog = site_tree
    site = Site(**{**site.__dict__, "max_missing_fraction": 0.05})
    dump = tmp_path / "dump.jsonl"
    write_dump(dump, catalog + [{"name": f"/store/mc/lost{i}.root", "size": 1}
                                for i in range(20)])
    load(engine, site, dump)
    crawl(engine, os.fsencode(tree / "data"), site.name)
    out = tmp_path / "lists"
    out.mkdir()
    (out / "T2_Test_missing.txt").write_text("stale\n")
    result = compare(engine, site)
    assert result.state == "flagged" and "21 of 27 catalog files missing" in result.reason
    write_lists(engine, result.id, site.name, out)
    assert not (out / "T2_Test_missing.txt").exists()  # no stale list to act on


def test_inventory_loads_are_atomic_and_read_every_format(engine, tmp_path):
    site = Site("S", lfn_prefix=b"/store", path_prefix=b"/pnfs/s/store")
    plain = tmp_path / "dump.txt"
    plain.write_bytes(b"/store/a\n/store/b \xff\n\n/other/c\n")
    result = load(engine, site, plain)
    assert (result.entries, result.unmapped) == (2, 1)
    csv_dump = tmp_path / "dump.csv.bz2"
    with bz2.open(csv_dump, "wt") as fh:
        fh.write("lfn,size,adler32\n/store/a,1,AD:1\n/store/b,2,\n/store/c,3,ffffffff\n")
    result = load(engine, site, csv_dump)
    assert (result.entries, result.replaced) == (3, 2)
    with engine.connect() as conn:
        current = current_load(conn, "S")
        rows = conn.execute(sa.text(
            f"SELECT path, adler32 FROM inventory WHERE load_id = {current.id}")).all()
    assert sorted((bytes(p), a) for p, a in rows) == [
        (b"/pnfs/s/store/a", "00000001"), (b"/pnfs/s/store/b", None),
        (b"/pnfs/s/store/c", "ffffffff")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"name": "/store/x", "size": 1}\n{"name": "/store/y", "adler32": "xyz"}\n')
    with pytest.raises(BadDump, match="line 2: Adler32"):
        load(engine, site, bad)
    with engine.connect() as conn:
        assert current_load(conn, "S").id == current.id  # the previous one stands
        assert conn.execute(sa.text("SELECT count(*) FROM inventory")).scalar() == 3


def test_an_inventory_load_retries_and_repeats_one_way(engine, tmp_path, monkeypatch):
    """A repeat is refused naming the LFN wherever it sits in the dump; a batch whose
    commit answer was lost is not a repeat; a load never replaces one still in progress."""
    import contextlib

    import pymysql

    from pnfsmon.catalog import inventory as inventory_module
    from pnfsmon.schema.tables import inventory_loads

    monkeypatch.setattr(inventory_module, "BATCH", 3)
    site = Site("S", lfn_prefix=b"/store", path_prefix=b"/pnfs/s/store")
    good = tmp_path / "good.txt"
    good.write_text("".join(f"/store/f{i}\n" for i in range(10)))
    load(engine, site, good)
    for name, lines in (("near", ["/store/a", "/store/a"]),  # in one batch
                        ("far", ["/store/a", "/store/b", "/store/c", "/store/d",
                                 "/store/a"])):  # in another batch
        dump = tmp_path / f"{name}.txt"
        dump.write_text("\n".join(lines) + "\n")
        with pytest.raises(BadDump, match="the dump lists /store/a twice"):
            load(engine, site, dump)
    with engine.connect() as conn:
        assert current_load(conn, "S").entries == 10  # the good one stands

    real = inventory_module.write_transaction
    lost = []

    @contextlib.contextmanager
    def commit_then_lose_the_answer(eng):
        with real(eng) as conn:
            yield conn
        if len(lost) == 1:  # the first batch's insert (after the load's own row)
            lost.append(True)
            raise sa.exc.OperationalError(
                "COMMIT", {}, pymysql.err.OperationalError(2013, "Lost connection"))
        lost.append(False)

    in_progress = time.time()
    with engine.begin() as conn:  # another load of the site, still running; and a dead one
        alive = conn.execute(inventory_loads.insert().values(
            site="S", source="x", started=in_progress, complete=False)).inserted_primary_key[0]
        dead = conn.execute(inventory_loads.insert().values(
            site="S", source="y", started=in_progress - 2 * 86400,
            complete=False)).inserted_primary_key[0]
    with monkeypatch.context() as m:
        m.setattr(inventory_module, "write_transaction", commit_then_lose_the_answer)
        result = load(engine, site, good)
    assert True in lost and result.entries == 10
    with engine.connect() as conn:
        assert current_load(conn, "S").entries == 10
        ids = set(conn.execute(sa.select(inventory_loads.c.id)).scalars())
    assert alive in ids and dead not in ids


def test_site_sections_and_the_cli(engine, tree, tmp_path, site_tree, monkeypatch):
    site, catalog = site_tree
    conf = tmp_path / "pnfsmon.conf"
    conf.write_text(
        f"[site {site.name}]\nnamespace = {tree / 'data'}\nlfn_prefix = /store\n"
        f"path_prefix = {site.path_prefix.decode()}\nignore = /store/user/ /store/temp/\n"
        "grace = 1\nmax_missing_fraction = 0.5\nmax_orphan_fraction = 0.5\n")
    monkeypatch.setenv("PNFSMON_CONFIG", str(conf))
    assert config.load().site(site.name) == Site(**{**site.__dict__,
                                                    "namespace": str(tree / "data")})
    dump = tmp_path / "dump.jsonl"
    write_dump(dump, catalog)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")}
    env.update(PNFSMON_CONFIG=str(conf),
               PNFSMON_DB=engine.url.render_as_string(hide_password=False))

    def pnfsmon(*args):
        return subprocess.run([sys.executable, "-m", "pnfsmon", *args], env=env,
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)

    r = pnfsmon("inventory", "load", str(dump), "--site", site.name)
    assert r.returncode == 0 and "loaded 7 catalog files" in r.stdout, r.stderr
    r = pnfsmon("crawl", "--site", site.name)  # ROOT and grace from the site's section
    assert r.returncode == 0, r.stderr
    for _ in range(2):
        r = pnfsmon("compare", "--site", site.name, "--output", str(tmp_path / "out"))
    assert r.returncode == 1 and "missing 1 " in r.stdout, r.stdout + r.stderr
    assert listed(tmp_path / "out" / "T2_Test_missing.txt") == [b"/store/mc/gone.root"]
    r = pnfsmon("compare", "--site", "T2_Unknown")
    assert r.returncode == 2 and "no inventory loaded" in r.stderr
    bad = tmp_path / "bad.conf"
    bad.write_text("[site X]\ngrace = soon\n")
    env["PNFSMON_CONFIG"] = str(bad)
    r = pnfsmon("crawl", "--site", "X", str(tree))
    assert r.returncode == 2 and "grace = 'soon' is not a number" in r.stderr


def test_check_site_uses_the_sites_recheck_period(engine, tree, tmp_path):
    """`check --site` claims only that site's files; without --recheck-after it takes
    the site's period from its section (here: every file is due again at once)."""
    for site in ("A", "B"):
        write_file(tree / site / "f.dat", site.encode())
        crawl(engine, os.fsencode(tree / site), site)
    conf = tmp_path / "pnfsmon.conf"
    conf.write_text("[site A]\nrecheck_after = 0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")}
    env.update(PNFSMON_CONFIG=str(conf),
               PNFSMON_DB=engine.url.render_as_string(hide_password=False))

    def check(*args) -> str:
        r = subprocess.run([sys.executable, "-m", "pnfsmon", "check", "--workers", "1",
                            *args], env=env, capture_output=True, text=True, timeout=120,
                           cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert "checked 1 file in" in check("--site", "A")  # B's file is left alone
    assert "checked 1 file in" in check("--site", "A")  # due again: recheck_after = 0
    assert "checked 1 file in" in check("--site", "B")
    assert "checked 0 files" in check("--site", "B")  # B keeps the 30-day default
