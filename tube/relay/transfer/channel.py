"""The WebSocket to the relay for one peer: pairing, control messages, redirects, resume.

:class:`Channel` opens the connection (``hello``/``welcome``, following a scale-out
``redirect``), waits or claims until ``paired``, sends what the peer queued, hands the peer its
binary frames and the relay's ``peer`` news, resumes a dropped connection within the relay's
grace, gives up after ``stall_timeout`` seconds of silence during a transfer, and ends politely
(``bye``, or ``cancel`` once the keys are confirmed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl as ssl_module
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ...websocket import ConnectionClosed, HandshakeRejected, WebSocketError, aio
from ..core import SUBPROTOCOL, decode_id
from ..e2e.peer import Peer, State
from .errors import RelayError, RelayUnavailable, ResumeFailed, TransferError, relay_failure
from .http import Urls, os_reason

__all__ = ["STALL_TIMEOUT", "Channel", "Ended"]

# The largest message the relay forwards (relay-design §5.1: 1 MiB + 64).
_FRAME_LIMIT = 1_048_640
# Close codes after which the pair may still be whole at the relay: resume.
_RESUMABLE = frozenset({1001, 1006, 1011, 1012, 1013, 1014})
# Close codes worth another resume attempt (the relay has not seen our old socket go yet;
# rate limited; draining; connection lost again).
_RETRY_RESUME = frozenset({4003, 4004, 4009, 1001, 1006, 1011, 1012, 1013, 1014})
# Redirects followed per connection (scale-out: the registry names the owner; one is normal).
_MAX_REDIRECTS = 3
# Seconds without any message during a transfer before giving up: longer than the relay's
# resume grace (120 s), so a peer that is away is the relay's to judge (4006) first; this only
# catches a relay that silently swallows what it should forward.
STALL_TIMEOUT = 180.0


class Ended(Exception):
    """Internal: the connection ended after the peer finished (nothing to resume)."""


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


class Channel:
    """The WebSocket to the relay for one :class:`Peer`: pairing, control messages, resume.

    Owns the current connection (replaced by a resume), the resume id the peer announced and
    the relay's last ``error`` message (which explains the close that follows it).
    """

    def __init__(
        self,
        urls: Urls,
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
                f"cannot reach the relay at {self.urls.http}: {os_reason(error)}"
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
                raise relay_failure(conn.close_code, conn.close_reason, self.error) from None
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
            Ended: The connection ended after the peer finished.
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
                raise Ended() from None
            code = conn.close_code
            if self.rid is None or code not in _RESUMABLE or self.error is not None:
                raise relay_failure(code, conn.close_reason, self.error) from None
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
                # A bye without a cancel: the peer failed before the keys were confirmed (a
                # peer that fails later says why in a cancel first), or went without a word.
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
