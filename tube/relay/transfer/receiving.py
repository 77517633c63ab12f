"""The receiver: :func:`receive_file` and its reactions to the peer's events (ask to accept
the offer, continue a partial download, write and acknowledge each chunk, finish the file
before saying ``done``)."""

from __future__ import annotations

import asyncio
import os
import ssl as ssl_module
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..codes import ParsedCode, parse_code
from ..e2e.errors import IntegrityError
from ..e2e.framing import CHUNK_SIZE
from ..e2e.peer import (
    Cancelled,
    ChunkReceived,
    Done,
    Event,
    Failed,
    Offer,
    OfferReceived,
    Peer,
    State,
    Verified,
)
from .channel import STALL_TIMEOUT, Channel
from .disk import Partial, safe_name
from .errors import TransferCancelled, peer_failure
from .http import urls_of
from .results import IncomingOffer, ReceiveResult, TransferProgress
from .session import call, run_session

__all__ = ["receive_file"]


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
        self.partial: Partial | None = None
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
                await call(self.on_verified, event.verifier)
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
            self.outcome = TransferCancelled(event.reason, by_peer=True, peer_role="send")
        elif isinstance(event, Failed):
            if isinstance(event.error, IntegrityError) and self.partial is not None:
                self.partial.discard()
                self.partial = None
            self.outcome = peer_failure(event.error)

    async def _offered(self, offer: Offer) -> None:
        name = safe_name(offer.name)
        partial = Partial(self.directory, name, offer)
        kept = partial.chunks_on_disk()
        self.incoming = incoming = IncomingOffer(
            name=name,
            offered_name=offer.name,
            size=offer.size,
            type=offer.type,
            last_modified=offer.last_modified,
            resume_bytes=min(offer.size, kept * CHUNK_SIZE),
        )
        if self.accept is not None and not await call(self.accept, incoming):
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
    urls = urls_of(relay_url)
    parsed = code if isinstance(code, ParsedCode) else parse_code(code)
    directory = Path(out_dir)
    if not directory.is_dir():
        raise NotADirectoryError(f"not a folder: {directory}")
    peer = Peer("recv", parsed.prs)
    channel = Channel(
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
        await run_session(channel, app, channel.pair(parsed.nameplate, claimed))
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
