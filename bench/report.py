"""The whole static report on a large table: 1,000,000 files (100,000 of them problems) and
2,000,000 events in MariaDB. Targets: at most 30 s and 500 MB peak memory.

Baseline in the same run: the ``mysql`` client streaming the rows the report reads (the
problem rows in their three orders, the problem files' events, and the calibration
GROUP BYs) to /dev/null, i.e. what the database alone costs.

The tables (~630 MB) do not fit MariaDB's default 128 MB buffer pool, and the report's
random reads (problem rows, their checks) then come from outside it. The report is timed at
the server's setting and, if that is smaller, again with a 1 GiB pool (``SET GLOBAL
innodb_buffer_pool_size``, needs root; the setting is restored afterwards)."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from common import (
    PNFSMON,
    buffer_pool,
    fresh_mariadb,
    insert_finished_crawl,
    insert_rows,
    peak_rss_kib,
    pnfsmon_env,
    recount_ledger,
)

FILES = 1_000_000
PROBLEMS = {3: 40_000, 2: 30_000, 4: 20_000, 5: 10_000}  # missing, corrupted, timeout, unr.
EVENTS = 2_000_000
BATCH = 10_000
DAY = 86400.0


def populate(url: str) -> None:
    rng = random.Random(2006)
    now = time.time()
    engine = sa.create_engine(url)
    statuses = [1] * FILES
    position = 0
    for code, n in PROBLEMS.items():
        statuses[position:position + n] = [code] * n
        position += n
    rng.shuffle(statuses)
    insert_finished_crawl(engine, "T1_XX", b"/pnfs/xx/data", FILES, now - 3600)
    for start in range(0, FILES, BATCH):
        values = []
        for i in range(start, min(start + BATCH, FILES)):
            path = f"/pnfs/xx/data/run{i // 100_000}/d{i // 1000:04d}/f{i:07d}.root".encode()
            status = statuses[i]
            checked = now - rng.random() * 30 * DAY
            error = "'adler32 00000001, recorded 00000002'" if status == 2 else "NULL"
            computed = "'0000abce'" if status == 2 else "NULL"
            values.append(
                f"({i + 1},'T1_XX',X'{path.hex()}',"
                f"X'{hashlib.blake2b(path, digest_size=16).hexdigest()}',"
                f"{rng.randrange(1, 4 << 30)},{int(now * 1e9)},'0000abcd','pnfs',"
                f"{computed},{status},{checked},{checked + 30 * DAY},"
                f"'wn{i % 20:02d}','pool{i % 50:02d}',{error},1)")
        insert_rows(engine, "INSERT INTO statuses (id, site, path, path_hash, size, mtime_ns,"
                    " recorded_adler32, recorded_from, computed_adler32, status, checked,"
                    " claim_key, worker_node, pool, error, crawl_gen) VALUES", values)
    for _ in range(0, EVENTS, BATCH):
        values = []
        for _row in range(BATCH):
            file_id = rng.randrange(1, FILES + 1)
            status = statuses[file_id - 1] if rng.random() < 0.5 else 1
            seconds = rng.uniform(0.5, 30)
            values.append(f"({file_id},{now - rng.random() * 60 * DAY},'wn{file_id % 20:02d}',"
                          f"{seconds},'pool{file_id % 50:02d}',{int(seconds * 80e6)},"
                          f"{int(seconds * 80e6)},{status})")
        insert_rows(engine, "INSERT INTO events (file_id, checked, worker_node, seconds,"
                    " source_pool, size, bytes_read, status) VALUES", values)
    recount_ledger(engine)
    engine.dispose()


def baseline(database: str) -> float:
    queries = [
        "SELECT * FROM statuses WHERE status IN (2,3,4,5) ORDER BY site, path",
        "SELECT * FROM statuses WHERE status IN (2,3,4,5) ORDER BY size DESC, id",
        "SELECT * FROM statuses WHERE status IN (2,3,4,5) ORDER BY checked DESC, id",
        "SELECT e.* FROM statuses s JOIN events e ON e.file_id = s.id"
        " WHERE s.status IN (2,3,4,5) ORDER BY s.id, e.checked DESC",
        "SELECT source_pool, count(*), sum(bytes_read), sum(seconds) FROM events"
        " GROUP BY source_pool",
        "SELECT worker_node, count(*), sum(bytes_read), sum(seconds) FROM events"
        " GROUP BY worker_node",
    ]
    started = time.perf_counter()
    for query in queries:
        subprocess.run(["mysql", "-h", "127.0.0.1", "-u", "root", "--quick", "-N", database,
                        "-e", query], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def timed_report(env: dict, out: Path) -> tuple[float, int]:
    timings = [peak_rss_kib([PNFSMON, "report", str(out)], env=env) for _ in range(2)]
    return min(t for t, _ in timings), max(m for _, m in timings)  # warm, peak


def main() -> None:
    with fresh_mariadb() as url, tempfile.TemporaryDirectory(prefix="pnfsmon-report-") as tmp:
        env = pnfsmon_env(url)
        started = time.perf_counter()
        populate(url)
        print(f"populated {FILES:,} files ({sum(PROBLEMS.values()):,} problems) and "
              f"{EVENTS:,} events in {time.perf_counter() - started:.0f} s")
        engine = sa.create_engine(url)
        original = buffer_pool(engine)
        base = baseline(url.rsplit("/", 1)[1])
        print(f"mysql client streaming the same rows: {base:6.1f} s "
              f"(buffer pool {original >> 20} MiB)")
        out = Path(tmp) / "report"
        sizes = [original] + ([1 << 30] if original < 1 << 30 else [])
        try:
            for size in sizes:
                pool = buffer_pool(engine, size if size != original else None)
                seconds, rss_kib = timed_report(env, out)
                print(f"pnfsmon report, buffer pool {pool >> 20:5} MiB: {seconds:6.1f} s "
                      f"(target <= 30 s; {seconds / base:.2f} of the baseline), peak memory "
                      f"{rss_kib / 1024:.0f} MB (target <= 500 MB)")
        finally:
            buffer_pool(engine, original)
            engine.dispose()
        files = [p for p in out.rglob("*") if p.is_file()]
        pages = [p for p in files if p.suffix == ".html"]
        biggest = max(pages, key=lambda p: p.stat().st_size)
        print(f"{len(files):,} files, {len(pages):,} HTML pages, "
              f"{sum(p.stat().st_size for p in files) / 1e6:.0f} MB; largest page "
              f"{biggest.name} {biggest.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    sys.exit(main())
