"""The import graph follows the data flow: schema/ is the ground floor and imports no room;
web/ reads the database through schema/ alone; no room imports another room's ``cli``
module (library code lives outside them); every room says in its docstring what it holds."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROOMS = sorted(p.name for p in ROOT.iterdir()
               if (p / "__init__.py").is_file() and p.name not in ("tests", "bench"))


def imports(room: str) -> dict[str, set[str]]:
    """Every ``pnfsmon.*`` module each file of ``room`` imports, at any depth."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / room).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        found[str(path.relative_to(ROOT))] = {n for n in names if n.startswith("pnfsmon.")}
    return found


def test_the_rooms_are_the_ones_the_readme_names():
    readme = (ROOT / "README.md").read_text()
    assert {"schema", "crawler", "catalog", "tester", "condor", "web", "declare",
            "demo"} <= set(ROOMS)
    for room in ROOMS:
        assert f"| `{room}/` |" in readme, f"README's layout table has no row for {room}/"
        assert ast.get_docstring(ast.parse((ROOT / room / "__init__.py").read_text())), (
            f"{room}/__init__.py says nothing of what the room holds")


@pytest.mark.parametrize("room", ["schema", "web"])
def test_the_ground_floor_and_the_reports_import_no_other_room(room):
    allowed = {"pnfsmon.schema", f"pnfsmon.{room}"}
    wrong = {f"{path}: {name}" for path, names in imports(room).items() for name in names
             if not any(name == a or name.startswith(a + ".") for a in allowed)}
    assert not wrong, f"{room}/ imports beyond schema/: {sorted(wrong)}"


def test_no_room_imports_another_rooms_cli():
    wrong = []
    for room in ROOMS:
        for path, names in imports(room).items():
            for name in names:
                parts = name.split(".")
                if (len(parts) >= 3 and parts[2] == "cli" and parts[1] not in (room, "schema")):
                    wrong.append(f"{path}: {name}")
    assert not wrong, f"library code is imported from a cli module: {wrong}"


def test_each_command_is_registered_by_the_module_the_cli_names():
    """``pnfsmon.cli.COMMANDS`` says which module registers each command (only those named
    on a command line are imported): each module registers exactly the commands the table
    gives it, and the whole parser has no other."""
    import argparse
    import importlib

    from pnfsmon import cli
    from pnfsmon.schema.cli import common_options

    registered = {}
    for module in set(cli.COMMANDS.values()):
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(sub, [common_options()])
        registered.update(dict.fromkeys(sub.choices, module))
    assert registered == cli.COMMANDS
    whole = next(a for a in cli.build_parser()._actions
                 if isinstance(a, argparse._SubParsersAction))
    assert list(whole.choices) == list(cli.COMMANDS)


def test_a_crawl_loads_no_other_rooms_code():
    """A nightly crawl's process starts with the crawler and the ground floor only: no
    reports, HTCondor, Rucio, catalog or checker code (its start was a tenth of a
    re-crawl's time)."""
    import subprocess
    import sys

    code = ("import sys; from pnfsmon import cli; cli.build_parser(['--db', 'x', 'crawl', "
            "'/x']); print(sorted({m.split('.')[1] for m in sys.modules "
            "if m.startswith('pnfsmon.')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert ast.literal_eval(out) == ["cli", "crawler", "schema"]  # cli: pnfsmon.cli


@pytest.mark.parametrize("line", [["--help", "crawl"], ["-h", "status"],
                                  ["crawll", "--site", "status"]])
def test_help_and_mistakes_show_every_command(line):
    """A line is parsed with only the commands it names, but help asked before a command,
    or a line that parser cannot read (a typo beside a command's name), is answered by the
    whole parser: every command to choose from, and the exit code of argparse."""
    from pnfsmon import cli
    from tests.helpers import pnfsmon

    r = pnfsmon(*line)
    assert r.returncode == (0 if "-h" in line or "--help" in line else 2), r.stderr
    shown = r.stdout + r.stderr
    assert all(command in shown for command in cli.COMMANDS), shown
