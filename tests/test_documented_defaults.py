"""Every documented default against the code (issue 24): the README's option tables (Options,
Client) are parsed, as are its statements of the asyncio functions' signatures, of
``DeflateOptions``' defaults and of ``UvicornProtocol``'s own, so that a change on either side
breaks the build.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from tube.websocket import ConnectionOptions, DeflateOptions, aio, connect, create_connection
from tube.websocket.core.options import DEFAULTS

from .conftest import require

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text of the README's ``## title`` section (up to the next ``## ``)."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)^## ", README, re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def table_defaults(text: str) -> dict[str, Any]:
    """``{option: default}`` from the rows ``| `name` | `default` ... |`` of a table in
    ``text``; a row without a literal default (``url``, ``**connection_options``) is left out."""
    defaults = {}
    for name, default in re.findall(r"^\| `(\w+)` \| `([^`]*)`", text, re.MULTILINE):
        try:
            defaults[name] = ast.literal_eval(default)
        except (ValueError, SyntaxError):
            continue  # an expression, e.g. ssl.create_default_context(): checked by hand
    return defaults


def signature_defaults(text: str, function: str) -> dict[str, Any]:
    """``{parameter: default}`` from the README's ``function(..., *, name=value, ...)``."""
    match = re.search(rf"\*\*`{function}\((.*?)\)`\*\*", text, re.DOTALL)
    assert match, f"README.md does not show the signature of {function}()"
    pairs = re.findall(r"(\w+)=([^,]+)", " ".join(match.group(1).split()))
    return {name: ast.literal_eval(value.strip()) for name, value in pairs}


def code_defaults(function: Any) -> dict[str, Any]:
    return {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


OPTIONS = table_defaults(section("Options"))


def test_the_options_table_lists_every_option() -> None:
    fields = {name for name in ConnectionOptions.__dataclass_fields__ if not name.startswith("_")}
    assert set(OPTIONS) == fields


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_connection_options_defaults(name: str) -> None:
    assert getattr(DEFAULTS, name) == OPTIONS[name]
    assert getattr(ConnectionOptions(), name) == OPTIONS[name]


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_threads_create_connection_defaults(name: str) -> None:
    connection = create_connection()
    assert getattr(connection.options, name) == OPTIONS[name]
    if name in ("close_retry_time", "close_give_up_time"):  # the seed's two fields
        assert getattr(connection, name) == OPTIONS[name]


def test_asyncio_serve_and_connect_defaults() -> None:
    text = section("asyncio")
    assert signature_defaults(text, "serve") == code_defaults(aio.serve)
    assert signature_defaults(text, "connect") == {
        name: value for name, value in code_defaults(aio.connect).items() if name != "compression"
    }
    # Connection options: "the same options, defaults ... as the threaded transport".
    assert "with the same\noptions, defaults" in text


def test_client_defaults() -> None:
    documented = table_defaults(section("Client"))
    code = code_defaults(connect)
    assert documented == {name: value for name, value in code.items() if name != "ssl"}
    assert code["ssl"] is None  # "ssl.create_default_context()" is made when None
    # ssl_context, ssl's alias, has its own row; asyncio's connect() takes both names too.
    assert documented["ssl_context"] is None
    assert code_defaults(aio.connect)["ssl"] is code_defaults(aio.connect)["ssl_context"] is None
    assert code_defaults(aio.connect)["compression"] == documented["compression"]


def test_deflate_options_defaults() -> None:
    text = section("Compression")
    tuning = re.search(r"\*\*Tuning\*\*(.*?)\n- \*\*", text, re.DOTALL)
    assert tuning, "README.md's Compression section has no **Tuning** item"
    words = " ".join(tuning.group(1).split())
    window = re.search(r"`client_max_window_bits` \(8-15, default \*\*(\d+)\*\*", words)
    memory = re.search(r"`memory_level` \(1-9, default \*\*(\d+)\*\*", words)
    level = re.search(r"`compression_level` \(0-9, default (\d+)\)", words)
    takeover = re.search(r"`client_no_context_takeover` \(default (\w+)\)", words)
    min_size = re.search(r"`min_size` \((\d+)\)", words)
    assert window and memory and level and takeover and min_size, words
    options = DeflateOptions()
    assert options.server_max_window_bits == options.client_max_window_bits == int(window[1])
    assert options.memory_level == int(memory[1])
    assert options.compression_level == int(level[1])
    assert takeover[1] == "off"
    assert not options.server_no_context_takeover and not options.client_no_context_takeover
    assert options.min_size == int(min_size[1])
    assert re.search(rf"of at least `min_size`\s+bytes \({options.min_size}\)", text)


def test_uvicorn_protocol_defaults() -> None:
    require("uvicorn")
    from uvicorn.config import Config

    from tube.websocket.asgi import UvicornProtocol
    from tube.websocket.integrations.uvicorn import _options

    text = " ".join(section("ASGI: FastAPI, Starlette, Django Channels through uvicorn").split())
    config = Config(app="tests.integrations.asgi_raw_app:app")
    options = _options(
        config.ws_max_size,
        config.ws_max_queue,
        config.ws_ping_interval,
        config.ws_ping_timeout,
        bool(config.ws_per_message_deflate),
        UvicornProtocol.tube_options,
    )
    queue = re.search(
        r"\(`incoming_size`, (\d+) under uvicorn\) and `incoming_bytes` \((\d+) MiB", text
    )
    assert queue, "README.md's ASGI section does not state the read-ahead bounds"
    assert options.incoming_size == int(queue[1])
    assert options.incoming_bytes == int(queue[2]) << 20
    assert "No Origin check by default" in text
    assert options.check_origin is False
    assert '(`compression="deflate"`, on by default as in uvicorn)' in text
    assert options.compression == DeflateOptions()  # "deflate": the default DeflateOptions
    timeout = re.search(r"reads nothing for `send_timeout` \((\d+) s\)", text)
    give_up = re.search(r"\(at most `close_give_up_time`, (\d+) s\)", text)
    assert timeout and give_up, "README.md's ASGI section does not state its timeouts"
    assert options.send_timeout == float(timeout[1])
    assert options.close_give_up_time == float(give_up[1])
    assert options.max_message_size == config.ws_max_size  # --ws-max-size
