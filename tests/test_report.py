"""The static report: every status counted, odd names escaped on the pages and exact in the
list files, long lists cut on the page but complete in the export."""

from __future__ import annotations

import html
import json
import os

from crawler.cli import crawl
from schema.lease import Lease
from schema.paths import decode_line
from schema.status import Status
from tester.readers import PosixReader
from tester.worker import CheckOptions, run
from tests.helpers import flip_bit, random_bytes, write_file
from web import report
from web.report import write_report

HOSTILE = [b"<script>alert(1)</script>.dat", b"amp&quot;\".dat", b"nl\nname.dat",
           b"bad\xff\xfe.dat", b"'single'.dat"]


def test_report_escapes_hostile_names_and_exports_exact_bytes(engine, tree, tmp_path,
                                                              monkeypatch):
    paths = [write_file(os.path.join(os.fsencode(tree), n), random_bytes(5000, seed=i),
                        record=True) for i, n in enumerate(HOSTILE)]
    crawl(engine, os.fsencode(tree), "s")
    for p in paths:
        flip_bit(p, 100)
    run(Lease(engine, lease_seconds=60), PosixReader(),
        CheckOptions(timeout=30, recheck_after=0.0))
    monkeypatch.setattr(report, "PAGE_ROWS", 3)
    out = tmp_path / "r"
    summary = write_report(engine, out)
    assert summary.counts[Status.UNCHECKED] == 0
    assert summary.counts[Status.CORRUPTED] == len(HOSTILE)
    data = json.loads((out / "summary.json").read_text())
    assert data["counts"]["corrupted"] == len(HOSTILE)
    assert set(data["counts"]) >= {"unchecked", "ok", "corrupted", "missing", "timeout",
                                   "unreadable"}
    listed = [decode_line(line) for line in
              (out / "corrupted.txt").read_text().splitlines(keepends=True)]
    assert sorted(listed) == sorted(paths)
    page = (out / "corrupted.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert "Showing the first 3" in page  # the page is cut, the export is not
    assert page.count('<td class="path">') == 3
    for p in (out / "index.html", out / "missing.html", out / "timeout.html"):
        assert p.is_file()
    # Every shown name is in its escaped display form: no raw newline inside a cell.
    cells = [c.split("</td>")[0] for c in page.split('<td class="path">')[1:]]
    assert all("\n" not in html.unescape(c) for c in cells)
