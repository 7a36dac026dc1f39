"""The nightly re-crawl of a dCache mount, incremental against full: ``pnfsmon crawl
--namespace chimera`` of the FUSE emulator of a mount (``tests/dcache_fuse.py``; 20,000
files in 200 directories, every call delayed 1 ms) into MariaDB, after 2% of the
directories changed (files added, deleted, renamed) and an upload that was still being
written at the first crawl completed in a directory whose mtime did not move.

Two databases get the same first crawl; after the changes one is re-crawled incrementally
(the default for a dCache mount), the other with ``--full``, on the same mount in the same
run. Target: the incremental re-crawl at least 10 times faster. Its new/changed/vanished
counts must be the exact ones, and both databases must hold identical ``statuses`` rows
(the completed upload changed, with its checksum): the benchmark stops with an error
otherwise.

From the calls the emulator counted in each re-crawl (per directory stat'ed, per file
listed), a projection of a nightly incremental re-crawl of 10 million files in 10,000
directories, 2% of them changed, at 1 and 5 ms a call with 32 calls in flight. The
database's part (carrying the unchanged directories' files over, then the vanish step's
anti-join) is measured on its own at ``DB_FILES`` rows in 1,000-file directories (built by
the server) and scaled to 10 million.

    python3 bench/incremental.py [--mount-only]   (as root: it mounts FUSE; needs MariaDB)

``--mount-only`` leaves out the database's part of the projection (a minute or two).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from common import PNFSMON, fresh_mariadb, pnfsmon_env, recount_ledger, rows, start_up  # noqa: E402
from dcache_fuse import Changes, DcacheMount, available  # noqa: E402

GROUPS, DIRS, FILES = 10, 20, 100  # 20,000 files in 200 directories
CHANGED = 4  # directories changed: 2%
DELAY = 0.001
IN_FLIGHT = 32  # the crawl's default on a FUSE or NFS mount
PROJECTED_FILES, PROJECTED_DIRS, PROJECTED_CHANGED = 10_000_000, 10_000, 0.02
UPLOAD = b"group9/d019/upload.root"  # being written at the first crawl; its dir unchanged


def build(backing: Path) -> Changes:
    changes = Changes(backing)
    for g in range(GROUPS):
        for d in range(DIRS):
            directory = backing / f"group{g}" / f"d{d:03d}"
            directory.mkdir(parents=True)
            for f in range(FILES - (g == 9 and d == 19)):
                (directory / f"f{f:03d}.root").write_bytes(os.urandom(64 + f))
    changes.start_writing(UPLOAD, b"partial")
    return changes


def change(changes: Changes) -> dict[str, int]:
    """2% of the directories changed: in each, 2 files added, 1 deleted, 1 renamed. The
    upload completes. Returns the counts the re-crawl must report."""
    for g in range(CHANGED):
        d = f"group{g}/d000".encode()
        changes.add(d + b"/added1.root", os.urandom(100))
        changes.add(d + b"/added2.root", os.urandom(100))
        changes.delete(d + b"/f000.root")
        changes.rename(d + b"/f001.root", d + b"/renamed.root")
    changes.complete(UPLOAD, os.urandom(5000))
    return {"new": CHANGED * 3, "changed": 1, "vanished": CHANGED * 2}


def crawl(root: Path, env: dict, *extra: str) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run([PNFSMON, "crawl", str(root), "--namespace", "chimera",
                          "--grace", "0", *extra], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        sys.exit(f"crawl failed: {out.stdout}{out.stderr[-2000:]}")
    return seconds, out.stdout


def counts(summary: str) -> dict[str, int]:
    return {k: int(re.search(rf"{k} ([0-9,]+)", summary).group(1).replace(",", ""))
            for k in ("new", "changed", "vanished")}


DB_FILES = 1_000_000
DB_ROOT = b"/pnfs/example.org/data/cms/store/mc/Campaign/Dataset/AODSIM"


def database_side(files: int) -> tuple[float, float]:
    """Seconds to carry ``files`` files over (all their directories unchanged) and to run
    the vanish step after it, in MariaDB, in process."""
    from pnfsmon.crawler.ingest import Ingest
    from pnfsmon.schema import db
    from pnfsmon.schema.config import Settings
    from pnfsmon.schema.paths import path_hash
    from pnfsmon.schema.tables import crawls

    per_dir = 1000
    dirs = [DB_ROOT + b"/%06d" % n for n in range(files // per_dir)]
    with fresh_mariadb() as url:
        pnfsmon_env(url)
        engine = db.create_engine(Settings(url))
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE bench_dirs (n INT PRIMARY KEY, "
                                 "p VARBINARY(255), h VARBINARY(16))")
            conn.exec_driver_sql(
                "INSERT INTO bench_dirs VALUES " + ",".join(
                    f"({n},X'{d.hex()}',X'{path_hash(d).hex()}')"
                    for n, d in enumerate(dirs)))
            conn.execute(crawls.insert().values(
                id=1, site="s", root=DB_ROOT, started=0, finished=1, complete=True,
                kind="full", files=files))
        for lo in range(0, files, 100_000):
            with engine.begin() as conn:
                conn.exec_driver_sql(f"""
                    INSERT INTO statuses (site, path, path_hash, size, mtime_ns,
                        recorded_adler32, recorded_from, reference, status, claim_key,
                        crawl_gen, dir_hash)
                    SELECT 's', q, UNHEX(MD5(q)), 1000 + seq, 1600000000000000000 + seq,
                        LPAD(HEX(seq), 8, '0'), 'chimera', 1, 0, 0, 1, h
                    FROM (SELECT seq, CONCAT(d.p, '/file_', seq, '.root') AS q, d.h
                          FROM seq_{lo}_to_{lo + 99_999}
                          JOIN bench_dirs d ON d.n = seq DIV {per_dir}) AS generated""")
        recount_ledger(engine)
        ingest = Ingest(engine, "s", DB_ROOT)
        started = time.perf_counter()
        carried, _ = ingest.carry_over(dirs)
        carry = time.perf_counter() - started
        started = time.perf_counter()
        ingest.mark_vanished([], listed=carried, max_drop=0.1)
        vanish = time.perf_counter() - started
        if carried != files or ingest.counts.vanished:
            sys.exit(f"carried {carried:,} of {files:,}, vanished {ingest.counts.vanished}")
        ingest.abandon()
        engine.dispose()
    return carry, vanish


def main() -> None:
    why = available()
    if why:
        sys.exit(f"cannot run: {why}")
    with tempfile.TemporaryDirectory(prefix="pnfsmon-bench-incr-") as tmp, \
            fresh_mariadb() as url_inc, fresh_mariadb() as url_full:
        base = Path(tmp)
        changes = build(base / "backing")
        n = GROUPS * DIRS * FILES
        envs = {"inc": pnfsmon_env(url_inc), "full": pnfsmon_env(url_full)}
        with DcacheMount(base / "backing", base / "mnt", delay=DELAY,
                         writing=changes.writing) as mount:
            first, _ = crawl(mount.root, envs["inc"])
            crawl(mount.root, envs["full"])
        expected = change(changes)
        with DcacheMount(base / "backing", base / "mnt", delay=DELAY,
                         writing=changes.writing) as mount:
            mount.reset_counts()
            inc, inc_out = crawl(mount.root, envs["inc"])
            inc_calls = mount.calls
            mount.reset_counts()
            full, full_out = crawl(mount.root, envs["full"], "--full")
            full_calls = mount.calls
        start = start_up(envs["inc"])
        if "incremental crawl" not in inc_out or "full crawl (--full)" not in full_out:
            sys.exit(f"not the crawls meant: {inc_out}{full_out}")
        for name, out in (("incremental", inc_out), ("full", full_out)):
            if counts(out) != expected:
                sys.exit(f"{name} re-crawl counted {counts(out)}, not {expected}: {out}")
        got, want = rows(url_inc), rows(url_full)
        if got != want:
            differ = [p for p in set(got) | set(want) if got.get(p) != want.get(p)]
            sys.exit(f"rows differ between the re-crawls: {differ[:5]}")
        upload = next(v for p, v in got.items() if p.endswith(UPLOAD))
        if upload["size"] != 5000 or upload["recorded_adler32"] is None:
            sys.exit(f"the completed upload is not recorded complete: {upload}")
        listed = int(re.search(r"([0-9,]+) directories listed", inc_out).group(1))
        skipped = int(re.search(r"([0-9,]+) skipped as unchanged", inc_out).group(1))
        listed_files = listed * FILES
        # Calls per file (listing, lstat, lookups, the dot-commands) from the full crawl;
        # what the incremental crawl made beyond its listed files, per known directory.
        per_file = full_calls / n
        per_dir = max(inc_calls - per_file * listed_files, 0) / (listed + skipped)
        print(f"{n:,} files in {GROUPS * DIRS} directories, {DELAY * 1000:g} ms a call, "
              f"{CHANGED} directories changed and an upload completed:")
        print(f"  first crawl            {first:6.1f} s ({n / first:,.0f} files/s)")
        print(f"  full re-crawl (--full) {full:6.1f} s, {full_calls:,} calls "
              f"({per_file:.1f} a file); {full_out.split(';')[-1].strip()}")
        print(f"  incremental re-crawl   {inc:6.1f} s, {inc_calls:,} calls: {listed} "
              f"directories listed, {skipped} skipped; **{full / inc:.1f}x** faster "
              "(target >= 10x)")
        print(f"  without the {start:.1f} s each spends starting (`pnfsmon --help`): "
              f"{full - start:.1f} s and {inc - start:.1f} s, "
              f"**{(full - start) / (inc - start):.1f}x**; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"  both: {expected}, rows identical ({len(got):,}), the completed upload "
              f"{upload['size']:,} bytes with checksum {upload['recorded_adler32']}")
        changed_dirs = PROJECTED_DIRS * PROJECTED_CHANGED
        calls = (per_dir * PROJECTED_DIRS
                 + per_file * changed_dirs * PROJECTED_FILES / PROJECTED_DIRS)
        print(f"projection, {PROJECTED_FILES:,} files in {PROJECTED_DIRS:,} directories, "
              f"{PROJECTED_CHANGED:.0%} changed: {calls:,.0f} calls "
              f"({per_dir:.1f} per directory stat'ed, {per_file:.1f} per file listed)")
    if "--mount-only" in sys.argv[1:]:
        return
    carry, vanish = database_side(DB_FILES)
    scale = PROJECTED_FILES / DB_FILES
    database = (carry + vanish) * scale
    print(f"  the database, {DB_FILES:,} files carried over: {carry:.1f} s "
          f"({DB_FILES / carry:,.0f} files/s), then the vanish step {vanish:.1f} s; "
          f"x{scale:g}: {database / 60:.1f} min")
    for delay in (0.001, 0.005):
        seconds = calls * delay / IN_FLIGHT
        full_seconds = per_file * PROJECTED_FILES * delay / IN_FLIGHT
        print(f"  {delay * 1000:g} ms a call, {IN_FLIGHT} in flight: incremental "
              f"{seconds / 60:.1f} min on the mount + {database / 60:.1f} min in the "
              f"database = **{(seconds + database) / 60:.1f} min** (target at 1 ms: < 15); "
              f"a full crawl {full_seconds / 3600:.1f} h on the mount")


if __name__ == "__main__":
    main()
