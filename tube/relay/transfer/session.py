"""One session of a transfer: the loop that drives the peer over its :class:`Channel` and
hands the peer's events to the side's application (sending or receiving), and the rule that
every failure, Ctrl-C included, tells the other side before it propagates."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from ..e2e.peer import Event
from .channel import Channel, Ended
from .errors import TransferError

__all__ = ["App", "call", "run_session"]

T = TypeVar("T")


class App(Protocol):
    """One side's reactions to the peer's events (the sender's or the receiver's)."""

    #: True for the sender (the words of the ``cancel`` sent on a failure).
    is_sender: bool
    #: None while the transfer goes on; True on success, else the exception to raise.
    outcome: BaseException | bool | None

    async def handle(self, event: Event) -> None:
        """React to one event of the peer."""

    async def pump(self) -> bool:
        """Send what may be sent now (the sender's chunks); True if anything was."""


async def call(callback: Callable[..., T | Awaitable[T]], *args: Any) -> T:
    """Call a user's callback, awaiting its result if it is a coroutine (a prompt)."""
    result = callback(*args)
    if inspect.isawaitable(result):
        return await result
    return result


async def _drive(channel: Channel, app: App) -> None:
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


async def run_session(channel: Channel, app: App, start: Awaitable[None]) -> None:
    """Pair, drive, end politely; on any failure (Ctrl-C included) tell the peer first."""
    try:
        await start
        await _drive(channel, app)
    except Ended:
        if app.outcome is None:
            raise TransferError("the connection ended before the transfer did") from None
    except BaseException as error:
        reason = "interrupted" if isinstance(error, asyncio.CancelledError) else "failed"
        await channel.abandon(f"{reason} on the {'sender' if app.is_sender else 'receiver'}")
        raise
    await channel.finish()
    if isinstance(app.outcome, BaseException):
        raise app.outcome
