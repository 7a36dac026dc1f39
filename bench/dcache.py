"""dCache mounts that answer in milliseconds: ``pnfsmon crawl --namespace pnfs|chimera`` of
the FUSE emulator of a mount (``tests/dcache_fuse.py``; 20,000 files, every call delayed)
into MariaDB, beside 64 parallel ``cat``s of the same dot-command files on the same mount
in the same run, and beside ``--parallel 1``, at 0.2, 1 and 5 ms per call.

Targets at 1 ms: the crawl reaches at least 0.5 of the cats' rate and at least 10 times
the rate of ``--parallel 1``. The emulator is a Python server on the same two cores: its
CPU bounds the cats and the crawl alike, which the ratio cancels.

    python3 bench/dcache.py      (as root: it mounts FUSE; needs MariaDB)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from common import PNFSMON, fresh_mariadb, pnfsmon_env  # noqa: E402
from dcache_fuse import DcacheMount, available  # noqa: E402

GROUPS, DIRS, FILES = 10, 20, 100  # 20,000 files
DELAYS = (0.0002, 0.001, 0.005)
DOT_COMMANDS = {"pnfs": (".(use)(2)({})",),
                "chimera": (".(get)({})(checksums)", ".(get)({})(locality)")}


def build(backing: Path) -> list[tuple[str, str]]:
    """The tree; returns (directory, name) of every file."""
    files = []
    for g in range(GROUPS):
        for d in range(DIRS):
            directory = backing / f"group{g}" / f"d{d:03d}"
            directory.mkdir(parents=True)
            for f in range(FILES):
                name = f"f{f:03d}.root"
                (directory / name).write_bytes(os.urandom(64 + f))
                files.append((str(directory.relative_to(backing)), name))
    return files


def cats(mount: Path, files: list[tuple[str, str]], kind: str) -> float:
    """files/s of 64 parallel cats of every file's dot-command files."""
    with tempfile.NamedTemporaryFile("w", delete=False) as fh:
        fh.write("\0".join(str(mount / d / c.format(n)) for d, n in files
                           for c in DOT_COMMANDS[kind]))
    try:
        started = time.perf_counter()
        subprocess.run(f"xargs -0 -P 64 -n 20 cat < {fh.name} > /dev/null", shell=True,
                       check=True)
        return len(files) / (time.perf_counter() - started)
    finally:
        os.unlink(fh.name)


def crawl(root: Path, kind: str, n: int, parallel: int | None = None) -> float:
    """files/s of one ``pnfsmon crawl`` (a fresh MariaDB database), end to end."""
    with fresh_mariadb() as url:
        env = pnfsmon_env(url)
        cmd = [PNFSMON, "crawl", str(root), "--namespace", kind, "--grace", "0"]
        if parallel is not None:
            cmd += ["--parallel", str(parallel)]
        started = time.perf_counter()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    if out.returncode != 0 or f"{n:,} files" not in out.stdout:
        sys.exit(f"crawl failed: {out.stdout}{out.stderr[-2000:]}")
    return n / seconds


def main() -> None:
    why = available()
    if why:
        sys.exit(f"cannot run: {why}")
    with tempfile.TemporaryDirectory(prefix="pnfsmon-bench-dcache-") as tmp:
        base = Path(tmp)
        files = build(base / "backing")
        n = len(files)
        for delay in DELAYS:
            with DcacheMount(base / "backing", base / "mnt", delay=delay) as mount:
                print(f"{delay * 1000:g} ms per call, {n:,} files:", flush=True)
                for kind in ("pnfs", "chimera"):
                    cat_rate = cats(mount.root, files, kind)
                    mount.reset_counts()
                    rate = crawl(mount.root, kind, n)
                    in_flight = mount.max_in_flight
                    rate64 = crawl(mount.root, kind, n, parallel=64)
                    # One call at a time is slow: measured on a part of the tree.
                    part, size = ((mount.root / "group0", DIRS * FILES) if delay < 0.005
                                  else (mount.root / "group0" / "d000", FILES))
                    one = crawl(part, kind, size, parallel=1)
                    print(f"  {kind:8s} 64 cats {cat_rate:7,.0f} files/s | crawl "
                          f"{rate:7,.0f} files/s (default --parallel, {in_flight} calls in "
                          f"flight; {rate / cat_rate:.2f} of the cats, {rate / one:.1f}x "
                          f"--parallel 1 at {one:,.0f} files/s) | --parallel 64 "
                          f"{rate64:7,.0f} files/s ({rate64 / cat_rate:.2f})", flush=True)


if __name__ == "__main__":
    main()
