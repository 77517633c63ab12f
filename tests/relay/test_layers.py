"""The relay's layering, read from its imports (docs/relay.md, "Layout").

The relay server has no key and no cipher: it must not even import the end-to-end code. The
core decides without sockets, tasks or clocks, and the server runs on the standard library.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

RELAY = Path(__file__).resolve().parents[2] / "tube" / "relay"

SANS_IO = ("core.py", "limits.py", "registry.py", "codes.py")
SERVER_SIDE = ("core.py", "limits.py", "registry.py", "web.py", "server.py", "main.py")
E2E = tuple(sorted(path.name for path in (RELAY / "e2e").glob("*.py")))
# The modules of tube/relay/transfer/, lower first: each imports only those before it.
TRANSFER = ("errors", "results", "http", "disk", "channel", "session", "sending", "receiving")


def imports(path: Path, *, top_level: bool = False) -> set[str]:
    """Every module ``path`` imports, as absolute dotted names (relative ones resolved);
    with ``top_level``, only those imported when the module is (not inside functions)."""
    package = ".".join(path.relative_to(RELAY.parent.parent).with_suffix("").parts[:-1])
    names: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body if top_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("name", SERVER_SIDE)
def test_the_relay_server_never_imports_the_end_to_end_code(name: str) -> None:
    # main.py hands ``send``/``receive`` to the peer, importing it only then (the optional
    # crypto extra): the relay itself starts without it.
    found = imports(RELAY / name, top_level=name == "main.py")
    assert not [m for m in found if m.startswith("tube.relay.e2e") or m == "cryptography"]
    assert not [m for m in found if m.startswith(("tube.relay.cli", "tube.relay.transfer"))]


@pytest.mark.parametrize("name", SERVER_SIDE)
def test_the_relay_server_needs_the_standard_library_only(name: str) -> None:
    for module in imports(RELAY / name):
        top = module.split(".")[0]
        assert top in sys.stdlib_module_names or top == "tube" or top == "__future__", module


@pytest.mark.parametrize("name", SANS_IO)
def test_the_core_has_no_sockets_tasks_or_clocks(name: str) -> None:
    forbidden = {"asyncio", "socket", "time", "threading", "selectors", "ssl"}
    found = {module.split(".")[0] for module in imports(RELAY / name)}
    assert not found & forbidden
    assert not [m for m in imports(RELAY / name) if m.startswith("tube.websocket")]


@pytest.mark.parametrize("name", E2E)
def test_the_end_to_end_code_knows_nothing_of_the_relay_or_of_io(name: str) -> None:
    for module in imports(RELAY / "e2e" / name):
        top = module.split(".")[0]
        assert top not in {"asyncio", "socket", "time", "threading"}, module
        assert not module.startswith("tube.websocket"), module
        if module.startswith("tube.relay"):
            assert module.startswith("tube.relay.e2e"), module


def test_every_transfer_module_has_its_place_in_the_order() -> None:
    found = {path.stem for path in (RELAY / "transfer").glob("*.py")}
    assert found == {*TRANSFER, "__init__"}


@pytest.mark.parametrize("name", TRANSFER)
def test_the_transfer_modules_import_only_downwards(name: str) -> None:
    below = TRANSFER[: TRANSFER.index(name)]
    for module in imports(RELAY / "transfer" / f"{name}.py"):
        if module == "tube.relay.transfer" or module.startswith("tube.relay.transfer."):
            assert module.split(".")[3:4] in [[m] for m in below], module
