"""``pnfsmon condor bundle``: one self-contained file that runs the tester on a worker node
with nothing but ``python3`` (>= 3.10): a zipapp of pnfs-monitor and its pure-Python
dependencies. Compiled extensions cannot be imported from a zip and may not match the node's
Python, so they are left out; each dependency falls back to pure Python (SQLAlchemy,
MarkupSafe), and the Adler32 falls back from zlib-ng to the stdlib's zlib (same values,
slower; the job's log says so). A site that can install zlib-ng on its nodes, or serves a
shared install (CVMFS/NFS), can point the submit at that instead (``--executable``)."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
import zipapp
import zipfile
from pathlib import Path

import pnfsmon
from pnfsmon.schema.errors import EXIT_INTERNAL, EXIT_OLD_PYTHON, ConfigError

log = logging.getLogger(__name__)
#: Inside the bundle: the version of pnfs-monitor that built it (``pnfsmon.__version__``
#: reads it there, where no distribution metadata exists).
VERSION_FILE = "pnfsmon/BUNDLE_VERSION"

#: Our one import root, then the pure-Python parts of our dependencies.
OWN = ("pnfsmon",)
DEPENDENCIES = ("sqlalchemy", "pymysql", "jinja2", "markupsafe", "typing_extensions")

# Written for any python3: the check comes before anything that needs 3.10.
_MAIN = f"""\
import sys

if sys.version_info < (3, 10):
    sys.stderr.write(
        "pnfsmon: error: pnfs-monitor needs python3 >= 3.10, and %s is %d.%d: submit with "
        "--python PATH (a newer interpreter on the nodes) or --container-image IMAGE\\n"
        % (sys.executable, sys.version_info[0], sys.version_info[1]))
    sys.exit({EXIT_OLD_PYTHON})

try:
    from pnfsmon.cli import main
except Exception as err:  # a broken bundle: a bug, never "problems found" (exit 1)
    import traceback

    traceback.print_exc()
    sys.stderr.write("pnfsmon: internal error (a broken bundle): %r\\n" % (err,))
    sys.exit({EXIT_INTERNAL})

sys.exit(main())
"""


def _source(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ConfigError(f"cannot bundle {name}: it is not installed here")
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin)


def _ignore(_directory: str, names: list[str]) -> set[str]:
    return {n for n in names
            if n == "__pycache__" or n.endswith((".so", ".pyd", ".pyc", ".pyx", ".c"))}


def _copy_own(src: Path, dest: Path) -> None:
    """Our root's modules and its rooms: the subpackages (an editable install's root is the
    repository, whose tests, benchmarks and docs are no packages and stay out)."""
    dest.mkdir()
    for module in src.glob("*.py"):
        shutil.copy2(module, dest / module.name)
    for room in src.iterdir():
        if (room / "__init__.py").is_file():
            shutil.copytree(room, dest / room.name, ignore=_ignore)


def build(output: Path) -> Path:
    """Write the bundle to ``output`` (made executable) and return its path."""
    with tempfile.TemporaryDirectory(prefix="pnfsmon-bundle-") as tmp:
        root = Path(tmp)
        for name in OWN + DEPENDENCIES:
            src = _source(name)
            if name in OWN:
                _copy_own(src, root / name)
            elif src.is_dir():
                shutil.copytree(src, root / src.name, ignore=_ignore)
            else:
                shutil.copy2(src, root / src.name)
        (root / VERSION_FILE).write_text(pnfsmon.__version__ + "\n")
        (root / "__main__.py").write_text(_MAIN)
        output.parent.mkdir(parents=True, exist_ok=True)
        zipapp.create_archive(root, output, interpreter="/usr/bin/env python3",
                              compressed=True)
    return output


def version_of(path: Path) -> str | None:
    """The pnfs-monitor version a bundle was built with; None for a bundle made before
    bundles recorded it."""
    with zipfile.ZipFile(path) as zf:
        try:
            return zf.read(VERSION_FILE).decode().strip()
        except KeyError:
            return None


def _key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in version.split("."))


def stale(path: Path) -> str | None:
    """Why the bundle at ``path`` should be rebuilt (built by an older pnfs-monitor than
    the one installed), or None. Not a bundle, or none there: None."""
    if not zipfile.is_zipfile(path):
        return None
    built = version_of(path)
    if built is not None and _key(built) >= _key(pnfsmon.__version__):
        return None
    by = f"pnfs-monitor {built}" if built else "a pnfs-monitor older than 0.1.0"
    return (f"the bundle {path} was built by {by}, and {pnfsmon.__version__} is installed: "
            "its jobs run the old code; rebuild it (run the `pnfsmon condor` command that "
            "wrote it again, e.g. condor dag --write DIR, or pnfsmon condor bundle)")


def warn_if_stale(path: Path) -> None:
    reason = stale(path)
    if reason is not None:
        log.warning("%s", reason)
