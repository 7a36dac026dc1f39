"""Catalog consistency at scale (MariaDB): a 1,000,000-entry inventory against a
1,000,000-file crawl, 1 % missing, 1 % orphan, 0.5 % size mismatch. Target: a compare in
at most 20 s with flat memory.

Baseline in the same run: the classic shell comparison of two name lists, ``sort`` both and
``comm`` them (what dynamo-consistency-like scripts do with dumps), on the same names."""

from __future__ import annotations

import hashlib
import os
import subprocess
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

from pnfsmon.schema.discrepancies import Discrepancy

FILES = 1_000_000
BATCH = 20_000
PREFIX = "/pnfs/xx/data/cms"
OLD = time.time() - 30 * 86400


def names(i: int) -> str:
    return f"/store/mc/run{i // 100_000}/d{i // 1000:04d}/f{i:07d}.root"


def populate_storage(url: str) -> None:
    """The crawl: files 0..N-1 except every 100th (missing), plus N orphans' worth of
    every 100th+1 renamed; every 200th+3 has another size than the catalog says."""
    engine = sa.create_engine(url)
    insert_finished_crawl(engine, "T1_XX", PREFIX.encode(), FILES, OLD + 60)
    for start in range(0, FILES, BATCH):
        values = []
        for i in range(start, min(start + BATCH, FILES)):
            if i % 100 == 0:
                continue  # lost: missing at the site
            name = names(i) if i % 100 != 1 else names(i).replace(".root", ".orphan")
            path = (PREFIX + name).encode()
            size = 1000 + i + (1 if i % 200 == 3 else 0)
            values.append(f"('T1_XX',X'{path.hex()}',"
                          f"X'{hashlib.blake2b(path, digest_size=16).hexdigest()}',"
                          f"{size},{int(OLD * 1e9)},1,{OLD},1)")
        insert_rows(engine, "INSERT INTO statuses (site, path, path_hash, size, mtime_ns,"
                    " status, checked, crawl_gen) VALUES", values)
    recount_ledger(engine)
    engine.dispose()


def write_dump(path: Path) -> None:
    with open(path, "w") as fh:
        fh.write("lfn,size\n")
        for i in range(FILES):
            fh.write(f"{names(i)},{1000 + i}\n")


def baseline(tmp: Path, url: str) -> float:
    """sort + comm of the catalog's names and the storage's names (as LFNs)."""
    engine = sa.create_engine(url)
    storage = tmp / "storage.txt"
    with engine.connect() as conn, open(storage, "wb") as fh:
        for (path,) in conn.execution_options(stream_results=True, yield_per=20000).execute(
                sa.text("SELECT path FROM statuses")):
            fh.write(bytes(path)[len(PREFIX):] + b"\n")
    engine.dispose()
    catalog = tmp / "catalog.txt"
    with open(catalog, "w") as fh:
        for i in range(FILES):
            fh.write(names(i) + "\n")
    env = {**os.environ, "LC_ALL": "C"}
    started = time.perf_counter()
    for name in ("storage", "catalog"):
        subprocess.run(["sort", "-o", str(tmp / f"{name}.sorted"), str(tmp / f"{name}.txt")],
                       check=True, env=env)
    subprocess.run(["comm", "-3", str(tmp / "catalog.sorted"), str(tmp / "storage.sorted")],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    with fresh_mariadb() as url, tempfile.TemporaryDirectory(prefix="pnfsmon-cmp-") as tmp:
        tmp = Path(tmp)
        conf = tmp / "pnfsmon.conf"
        conf.write_text(f"[site T1_XX]\nlfn_prefix = /store\npath_prefix = {PREFIX}/store\n"
                        "max_missing_fraction = 0.05\nmax_orphan_fraction = 0.05\n")
        env = {**pnfsmon_env(url), "PNFSMON_CONFIG": str(conf)}
        started = time.perf_counter()
        populate_storage(url)
        print(f"crawl of {FILES:,} files inserted in {time.perf_counter() - started:.0f} s")
        dump = tmp / "dump.csv"
        write_dump(dump)
        seconds, rss = peak_rss_kib([PNFSMON, "inventory", "load", str(dump), "--site",
                                     "T1_XX"], env=env)
        print(f"inventory load of {FILES:,} entries: {seconds:.1f} s "
              f"({FILES / seconds:,.0f} entries/s), peak {rss / 1024:.0f} MB")
        base = baseline(tmp, url)
        print(f"sort + comm of the two name lists (baseline): {base:.1f} s")
        engine = sa.create_engine(url)
        original = buffer_pool(engine)
        runs = [(original, "first"), (original, "second (confirms)")]
        if original < 1 << 30:
            runs.append((1 << 30, "third"))
        try:
            for size, run in runs:
                pool = buffer_pool(engine, size if size != original else None)
                seconds, rss = peak_rss_kib([PNFSMON, "compare", "--site", "T1_XX",
                                             "--output", str(tmp / "out")], env=env)
                print(f"pnfsmon compare, {run}, buffer pool {pool >> 20} MiB: {seconds:.1f} s"
                      f" (target <= 20 s; {seconds / base:.0f}x sort+comm), peak memory "
                      f"{rss / 1024:.0f} MB")
        finally:
            buffer_pool(engine, original)
            engine.dispose()
        for kind in Discrepancy:
            path = tmp / "out" / f"T1_XX_{kind}.txt"
            lines = path.read_bytes().count(b"\n") if path.exists() else 0
            print(f"  T1_XX_{kind}.txt: {lines:,} lines")


if __name__ == "__main__":
    main()
