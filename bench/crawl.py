"""Crawl speed and memory, end to end (``pnfsmon crawl`` as a process, into a fresh
MariaDB database), each beside ``find ROOT -type f -printf '%s %p\\n'`` on the same tree in
the same run:

1. the first crawl of N files;
2. a re-crawl where nothing changed, and one where 10 files changed and 5 were deleted
   (the nightly case), with its counts checked;
3. the longest claim of 100 files (and the median) while that re-crawl runs, beside the
   same claims with no crawl;
4. peak memory of the first crawl and of the re-crawl at two tree sizes;
5. the same with MariaDB tuned (``innodb_flush_log_at_trx_commit = 2``, a 1 GiB buffer
   pool), set here for the run and put back after; the crawler never changes them.

1 to 3 run on two trees of the same size: short paths (about 50 bytes, 1,000 files in each
of a few directories) and production-length paths (120 bytes, like
``/pnfs/<site>/data/cms/store/mc/<campaign>/<dataset>/<tier>/<n>/<file>.root``, 500 files
per block directory); ``--paths`` picks one. Every crawl's counts are checked, and after
the first crawl that ``statuses`` holds every file.

    python3 bench/crawl.py [--files 200000] [--small 50000] [--large 1000000]
                           [--paths short|production|both] [--quick]

``--quick``: the server as installed only, no memory runs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    MARIADB_ADMIN,
    PNFSMON,
    build_flat_tree,
    build_production_tree,
    fresh_mariadb,
    peak_rss_kib,
    pnfsmon_env,
)

from pnfsmon.schema.lease import Lease  # noqa: E402

SUMMARY = re.compile(r"new ([\d,]+), changed ([\d,]+), vanished ([\d,]+)")


def find_seconds(root: Path) -> float:
    find = ["find", str(root), "-type", "f", "-printf", "%s %p\n"]
    subprocess.run(find, stdout=subprocess.DEVNULL, check=True)  # warm the dentry cache
    return min(peak_rss_kib(find)[0] for _ in range(3))


def server_cpu() -> float:
    """CPU seconds the local MariaDB server has used so far (NaN if it is not local)."""
    try:
        pid = subprocess.run(["pgrep", "-o", "-x", "mariadbd|mysqld"], capture_output=True,
                             text=True).stdout.split()[0]
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (IndexError, OSError, ValueError):
        return float("nan")


#: CPU seconds of the last ``crawl``: its process, and the MariaDB server meanwhile (which
#: other clients may share). Less sensitive than wall time to a machine others load.
LAST_CPU = {"crawl": 0.0, "server": 0.0}


def cpu_per_file(n: int, cpu: dict[str, float]) -> str:
    return (f"CPU per file: crawl {cpu['crawl'] / n * 1e6:.1f} us, MariaDB "
            f"{cpu['server'] / n * 1e6:.1f} us")


def crawl(root: Path, env: dict) -> tuple[float, int, tuple[int, ...]]:
    """(seconds, peak RSS KiB, (new, changed, vanished)) of one ``pnfsmon crawl``."""
    server = server_cpu()
    started = time.perf_counter()
    proc = subprocess.Popen([PNFSMON, "crawl", str(root), "--grace", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    LAST_CPU.update(crawl=usage.ru_utime + usage.ru_stime, server=server_cpu() - server)
    out = proc.stdout.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"crawl failed: {proc.stderr.read().decode()[-2000:]}")
    found = SUMMARY.search(out)
    return seconds, usage.ru_maxrss, tuple(int(g.replace(",", "")) for g in found.groups())


def change(root: Path, directory: str, n_changed: int = 10, n_deleted: int = 5) -> None:
    """Rewrite ``n_changed`` files and delete ``n_deleted`` in one directory holding files
    (by its place: "a" is the first, "b" the second)."""
    leaves = sorted(Path(d) for d, _, names in os.walk(root) if names)
    files = sorted(leaves["ab".index(directory)].iterdir())
    for path in files[:n_changed]:
        path.write_bytes(b"changed")
    for path in files[n_changed:n_changed + n_deleted]:
        path.unlink()


def claims_while(url: str, work) -> tuple[float, float]:
    """(longest, median) seconds of a claim of 100 files (then released) in a loop while
    ``work()`` runs."""
    engine = sa.create_engine(url, isolation_level="READ COMMITTED")
    lease = Lease(engine, lease_seconds=600)
    times: list[float] = []
    done = threading.Event()

    def loop() -> None:
        while not done.is_set():
            started = time.perf_counter()
            got = lease.claim(100, due_before=time.time())
            times.append(time.perf_counter() - started)
            lease.release([c.id for c in got])

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        work()
    finally:
        done.set()
        thread.join()
        engine.dispose()
    return max(times), statistics.median(times)


def set_server(settings: dict[str, str]) -> dict[str, str]:
    """Set MariaDB globals; returns the old values."""
    engine = sa.create_engine(MARIADB_ADMIN)
    with engine.connect() as conn:
        old = {k: str(conn.exec_driver_sql(f"SELECT @@{k}").scalar()) for k in settings}
        for k, v in settings.items():
            conn.exec_driver_sql(f"SET GLOBAL {k} = {v}")
    engine.dispose()
    time.sleep(5 if "innodb_buffer_pool_size" in settings else 0)  # resized in background
    return old


def rows(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        n = conn.exec_driver_sql("SELECT count(*) FROM statuses").scalar()
    engine.dispose()
    return n


def unchanged(root: Path, env: dict) -> tuple[float, dict[str, float]]:
    seconds, _, counts = crawl(root, env)
    assert counts == (0, 0, 0), counts
    return seconds, dict(LAST_CPU)


def speed(root: Path, n: int, label: str) -> None:
    find_s = find_seconds(root)
    longest = max(len(os.fsencode(os.path.join(d, f)))
                  for d, _, names in os.walk(root) for f in names[:1])
    print(f"{label}: {n:,} files, paths up to {longest} bytes; find {n / find_s:,.0f} "
          "files/s")
    with fresh_mariadb() as url:
        env = pnfsmon_env(url)
        first, _, counts = crawl(root, env)
        assert counts == (n, 0, 0), counts
        assert rows(url) == n
        print(f"  first crawl      {first:6.2f} s  {n / first:9,.0f} files/s "
              f"(ratio {find_s / first:.3f} of find); {cpu_per_file(n, LAST_CPU)}")
        time.sleep(10)  # let the server flush the first crawl's pages, as a night would
        same, cpu = min((unchanged(root, env) for _ in range(2)), key=lambda r: r[0])
        print(f"  re-crawl, same   {same:6.2f} s  {n / same:9,.0f} files/s "
              f"(ratio {find_s / same:.3f} of find); {cpu_per_file(n, cpu)}")
        change(root, "a")
        seconds, _, counts = crawl(root, env)
        assert counts == (0, 10, 5), counts
        print(f"  re-crawl, 10 changed, 5 deleted {seconds:6.2f} s  {n / seconds:9,.0f} "
              f"files/s (ratio {find_s / seconds:.3f} of find); new {counts[0]}, "
              f"changed {counts[1]}, vanished {counts[2]}; {cpu_per_file(n, LAST_CPU)}")
        change(root, "b")
        result = {}
        idle_max, idle_median = claims_while(url, lambda: time.sleep(3))
        busy_max, busy_median = claims_while(url, lambda: result.update(run=crawl(root, env)))
        assert result["run"][2] == (0, 10, 5), result["run"][2]
        print(f"  claim of 100 during such a re-crawl: longest {busy_max * 1000:.0f} ms, "
              f"median {busy_median * 1000:.1f} ms (no crawl: longest "
              f"{idle_max * 1000:.0f} ms, median {idle_median * 1000:.1f} ms)")


def memory(work: Path, sizes: list[int]) -> None:
    rss = {}
    for n in sizes:
        root = work / f"mem{n}"
        build_flat_tree(root, n)
        with fresh_mariadb() as url:
            env = pnfsmon_env(url)
            first = crawl(root, env)
            again = crawl(root, env)
        rss[n] = (first[1], again[1])
        print(f"  {n:>9,} files: peak RSS first crawl {first[1] / 1024:.1f} MiB, re-crawl "
              f"{again[1] / 1024:.1f} MiB ({n / first[0]:,.0f} and {n / again[0]:,.0f} "
              "files/s)")
        shutil.rmtree(root)
    small, large = rss[sizes[0]], rss[sizes[-1]]
    print(f"  peak RSS {sizes[-1]:,} vs {sizes[0]:,} files: first crawl "
          f"{large[0] / small[0]:.2f}x, re-crawl {large[1] / small[1]:.2f}x (flat is ~1.0)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=200_000)
    ap.add_argument("--small", type=int, default=50_000)
    ap.add_argument("--large", type=int, default=1_000_000)
    ap.add_argument("--paths", choices=("short", "production", "both"), default="both")
    ap.add_argument("--quick", action="store_true",
                    help="the server as installed only; no memory runs")
    args = ap.parse_args()
    # Short: the production tree's paths must fit 120 bytes with it.
    work = Path(tempfile.mkdtemp(prefix="pnfsmon-"))
    def short() -> Path:
        build_flat_tree(work / "tree", args.files)
        return work / "tree"

    trees = {"short": short, "production": lambda: build_production_tree(work, args.files)}
    kinds = ["short", "production"] if args.paths == "both" else [args.paths]
    try:
        for kind in kinds:
            root = trees[kind]()
            speed(root, args.files, f"{kind} paths, MariaDB as installed (Debian defaults)")
            shutil.rmtree(work / root.relative_to(work).parts[0])
            if args.quick:
                continue
            root = trees[kind]()
            old = set_server({"innodb_flush_log_at_trx_commit": "2",
                              "innodb_buffer_pool_size": str(1 << 30)})
            try:
                speed(root, args.files,
                      f"{kind} paths, MariaDB tuned (flush_log_at_trx_commit=2, 1 GiB pool)")
            finally:
                set_server(old)
            shutil.rmtree(work / root.relative_to(work).parts[0])
        if not args.quick:
            print("memory:")
            memory(work, [args.small, args.large])
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
