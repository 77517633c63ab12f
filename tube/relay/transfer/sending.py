"""The sender: :func:`send_file`, its file read one chunk at a time, and its reactions to the
peer's events (offer once the keys are confirmed, stream under the credit window, succeed on
the receiver's ``done``)."""

from __future__ import annotations

import mimetypes
import os
import ssl as ssl_module
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..codes import ParsedCode, generate_words, make_code, make_link
from ..e2e.framing import CHUNK_SIZE, MAX_SIZE, chunk_count, expected_length
from ..e2e.keys import file_id as derive_file_id
from ..e2e.peer import Accepted, Cancelled, Done, Event, Failed, Peer, Progress, Verified
from .channel import STALL_TIMEOUT, Channel
from .disk import load_salt
from .errors import TransferCancelled, TransferError, peer_failure
from .http import allocate_nameplate, urls_of
from .results import SendResult, TransferProgress
from .session import call, run_session

__all__ = ["send_file"]


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
        channel: Channel,
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
            if self.on_verified is not None and not await call(self.on_verified, event.verifier):
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
            self.outcome = TransferCancelled(event.reason, by_peer=True, peer_role="recv")
        elif isinstance(event, Failed):
            self.outcome = peer_failure(event.error)

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
    urls = urls_of(relay_url)
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
        channel = Channel(
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
                await call(on_code, code, link_text)
            if on_notice is not None:
                on_notice("waiting for the receiver")

        await run_session(channel, app, channel.pair(nameplate, waiting))
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
