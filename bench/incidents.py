"""What looking for bursts costs after each check run and before each declare: a fresh
MariaDB database with FILES files, each checked once within the last week (the detection's
look-back), one in a thousand a problem spread over 50 pools, and one burst of 500
corrupted files on one pool. Times the first detection (opens the incident), a second one
(nothing new: the steady state after every check run) and, as the baseline in the same run,
a plain count of the week's checks through the same index.

    python bench/incidents.py [--files 1000000]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fresh_mariadb  # noqa: E402

from pnfsmon.schema import db, incidents, migrate  # noqa: E402
from pnfsmon.schema.config import IncidentRule, Settings  # noqa: E402

POOLS = 50
BURST = 500


def fill(engine: sa.Engine, files: int, now: float) -> None:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        batch = 10_000
        for start in range(0, files, batch):
            rows, checks = [], []
            for i in range(start, min(start + batch, files)):
                path = f"/store/data/d{i // 1000:05d}/f{i:08d}.root".encode()
                h = hashlib.blake2b(path, digest_size=16).hexdigest()
                pool = f"pool{i % POOLS:02d}"
                checked = now - 6 * 86400 + (i * 5 * 86400) / files
                burst = i >= files - BURST * POOLS and i % POOLS == 0  # one pool, lately
                # one in a thousand, scattered over pools and nodes
                scattered = (i * 2654435761) % 2**32 % 1000 == 7
                status = 2 if burst or scattered else 1
                if burst:
                    checked = now - 600 + i % 300
                rows.append(f"({i + 1},'s',X'{path.hex()}',X'{h}',1,1,{status},{checked},"
                            f"'{pool}',1)")
                checks.append(f"({i + 1},{checked},'wn{i // 7 % 20:02d}',1.0,'{pool}',1,1,"
                              f"{status})")
            cur.execute("INSERT INTO statuses (id, site, path, path_hash, size, mtime_ns, "
                        "status, checked, pool, crawl_gen) VALUES " + ",".join(rows))
            cur.execute("INSERT INTO events (file_id, checked, worker_node, seconds, "
                        "source_pool, size, bytes_read, status) VALUES " + ",".join(checks))
        raw.commit()
        cur.execute("ANALYZE TABLE statuses, events")
    finally:
        raw.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    args = parser.parse_args()
    # The burst is 500 files out of the pool's share of the last checks: enough to pass
    # the default rule (20 files, 5 %) on its pool's day.
    rule = IncidentRule()
    with fresh_mariadb() as url:
        engine = db.create_engine(Settings(url))
        migrate.upgrade(engine)
        now = time.time()
        fill(engine, args.files, now)
        since = now - incidents.LOOKBACK
        timings = {}
        for name, work in (
            ("baseline: count the week's checks", lambda: _count(engine, since)),
            ("first detection (opens the incident)", lambda: incidents.detect(engine, rule,
                                                                               now)),
            ("second detection (nothing new)", lambda: incidents.detect(engine, rule, now)),
        ):
            started = time.perf_counter()
            result = work()
            timings[name] = time.perf_counter() - started
            print(f"{name}: {timings[name]:.2f} s ({_say(result)})")
        base = timings["baseline: count the week's checks"]
        for name, seconds in timings.items():
            print(f"  {name}: {seconds / base:.2f} x the baseline")
        engine.dispose()


def _count(engine: sa.Engine, since: float) -> int:
    from pnfsmon.schema.tables import events

    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(events.c.checked >= since)
                            ).scalar()


def _say(result) -> str:
    if isinstance(result, int):
        return f"{result:,} checks"
    return (f"{len(result.opened)} opened: "
            + ", ".join(f"{i.where} {i.problems}/{i.checks}" for i in result.opened)
            + f"; {result.joined} joined")


if __name__ == "__main__":
    main()
