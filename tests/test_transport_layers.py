"""Inside each transport, the parts know their connection only through what they are handed or a
declared interface: none imports ``connection.py`` (the asyncio parts used to, an import circle
through private members), and no module imports another's private name (issue 21)."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "tube" / "websocket"

# The parts composed into each transport's Connection (client/server/functions sit above it).
THREADS_PARTS = (
    "channel.py",
    "reader.py",
    "sending.py",
    "timers.py",
    "io.py",
    "parking.py",
    "lean.py",
)
AIO_PARTS = ("channel.py", "sending.py", "timers.py", "reading.py", "pings.py", "opening.py")
PARTS = [
    *(PACKAGE / "threads" / name for name in THREADS_PARTS),
    *(PACKAGE / "aio" / name for name in AIO_PARTS),
]
TRANSPORT_FILES = sorted([*(PACKAGE / "threads").glob("*.py"), *(PACKAGE / "aio").glob("*.py")])


def imports(path: pathlib.Path) -> list[ast.ImportFrom]:
    """Every ``from ... import ...`` of the file, TYPE_CHECKING blocks included."""
    tree = ast.parse(path.read_text())
    return [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]


@pytest.mark.parametrize("path", PARTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_part_does_not_import_its_connection(path: pathlib.Path) -> None:
    for node in imports(path):
        module = "." * node.level + (node.module or "")
        assert module not in (".connection", "..connection"), f"{path.name} imports {module}"
        if node.level == 1 and not node.module:
            names = {alias.name for alias in node.names}
            assert "connection" not in names, f"{path.name} imports .connection"


@pytest.mark.parametrize("path", TRANSPORT_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_private_name_is_imported_across_modules(path: pathlib.Path) -> None:
    for node in imports(path):
        if node.level == 0:
            continue  # the standard library
        for alias in node.names:
            name = alias.name
            if name.startswith("_") and not name.startswith("__"):
                # A compiled module of our own (the accelerator) is no private name.
                assert name == "_speedups", f"{path.name} imports {name} from {node.module}"
