"""Adler32 stream speed: ``tester.stream.checksum`` over a file in the page cache, against a
plain ``readinto`` loop over the same file (the ceiling) and ``xrdadler32`` (the tool sites
use today), all in the same run.

    python bench/adler.py [--size-gib 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import tempfile
import time

from pnfsmon.schema.xrdcks import XATTR_NAME
from pnfsmon.tester.posix_read import PosixFile
from pnfsmon.tester.stream import CHUNK, checksum


def plain_read(path: str) -> float:
    buf = memoryview(bytearray(CHUNK))
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        while fh.readinto(buf):
            pass
    return time.perf_counter() - started


def pnfsmon_stream(path: str) -> tuple[float, str]:
    started = time.perf_counter()
    source = PosixFile(os.fsencode(path))
    result = checksum(source, time.monotonic() + 3600)
    source.close()
    return time.perf_counter() - started, result.adler32


def xrdadler32(path: str) -> tuple[float, str]:
    # xrdadler32 answers from its cached xattr when present: remove it so it really reads.
    with contextlib.suppress(OSError):
        os.removexattr(path, XATTR_NAME)
    started = time.perf_counter()
    out = subprocess.run(["xrdadler32", path], capture_output=True, text=True, check=True)
    return time.perf_counter() - started, out.stdout.split()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-gib", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    size = int(args.size_gib * 1024**3)
    work = tempfile.mkdtemp(prefix="pnfsmon-bench-adler-")
    path = os.path.join(work, "big.dat")
    try:
        block = os.urandom(CHUNK)
        with open(path, "wb") as fh:
            for _ in range(size // CHUNK):
                fh.write(block)
        plain_read(path)  # into the page cache
        gib = size / 1024**3
        best = {"plain": 1e9, "pnfsmon": 1e9, "xrdadler32": 1e9}
        values = set()
        for _ in range(args.repeat):
            best["plain"] = min(best["plain"], plain_read(path))
            t, v = pnfsmon_stream(path)
            best["pnfsmon"] = min(best["pnfsmon"], t)
            values.add(v)
            if shutil.which("xrdadler32"):
                t, v = xrdadler32(path)
                best["xrdadler32"] = min(best["xrdadler32"], t)
                values.add(v)
        if len(values) != 1:
            raise SystemExit(f"checksums disagree: {values}")
        for name, t in best.items():
            if t < 1e9:
                print(f"{name:>11}: {gib / t:6.2f} GiB/s  ({best['plain'] / t:.3f} of plain read)")
        if best["xrdadler32"] < 1e9:
            print(f"pnfsmon vs xrdadler32: {best['xrdadler32'] / best['pnfsmon']:.2f}x faster")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
