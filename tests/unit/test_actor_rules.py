"""DESIGN.md rule 1: actors do no I/O. Nothing in actors/ may import sockets, clocks, threads or the OS."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = {
    "zmq",
    "socket",
    "time",
    "threading",
    "asyncio",
    "os",
    "select",
    "selectors",
    "pickle",
    "subprocess",
}
ACTORS = Path(__file__).resolve().parents[2] / "actors"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_actors_import_no_io_modules() -> None:
    files = sorted(ACTORS.glob("*.py"))
    assert len(files) >= 6
    offenders = {f.name: sorted(imported_modules(f) & FORBIDDEN) for f in files}
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_the_check_itself_sees_imports(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom time import monotonic\nimport zmq.asyncio\n")
    assert imported_modules(bad) & FORBIDDEN == {"os", "time", "zmq"}
