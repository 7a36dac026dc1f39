"""``pnfsmon condor bundle``: one self-contained file that runs the tester on a worker node
with nothing but ``python3`` (>= 3.10): a zipapp of pnfs-monitor and its pure-Python
dependencies. Compiled extensions cannot be imported from a zip and may not match the node's
Python, so they are left out; each dependency falls back to pure Python (SQLAlchemy,
MarkupSafe), and the Adler32 falls back from zlib-ng to the stdlib's zlib (same values,
slower; the job's log says so). A site that can install zlib-ng on its nodes, or serves a
shared install (CVMFS/NFS), can point the submit at that instead (``--executable``)."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import zipapp
from pathlib import Path

from pnfsmon.schema.errors import EXIT_INTERNAL, EXIT_OLD_PYTHON, ConfigError

#: Our one import root, then the pure-Python parts of our dependencies.
OWN = ("pnfsmon",)
#: What of our root goes into the bundle: its modules and its rooms (an editable install's
#: root is the repository, whose tests, benchmarks and docs stay out).
ROOMS = ("schema", "crawler", "tester", "web", "condor", "demo")
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
    dest.mkdir()
    for module in src.glob("*.py"):
        shutil.copy2(module, dest / module.name)
    for room in ROOMS:
        shutil.copytree(src / room, dest / room, ignore=_ignore)


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
        (root / "__main__.py").write_text(_MAIN)
        output.parent.mkdir(parents=True, exist_ok=True)
        zipapp.create_archive(root, output, interpreter="/usr/bin/env python3",
                              compressed=True)
    return output
