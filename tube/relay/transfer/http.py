"""The relay's addresses and its one plain-HTTP call: ``POST /v1/nameplates``.

:func:`relay_urls` turns the relay the user named (``http(s)://``, ``ws(s)://`` or a bare
``host:port``) into the HTTP base for allocation and the WebSocket base for the relay channel;
:func:`allocate_nameplate` asks for a nameplate over a bounded HTTP/1.1 exchange of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import ssl as ssl_module
import urllib.parse

from ...websocket.core.http import get_header, parse_response_head
from .errors import RelayError, RelayUnavailable

__all__ = [
    "DEFAULT_RELAY",
    "Urls",
    "allocate_nameplate",
    "os_reason",
    "relay_urls",
    "urls_of",
]

#: The relay used when none is given (``python -m tube`` on this machine).
DEFAULT_RELAY = "http://127.0.0.1:8080"

_HTTP_BODY_LIMIT = 65536


@dataclasses.dataclass(frozen=True)
class Urls:
    """A relay's two bases, as :func:`relay_urls` returns them."""

    http: str  # http(s)://host:port[/prefix], no trailing slash
    ws: str  # ws(s)://host:port[/prefix]


def relay_urls(relay_url: str) -> tuple[str, str]:
    """Return ``(http_base, ws_base)`` for a relay given as ``http(s)://`` or ``ws(s)://`` URL.

    A bare ``host:port`` means ``http://``. Bases have no trailing slash; a path prefix is kept
    (a relay behind a proxy at ``https://example.com/tube``).

    Raises:
        ValueError: Not a URL of one of those schemes, or no host.
    """
    text = relay_url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    scheme = parts.scheme.lower()
    secure = {"http": False, "ws": False, "https": True, "wss": True}.get(scheme)
    if secure is None or not parts.hostname:
        raise ValueError(f"the relay must be an http(s):// or ws(s):// URL, got {relay_url!r}")
    path = parts.path.rstrip("/")
    netloc = parts.netloc
    return (
        f"{'https' if secure else 'http'}://{netloc}{path}",
        f"{'wss' if secure else 'ws'}://{netloc}{path}",
    )


def urls_of(relay_url: str) -> Urls:
    """:func:`relay_urls` as :class:`Urls` (raises ``ValueError`` the same way)."""
    http, ws = relay_urls(relay_url)
    return Urls(http, ws)


async def allocate_nameplate(
    relay_url: str, *, ssl: ssl_module.SSLContext | None = None, timeout: float = 10.0
) -> str:
    """Ask the relay for a nameplate: ``POST /v1/nameplates``; returns e.g. ``"4821"``.

    Raises:
        RelayUnavailable: The relay cannot be reached, or did not answer in ``timeout`` s.
        RelayError: It refused (429 with ``retry_after``, 503) or answered nonsense.
        ValueError: ``relay_url`` is not a relay URL.
    """
    http, _ = relay_urls(relay_url)
    parts = urllib.parse.urlsplit(http)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    context = (ssl or ssl_module.create_default_context()) if secure else None
    request = (
        f"POST {parts.path}/v1/nameplates HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Content-Length: 0\r\nConnection: close\r\nUser-Agent: tube-cli\r\n\r\n"
    ).encode("ascii")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, ssl=context)
            try:
                writer.write(request)
                status, headers, body = await _read_http_response(reader)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        raise RelayUnavailable(f"the relay at {http} did not answer in {timeout:g} s") from None
    except OSError as error:
        raise RelayUnavailable(f"cannot reach the relay at {http}: {os_reason(error)}") from None
    try:
        answer = json.loads(body)
    except ValueError:
        answer = {}
    if status == 201 and isinstance(answer, dict) and isinstance(answer.get("nameplate"), str):
        nameplate: str = answer["nameplate"]
        if re.fullmatch(r"[1-9][0-9]{2,7}", nameplate):
            return nameplate
    retry = get_header(headers, "Retry-After")
    retry_after = int(retry) if retry and retry.isdigit() else None
    if status == 429:
        raise RelayError(
            f"rate limited by the relay; try again in {retry_after or 60} s",
            close_code=4004,
            retry_after=retry_after,
        )
    if status == 503:
        raise RelayError("the relay is busy; try again later", retry_after=retry_after)
    raise RelayError(f"the relay at {http} cannot allocate a code (HTTP {status})")


async def _read_http_response(
    reader: asyncio.StreamReader,
) -> tuple[int, list[tuple[str, str]], bytes]:
    data = b""
    while True:
        parsed = parse_response_head(data)
        if parsed is not None:
            break
        more = await reader.read(4096)
        if not more:
            raise ConnectionResetError("the relay closed the connection before answering")
        data += more
    response, consumed = parsed
    body = data[consumed:]
    length = get_header(response.headers, "Content-Length")
    wanted = int(length) if length and length.isdigit() else _HTTP_BODY_LIMIT
    while len(body) < min(wanted, _HTTP_BODY_LIMIT):
        more = await reader.read(_HTTP_BODY_LIMIT)
        if not more:
            break
        body += more
    return response.status, response.headers, body[:_HTTP_BODY_LIMIT]


def os_reason(error: OSError) -> str:
    """Why a connection to the relay failed, in a few words."""
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is the relay running?)"
    return error.strerror or str(error) or type(error).__name__
