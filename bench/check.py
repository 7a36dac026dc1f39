"""Check throughput on many small files: ``pnfsmon check --workers W`` over N files of 4 KiB
recorded in a fresh MariaDB database, against ``cat`` reading the same files (via
``find -exec cat {} +``) in the same run.

    python bench/check.py [--files 20000] [--workers 4]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PNFSMON, build_flat_tree, fresh_mariadb, pnfsmon_env  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pnfsmon-bench-check-"))
    try:
        root = work / "tree"
        build_flat_tree(root, args.files, size=4096)
        started = time.perf_counter()
        subprocess.run(f"find {root} -type f -exec cat {{}} + > /dev/null", shell=True,
                       check=True)
        cat_s = time.perf_counter() - started
        with fresh_mariadb() as url:
            env = pnfsmon_env(url, crawl_root=root)
            started = time.perf_counter()
            out = subprocess.run([PNFSMON, "check", "--workers", str(args.workers)],
                                 env=env, check=True, capture_output=True, text=True)
            check_s = time.perf_counter() - started
        print(out.stdout.strip())
        print(f"cat: {args.files / cat_s:,.0f} files/s | pnfsmon check ({args.workers} "
              f"workers, MariaDB): {args.files / check_s:,.0f} files/s end to end "
              f"({cat_s / check_s:.3f} of cat)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
