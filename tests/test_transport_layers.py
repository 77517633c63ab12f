"""Inside each transport, the parts know their connection only through what they are handed or a
declared interface: none imports ``connection.py`` (the asyncio parts used to, an import circle
through private members), no module of the package (transports, core, integrations, relay)
imports another's private name, and the code around the asyncio connection (server, client,
uvicorn integration) goes through its declared handshake interface (``Connection.handshake``),
not its private members (issue 21)."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tube" / "websocket"
AIO_CONNECTION = PACKAGE / "aio" / "connection.py"

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
# Every module of the package (the WebSocket library, the relay, the demo): none imports a
# private name of another; a name shared inside the package is public there.
PACKAGE_FILES = sorted((ROOT / "tube").rglob("*.py"))


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


@pytest.mark.parametrize(
    "path", PACKAGE_FILES, ids=lambda p: p.relative_to(ROOT / "tube").as_posix()
)
def test_no_private_name_is_imported_across_modules(path: pathlib.Path) -> None:
    for node in imports(path):
        if node.level == 0 and not (node.module or "").startswith("tube"):
            continue  # the standard library or another distribution
        for alias in node.names:
            name = alias.name
            if name.startswith("_") and not name.startswith("__"):
                # A compiled module of our own (the accelerator) is no private name.
                assert name == "_speedups", f"{path.name} imports {name} from {node.module}"


def module_name(path: pathlib.Path) -> str:
    """``tube/websocket/aio/server.py`` -> ``tube.websocket.aio.server``."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def absolute(node: ast.ImportFrom, path: pathlib.Path) -> str:
    """The absolute module a ``from ... import`` names."""
    if node.level == 0:
        return node.module or ""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def aio_connection_private_names() -> set[str]:
    """The private members of the asyncio Connection: its methods and properties, and the
    attributes it sets on itself (``self._x = ...``)."""
    tree = ast.parse(AIO_CONNECTION.read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Connection"]
    names = {n.name for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    for node in ast.walk(cls):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
        ):
            names.add(node.attr)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def uses_the_aio_connection(path: pathlib.Path) -> bool:
    """The module imports the asyncio Connection (or the ``aio`` package, which exports it)."""
    for node in imports(path):
        source = absolute(node, path)
        names = {alias.name for alias in node.names}
        if source == "tube.websocket.aio.connection":
            return True
        if source == "tube.websocket.aio" and "Connection" in names:
            return True
        if source == "tube.websocket" and "aio" in names:
            return True
    return False


USERS_OF_THE_AIO_CONNECTION = sorted(
    path
    for path in (ROOT / "tube").rglob("*.py")
    if path != AIO_CONNECTION and uses_the_aio_connection(path)
)


def test_the_users_of_the_aio_connection_are_found() -> None:
    # The test below would pass vacuously if the search found nobody.
    found = {module_name(path) for path in USERS_OF_THE_AIO_CONNECTION}
    assert {
        "tube.websocket.aio.server",
        "tube.websocket.aio.client",
        "tube.websocket.integrations.uvicorn",
    } <= found, found


@pytest.mark.parametrize("path", USERS_OF_THE_AIO_CONNECTION, ids=module_name)
def test_no_module_uses_a_private_member_of_the_aio_connection(path: pathlib.Path) -> None:
    # The server, the client and the uvicorn integration go through Connection.handshake
    # (aio/opening.py's HandshakeSide), a declared interface, as the threaded parts do.
    private = aio_connection_private_names()
    assert {"_head", "_open", "_abort", "_start_close", "_closed", "_lost"} <= private
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in private
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            raise AssertionError(
                f"{module_name(path)} line {node.lineno} uses the connection's {node.attr}"
            )
