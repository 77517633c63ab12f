"""One name for the client's TLS settings on both transports (issue 21): ``connect(ssl=)``, as
``serve(ssl=)`` on both, with ``ssl_context=`` (the threaded client's first name) as its
deprecated alias: it still works, with a ``DeprecationWarning`` that names ``ssl=`` and points at
the application's call. Each rule is one body run against both clients."""

from __future__ import annotations

import contextlib
import ssl
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tube.websocket import Connection, aio, connect

from ..aio.conftest import run
from ..conftest import WsServer

Transport = str  # "threads" or "aio"
TRANSPORTS = ["threads", "aio"]
NAMES = ["ssl", "ssl_context"]
TIMEOUT = 5.0
DEPRECATED = r"^connect\(ssl_context=\.\.\.\) is deprecated: pass the same context as ssl=$"


@contextlib.contextmanager
def warning_for(name: str) -> Iterator[None]:
    """The alias warns once, at the caller's line (in this file); ``ssl=`` never warns."""
    if name == "ssl":
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            yield
        return
    with pytest.warns(DeprecationWarning, match=DEPRECATED) as record:
        yield
    deprecations = [w for w in record if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1, [str(w.message) for w in deprecations]
    assert deprecations[0].filename == __file__, deprecations[0].filename


def echo(connection: Connection) -> None:
    for message in connection.incoming:
        connection.send(message)


def open_and_echo(transport: Transport, url: str, **arguments: Any) -> Any:
    """Connect with ``arguments``, send "hello", return the answer, close (1000)."""
    if transport == "threads":
        with connect(url, open_timeout=TIMEOUT, **arguments) as connection:
            connection.send("hello")
            return connection.incoming.get(timeout=TIMEOUT)

    async def main() -> Any:
        async with aio.connect(url, open_timeout=TIMEOUT, **arguments) as connection:
            await connection.send("hello")
            return await connection.incoming.get(timeout=TIMEOUT)

    return run(main)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_either_name_sets_the_tls_context(
    ws_server: Callable[..., WsServer],
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    transport: Transport,
    name: str,
) -> None:
    server_context, client_context = tls_contexts
    server = ws_server(echo, ssl_context=server_context)
    url = f"wss://127.0.0.1:{server.port}/"
    with warning_for(name):
        assert open_and_echo(transport, url, **{name: client_context}) == "hello"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_without_a_context_the_default_one_verifies_the_certificate(
    ws_server: Callable[..., WsServer],
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    transport: Transport,
) -> None:
    # Neither name given: ssl.create_default_context(), which does not trust the test's CA.
    server = ws_server(echo, ssl_context=tls_contexts[0])
    with pytest.raises(ssl.SSLCertVerificationError):
        open_and_echo(transport, f"wss://127.0.0.1:{server.port}/")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_both_names_is_a_type_error(transport: Transport) -> None:
    context = ssl.create_default_context()
    with (
        warning_for("ssl_context"),
        pytest.raises(TypeError, match="ssl= or its alias ssl_context=, not both"),
    ):
        open_and_echo(transport, "wss://127.0.0.1:1/", ssl=context, ssl_context=context)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_context_with_a_ws_url_names_the_option_given(transport: Transport, name: str) -> None:
    with (
        warning_for(name),
        pytest.raises(ValueError, match=f"^{name} is only used with wss:// URLs"),
    ):
        open_and_echo(transport, "ws://127.0.0.1:1/", **{name: ssl.create_default_context()})
