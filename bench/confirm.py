"""What confirming corrupted verdicts costs a claim: every claim first looks for second reads
that are due (``ix_statuses_confirm_due``). Time one claim of 100 rows (then its release)
in one MariaDB table of ``--rows`` files (half leased by other workers, a quarter due, a
quarter checked recently) holding ``--pending`` unconfirmed corruptions whose second read
is not due yet: with that look (``confirm=True``, what workers do) and without it (the
claim as it was before, the baseline), alternately in the same run. Prints both medians
and their ratio (~1.0: the look costs nothing that matters).

    python bench/confirm.py [--rows 1000000] [--pending 10000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from claim import fill  # noqa: E402
from common import fresh_mariadb  # noqa: E402

from pnfsmon.schema import db, migrate  # noqa: E402
from pnfsmon.schema.config import Settings  # noqa: E402
from pnfsmon.schema.lease import Lease  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--pending", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=100)
    args = ap.parse_args()
    with fresh_mariadb() as url:
        engine = db.create_engine(Settings(url))
        migrate.upgrade(engine)
        now = time.time()
        fill(engine, args.rows, now)
        with engine.begin() as conn:  # recently checked rows become unconfirmed, not due
            conn.exec_driver_sql(
                "UPDATE statuses SET status = 2, confirm_due = %s, claim_key = NULL "
                "WHERE tag IS NULL AND claim_key > %s LIMIT %s",
                (now + 3600, now - 86400, args.pending))
            conn.exec_driver_sql("ANALYZE TABLE statuses")
        lease = Lease(engine, lease_seconds=600, owner="bench")
        due_before = now - 30 * 86400
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeat):
            for confirm in (False, True):
                started = time.perf_counter()
                got = lease.claim(100, due_before=due_before, confirm=confirm)
                times[confirm].append(time.perf_counter() - started)
                assert len(got) == 100
                lease.release(c.id for c in got)
        engine.dispose()
    base, with_look = (statistics.median(times[c]) for c in (False, True))
    print(f"{args.rows:,} rows, {args.pending:,} unconfirmed not due: claim of 100 takes "
          f"{base * 1000:.2f} ms without the look for second reads, {with_look * 1000:.2f} ms "
          f"with it (medians of {args.repeat}); ratio {with_look / base:.2f}")


if __name__ == "__main__":
    main()
