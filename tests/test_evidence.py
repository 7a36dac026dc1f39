"""The crawl never erases evidence, on every backend, in the order a site runs things
(crawl, then check, every night): a file truncated in place is judged corrupted and stays
so; an empty root for one night marks nothing vanished, and the files come back with
their references, verdicts and histories; a file lost while missing or corrupted stays in
view, through crawls and prunes, until a person acknowledges it. The status_counts ledger
stays exact throughout (conftest's engine fixture)."""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

from pnfsmon.catalog.compare import _crawl_guard
from pnfsmon.crawler.ack import acknowledge, who
from pnfsmon.crawler.crawl import crawl
from pnfsmon.schema import config as configuration
from pnfsmon.schema.lease import Lease
from pnfsmon.schema.prune import prune
from pnfsmon.schema.sites import DEFAULT_MAX_CRAWL_DROP, Site
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import acknowledgements, crawls, events
from pnfsmon.tester.posix_read import PosixReader
from pnfsmon.tester.worker import CheckOptions, run
from pnfsmon.web.cli import format_summary, nagios_line
from pnfsmon.web.report import write_report
from pnfsmon.web.summary import summarize
from tests.helpers import flip_bit, pnfsmon, random_bytes, row, verdicts, write_file

DROP = DEFAULT_MAX_CRAWL_DROP


def nightly_crawl(engine, tree: Path, **kw):
    """The crawl as the CLI runs it: the default drop guard on."""
    return crawl(engine, os.fsencode(tree), "s", max_drop=kw.pop("max_drop", DROP), **kw)[1]


def check(engine, recheck_after: float = 0.0):
    """A check; recheck_after 0 reads every file again, a day only what is due. A corrupted
    verdict's second read comes at once (confirm_after 0): each check's verdicts are final."""
    return run(Lease(engine, lease_seconds=120), PosixReader(),
               CheckOptions(timeout=30, recheck_after=recheck_after, confirm_after=0.0))


def truncate_in_place(path: bytes, size: int) -> None:
    """Lose the end of a file behind everyone's back: the mtime put back as it was."""
    st = os.stat(path)
    os.truncate(path, size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def nagios(engine) -> tuple[int, str]:
    with engine.connect() as conn:
        return nagios_line(summarize(conn, sweep=False), 1, 100, 48 * 3600)


def history(engine, path: bytes) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            sa.select(events.c.checked, events.c.status, events.c.error)
            .where(events.c.file_id == row(engine, path).id).order_by(events.c.id))]


def test_a_file_truncated_in_place_is_corrupted_whichever_runs_first(engine, tree):
    files = [write_file(tree / f"f{i}.dat", random_bytes(20_000, i)) for i in range(6)]
    first, second, rewritten = files[:3]
    nightly_crawl(engine, tree)
    check(engine)  # no recorded checksums: the first check's values are the references
    reference = row(engine, first).recorded_adler32
    assert set(verdicts(engine).values()) == {Status.OK} and reference

    # Night 1, crawl then check: the crawl sees the new size and the same mtime.
    truncate_in_place(first, 5_000)
    write_file(rewritten, b"a new version")  # a real rewrite moves the mtime
    st = os.stat(rewritten)
    os.utime(rewritten, ns=(st.st_atime_ns, st.st_mtime_ns + 3_000_000_000))
    ingest = nightly_crawl(engine, tree)
    assert (ingest.counts.truncated, ingest.counts.changed) == (1, 1)
    r = row(engine, first)
    assert r.status == Status.CORRUPTED and r.problem_seen
    assert (r.size, r.recorded_adler32, r.recorded_from) == (20_000, reference, "first_check")
    assert "5,000 bytes" in r.error and "mtime unchanged" in r.error
    assert history(engine, first)[-1][1:] == (int(Status.CORRUPTED), r.error)
    assert row(engine, rewritten).status == Status.UNCHECKED  # judged afresh
    check(engine)
    assert verdicts(engine)[first] == Status.CORRUPTED
    assert verdicts(engine)[rewritten] == Status.OK

    # Night 2, a check before the crawl: the checker finds the other one; the crawl then
    # agrees, and neither crawl turns a verdict back.
    truncate_in_place(second, 100)
    check(engine)
    assert verdicts(engine)[second] == Status.CORRUPTED
    events_before = len(history(engine, first)) + len(history(engine, second))
    for _ in range(2):
        ingest = nightly_crawl(engine, tree)
        assert (ingest.counts.truncated, ingest.counts.changed) == (0, 0)
    assert len(history(engine, first)) + len(history(engine, second)) == events_before
    got = verdicts(engine)
    assert (got[first], got[second]) == (Status.CORRUPTED,) * 2
    assert (row(engine, second).size, row(engine, first).recorded_adler32) == (20_000,
                                                                               reference)
    code, line = nagios(engine)
    assert code == 1 and "corrupted 2" in line  # Nagios stays red

    # Restored as it was (same content, same mtime): the crawl has nothing to say, the
    # next check finds it sound.
    mtime = row(engine, second).mtime_ns
    write_file(second, random_bytes(20_000, 1))
    os.utime(second, ns=(mtime, mtime))
    ingest = nightly_crawl(engine, tree)
    assert (ingest.counts.truncated, ingest.counts.changed) == (0, 0)
    assert verdicts(engine)[second] == Status.CORRUPTED
    check(engine)
    assert verdicts(engine)[second] == Status.OK


def test_a_file_still_being_written_that_grows_in_the_same_mtime_is_not_judged(engine,
                                                                              tree):
    """Within the grace window a file may still be being written (a coarse mtime need not
    move with each write), and one listed empty may be an upload that outlasted it: their
    new sizes are taken, not judged. A file listed with content that shrinks is."""
    young = write_file(tree / "young.dat", b"x" * 100)
    upload = write_file(tree / "upload.dat", b"")
    old = write_file(tree / "old.dat", b"y" * 100)
    day_ago = os.stat(young).st_mtime_ns - 86400 * 10**9
    for path in (upload, old):
        os.utime(path, ns=(day_ago, day_ago))
    nightly_crawl(engine, tree, grace=3600.0)
    for path, size in ((young, 200), (upload, 200), (old, 50)):
        st = os.stat(path)
        os.truncate(path, size)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    ingest = nightly_crawl(engine, tree, grace=3600.0)
    assert (ingest.counts.truncated, ingest.counts.changed) == (1, 2)
    assert (row(engine, young).status, row(engine, young).size) == (Status.UNCHECKED, 200)
    assert (row(engine, upload).status, row(engine, upload).size) == (Status.UNCHECKED, 200)
    assert (row(engine, old).status, row(engine, old).size) == (Status.CORRUPTED, 100)


def test_an_empty_root_for_one_night_marks_nothing_vanished(engine, tree, tmp_path):
    files = [write_file(tree / f"d{i % 4}" / f"f{i}.dat", random_bytes(2_000, i))
             for i in range(40)]
    rotten = files[7]
    nightly_crawl(engine, tree)
    check(engine)
    flip_bit(rotten, 100)
    check(engine)
    before = {f: (row(engine, f).status, row(engine, f).recorded_adler32,
                  row(engine, f).checked) for f in files}
    assert before[rotten][0] == Status.CORRUPTED
    with engine.connect() as conn:
        n_events = conn.execute(sa.select(sa.func.count()).select_from(events)).scalar()

    # The automount did not come up: the mount point is an empty directory.
    away = tmp_path / "unmounted"
    tree.rename(away)
    tree.mkdir()
    ingest = nightly_crawl(engine, tree)
    assert ingest.drop is not None and ingest.drop.empty_root
    assert (ingest.drop.files, ingest.counts.vanished) == (40, 0)
    message = ingest.drop.describe(str(tree), "s")
    assert "40 of 40 files" in message and "--allow-drop" in message
    with engine.connect() as conn:
        last = conn.execute(sa.select(crawls).order_by(crawls.c.id.desc())).first()
    assert (last.complete, last.withheld, last.files) == (False, 40, 0)
    code, line = nagios(engine)
    assert "s: last crawl refused to mark 40 files vanished" in line
    with engine.connect() as conn:  # nor does the catalog comparison trust it
        assert "refused to mark 40 files vanished" in _crawl_guard(conn, Site("s"))[1]

    # The mount is back: nothing changed, nothing to read again.
    tree.rmdir()
    away.rename(tree)
    ingest = nightly_crawl(engine, tree)
    assert ingest.drop is None
    assert (ingest.counts.new, ingest.counts.changed, ingest.counts.vanished) == (0, 0, 0)
    assert {f: (row(engine, f).status, row(engine, f).recorded_adler32,
                row(engine, f).checked) for f in files} == before

    # A part of the site gone at once, beyond max_crawl_drop: refused too, without the
    # empty root; with --allow-drop (no limit) it is marked.
    for f in files[:8]:
        os.unlink(f)
    ingest = nightly_crawl(engine, tree)
    assert ingest.drop is not None and not ingest.drop.empty_root
    assert ingest.counts.vanished == 0 and Status.VANISHED not in verdicts(engine).values()
    ingest = nightly_crawl(engine, tree, max_drop=None)
    assert (ingest.counts.vanished, ingest.counts.lost) == (8, 1)  # the rotten one is lost
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar() == \
            n_events


def test_files_that_come_back_keep_their_reference_verdict_and_history(engine, tree,
                                                                        tmp_path):
    files = [write_file(tree / f"f{i}.dat", random_bytes(3_000, i)) for i in range(10)]
    rotten = files[2]
    nightly_crawl(engine, tree)
    check(engine)
    flip_bit(rotten, 10)
    check(engine)
    before = {f: (row(engine, f).status, row(engine, f).recorded_adler32,
                  row(engine, f).recorded_from, history(engine, f)) for f in files}
    away = tmp_path / "away"
    tree.rename(away)
    tree.mkdir()
    ingest = nightly_crawl(engine, tree, max_drop=None)  # someone said --allow-drop
    assert (ingest.counts.vanished, ingest.counts.lost) == (10, 1)
    assert verdicts(engine)[rotten] == Status.LOST
    tree.rmdir()
    away.rename(tree)
    ingest = nightly_crawl(engine, tree)
    assert (ingest.counts.returned, ingest.counts.changed, ingest.counts.new) == (10, 0, 0)
    assert {f: (row(engine, f).status, row(engine, f).recorded_adler32,
                row(engine, f).recorded_from, history(engine, f)) for f in files} == before
    # The sound ones are not read again before their cycle comes round; the corrupted one
    # is checked at once, and still corrupted.
    tally = check(engine, recheck_after=86400.0)
    assert tally.checked == 1
    assert verdicts(engine)[rotten] == Status.CORRUPTED
    assert len(history(engine, rotten)) == len(before[rotten][3]) + 1


def test_the_drop_limit_is_set_globally_and_per_site(tmp_path, monkeypatch):
    config = tmp_path / "pnfsmon.conf"
    config.write_text("[pnfsmon]\nmax_crawl_drop = 0.5\n\n[site A]\nmax_crawl_drop = 0.01\n"
                      "\n[site B]\ngrace = 1\n")
    monkeypatch.setenv("PNFSMON_CONFIG", str(config))
    settings = configuration.load()
    assert settings.site("A").max_crawl_drop == 0.01
    assert settings.site("B").max_crawl_drop == 0.5
    assert settings.site("unnamed").max_crawl_drop == 0.5
    monkeypatch.delenv("PNFSMON_CONFIG")
    monkeypatch.chdir(tmp_path / "..")  # no pnfsmon.conf here, nor in the test's HOME
    assert configuration.load().site("unnamed").max_crawl_drop == DROP == 0.10


def test_the_cli_refuses_an_empty_night_in_one_line(db_url, engine, tree, tmp_path):
    for i in range(5):
        write_file(tree / f"f{i}", b"%d" % i)
    r = pnfsmon("crawl", str(tree), "--site", "s", env={"PNFSMON_DB": db_url})
    assert r.returncode == 0, r.stderr
    away = tmp_path / "away"
    tree.rename(away)
    tree.mkdir()
    r = pnfsmon("crawl", str(tree), "--site", "s", env={"PNFSMON_DB": db_url})
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "refused to mark 5 of 5 files vanished" in r.stderr
    assert "--allow-drop" in r.stderr and "Traceback" not in r.stderr
    assert set(verdicts(engine).values()) == {Status.UNCHECKED}
    r = pnfsmon("crawl", str(tree), "--site", "s", "--allow-drop", env={"PNFSMON_DB": db_url})
    assert r.returncode == 0 and "vanished 5" in r.stdout, r.stderr
    assert set(verdicts(engine).values()) == {Status.VANISHED}


def test_a_lost_file_stays_in_view_until_acknowledged(db_url, engine, tree, tmp_path):
    files = [write_file(tree / f"f{i:02d}.dat", random_bytes(1_000, i)) for i in range(40)]
    missing, rotten, deleted, back = files[:4]
    nightly_crawl(engine, tree)
    check(engine)
    # Gone between the crawl and the check: missing. Rotten, then deleted by someone.
    os.unlink(missing)
    os.unlink(back)
    flip_bit(rotten, 1)
    check(engine)
    got = verdicts(engine)
    assert (got[missing], got[rotten], got[back]) == (Status.MISSING, Status.CORRUPTED,
                                                      Status.MISSING)
    os.unlink(rotten)
    os.unlink(deleted)  # sound when it went: deleted on purpose, as far as we know

    for _ in range(2):  # two crawls: it stays lost
        nightly_crawl(engine, tree)
        got = verdicts(engine)
        assert (got[missing], got[rotten], got[back], got[deleted]) == (
            Status.LOST, Status.LOST, Status.LOST, Status.VANISHED)
    code, line = nagios(engine)
    assert code == 1 and "lost 3" in line
    with engine.connect() as conn:
        text = format_summary(summarize(conn, sweep=False))
    assert "3 files of s are lost" in text and "pnfsmon ack" in text
    r = pnfsmon("status", env={"PNFSMON_DB": db_url})
    assert r.returncode == 1 and "lost" in r.stdout
    prune(engine, events_days=None, vanished_days=0, now=2e9)  # lost files are not pruned
    assert set(verdicts(engine)) == set(files) - {deleted}
    write_report(engine, tmp_path / "report")
    lost_txt = (tmp_path / "report" / "lost.txt").read_text().splitlines()
    assert sorted(lost_txt) == sorted(os.fsdecode(p) for p in (missing, rotten, back))
    assert "f00.dat" in (tmp_path / "report" / "lost.html").read_text()

    # It comes back as it was (restored from a copy, same size and mtime): no longer lost,
    # checked at once, and sound.
    st = os.stat(files[10])
    write_file(back, random_bytes(1_000, 3))
    os.utime(back, ns=(st.st_atime_ns, row(engine, back).mtime_ns))
    ingest = nightly_crawl(engine, tree)
    assert ingest.counts.returned == 1 and verdicts(engine)[back] == Status.MISSING
    check(engine, recheck_after=86400.0)
    assert verdicts(engine)[back] == Status.OK

    # A person acknowledges one by name (and names one that is not lost), then the rest.
    r = pnfsmon("ack", os.fsdecode(missing), str(tree / "f20.dat"), env={"PNFSMON_DB": db_url})
    assert r.returncode == 1, r.stderr
    assert "acknowledged 1 lost files" in r.stdout and "not lost files" in r.stderr
    r = pnfsmon("ack", "--all", env={"PNFSMON_DB": db_url})
    assert r.returncode == 2 and "--all needs --site" in r.stderr
    done = acknowledge(engine, site="s", everything=True, by="alice")
    assert done.files == 1
    got = verdicts(engine)
    assert (got[missing], got[rotten]) == (Status.VANISHED,) * 2
    with engine.connect() as conn:
        acks = {bytes(a.path): a for a in conn.execute(sa.select(acknowledgements))}
    assert set(acks) == {missing, rotten}
    assert (acks[missing].acked_by, acks[missing].status) == (who(), int(Status.MISSING))
    assert (acks[rotten].acked_by, acks[rotten].status) == ("alice", int(Status.CORRUPTED))
    assert acks[missing].acked_at > 0 and acks[rotten].size == 1_000
    r = pnfsmon("history", os.fsdecode(missing), env={"PNFSMON_DB": db_url})
    assert f"lost (missing), acknowledged by {who()} at" in r.stdout, r.stderr
    code, line = nagios(engine)
    assert code == 0 and "lost 0" in line
    # Acknowledged, it is pruned like any vanished file; its acknowledgement stays.
    prune(engine, events_days=None, vanished_days=0, now=2e9)
    assert missing not in verdicts(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(acknowledgements)
                            ).scalar() == 2
