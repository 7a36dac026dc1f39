"""The static report: every status counted, odd names escaped on every page and exact in
every export, long lists paginated in three orders with nothing lost or repeated, history
links that land on the file, calibration, the Prometheus file, the Nagios line and
``pnfsmon history``."""

from __future__ import annotations

import csv
import html
import json
import os
import re
import time

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from pnfsmon.crawler.crawl import crawl
from pnfsmon.schema.lease import Lease
from pnfsmon.schema.paths import decode_line, display
from pnfsmon.schema.status import Status
from pnfsmon.tester.posix_read import PosixReader
from pnfsmon.tester.worker import CheckOptions, run
from pnfsmon.web import report
from pnfsmon.web.cli import (
    NAGIOS_CRITICAL,
    NAGIOS_OK,
    NAGIOS_WARNING,
    format_summary,
    nagios_line,
)
from pnfsmon.web.report import write_report
from pnfsmon.web.summary import summarize
from tests.helpers import flip_bit, pnfsmon, random_bytes, write_file

HOSTILE = [b"<script>alert(1)</script>.dat", b"amp&quot;\".dat", b"nl\nname.dat",
           b"bad\xff\xfe.dat", b"'single'.dat"]


def corrupted_tree(engine, tree) -> list[bytes]:
    """Five corrupted files with hostile names and different sizes, one missing file."""
    paths = [write_file(os.path.join(os.fsencode(tree), n), random_bytes(1000 * (i + 1), i),
                        record=True) for i, n in enumerate(HOSTILE)]
    gone = write_file(tree / "gone <b>.dat", b"x", record=True)
    crawl(engine, os.fsencode(tree), "T2_<Site>")
    for p in paths:
        flip_bit(p, 100)
    os.unlink(gone)
    run(Lease(engine, lease_seconds=60), PosixReader(),
        CheckOptions(timeout=30, recheck_after=0.0))
    return paths


def decode_display(shown: str, paths: list[bytes]) -> bytes:
    """The path whose display form is ``shown`` (to compare orders by bytes)."""
    return next(p for p in paths if display(p) == shown)


def page_paths(page: str) -> list[str]:
    cells = re.findall(r'<td class="path">(.*?)</td>', page, re.S)
    return [html.unescape(c) for c in cells]


def test_report_pages_and_exports(engine, tree, tmp_path, monkeypatch):
    paths = corrupted_tree(engine, tree)
    monkeypatch.setattr(report, "PAGE_ROWS", 2)
    out = tmp_path / "r"
    summary = write_report(engine, out)
    assert summary.counts[Status.CORRUPTED] == len(HOSTILE)
    assert summary.counts[Status.MISSING] == 1

    # summary.json counts every status, and per site.
    data = json.loads((out / "summary.json").read_text())
    assert data["counts"]["corrupted"] == len(HOSTILE)
    assert data["sites"][0]["site"] == "T2_<Site>"
    assert data["sites"][0]["counts"]["missing"] == 1

    # Every export holds the exact bytes of every problem path.
    txt = [decode_line(line) for line in
           (out / "corrupted.txt").read_text().splitlines(keepends=True)]
    assert sorted(txt) == sorted(paths)
    with open(out / "corrupted.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(decode_line(r["path"]) for r in rows) == sorted(paths)
    assert all("\n" not in r["path"] and "\n" not in r["path_display"] for r in rows)
    records = [json.loads(line) for line in (out / "corrupted.jsonl").read_text().splitlines()]
    assert sorted(decode_line(r["path"]) for r in records) == sorted(paths)
    assert {r["site"] for r in records} == {"T2_<Site>"}

    # Three orders, three pages each: every file exactly once per order, in order.
    shown = {}
    for key, stem in (("path", "corrupted"), ("size", "corrupted-by-size"),
                      ("time", "corrupted-by-time")):
        pages = [out / f"{stem}.html", out / f"{stem}-2.html", out / f"{stem}-3.html"]
        assert not (out / f"{stem}-4.html").exists()
        shown[key] = [p for page in pages for p in page_paths(page.read_text())]
        assert len(shown[key]) == len(HOSTILE)
    assert sorted(shown["path"]) == sorted(shown["size"]) == sorted(shown["time"])
    size_of = {display(p): os.stat(p).st_size for p in paths}
    assert [size_of[p] for p in shown["size"]] == sorted(size_of.values(), reverse=True)
    assert shown["path"] == sorted(shown["path"], key=lambda d: decode_display(d, paths))

    for page in out.glob("*.html"):
        text = page.read_text()
        assert "<script" not in text, page  # no script at all, hostile names included
        for cell in page_paths(text):
            assert "\n" not in cell  # one escaped line per name
    first = (out / "corrupted.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.dat" in (
        (out / "corrupted.html").read_text() + (out / "corrupted-2.html").read_text()
        + (out / "corrupted-3.html").read_text())
    assert "bad\\xff\\xfe.dat" in "".join(shown["path"])
    assert 'href="corrupted-2.html"' in first and 'href="corrupted-by-size.html"' in first

    # History links land on an anchor of an existing history page.
    links = re.findall(r'href="(history/\d+\.html)#(f\d+)"', first)
    assert links
    for page, anchor in links:
        assert f'id="{anchor}"' in (out / page).read_text()

    calibration = (out / "calibration.html").read_text()
    assert "<svg" in calibration and "MB/s" in calibration
    index = (out / "index.html").read_text()
    assert "T2_&lt;Site&gt;" in index and "<svg" in index  # the trend plot

    families = {f.name: f for f in text_string_to_metric_families(
        (out / "pnfsmon.prom").read_text())}
    samples = {(s.labels.get("site"), s.labels.get("status")): s.value
               for s in families["pnfsmon_files"].samples}
    assert samples[("T2_<Site>", "corrupted")] == len(HOSTILE)
    assert families["pnfsmon_last_crawl_timestamp_seconds"].samples[0].value > 0

    # A shorter list later: the pages past its end are removed.
    monkeypatch.setattr(report, "PAGE_ROWS", 5)
    write_report(engine, out)
    assert (out / "corrupted.html").exists() and not (out / "corrupted-2.html").exists()


def test_nagios_thresholds(engine, tree):
    corrupted_tree(engine, tree)
    with engine.connect() as conn:
        s = summarize(conn)
    now = time.time()
    code, line = nagios_line(s, warning=1, critical=100, max_crawl_age=3600, now=now)
    assert code == NAGIOS_WARNING and line.startswith("PNFSMON WARNING - 6 problem files")
    assert "corrupted=5;1;100;0" in line.split("|")[1]
    code, _ = nagios_line(s, warning=1, critical=6, max_crawl_age=3600, now=now)
    assert code == NAGIOS_CRITICAL
    code, _ = nagios_line(s, warning=10, critical=20, max_crawl_age=3600, now=now)
    assert code == NAGIOS_OK
    code, line = nagios_line(s, warning=10, critical=20, max_crawl_age=3600, now=now + 7200)
    assert code == NAGIOS_WARNING and "last crawl 2 h ago" in line


def test_history_command(engine, tree):
    paths = corrupted_tree(engine, tree)
    url = engine.url.render_as_string(hide_password=False)
    env = {"PNFSMON_DB": url}
    target = paths[3]  # non-UTF-8 name: passed as the raw bytes of argv
    r = pnfsmon("history", target, "--json", env=env, text=False)
    assert r.returncode == 1, r.stderr  # its status is a problem
    [record] = json.loads(r.stdout)
    assert decode_line(record["path"]) == target and record["status"] == "corrupted"
    assert [c["status"] for c in record["checks"]] == ["corrupted"]
    assert record["checks"][0]["computed_adler32"] != record["recorded_adler32"]
    r = pnfsmon("history", target, env=env, text=False)
    assert b"last verified" in r.stdout and b"corrupted" in r.stdout
    r = pnfsmon("history", "/no/such/file", env=env)
    assert r.returncode == 2 and "not in the database" in r.stderr


@pytest.mark.parametrize("bad", [["--warning", "0"], ["--critical", "0"]])
def test_nagios_bad_thresholds_are_unknown(engine, bad):
    url = engine.url.render_as_string(hide_password=False)
    r = pnfsmon("status", "--nagios", *bad, env={"PNFSMON_DB": url})
    assert r.returncode == 3 and r.stdout.startswith("PNFSMON UNKNOWN")


def test_the_password_appears_in_no_output_of_any_command(mariadb_with_password, tree,
                                                           tmp_path):
    """Crawl, check, report, status (both forms), history, incident list, declare (also
    with the password inside the URL) and a failed login: the DB
    password is in no page, export, line of output or error."""
    from tests.helpers import DB_SECRET

    env = {"PNFSMON_DB": mariadb_with_password, "PNFSMON_DB_PASSWORD": DB_SECRET}
    write_file(tree / "a.dat", b"payload", record=True)
    out = tmp_path / "report"
    commands = [["db", "init"], ["crawl", str(tree), "--grace", "0"], ["check"],
                ["report", str(out)], ["status"], ["status", "--nagios"],
                ["history", str(tree / "a.dat"), "--json"], ["incident", "list"],
                ["incident", "list", "--json"]]
    said = ""
    for command in commands:
        r = pnfsmon(*command, env=env)
        assert r.returncode == 0, (command, r.stderr)
        said += r.stdout + r.stderr
    # The password given inside the URL, to the commands that act on Rucio's behalf: a
    # site without rucio_rse is refused in one line (exit 2), naming no secret.
    in_url = {"PNFSMON_DB": sa.engine.make_url(mariadb_with_password).set(
        password=DB_SECRET).render_as_string(hide_password=False)}
    for command in (["incident", "list"], ["declare", "--site", "local"],
                    ["declare", "--site", "local", "--dark"]):
        r = pnfsmon(*command, env=in_url, cwd=tmp_path)
        assert r.returncode in (0, 2), (command, r.stderr)
        said += r.stdout + r.stderr
    wrong = {**env, "PNFSMON_DB_PASSWORD": DB_SECRET + "-wrong"}
    r = pnfsmon("status", env=wrong)
    assert r.returncode == 2
    said += r.stdout + r.stderr
    assert DB_SECRET not in said
    written = [p for p in out.rglob("*") if p.is_file()]
    assert len(written) > 10
    for path in written:
        assert DB_SECRET.encode() not in path.read_bytes(), path


def test_references_by_provenance_per_site(engine, tree, tmp_path):
    """How many files of each site have their reference from the storage, from a first
    read, or none: in ``status`` and in the Prometheus file, from the ledger."""
    for i in range(3):
        write_file(tree / "a" / f"kept{i}", random_bytes(100 + i, i), record=True)
    write_file(tree / "a" / "bare", random_bytes(50, 9))
    write_file(tree / "b" / "bare", random_bytes(60, 8))
    crawl(engine, os.fsencode(tree / "a"), "A")
    crawl(engine, os.fsencode(tree / "b"), "B")
    run(Lease(engine, lease_seconds=60), PosixReader(),
        CheckOptions(timeout=30, recheck_after=0.0))
    with engine.connect() as conn:
        s = summarize(conn, sweep=False)
    text = format_summary(s)
    assert "references of A: storage 3 (75.0%), first read 1 (25.0%)" in text
    assert "references of B: first read 1 (100.0%)" in text
    out = tmp_path / "report"
    write_report(engine, out)
    families = {f.name: f for f in text_string_to_metric_families(
        (out / "pnfsmon.prom").read_text())}
    by = {(x.labels["site"], x.labels["reference"]): x.value
          for x in families["pnfsmon_files_by_reference"].samples}
    assert by[("A", "storage")] == 3 and by[("A", "first read")] == 1
    assert by[("B", "first read")] == 1 and by[("B", "storage")] == 0
