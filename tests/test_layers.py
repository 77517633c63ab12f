"""The core stays sans-I/O, and imports only point down the layers."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "tube" / "websocket"
CORE_FORBIDDEN = {"socket", "select", "selectors", "ssl", "threading", "asyncio", "time", "queue"}


def imported_modules(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            prefix = "." * node.level
            names.add(prefix + (node.module or ""))
    return names


CORE_FILES = sorted((PACKAGE / "core").glob("*.py"))


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_imports_no_io(path: pathlib.Path) -> None:
    for name in imported_modules(path):
        root = name.lstrip(".").split(".")[0]
        if not name.startswith("."):
            assert root not in CORE_FORBIDDEN, f"{path.name} imports {name}"
            assert not name.startswith("tube"), f"{path.name} imports {name}: use relative imports"
        else:
            # Relative imports from the core must stay inside the core.
            assert not name.startswith(".."), f"{path.name} imports {name} from above the core"


TRANSPORT_FILES = [
    *sorted((PACKAGE / "threads").glob("*.py")),
    *sorted((PACKAGE / "aio").glob("*.py")),
]


@pytest.mark.parametrize("path", TRANSPORT_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_transports_do_not_import_integrations(path: pathlib.Path) -> None:
    for name in imported_modules(path):
        for integration in ("integrations", "http_server", "echo", "__main__", "demo", "asgi"):
            assert integration not in name.split("."), f"{path.name} imports {name}"


@pytest.mark.parametrize("path", TRANSPORT_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_transports_do_not_import_each_other(path: pathlib.Path) -> None:
    # What both transports need sits below them (the core, tube/websocket/sockets.py).
    other = "aio" if path.parent.name == "threads" else "threads"
    for name in imported_modules(path):
        assert other not in name.split("."), f"{path.parent.name}/{path.name} imports {name}"


def test_core_files_exist() -> None:
    assert {p.name for p in CORE_FILES} >= {"protocol.py", "frames.py", "masking.py", "utf8.py"}
