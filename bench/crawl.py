"""Crawl speed and memory: ``pnfsmon crawl`` of N empty files into a fresh MariaDB database,
against ``find ROOT -type f -printf '%s %p\\n'`` on the same tree in the same run; and peak
memory at two tree sizes (it must not grow with the tree).

    python bench/crawl.py [--files 200000] [--small 50000]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build_flat_tree, fresh_mariadb, peak_rss_kib, pnfsmon_env  # noqa: E402


def crawl_once(root: Path) -> tuple[float, int]:
    with fresh_mariadb() as url:
        return peak_rss_kib(["pnfsmon", "crawl", str(root)], env=pnfsmon_env(url))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=200_000)
    ap.add_argument("--small", type=int, default=50_000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pnfsmon-bench-crawl-"))
    try:
        results = {}
        for n in (args.small, args.files):
            root = work / f"tree{n}"
            build_flat_tree(root, n)
            # Warm the dentry cache the same way for both contenders.
            find = ["find", str(root), "-type", "f", "-printf", "%s %p\n"]
            subprocess.run(find, stdout=subprocess.DEVNULL, check=True)
            find_s, _ = peak_rss_kib(find)
            crawl_s, rss = crawl_once(root)
            results[n] = (find_s, crawl_s, rss)
            print(f"{n:>9,} files: find {n / find_s:>10,.0f} files/s | pnfsmon crawl "
                  f"{n / crawl_s:>9,.0f} files/s (ratio {find_s / crawl_s:.3f} of find) | "
                  f"peak RSS {rss / 1024:.1f} MiB")
            shutil.rmtree(root)
        small_rss, big_rss = results[args.small][2], results[args.files][2]
        print(f"peak RSS {args.files:,} vs {args.small:,} files: {big_rss / small_rss:.2f}x "
              "(flat memory is ~1.0)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
