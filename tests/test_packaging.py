"""The installed distribution: one import root, ``pnfsmon``, so it can sit beside PyPI's
``schema`` (and ``condor``, ``crawler``, ``demo``) in one environment without either
overwriting the other's files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # pip builds a local directory in place: build from a copy of the tracked files, so the
    # work tree gets no build/ directory and the wheel nothing untracked.
    source = tmp_path_factory.mktemp("source")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True,
                             capture_output=True).stdout.decode().split("\0")
    for name in (n for n in tracked if n and (REPO / n).is_file()):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(out), str(source)], check=True)
    (built,) = out.glob("pnfs_monitor-*.whl")
    return built


def test_the_wheel_installs_nothing_but_the_pnfsmon_root(wheel):
    with zipfile.ZipFile(wheel) as whl:
        record = next(n for n in whl.namelist() if n.endswith(".dist-info/RECORD"))
        paths = [line.split(",")[0] for line in whl.read(record).decode().splitlines()]
    tops = {p.split("/")[0] for p in paths if not p.split("/")[0].endswith(".dist-info")}
    assert tops == {"pnfsmon"}
    assert "pnfsmon/web/templates/index.html" in paths
    assert "pnfsmon/schema/migrations/versions/0001_spine.py" in paths
    assert not any(p.startswith(("pnfsmon/tests/", "pnfsmon/bench/")) for p in paths)


@pytest.mark.slow
def test_pypi_schema_and_pnfs_monitor_live_side_by_side(wheel, tmp_path):
    venv = tmp_path / "venv"
    # The test's own dependencies come from this interpreter's site-packages; the wheel and
    # PyPI's schema go into the virtualenv, ahead of them.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    python = str(venv / "bin" / "python")
    # The virtualenv's own site-packages, not a work tree some PYTHONPATH names.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", str(wheel)], check=True, env=env)
    subprocess.run([*pip, "--no-deps", "--force-reinstall", "schema"], check=True, env=env)

    both = ("import schema, pnfsmon.schema.db, pnfsmon.cli; "
            "assert schema.Schema(int).validate(7) == 7; "
            "print(pnfsmon.schema.db.__file__)")
    out = subprocess.run([python, "-c", both], check=True, capture_output=True, text=True,
                         cwd=tmp_path, env=env).stdout
    assert out.startswith(str(venv))  # the wheel's copy, not the work tree's

    db = f"sqlite:///{tmp_path / 'side.sqlite'}"
    for argv in ([str(venv / "bin" / "pnfsmon"), "db", "init", "--db", db],
                 [python, "-m", "pnfsmon", "status", "--db", db]):
        subprocess.run(argv, check=True, capture_output=True, cwd=tmp_path, env=env)

    # Removing PyPI's schema takes nothing of ours with it.
    subprocess.run([python, "-m", "pip", "uninstall", "-q", "-y", "schema"], check=True, env=env)
    subprocess.run([python, "-m", "pnfsmon", "status", "--db", db], check=True,
                   capture_output=True, cwd=tmp_path, env=env)
