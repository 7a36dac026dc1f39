"""What the report tells a site to do: a paragraph per problem status (and for files the
catalog says were lost), problem files counted once however often they were rechecked,
rates that say what they count, and a time zone on every time shown."""

from __future__ import annotations

import html
import os
import re

import sqlalchemy as sa

from pnfsmon.crawler.crawl import crawl
from pnfsmon.schema.lease import Lease
from pnfsmon.schema.status import MISSING_AT_SITE, NEXT_STEPS, PROBLEMS, Status
from pnfsmon.schema.tables import events
from pnfsmon.tester.posix_read import PosixReader
from pnfsmon.tester.worker import CheckOptions, run
from pnfsmon.web.report import commands, write_report
from pnfsmon.web.summary import problem_trend
from tests.helpers import flip_bit, random_bytes, write_file

# A time not followed by a zone's name (UTC, CET, IST) or offset (-03, +0530).
TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?! [A-Z]{2,5}\b| [+-]\d\d(\d\d)?\b)")


def _bad_tree(engine, tree, checks: int) -> None:
    """Three corrupted files and one missing, all checked ``checks`` times."""
    paths = [write_file(tree / f"f{i}.dat", random_bytes(5000, i), record=True)
             for i in range(5)]
    crawl(engine, os.fsencode(tree), "T2_XX")
    for p in paths[:3]:
        flip_bit(p, 10)
    os.unlink(paths[3])
    for _ in range(checks):
        run(Lease(engine, lease_seconds=60), PosixReader(),
            CheckOptions(timeout=30, recheck_after=0.0, sweep_start=None,
                         confirm_after=0.0))


def test_a_recheck_is_not_a_new_problem_file(engine, tree):
    _bad_tree(engine, tree, 4)
    with engine.connect() as conn:
        problem_checks = conn.execute(sa.select(sa.func.count()).select_from(events).where(
            events.c.status.in_([int(s) for s in PROBLEMS]))).scalar()
        _labels, series = problem_trend(conn)
    # four problem files, each checked four times; a corrupted one once more, at once: the
    # second read that confirms it
    assert problem_checks == 3 * 5 + 4
    assert series[Status.CORRUPTED][-1] == 3 and series[Status.MISSING][-1] == 1
    assert sum(sum(v) for v in series.values()) == 4


def test_every_problem_page_says_what_to_do_next(engine, tree, tmp_path):
    _bad_tree(engine, tree, 1)
    out = tmp_path / "report"
    write_report(engine, out)
    for status in PROBLEMS:
        page = (out / f"{status.label}.html").read_text()
        assert f"What to do next.</b> {commands(NEXT_STEPS[status])}" in page, status
    assert "<code>pnfsmon check --paths corrupted.txt</code>" in (
        out / "corrupted.html").read_text()
    assert "pnfsmon declare --site SITE --apply" in html.unescape(
        (out / "missing.html").read_text())
    assert str(commands(NEXT_STEPS[MISSING_AT_SITE])) in (out / "consistency.html").read_text()
    # Written once: the same paragraph on every page of a status, from one place.
    assert len({NEXT_STEPS[s] for s in PROBLEMS}) == len(PROBLEMS)


def test_every_time_shown_carries_its_zone(engine, tree, tmp_path):
    _bad_tree(engine, tree, 1)
    out = tmp_path / "report"
    write_report(engine, out)
    pages = list(out.glob("*.html")) + list((out / "history").glob("*.html"))
    shown = 0
    for page in pages:
        text = page.read_text()
        shown += len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", text))
        assert not TIME.findall(text), page.name
    assert shown > 10


def test_rates_say_what_they_count(engine, tree, tmp_path):
    _bad_tree(engine, tree, 1)
    out = tmp_path / "report"
    write_report(engine, out)
    index = (out / "index.html").read_text()
    assert "reads/hour" in index and "files/hour" not in index
    assert "Problem files found per day" in index
    calibration = (out / "calibration.html").read_text()
    assert ">reads</th>" in calibration and ">timed-out reads</th>" in calibration
    assert ">checks</th>" not in calibration and ">timeouts</th>" not in calibration


def test_commands_are_escaped_then_marked():
    assert str(commands("run `a <b>` now")) == "run <code>a &lt;b&gt;</code> now"
