"""Helpers shared by the benchmarks: a fresh MariaDB database per run, tree builders, and
peak-memory measurement of a child process. Benchmarks print ratios against a baseline
measured in the same run; they assert nothing."""

from __future__ import annotations

import compileall
import functools
import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

MARIADB_ADMIN = os.environ.get("PNFSMON_BENCH_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/")
# The command as a site runs it: the console script its install put beside the
# interpreter. Not a version manager's shim found first on PATH (pyenv's is a bash script
# that costs 0.12 s a command, a tenth of a benchmarked crawl).
_BESIDE = Path(sys.executable).with_name("pnfsmon")
PNFSMON = str(_BESIDE) if _BESIDE.is_file() else "pnfsmon"


@contextmanager
def fresh_mariadb():
    """Yield the URL of a new, empty MariaDB database; drop it afterwards."""
    name = f"pnfsmon_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(MARIADB_ADMIN)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield f"{MARIADB_ADMIN}{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}_stage")  # a re-crawl's
        admin.dispose()


@functools.cache
def _compiled() -> None:
    """The package's bytecode written, as ``pip install .`` writes it: a checkout run with
    PYTHONDONTWRITEBYTECODE would compile its ~90 modules in every measured command."""
    import pnfsmon

    compileall.compile_dir(Path(pnfsmon.__file__).parent, quiet=1)


def pnfsmon_env(url: str, crawl_root: Path | None = None) -> dict[str, str]:
    """The environment for ``pnfsmon`` commands on ``url``, after ``db init`` (and a crawl
    of ``crawl_root`` if given); the commands start from compiled bytecode."""
    _compiled()
    env = {**os.environ, "PNFSMON_DB": url}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    commands = [["db", "init"]] + ([["crawl", str(crawl_root), "--grace", "0"]]
                                   if crawl_root else [])
    for cmd in commands:
        subprocess.run([PNFSMON, *cmd], env=env, check=True, stdout=subprocess.DEVNULL)
    return env


def buffer_pool(engine: sa.Engine, size: int | None = None) -> int:
    """MariaDB's InnoDB buffer pool size in bytes, after setting it to ``size`` if given
    (dynamic in MariaDB >= 10.2; needs root). Tables larger than it are read from
    outside InnoDB's cache: benchmarks report both the server's setting and 1 GiB."""
    with engine.connect() as conn:
        if size is not None:
            conn.exec_driver_sql(f"SET GLOBAL innodb_buffer_pool_size = {size}")
            time.sleep(5)  # the resize runs in the background
        return int(conn.exec_driver_sql("SELECT @@innodb_buffer_pool_size").scalar())


def insert_finished_crawl(engine: sa.Engine, site: str, root: bytes, files: int,
                          finished: float) -> None:
    """A complete crawl of ``files`` files, for tables filled without crawling."""
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO crawls (site, root, started, finished, complete, files, directories,"
            " empty_directories, unreadable_directories, bytes, new, changed, vanished,"
            " skipped) VALUES (:site, :root, :started, :finished, 1, :files, :dirs, 0, 0, 0,"
            " :files, 0, 0, 0)"),
            dict(site=site, root=root, started=finished - 60, finished=finished, files=files,
                 dirs=max(files // 1000, 1)))


def insert_rows(engine: sa.Engine, head: str, values: list[str]) -> None:
    """One multi-row INSERT: ``head`` is ``INSERT INTO t (cols) VALUES``."""
    with engine.begin() as conn:
        conn.exec_driver_sql(head + " " + ",".join(values))


def recount_ledger(engine: sa.Engine) -> None:
    """After rows written by hand: the status_counts ledger made to match them."""
    from pnfsmon.schema import counts

    with engine.begin() as conn:
        counts.recount(conn)


def build_flat_tree(root: Path, files: int, per_dir: int = 1000, size: int = 0) -> None:
    """``files`` files of ``size`` bytes in directories of ``per_dir``, built fast."""
    payload = b"x" * size
    for i in range(files):
        d = root / f"d{i // per_dir:05d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        with open(d / f"f{i:07d}.dat", "wb") as fh:
            fh.write(payload)


PRODUCTION_LENGTH = 120  # bytes: a CMS path below /pnfs, e.g. /pnfs/<site>/data/cms/store/...


def production_root(work: Path) -> Path:
    """Where ``build_production_tree`` puts its files below ``work``: the crawl root."""
    return work / "pnfs" / "example.org" / "data" / "cms" / "store" / "mc"


def build_production_tree(work: Path, files: int, per_dir: int = 500,
                          length: int = PRODUCTION_LENGTH) -> Path:
    """``files`` empty files laid out as a production namespace,
    ``work/pnfs/<site>/data/cms/store/mc/<campaign>/<dataset>/<tier>/<n>/<file>.root``,
    ``per_dir`` to a block directory, each file name padded so that its whole path is
    ``length`` bytes (as the crawl stores it, ``work`` included). Returns the crawl root."""
    root = production_root(work)
    campaigns = ("Run3Summer22", "Run3Summer23")
    tiers = ("NANOAODSIM", "MINIAODSIM")
    directory = None
    for i in range(files):
        block = i // per_dir
        if i % per_dir == 0:
            directory = (root / campaigns[block % 2] / f"TTto2L2Nu-{block // 8:04d}"
                         / tiers[block // 2 % 2] / f"{250000 + block:06d}")
            directory.mkdir(parents=True, exist_ok=True)
            pad = length - len(os.fsencode(directory)) - 1 - len(".root")
            if pad < 8:
                raise ValueError(f"{work} is too long for {length}-byte paths")
        name = f"{i:08X}{'-4A1F-9C2E-0D3B5E7A8C61' * 2}"[:pad]
        (directory / f"{name}.root").touch()
    return root


def peak_rss_kib(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    """Wall time and peak RSS of ``cmd``, measured by GNU time-like wait4 accounting."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        sys.exit(f"{' '.join(cmd)} failed ({code}): {proc.stderr.read().decode()[-2000:]}")
    proc.stderr.close()
    return seconds, usage.ru_maxrss


def start_up(env: dict) -> float:
    """Wall seconds of the fastest of three ``pnfsmon --help``: the interpreter and its
    imports, which every crawl pays before it does anything."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([PNFSMON, "--help"], env=env, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - started)
    return best


def rows(url: str) -> dict[bytes, dict]:
    """Every row of ``statuses`` in the database at ``url``, by path (its id left out: two
    databases crawled alike compare equal)."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        table = sa.Table("statuses", sa.MetaData(), autoload_with=conn)
        columns = [c for c in table.c if c.name not in ("id", "path")]
        out = {bytes(r[0]): dict(r._mapping)
               for r in conn.execute(sa.select(table.c.path, *columns))}
    engine.dispose()
    return out
