"""A test-only asyncio driver: one honest end-to-end Peer over a real WebSocket to a relay.

It does what the command-line peer will do, reduced to what the malicious-relay tests need, and
nothing a hostile relay could use to its advantage:

* TRP/1 with the relay in text frames: ``hello``, ``welcome``, ``wait`` (sender) or ``claim``
  (receiver), ``paired`` (its ``pair_id`` becomes CPace's sid), then whatever relay control the
  :class:`~tube.relay.e2e.peer.Peer` queues (``resumable``, ``bye``).
* Binary frames both ways, fed to :meth:`Peer.receive` in arrival order, one at a time, with the
  peer's output sent before the next frame is read (the peer's own ordering rules hold).
* The sender offers its bytes once the keys are confirmed and streams them in 256 KiB chunks
  while the credit window allows, sealing one chunk at a time.
* The receiver accepts the offer, writes each chunk to a partial file and acknowledges it
  (``chunk_written``), renames the file and calls ``complete()`` after the final chunk, and
  deletes the partial file on every other ending (a failure, a close, a cancelled test).

There is no resume: ``peer:lost`` ends the run (resuming is tested elsewhere). ``peer:gone``
does not: frames the peer sent before its ``bye`` may still be on their way, and the relay
closes the connection itself ``bye_s`` later.

Everything a run saw and did is returned in an :class:`Outcome`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from tube.relay.codes import make_code, parse_code
from tube.relay.e2e.errors import E2EError
from tube.relay.e2e.framing import CHUNK_SIZE
from tube.relay.e2e.peer import (
    ChunkReceived,
    Done,
    Event,
    Failed,
    OfferReceived,
    Peer,
    Verified,
)
from tube.websocket import ConnectionClosed, aio

__all__ = [
    "FINAL_NAME",
    "PARTIAL_NAME",
    "Outcome",
    "PeerRun",
    "allocate",
    "claim_close_code",
    "password",
    "run_pair",
]

SUBPROTOCOL = "tube.relay.v1"
#: Where the receiver writes while the transfer runs, and the name it renames the file to.
PARTIAL_NAME = "download.part"
FINAL_NAME = "download"
# Room for the largest frame the relay forwards (1 MiB + 64): a frame's size is never what
# makes a run fail, whatever a hostile relay injects.
_MAX_MESSAGE = 2 << 20
# Bound on waiting for the relay to close us after our bye (it does so at once).
_CLOSE_WAIT_S = 5.0


def password(nameplate: str, words: list[str]) -> bytes:
    """CPace's PRS for the word code ``<nameplate>-<word>-<word>``, as the CLI derives it."""
    return parse_code(make_code(nameplate, words)).prs


async def allocate(port: int) -> str:
    """``POST /v1/nameplates`` on the relay at 127.0.0.1:``port``; return the nameplate."""

    def call() -> str:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            client.request("POST", "/v1/nameplates", body=b"")
            response = client.getresponse()
            body = response.read()
        finally:
            client.close()
        if response.status != 201:
            raise AssertionError(f"allocation refused: {response.status} {body!r}")
        return str(json.loads(body)["nameplate"])

    # http.client blocks: a worker thread keeps the relay's loop (the same loop) serving.
    return await asyncio.to_thread(call)


async def _connect(port: int, nameplate: str) -> aio.Connection:
    return await aio.connect(
        f"ws://127.0.0.1:{port}/v1/relay/{nameplate}",
        subprotocols=[SUBPROTOCOL],
        compression=None,
        max_message_size=_MAX_MESSAGE,
    )


async def claim_close_code(port: int, nameplate: str) -> int | None:
    """Claim ``nameplate`` as a bare receiver and return the code the relay closes it with."""
    connection = await _connect(port, nameplate)
    try:
        await connection.send(json.dumps({"t": "hello", "v": 1, "role": "recv"}))
        await connection.send(json.dumps({"t": "claim"}))
        while True:
            await connection.incoming.get()
    except ConnectionClosed:
        pass
    finally:
        await connection.close()
    return connection.close_code


@dataclass
class Outcome:
    """Everything one run saw and did.

    Attributes:
        role: ``"send"`` or ``"recv"``.
        events: Every event the peer emitted, in order.
        sent: Every binary frame this side sent, in order.
        texts: Every relay control message this side sent after pairing (JSON).
        controls: Every control message the relay sent it.
        pair_id: The ``pair_id`` the relay gave it (CPace's sid), or None if never paired.
        close_code: How the WebSocket ended.
        output: The receiver's completed file, read back from disk; None if there is none.
        leftovers: The names of the files left in the receiver's directory at the end.
    """

    role: str
    events: list[Event] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    controls: list[dict[str, Any]] = field(default_factory=list)
    pair_id: bytes | None = None
    close_code: int | None = None
    output: bytes | None = None
    leftovers: list[str] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        """True if the peer reported a completed transfer (R: done sent; S: R said done)."""
        return any(isinstance(event, Done) for event in self.events)

    @property
    def failure(self) -> E2EError | None:
        """The error the session failed with, if it did."""
        for event in self.events:
            if isinstance(event, Failed):
                return event.error
        return None

    @property
    def verifier(self) -> str | None:
        """The six verification digits, if the keys were confirmed."""
        for event in self.events:
            if isinstance(event, Verified):
                return event.verifier
        return None

    @property
    def sent_types(self) -> set[int]:
        """The E2E message types (first byte) of every binary frame this side sent."""
        return {frame[0] for frame in self.sent}

    @property
    def byes(self) -> list[str]:
        """The moods of the ``bye`` messages this side sent."""
        return [m["mood"] for m in map(json.loads, self.texts) if m.get("t") == "bye"]

    @property
    def chunks_received(self) -> list[int]:
        """R: the indexes of the chunks the peer authenticated (and the driver wrote)."""
        return [event.index for event in self.events if isinstance(event, ChunkReceived)]


class _Sink:
    """R's output: a partial file, renamed when complete, deleted on any other ending."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.partial = directory / PARTIAL_NAME
        self.final = directory / FINAL_NAME
        self._file: BinaryIO | None = None
        self.complete = False

    def open(self) -> None:
        # "x": never overwrite silently (design §7), and a stale file would fake an output.
        self._file = self.partial.open("xb")

    def write(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        # Acknowledging a chunk promises it is written (§5.6); flushing to the OS is enough
        # for a test, where nothing crashes between the write and the ack.
        self._file.flush()

    def finish(self) -> None:
        assert self._file is not None
        self._file.close()
        self._file = None
        self.partial.rename(self.final)
        self.complete = True

    def discard(self) -> None:
        """Delete the partial file: bytes of an unfinished transfer must not look like one."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.partial.unlink(missing_ok=True)


class PeerRun:
    """One honest side of a transfer, run over a real WebSocket by :meth:`run`.

    Args:
        port: The relay's port on 127.0.0.1.
        nameplate: The nameplate in the URL (``/v1/relay/<nameplate>``).
        role: ``"send"`` or ``"recv"``.
        prs: CPace's password (:func:`password`).
        data: The sender's file.
        name: The name the sender offers.
        out_dir: The receiver's directory (required for ``"recv"``).

    Concurrency contract: one task calls :meth:`run`, once.
    """

    def __init__(
        self,
        port: int,
        nameplate: str,
        role: str,
        prs: bytes,
        *,
        data: bytes = b"",
        name: str = "file.bin",
        out_dir: Path | None = None,
    ) -> None:
        if role == "recv" and out_dir is None:
            raise ValueError("a receiver needs out_dir")
        self.port = port
        self.nameplate = nameplate
        self.role = role
        self.peer = Peer(role, prs)
        self.data = data
        self.name = name
        self.sink = _Sink(out_dir) if out_dir is not None else None
        self.outcome = Outcome(role)
        self._connection: aio.Connection | None = None

    async def run(self) -> Outcome:
        """Connect, pair, run the peer to its end (or the connection's), and report."""
        connection = await _connect(self.port, self.nameplate)
        self._connection = connection
        try:
            # A send that finds the connection closed: the relay ended it; so be it.
            with contextlib.suppress(ConnectionClosed):
                await self._session()
            if self.peer.is_finished:
                await self._wait_closed()
        finally:
            if self.sink is not None:
                # Whatever ended the run (cancellation included), an unfinished file goes,
                # before anything that could be interrupted.
                if not self.sink.complete:
                    self.sink.discard()
                self._report_output(self.sink)
            await connection.close()
        self.outcome.close_code = connection.close_code
        return self.outcome

    # ------------------------------------------------------------------ TRP/1

    async def _session(self) -> None:
        peer = self.peer
        await self._send_text({"t": "hello", "v": 1, "role": self.role})
        welcome = await self._control()
        if welcome is None or welcome.get("t") != "welcome":
            return
        await self._send_text({"t": "wait" if self.role == "send" else "claim"})
        paired = await self._control()
        if paired is None or paired.get("t") != "paired":
            return
        pair_id = base64.urlsafe_b64decode(paired["pair_id"] + "==")
        self.outcome.pair_id = pair_id
        peer.paired(pair_id)
        await self._pump()
        assert self._connection is not None
        incoming = self._connection.incoming
        while not peer.is_finished:
            try:
                message = await incoming.get()
            except ConnectionClosed:
                return
            if isinstance(message, str):
                if not self._on_control(json.loads(message)):
                    return
            else:
                peer.receive(message)
            await self._pump()

    async def _send_text(self, message: dict[str, Any]) -> None:
        assert self._connection is not None
        await self._connection.send(json.dumps(message))

    async def _control(self) -> dict[str, Any] | None:
        """The next message, which must be relay control; None if the connection ended."""
        assert self._connection is not None
        try:
            message = await self._connection.incoming.get()
        except ConnectionClosed:
            return None
        if not isinstance(message, str):
            return None  # a binary frame before pairing: the relay broke TRP/1; give up
        control: dict[str, Any] = json.loads(message)
        self.outcome.controls.append(control)
        return control

    def _on_control(self, control: dict[str, Any]) -> bool:
        """Note a control message after pairing; False if the run ends with it."""
        self.outcome.controls.append(control)
        # No resume in this driver: a lost peer ends the run. A gone peer does not (see the
        # module docstring): its last frames may still be arriving.
        return not (control.get("t") == "peer" and control.get("state") == "lost")

    async def _wait_closed(self) -> None:
        """After our bye the relay closes the connection at once: read until it has (any
        other ending closes from our side at once)."""
        assert self._connection is not None
        incoming = self._connection.incoming
        try:
            async with asyncio.timeout(_CLOSE_WAIT_S):
                while True:
                    message = await incoming.get()
                    if isinstance(message, str):
                        self.outcome.controls.append(json.loads(message))
        except (ConnectionClosed, TimeoutError):
            pass

    # ------------------------------------------------------------------ the application

    async def _pump(self) -> None:
        """Send what the peer queued and react to its events until both are empty.

        The sender seals one chunk per round, so chunks go out as the window opens, each
        written before the next is sealed (``send`` waits while the socket's buffer is full).
        """
        peer = self.peer
        assert self._connection is not None
        while True:
            out = peer.data_to_send()
            events = peer.events()
            for item in out:
                if isinstance(item, str):
                    self.outcome.texts.append(item)
                else:
                    self.outcome.sent.append(item)
                await self._connection.send(item)
            for event in events:
                self.outcome.events.append(event)
                self._react(event)
            if self.role == "send" and peer.can_send_chunk():
                index = peer.next_chunk_wanted()
                start = index * CHUNK_SIZE
                peer.send_chunk(index, self.data[start : start + CHUNK_SIZE])
            elif not out and not events:
                return

    def _react(self, event: Event) -> None:
        """What the user and the disk do in answer to one event."""
        peer = self.peer
        if isinstance(event, Verified) and self.role == "send":
            peer.offer(
                file_id=os.urandom(16),
                name=self.name,
                size=len(self.data),
                type="application/octet-stream",
                last_modified=1_700_000_000_000,
            )
        elif isinstance(event, OfferReceived):
            assert self.sink is not None
            self.sink.open()
            peer.accept_offer(0)
        elif isinstance(event, ChunkReceived):
            assert self.sink is not None
            self.sink.write(event.plaintext)
            peer.chunk_written(event.index)
            if event.final:
                # §5.8: done only once the file is whole and in place.
                self.sink.finish()
                peer.complete()

    def _report_output(self, sink: _Sink) -> None:
        self.outcome.leftovers = sorted(path.name for path in sink.directory.iterdir())
        if sink.complete and sink.final.exists():
            self.outcome.output = sink.final.read_bytes()


async def run_pair(
    port: int,
    nameplate: str,
    prs: bytes,
    data: bytes,
    out_dir: Path,
    *,
    name: str = "file.bin",
) -> tuple[Outcome, Outcome]:
    """Run an honest sender and receiver on ``nameplate`` with one code; return both outcomes."""
    sender = PeerRun(port, nameplate, "send", prs, data=data, name=name)
    receiver = PeerRun(port, nameplate, "recv", prs, out_dir=out_dir)
    return await asyncio.gather(sender.run(), receiver.run())
