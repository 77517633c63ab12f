"""Send and receive one file through a Tube relay, on asyncio: the I/O around the sans-I/O peer.

:func:`send_file` and :func:`receive_file` are what ``python -m tube send`` / ``receive`` run
(:mod:`tube.relay.cli`), and what tests use as the reference peer::

    result = await send_file("http://127.0.0.1:8080", "report.pdf", on_code=print_code)
    received = await receive_file("http://127.0.0.1:8080", "4821-ahead-zebra", Path("."))

What they do (relay-design §5.8-§5.9):

- **Pairing.** The sender allocates a nameplate (``POST /v1/nameplates`` on the relay's HTTP
  URL), makes the code from it and fresh words, connects to ``/v1/relay/<nameplate>``
  (``http`` → ``ws``, subprotocol ``tube.relay.v1``) and sends ``hello``/``wait``; the receiver
  parses the code *before* connecting (a typo must not burn the single-use nameplate), then
  ``hello``/``claim``. Both then drive a :class:`~tube.relay.e2e.peer.Peer`.
- **Streaming with flat memory.** The sender reads the file one 256 KiB chunk at a time, only
  while the receiver's credit window allows, and each send waits while the socket's buffer is
  full; it never holds more than a chunk. The receiver writes each chunk to
  ``.<name>.tube-part`` in the output folder and acknowledges it once written; a ``.json``
  sidecar (file_id, size, chunk size, chunks kept) is rewritten after each ``fsync`` (every
  16 MiB and whenever the session ends), so it never counts bytes the disk may not have.
- **Completion.** The receiver ``fsync``s, links the partial file to a free final name (never
  over an existing file: ``name (1).ext``...), removes the partial names, and only then sends
  ``done``. The sender reports success only on ``done``.
- **Resume within the relay's grace.** If the WebSocket drops (TCP lost, relay draining with
  1001), the side that dropped reconnects to ``/v1/relay`` with ``resume{rid}`` (at once, then
  after 1 s, each pause 1.5 times the last up to 30 s, for ``resume_timeout`` seconds) and the
  peers resync; the other side waits for ``peer:back``. At most a credit window of chunks is
  sent again.
- **Resume across a relay restart.** A resume answered 4010 (or a relay that never comes back)
  fails with :class:`ResumeFailed`; the receiver keeps its partial file. Sending the same file
  again (same ``salt``, hence the same ``file_id``) with a new code and receiving into the same
  folder continues from the chunks on disk (``accept{resume_from: k}``).
- **Failures** raise a :class:`TransferError` whose message is for people ("wrong code or
  interference", "no such code (already used or expired)", "integrity error ..."). An integrity
  failure deletes the partial output. Local errors and cancellation (Ctrl-C) send ``cancel`` to
  the peer before the exception propagates.

Concurrency: each call runs in the calling task, on its event loop; callbacks run in that task
(they may be coroutines, e.g. a prompt in a thread). Nothing is shared between calls.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import inspect
import io
import json
import mimetypes
import os
import re
import secrets
import ssl as ssl_module
import unicodedata
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from ..websocket import ConnectionClosed, HandshakeRejected, WebSocketError, aio
from ..websocket.core.http import get_header, parse_response_head
from .codes import ParsedCode, generate_words, make_code, make_link, parse_code
from .core import SUBPROTOCOL, decode_id
from .e2e.errors import E2EError, IntegrityError, WrongCode
from .e2e.framing import CHUNK_SIZE, MAX_SIZE, chunk_count, expected_length
from .e2e.keys import file_id as derive_file_id
from .e2e.peer import (
    Accepted,
    Cancelled,
    ChunkReceived,
    Done,
    Event,
    Failed,
    Offer,
    OfferReceived,
    Peer,
    Progress,
    State,
    Verified,
)

__all__ = [
    "DEFAULT_RELAY",
    "IncomingOffer",
    "IntegrityFailure",
    "ReceiveResult",
    "RelayError",
    "RelayUnavailable",
    "ResumeFailed",
    "SendResult",
    "TransferCancelled",
    "TransferError",
    "TransferProgress",
    "WrongCodeError",
    "allocate_nameplate",
    "load_salt",
    "partial_paths",
    "receive_file",
    "relay_urls",
    "safe_name",
    "send_file",
]

#: The relay used when none is given (``python -m tube`` on this machine).
DEFAULT_RELAY = "http://127.0.0.1:8080"

# The largest message the relay forwards (relay-design §5.1: 1 MiB + 64).
_FRAME_LIMIT = 1_048_640
# Close codes after which the pair may still be whole at the relay: resume.
_RESUMABLE = frozenset({1001, 1006, 1011, 1012, 1013, 1014})
# Close codes worth another resume attempt (the relay has not seen our old socket go yet;
# rate limited; draining; connection lost again).
_RETRY_RESUME = frozenset({4003, 4004, 4009, 1001, 1006, 1011, 1012, 1013, 1014})
# How often the receiver makes its progress durable (fsync, then the sidecar): 16 MiB.
_SYNC_EVERY = 64
# Redirects followed per connection (scale-out: the registry names the owner; one is normal).
_MAX_REDIRECTS = 3
# Seconds without any message during a transfer before giving up: longer than the relay's
# resume grace (120 s), so a peer that is away is the relay's to judge (4006) first; this only
# catches a relay that silently swallows what it should forward.
STALL_TIMEOUT = 180.0
# Room left in a 255-byte file name for ".", ".tube-part.json" and " (999)".
_MAX_NAME_BYTES = 200
_PART_SUFFIX = ".tube-part"
_SIDECAR_VERSION = 1
_SALT_FILE = "file-id-salt"
_HTTP_BODY_LIMIT = 65536

_RELAY_MESSAGES = {
    1001: "the relay is shutting down",
    1006: "the connection to the relay was lost",
    1009: "a message was too big for the relay",
    4000: "the relay reported a protocol error",
    4001: "the relay speaks another protocol version",
    4002: "no such code (already used or expired)",
    4003: "this code is already in use by someone else",
    4004: "rate limited by the relay",
    4005: "nobody came: the code expired unused",
    4006: "the other side is gone",
    4007: "the transfer exceeded the relay's limits",
    4008: "the transfer stalled (the receiver stopped reading)",
    4009: "the relay is busy",
    4010: "the relay no longer knows this transfer (it restarted, or the pause was too long)",
    4011: "the relay refused this web origin",
    4013: "the relay could not route this code",
}

T = TypeVar("T")


# --- Results, progress, errors --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TransferProgress:
    """How far a transfer is, in bytes.

    Attributes:
        done: Bytes the receiver holds: acknowledged (sender) or written (receiver).
        total: The file's size.
        resumed_from: Bytes the receiver already had when this session started.
    """

    done: int
    total: int
    resumed_from: int


@dataclasses.dataclass(frozen=True)
class IncomingOffer:
    """What the receiver is asked to accept.

    Attributes:
        name: The sanitised name the file will be saved under (before " (1)" if it exists).
        offered_name: The name exactly as the sender stated it.
        size: Bytes.
        type: The media type the sender stated (informative only: never trusted).
        last_modified: The sender's modification time, milliseconds since 1970.
        resume_bytes: Bytes of this file already in the output folder from an earlier try.
    """

    name: str
    offered_name: str
    size: int
    type: str
    last_modified: int
    resume_bytes: int


@dataclasses.dataclass(frozen=True)
class SendResult:
    """A file delivered: the receiver wrote all of it and said ``done``.

    Attributes:
        code: The code the receiver used (``4821-ahead-zebra`` or ``4821.<secret>``).
        link: The link form (``--link``), else None.
        name: The file name offered.
        size: Bytes.
        chunks_sent: DATA frames sent in this session, resends after a resume included.
        resumed_from: Chunks the receiver already had (not sent).
        verifier: The six verification digits.
    """

    code: str
    link: str | None
    name: str
    size: int
    chunks_sent: int
    resumed_from: int
    verifier: str


@dataclasses.dataclass(frozen=True)
class ReceiveResult:
    """A file received whole, under its final name.

    Attributes:
        path: Where it was saved.
        offer: What the sender offered.
        chunks_received: DATA chunks received and written in this session.
        resumed_from: Chunks that were already on disk from an earlier session.
        verifier: The six verification digits.
    """

    path: Path
    offer: IncomingOffer
    chunks_received: int
    resumed_from: int
    verifier: str


class TransferError(Exception):
    """A transfer failed; ``str(error)`` says why, for people.

    Attributes:
        close_code: The relay's close code behind it, if any.
    """

    def __init__(self, message: str, *, close_code: int | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code


class RelayError(TransferError):
    """The relay refused or ended the connection (a close code, an HTTP error).

    Attributes:
        retry_after: Seconds the relay asks to wait before trying again (rate limits), or None.
    """

    def __init__(
        self, message: str, *, close_code: int | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message, close_code=close_code)
        self.retry_after = retry_after


class RelayUnavailable(RelayError):
    """The relay cannot be reached (not running, wrong address, network down)."""


class ResumeFailed(RelayError):
    """The connection dropped and the pair could not be resumed (relay restarted, grace over).

    The receiver keeps what it wrote: the same file sent again with a new code continues there.
    """


class WrongCodeError(TransferError):
    """The key confirmation failed: a wrong code, or someone in the middle (one cannot tell)."""


class IntegrityFailure(TransferError):
    """A chunk or control message failed authentication; the partial output was deleted."""


class TransferCancelled(TransferError):
    """The transfer was declined or cancelled.

    Attributes:
        reason: As stated (``"declined"`` when the receiver said no).
        by_peer: True if the other side cancelled, False if this side did.
    """

    def __init__(self, reason: str, *, by_peer: bool) -> None:
        who = "the other side" if by_peer else "this side"
        if reason == "declined":
            message = "the receiver declined the file" if by_peer else "declined"
        else:
            message = f"cancelled by {who}: {reason}"
        super().__init__(message)
        self.reason = reason
        self.by_peer = by_peer


def _relay_failure(code: int | None, reason: str, error: dict[str, Any] | None) -> RelayError:
    """The error for a connection the relay closed (``error``: its last error message)."""
    if error is not None and isinstance(error.get("code"), int):
        code = error["code"]
        reason = str(error.get("reason", reason))
    retry = error.get("retry_after") if error else None
    retry_after = retry if isinstance(retry, int) and not isinstance(retry, bool) else None
    message = _RELAY_MESSAGES.get(code or 0) or (
        f"the connection to the relay ended ({code}{': ' + reason if reason else ''})"
    )
    if retry_after is not None:
        message += f"; try again in {retry_after} s"
    if code == 4010:
        return ResumeFailed(message, close_code=code)
    return RelayError(message, close_code=code, retry_after=retry_after)


def _peer_failure(error: E2EError) -> TransferError:
    if isinstance(error, WrongCode):
        return WrongCodeError("wrong code or interference")
    if isinstance(error, IntegrityError):
        return IntegrityFailure(f"integrity error: {error}")
    return TransferError(f"protocol error from the other side: {error}")


# --- Relay addresses and allocation ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Urls:
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


def _urls(relay_url: str) -> _Urls:
    http, ws = relay_urls(relay_url)
    return _Urls(http, ws)


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
        raise RelayUnavailable(f"cannot reach the relay at {http}: {_os_reason(error)}") from None
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


def _os_reason(error: OSError) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is the relay running?)"
    return error.strerror or str(error) or type(error).__name__


# --- The connection to the relay ------------------------------------------------------------


class _Ended(Exception):
    """Internal: the connection ended after the peer finished (nothing to resume)."""


async def _call(callback: Callable[..., T | Awaitable[T]], *args: Any) -> T:
    result = callback(*args)
    if inspect.isawaitable(result):
        return await result
    return result


async def _bounded(coroutine: Coroutine[Any, Any, Any], timeout: float) -> None:
    """Run ``coroutine`` for at most ``timeout`` s, even while our own task is being cancelled
    (``asyncio.timeout`` would not fire then), swallowing its errors: cleanup only."""
    task = asyncio.ensure_future(coroutine)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
    elif not task.cancelled():
        task.exception()  # retrieved: a failed cleanup is not worth a warning


class _Channel:
    """The WebSocket to the relay for one :class:`Peer`: pairing, control messages, resume.

    Owns the current connection (replaced by a resume), the resume id the peer announced and
    the relay's last ``error`` message (which explains the close that follows it).
    """

    def __init__(
        self,
        urls: _Urls,
        peer: Peer,
        *,
        ssl: ssl_module.SSLContext | None,
        open_timeout: float,
        resume_timeout: float,
        notice: Callable[[str], object] | None,
        stall_timeout: float = STALL_TIMEOUT,
    ) -> None:
        self.urls = urls
        self.stall_timeout = stall_timeout
        # Where the next connection goes instead of the relay's own URL (a redirect's).
        self._next_url: str | None = None
        self.peer = peer
        self.ssl = ssl
        self.open_timeout = open_timeout
        self.resume_timeout = resume_timeout
        self.notice = notice
        self.conn: aio.Connection | None = None
        self.rid: str | None = None
        self.error: dict[str, Any] | None = None
        self.data_frames_sent = 0

    def _say(self, text: str) -> None:
        if self.notice is not None:
            self.notice(text)

    async def _open(self, path: str) -> aio.Connection:
        """Connect to ``path`` and exchange ``hello``/``welcome``, following the relay's
        ``redirect`` to the instance that owns the name (scale-out, relay-design §8)."""
        url = self._next_url or self.urls.ws + path
        self._next_url = None
        for _ in range(_MAX_REDIRECTS + 1):
            conn = await self._connect(url)
            try:
                role = self.peer.role
                await conn.send(json.dumps({"t": "hello", "v": 1, "role": role}))
                welcome = await self._control(conn, timeout=self.open_timeout)
                if welcome.get("t") == "redirect":
                    url = self.redirect_target(welcome.get("url"), url)
                    await _bounded(conn.close(), 2.0)
                    continue
                if welcome.get("t") != "welcome":
                    raise TransferError(f"the relay answered hello with {welcome.get('t')!r}")
            except BaseException:
                await _bounded(conn.close(), 2.0)
                raise
            return conn
        raise RelayError(f"the relay at {self.urls.http} redirected too many times")

    @staticmethod
    def redirect_target(target: object, current: str) -> str:
        """The URL a ``redirect`` names, if it is one we follow: ``ws``/``wss`` with a host,
        and never from ``wss`` down to ``ws``."""
        if isinstance(target, str):
            parts = urllib.parse.urlsplit(target)
            secure = current.startswith("wss:")
            if parts.scheme in (("wss",) if secure else ("ws", "wss")) and parts.hostname:
                return target
        raise RelayError(f"the relay redirected to an address we do not follow: {target!r}")

    async def _connect(self, url: str) -> aio.Connection:
        try:
            return await aio.connect(
                url,
                subprotocols=[SUBPROTOCOL],
                compression=None,
                max_message_size=_FRAME_LIMIT,
                open_timeout=self.open_timeout,
                ssl=self.ssl,
            )
        except HandshakeRejected as error:
            raise RelayError(
                f"the relay at {self.urls.http} refused: HTTP {error.status}"
            ) from None
        except OSError as error:
            raise RelayUnavailable(
                f"cannot reach the relay at {self.urls.http}: {_os_reason(error)}"
            ) from None
        except WebSocketError as error:  # OpenTimeout, an invalid handshake
            raise RelayUnavailable(f"cannot reach the relay at {self.urls.http}: {error}") from None

    async def _control(self, conn: aio.Connection, timeout: float | None) -> dict[str, Any]:
        """The next control message that is not an ``error`` (those are kept in ``error``).

        Raises:
            RelayError: The relay closed the connection (the message says why).
        """
        while True:
            try:
                message = await conn.incoming.get(timeout=timeout)
            except ConnectionClosed:
                raise _relay_failure(conn.close_code, conn.close_reason, self.error) from None
            except TimeoutError:
                raise RelayUnavailable("the relay stopped answering") from None
            if not isinstance(message, str):
                raise TransferError("the relay sent data before pairing")
            parsed = _json(message)
            if parsed.get("t") == "error":
                self.error = parsed
                continue
            return parsed

    async def pair(self, nameplate: str, on_waiting: Callable[[], Awaitable[None]]) -> None:
        """``wait`` (sender) or ``claim`` (receiver) on ``nameplate``, until ``paired``."""
        conn = self.conn = await self._open(f"/v1/relay/{nameplate}")
        await conn.send('{"t":"wait"}' if self.peer.role == "send" else '{"t":"claim"}')
        await on_waiting()
        while True:
            message = await self._control(conn, timeout=None)  # the relay's wait_s bounds it
            if message.get("t") == "paired":
                pair_id = decode_id(message.get("pair_id"))
                if pair_id is None:
                    raise TransferError("the relay sent a malformed pair id")
                self.peer.paired(pair_id)
                self._say("paired; checking the code")
                return

    async def flush(self) -> None:
        """Send what the peer queued, in order (one ``send_many``, so order holds across
        tasks); a dead connection drops it: a resume sends what matters again."""
        items = self.peer.data_to_send()
        if not items:
            return
        for item in items:
            if isinstance(item, str):
                if '"resumable"' in item:
                    self.rid = _json(item).get("rid")
            elif item[0] == 0x10:
                self.data_frames_sent += 1
        conn = self.conn
        if conn is None:
            return
        with contextlib.suppress(ConnectionClosed):
            await conn.send_many(items)

    async def next(self) -> bytes | None:
        """The next binary frame for the peer, or None after a control message or a resume
        changed the peer's state (the caller looks at the peer again).

        Raises:
            RelayError: The relay closed the connection and it cannot be resumed.
            _Ended: The connection ended after the peer finished.
        """
        conn = self.conn
        assert conn is not None
        moving = self.peer.state in (State.TRANSFER, State.FINISHING)
        try:
            message = await conn.incoming.get(timeout=self.stall_timeout if moving else None)
        except TimeoutError:
            raise TransferError(
                f"nothing arrived for {self.stall_timeout:g} s: the transfer stalled"
            ) from None
        except ConnectionClosed:
            if self.peer.is_finished:
                raise _Ended() from None
            code = conn.close_code
            if self.rid is None or code not in _RESUMABLE or self.error is not None:
                raise _relay_failure(code, conn.close_reason, self.error) from None
            await self._resume()
            return None
        if isinstance(message, bytes):
            return message
        parsed = _json(str(message))
        kind = parsed.get("t")
        if kind == "error":
            self.error = parsed
        elif kind == "peer":
            state = parsed.get("state")
            if state == "lost":
                self._say("the other side lost its connection; waiting for it to come back")
                self.peer.peer_lost()
            elif state == "back":
                self._say("the other side is back")
                self.peer.resumed()
            elif state == "gone" and not self.peer.is_finished:
                # A bye without a cancel: the peer failed (its own message says why).
                raise TransferError("the other side gave up")
        return None

    async def _resume(self) -> None:
        """Rejoin the pair on a new connection (relay-design §5.9), or raise ResumeFailed."""
        self.peer.peer_lost()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.resume_timeout
        delay = 1.0
        redirects = 0
        self._say("connection to the relay lost; resuming")
        while True:
            self.error = None
            retry_after = 0
            try:
                conn = await self._open("/v1/relay")
            except RelayError as error:
                if (
                    not isinstance(error, RelayUnavailable)
                    and error.close_code not in _RETRY_RESUME
                ):
                    raise
                last, retry_after = str(error), error.retry_after or 0
            else:
                outcome = await self._rejoin(conn, deadline)
                if outcome is None:
                    self.conn = conn
                    self.error = None
                    self._say("resumed")
                    self.peer.resumed()
                    return
                last, retry_after = outcome
                if last == "redirected" and redirects < _MAX_REDIRECTS:
                    redirects += 1
                    continue  # to the instance that holds the pair, at once
            pause = max(delay, retry_after)
            if loop.time() + pause > deadline:
                raise ResumeFailed(f"could not resume the transfer: {last}")
            await asyncio.sleep(pause)
            delay = min(delay * 1.5, 30.0)

    async def _rejoin(self, conn: aio.Connection, deadline: float) -> tuple[str, int] | None:
        """Send ``resume`` on ``conn``; None once paired again, else (why, retry after) for a
        refusal worth retrying. Raises for the others (4010: ResumeFailed)."""
        role = self.peer.role
        await conn.send(json.dumps({"t": "resume", "rid": self.rid, "role": role}))
        loop = asyncio.get_running_loop()
        try:
            while True:
                # The other side may be away too: its own resume brings peer:back.
                message = await self._control(conn, timeout=max(5.0, deadline - loop.time()))
                kind = message.get("t")
                if kind == "paired" or (kind == "peer" and message.get("state") == "back"):
                    return None
                if kind == "redirect":  # another instance holds the pair
                    self._next_url = self.redirect_target(message.get("url"), self.urls.ws)
                    await _bounded(conn.close(), 2.0)
                    return "redirected", 0
        except RelayError as error:
            await _bounded(conn.close(), 2.0)
            retry = isinstance(error, RelayUnavailable) or error.close_code in _RETRY_RESUME
            if isinstance(error, ResumeFailed) or not retry:
                raise
            return str(error), error.retry_after or 0

    async def finish(self) -> None:
        """After the peer ended: let the relay close us after our ``bye`` (bounded)."""
        conn = self.conn
        if conn is None:
            return
        await _bounded(_drain(conn), 5.0)
        await _bounded(conn.close(), 2.0)
        if conn.transport is not None and not conn.transport.is_closing():
            conn.transport.abort()

    async def abandon(self, reason: str) -> None:
        """Give up: tell the peer (``cancel``, or ``bye`` before the keys are confirmed)."""
        peer = self.peer
        conn = self.conn
        if peer.state in (State.READY, State.OFFERED, State.TRANSFER, State.FINISHING):
            peer.cancel(reason)
        elif not peer.is_finished and conn is not None:
            mood = "lonely" if peer.state is State.NEW else "errory"
            with contextlib.suppress(ConnectionClosed):
                await conn.send(json.dumps({"t": "bye", "mood": mood}))
        await _bounded(self.flush(), 2.0)
        await self.finish()


async def _drain(conn: aio.Connection) -> None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await conn.incoming.get()


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def _drive(channel: _Channel, app: _Sending | _Receiving) -> None:
    """Run the peer until ``app`` has an outcome: flush, hand events to the app, let the
    sender send what its credit allows, then wait for the next frame."""
    peer = channel.peer
    while True:
        await channel.flush()
        events = peer.events()
        if events:
            for event in events:
                await app.handle(event)
            continue
        if app.outcome is not None:
            return
        if await app.pump():
            continue
        frame = await channel.next()
        if frame is not None:
            peer.receive(frame)


async def _run(channel: _Channel, app: _Sending | _Receiving, start: Awaitable[None]) -> None:
    """Pair, drive, end politely; on any failure (Ctrl-C included) tell the peer first."""
    try:
        await start
        await _drive(channel, app)
    except _Ended:
        if app.outcome is None:
            raise TransferError("the connection ended before the transfer did") from None
    except BaseException as error:
        reason = "interrupted" if isinstance(error, asyncio.CancelledError) else "failed"
        await channel.abandon(f"{reason} on the {'sender' if app.is_sender else 'receiver'}")
        raise
    await channel.finish()
    if isinstance(app.outcome, BaseException):
        raise app.outcome


# --- Sending --------------------------------------------------------------------------------


class _Source:
    """The file being sent, read one chunk at a time from its offset (never whole)."""

    def __init__(self, path: Path) -> None:
        # Open for the whole transfer, closed by close().
        self.file = open(path, "rb", buffering=0)  # noqa: SIM115
        stat = os.fstat(self.file.fileno())
        self.size = stat.st_size
        self.last_modified = max(0, stat.st_mtime_ns // 1_000_000)

    def read(self, index: int) -> bytes:
        length = expected_length(self.size, index)
        offset = index * CHUNK_SIZE
        if hasattr(os, "pread"):
            data = os.pread(self.file.fileno(), length, offset)
        else:  # Windows
            self.file.seek(offset)
            data = self.file.read(length) or b""
        if len(data) != length:
            raise TransferError("the file changed while it was being sent")
        return data

    def close(self) -> None:
        self.file.close()


class _Sending:
    """The sender's reactions to the peer's events."""

    is_sender = True

    def __init__(
        self,
        channel: _Channel,
        source: _Source,
        name: str,
        file_id: bytes,
        on_verified: Callable[[str], bool | Awaitable[bool]] | None,
        on_progress: Callable[[TransferProgress], object] | None,
    ) -> None:
        self.channel = channel
        self.peer = channel.peer
        self.source = source
        self.name = name
        self.file_id = file_id
        self.on_verified = on_verified
        self.on_progress = on_progress
        self.outcome: BaseException | bool | None = None
        self.verifier = ""
        self.resumed_from = 0

    async def handle(self, event: Event) -> None:
        peer = self.peer
        source = self.source
        if isinstance(event, Verified):
            self.verifier = event.verifier
            # With --verify the offer (name, size) waits until the user compared the digits.
            if self.on_verified is not None and not await _call(self.on_verified, event.verifier):
                peer.cancel("the verification digits did not match")
                self.outcome = TransferCancelled("the digits did not match", by_peer=False)
                return
            mime = mimetypes.guess_type(self.name)[0] or "application/octet-stream"
            peer.offer(
                file_id=self.file_id,
                name=self.name,
                size=source.size,
                type=mime,
                last_modified=source.last_modified,
            )
        elif isinstance(event, Accepted):
            self.resumed_from = event.resume_from
            self._progress(event.resume_from - 1)
        elif isinstance(event, Progress):
            self._progress(event.through)
        elif isinstance(event, Done):
            self._progress(chunk_count(source.size) - 1)
            self.outcome = True
        elif isinstance(event, Cancelled):
            self.outcome = TransferCancelled(event.reason, by_peer=True)
        elif isinstance(event, Failed):
            self.outcome = _peer_failure(event.error)

    def _progress(self, through: int) -> None:
        if self.on_progress is not None:
            size = self.source.size
            done = min(size, (through + 1) * CHUNK_SIZE)
            self.on_progress(
                TransferProgress(done, size, min(size, self.resumed_from * CHUNK_SIZE))
            )

    async def pump(self) -> bool:
        """Send every chunk the credit window allows now; True if any was sent."""
        peer = self.peer
        sent = False
        while peer.can_send_chunk():
            index = peer.next_chunk_wanted()
            peer.send_chunk(index, self.source.read(index))
            sent = True
            # One chunk in hand at a time: this waits while the socket's buffer is full.
            await self.channel.flush()
        return sent


async def send_file(
    relay_url: str,
    path: str | os.PathLike[str],
    *,
    words: int = 2,
    link: bool = False,
    on_code: Callable[[str, str | None], object] | None = None,
    on_verified: Callable[[str], bool | Awaitable[bool]] | None = None,
    on_progress: Callable[[TransferProgress], object] | None = None,
    on_notice: Callable[[str], object] | None = None,
    salt: bytes | None = None,
    ssl: ssl_module.SSLContext | None = None,
    open_timeout: float = 10.0,
    resume_timeout: float = 120.0,
    stall_timeout: float = STALL_TIMEOUT,
) -> SendResult:
    """Send the file at ``path`` through the relay; returns once the receiver has all of it.

    Args:
        relay_url: The relay (``http(s)://host:port``, or ``ws(s)://``).
        path: A regular file, at most 64 GiB.
        words: Words in the code (2: 1 in 1,679,616 per guess; 3: 31 bits).
        link: Use the link form (``N.<128-bit secret>``) instead of words.
        on_code: Called as ``on_code(code, link)`` once the code is usable (``link`` is None
            unless ``link=True``). ``code`` is what ``receive`` takes.
        on_verified: Called with the six verification digits once the keys are confirmed;
            the offer waits for it; a false result cancels. May be a coroutine function.
        on_progress: Called with a :class:`TransferProgress` (acknowledged bytes).
        on_notice: Called with short status lines (waiting, paired, resuming).
        salt: The secret salt of the file id (relay-design §5.9); the same salt gives the same
            id for the same file, which lets a receiver continue a partial download. Default:
            :func:`load_salt`.
        ssl: TLS context for ``https``/``wss`` relays (default: the system's trust store).
        open_timeout: Seconds for each connection's opening (TCP, TLS, upgrade, welcome).
        resume_timeout: Seconds to keep trying to resume a dropped connection.
        stall_timeout: Seconds without any message during the transfer before giving up
            (a relay that swallows what it should forward).

    Raises:
        TransferError: The transfer failed (see its subclasses); the message says why.
        OSError: The file cannot be read.
        ValueError: A bad ``relay_url``, ``words`` or a file too large.
    """
    urls = _urls(relay_url)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"not a file: {path}")
    if not 2 <= words <= 8:
        raise ValueError(f"words must be 2..8, got {words}")
    source = _Source(path)
    try:
        if source.size > MAX_SIZE:
            raise ValueError(f"{path.name} is larger than 64 GiB, the most one transfer carries")
        name = path.name
        file_id = derive_file_id(
            load_salt() if salt is None else salt, name, source.size, source.last_modified
        )
        nameplate = await allocate_nameplate(urls.http, ssl=ssl, timeout=open_timeout)
        link_text: str | None = None
        if link:
            link_text, code = make_link(urls.http + "/", nameplate)
        else:
            code = make_code(nameplate, generate_words(words))
        peer = Peer("send", ParsedCode(nameplate, code).prs)
        channel = _Channel(
            urls,
            peer,
            ssl=ssl,
            open_timeout=open_timeout,
            resume_timeout=resume_timeout,
            stall_timeout=stall_timeout,
            notice=on_notice,
        )
        app = _Sending(channel, source, name, file_id, on_verified, on_progress)

        async def waiting() -> None:
            if on_code is not None:
                await _call(on_code, code, link_text)
            if on_notice is not None:
                on_notice("waiting for the receiver")

        await _run(channel, app, channel.pair(nameplate, waiting))
        return SendResult(
            code=code,
            link=link_text,
            name=name,
            size=source.size,
            chunks_sent=channel.data_frames_sent,
            resumed_from=app.resumed_from,
            verifier=app.verifier,
        )
    finally:
        source.close()


# --- Receiving ------------------------------------------------------------------------------


_WINDOWS_RESERVED = re.compile(r"(?i)(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?")
_UNSAFE_CHARS = str.maketrans({c: "_" for c in '<>:"|?*'})


def safe_name(name: str) -> str:
    """Return a file name safe to create from a name the sender chose.

    Keeps the last path component only (``/`` and ``\\`` both separate), drops control and
    format characters (bidirectional overrides that disguise an extension included), replaces
    characters Windows refuses, strips leading dots (no hidden files, no ``..``) and trailing
    dots and spaces, caps the name at 200 UTF-8 bytes keeping the extension, and never returns
    an empty or reserved name (``file`` instead).
    """
    base = re.split(r"[/\\]", name)[-1]
    base = "".join(c for c in base if unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp"))
    base = base.translate(_UNSAFE_CHARS).strip().lstrip(".").strip().rstrip(". ")
    if len(base.encode()) > _MAX_NAME_BYTES:
        stem, dot, ext = base.rpartition(".")
        if not dot or not stem or len(ext.encode()) > 20:
            stem, ext = base, ""
        budget = _MAX_NAME_BYTES - len(ext.encode()) - (1 if ext else 0)
        stem = stem.encode()[:budget].decode(errors="ignore").rstrip(". ")
        base = f"{stem}.{ext}" if ext else stem
    if not base or _WINDOWS_RESERVED.fullmatch(base):
        base = f"file{'' if not base else '-' + base}"
    return base


def partial_paths(directory: Path, name: str) -> tuple[Path, Path]:
    """``(partial file, sidecar)`` for a download of ``name`` (already sanitised) in
    ``directory``: ``.<name>.tube-part`` and ``.<name>.tube-part.json``."""
    part = directory / f".{name}{_PART_SUFFIX}"
    return part, part.with_name(part.name + ".json")


class _Partial:
    """A download in progress: the partial file and its sidecar.

    The sidecar counts the chunks that are both written and ``fsync``ed, so it never claims
    bytes the disk may not hold after a crash.
    """

    def __init__(self, directory: Path, name: str, offer: Offer) -> None:
        self.directory = directory
        self.name = name
        self.offer = offer
        self.part, self.sidecar = partial_paths(directory, name)
        self.file: io.BufferedIOBase | None = None
        self.written = 0  # chunks written, from the start of the file
        self.synced = 0  # of which made durable

    def chunks_on_disk(self) -> int:
        """Chunks of this very file (same id, name and size) kept by an earlier session."""
        try:
            meta = json.loads(self.sidecar.read_text(encoding="utf-8"))
            part_size = self.part.stat().st_size
        except (OSError, ValueError):
            return 0
        offer = self.offer
        if not isinstance(meta, dict) or meta.get("v") != _SIDECAR_VERSION:
            return 0
        same = (
            meta.get("file_id") == _b64u(offer.file_id)
            and meta.get("name") == offer.name
            and meta.get("size") == offer.size
            and meta.get("chunk") == CHUNK_SIZE
        )
        chunks = meta.get("chunks")
        if not same or type(chunks) is not int or not 0 <= chunks <= offer.chunks:
            return 0
        if part_size < min(offer.size, chunks * CHUNK_SIZE):
            return 0
        return chunks

    def open(self, resume_from: int) -> None:
        """Start writing after the ``resume_from`` chunks kept (0: a new file)."""
        # Open until close(), finish() or discard().
        if resume_from:
            file: io.BufferedIOBase = open(self.part, "r+b")  # noqa: SIM115
        else:
            file = open(self.part, "wb")  # noqa: SIM115
        file.truncate(min(self.offer.size, resume_from * CHUNK_SIZE))
        self.file = file
        self.written = self.synced = resume_from
        self._write_sidecar(resume_from)

    def write(self, index: int, data: bytes) -> None:
        """Write chunk ``index`` (the next one); make progress durable every 16 MiB."""
        file = self.file
        assert file is not None and index == self.written
        file.seek(index * CHUNK_SIZE)
        file.write(data)
        self.written = index + 1
        if self.written - self.synced >= _SYNC_EVERY:
            self._sync()

    def _sync(self) -> None:
        file = self.file
        assert file is not None
        file.flush()
        os.fsync(file.fileno())
        self.synced = self.written
        self._write_sidecar(self.synced)

    def _write_sidecar(self, chunks: int) -> None:
        meta = {
            "v": _SIDECAR_VERSION,
            "file_id": _b64u(self.offer.file_id),
            "name": self.offer.name,
            "size": self.offer.size,
            "chunk": CHUNK_SIZE,
            "chunks": chunks,
        }
        temporary = self.sidecar.with_name(self.sidecar.name + ".tmp")
        temporary.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(temporary, self.sidecar)

    def finish(self) -> Path:
        """Make the file durable and give it its final name, never over an existing file."""
        file = self.file
        assert file is not None
        file.flush()
        os.fsync(file.fileno())
        file.close()
        self.file = None
        final = _move_to_free_name(self.part, self.directory, self.name)
        with contextlib.suppress(FileNotFoundError):
            self.sidecar.unlink()
        _sync_directory(self.directory)
        return final

    def close(self) -> None:
        """Stop; keep what was written (durably) for a later session."""
        if self.file is not None:
            # A full disk fails both; the sidecar then keeps its last durable count.
            with contextlib.suppress(OSError):
                self._sync()
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None

    def discard(self) -> None:
        """Stop and delete the partial output (its content cannot be trusted)."""
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None
        for path in (self.part, self.sidecar):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _move_to_free_name(source: Path, directory: Path, name: str) -> Path:
    """Move ``source`` to ``name`` in ``directory``, or ``stem (1).ext``, ...: by a hard link
    (which fails if the name exists, so nothing is overwritten, even a file created just now)
    and unlinking ``source``."""
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, dot, ext = name, "", ""
    for n in range(10_000):
        candidate = directory / (name if n == 0 else f"{stem} ({n}){dot}{ext}")
        try:
            os.link(source, candidate)
        except FileExistsError:
            continue
        except OSError:
            # No hard links on this file system: rename if the name is still free (a small
            # race with a file created in between, which Windows' rename refuses anyway).
            if candidate.exists():
                continue
            os.rename(source, candidate)
            return candidate
        source.unlink()
        return candidate
    raise TransferError(f"no free file name for {name} in {directory}")


def _sync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Receiving:
    """The receiver's reactions to the peer's events."""

    is_sender = False

    def __init__(
        self,
        peer: Peer,
        directory: Path,
        accept: Callable[[IncomingOffer], bool | Awaitable[bool]] | None,
        on_verified: Callable[[str], object] | None,
        on_progress: Callable[[TransferProgress], object] | None,
    ) -> None:
        self.peer = peer
        self.directory = directory
        self.accept = accept
        self.on_verified = on_verified
        self.on_progress = on_progress
        self.outcome: BaseException | bool | None = None
        self.partial: _Partial | None = None
        self.incoming: IncomingOffer | None = None
        self.path: Path | None = None
        self.verifier = ""
        self.resumed_from = 0
        self.chunks_received = 0

    async def handle(self, event: Event) -> None:
        peer = self.peer
        if isinstance(event, Verified):
            self.verifier = event.verifier
            if self.on_verified is not None:
                await _call(self.on_verified, event.verifier)
        elif isinstance(event, OfferReceived):
            await self._offered(event.offer)
        elif isinstance(event, ChunkReceived):
            partial = self.partial
            assert partial is not None
            partial.write(event.index, event.plaintext)
            self.chunks_received += 1
            peer.chunk_written(event.index)
            self._progress(event.index)
            if event.final:
                await self._complete()
        elif isinstance(event, Done):
            self.outcome = True
        elif isinstance(event, Cancelled):
            self.outcome = TransferCancelled(event.reason, by_peer=True)
        elif isinstance(event, Failed):
            if isinstance(event.error, IntegrityError) and self.partial is not None:
                self.partial.discard()
                self.partial = None
            self.outcome = _peer_failure(event.error)

    async def _offered(self, offer: Offer) -> None:
        name = safe_name(offer.name)
        partial = _Partial(self.directory, name, offer)
        kept = partial.chunks_on_disk()
        self.incoming = incoming = IncomingOffer(
            name=name,
            offered_name=offer.name,
            size=offer.size,
            type=offer.type,
            last_modified=offer.last_modified,
            resume_bytes=min(offer.size, kept * CHUNK_SIZE),
        )
        if self.accept is not None and not await _call(self.accept, incoming):
            self.peer.decline()
            self.outcome = TransferCancelled("declined", by_peer=False)
            return
        partial.open(kept)
        self.partial = partial
        self.resumed_from = kept
        self.peer.accept_offer(kept)
        self._progress(kept - 1)
        if self.peer.state is State.FINISHING:  # every chunk was here already
            await self._complete()

    async def _complete(self) -> None:
        partial = self.partial
        assert partial is not None
        # fsync can take a while on a slow disk: not on the event loop.
        self.path = await asyncio.to_thread(partial.finish)
        self.partial = None
        self.peer.complete()

    def _progress(self, through: int) -> None:
        if self.on_progress is not None and self.incoming is not None:
            size = self.incoming.size
            done = min(size, (through + 1) * CHUNK_SIZE)
            self.on_progress(TransferProgress(done, size, self.incoming.resume_bytes))

    async def pump(self) -> bool:
        return False

    def close(self) -> None:
        if self.partial is not None:
            self.partial.close()
            self.partial = None


async def receive_file(
    relay_url: str,
    code: str | ParsedCode,
    out_dir: str | os.PathLike[str],
    *,
    accept: Callable[[IncomingOffer], bool | Awaitable[bool]] | None = None,
    on_verified: Callable[[str], object] | None = None,
    on_progress: Callable[[TransferProgress], object] | None = None,
    on_notice: Callable[[str], object] | None = None,
    ssl: ssl_module.SSLContext | None = None,
    open_timeout: float = 10.0,
    resume_timeout: float = 120.0,
    stall_timeout: float = STALL_TIMEOUT,
) -> ReceiveResult:
    """Receive the file offered under ``code`` into the folder ``out_dir``.

    Returns only once the whole file is verified, durable and under its final name, and the
    sender was told ``done``. A partial download of the same file in ``out_dir`` (after a
    relay restart, with a new code) is continued, not started over.

    Args:
        relay_url: The relay (``http(s)://host:port``, or ``ws(s)://``).
        code: The code (``4821-ahead-zebra``, ``4821.<secret>`` or a link), as typed.
        out_dir: An existing folder.
        accept: Called with the :class:`IncomingOffer`; a false result declines. None accepts.
            May be a coroutine function (a prompt).
        on_verified: Called with the six verification digits once the keys are confirmed.
        on_progress: Called with a :class:`TransferProgress` (written bytes).
        on_notice: Called with short status lines (paired, resuming).
        ssl, open_timeout, resume_timeout, stall_timeout: As for :func:`send_file`.

    Raises:
        BadCode: ``code`` cannot be right (checked before connecting, so a typo does not use
            up the single-use code).
        NotADirectoryError: ``out_dir`` is not a folder.
        TransferError: The transfer failed (see its subclasses); the message says why.
        OSError: Writing failed (disk full, ...): the peer is told and the partial file kept.
    """
    urls = _urls(relay_url)
    parsed = code if isinstance(code, ParsedCode) else parse_code(code)
    directory = Path(out_dir)
    if not directory.is_dir():
        raise NotADirectoryError(f"not a folder: {directory}")
    peer = Peer("recv", parsed.prs)
    channel = _Channel(
        urls,
        peer,
        ssl=ssl,
        open_timeout=open_timeout,
        resume_timeout=resume_timeout,
        stall_timeout=stall_timeout,
        notice=on_notice,
    )
    app = _Receiving(peer, directory, accept, on_verified, on_progress)

    async def claimed() -> None:
        if on_notice is not None:
            on_notice("looking for the sender")

    try:
        await _run(channel, app, channel.pair(parsed.nameplate, claimed))
    finally:
        app.close()
    assert app.path is not None and app.incoming is not None
    return ReceiveResult(
        path=app.path,
        offer=app.incoming,
        chunks_received=app.chunks_received,
        resumed_from=app.resumed_from,
        verifier=app.verifier,
    )


# --- The file-id salt -----------------------------------------------------------------------


def load_salt(state_dir: str | os.PathLike[str] | None = None) -> bytes:
    """Return this user's 16-byte file-id salt, creating it on first use.

    Kept in ``state_dir``, else ``$TUBE_STATE_DIR``, else ``$XDG_STATE_HOME/tube``, else
    ``~/.local/state/tube`` (file ``file-id-salt``, mode 0600), so sending the same file again
    gives the same file id and the receiver can continue (relay-design §5.9). If it cannot be
    stored, a fresh random salt is returned (that transfer cannot be continued later).
    """
    if state_dir is None:
        state_dir = os.environ.get("TUBE_STATE_DIR") or os.path.join(
            os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state"),
            "tube",
        )
    path = Path(state_dir) / _SALT_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
        if re.fullmatch(r"[0-9a-f]{32}", text):
            return bytes.fromhex(text)
    except (OSError, ValueError):
        pass
    salt = secrets.token_bytes(16)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(salt.hex() + "\n")
    except OSError:
        pass
    return salt


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
