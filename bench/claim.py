"""Claim cost must not grow with the table nor with the number of leased rows: time one
claim of 100 rows (then its release) in a fresh MariaDB table of 10,000 rows and of
1,000,000 rows, half of them leased by other workers, with due and recently checked rows
mixed in. Prints the median claim time at both sizes and their ratio (~1.0 is flat).

    python bench/claim.py [--small 10000] [--large 1000000]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fresh_mariadb  # noqa: E402

from pnfsmon.schema import db, migrate  # noqa: E402
from pnfsmon.schema.config import Settings  # noqa: E402
from pnfsmon.schema.lease import Lease  # noqa: E402


def fill(engine: sa.Engine, rows: int, now: float) -> None:
    """Half leased (claim_key NULL, lease in the future), a quarter due (for ten days), a
    quarter checked recently (due in 30 days: claim_key is the time a file is due)."""
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        batch = 10_000
        for start in range(0, rows, batch):
            values = []
            for i in range(start, min(start + batch, rows)):
                path = f"/store/data/d{i // 1000:05d}/f{i:08d}.root".encode()
                h = hashlib.blake2b(path, digest_size=16).hexdigest()
                if i % 2 == 0:
                    lease = f"NULL,'other:{i % 97}',{now + 3600}"
                elif i % 4 == 1:
                    lease = f"{now - 10 * 86400 + i},NULL,NULL"
                else:
                    lease = f"{now + 30 * 86400 - 3600 + i % 1000},NULL,NULL"
                values.append(f"('s',X'{path.hex()}',X'{h}',1,1,1,{lease},1)")
            cur.execute("INSERT INTO statuses (site, path, path_hash, size, mtime_ns, status, "
                        "claim_key, tag, tag_expiry, crawl_gen) VALUES " + ",".join(values))
        raw.commit()
        cur.execute("ANALYZE TABLE statuses")
    finally:
        raw.close()


def median_claim(url: str, rows: int, repeat: int) -> float:
    engine = db.create_engine(Settings(url))
    migrate.upgrade(engine)
    now = time.time()
    fill(engine, rows, now)
    lease = Lease(engine, lease_seconds=600, owner="bench")
    due_before = now
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        got = lease.claim(100, due_before=due_before)
        times.append(time.perf_counter() - started)
        assert len(got) == 100
        lease.release(c.id for c in got)
    engine.dispose()
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--large", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    result = {}
    for rows in (args.small, args.large):
        with fresh_mariadb() as url:
            result[rows] = median_claim(url, rows, args.repeat)
        print(f"{rows:>10,} rows (half leased): claim of 100 takes {result[rows] * 1000:.2f} ms "
              "(median)")
    print(f"ratio large/small: {result[args.large] / result[args.small]:.2f} (flat is ~1.0)")


if __name__ == "__main__":
    main()
