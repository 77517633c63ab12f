"""tube.relay.transfer against an in-process relay on 127.0.0.1: whole transfers, resume within
grace, a relay restart, tampering, names, and the small pure helpers."""

from __future__ import annotations

import asyncio
import json
import os
import unicodedata
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tube.relay.server import RelayConfig, RelayServer
from tube.relay.transfer import (
    IncomingOffer,
    IntegrityFailure,
    ReceiveResult,
    RelayError,
    RelayUnavailable,
    ResumeFailed,
    SendResult,
    TransferCancelled,
    TransferError,
    TransferProgress,
    WrongCodeError,
    load_salt,
    partial_paths,
    receive_file,
    relay_urls,
    safe_name,
    send_file,
)
from tube.websocket import aio

from .conftest import CHUNK, sha256_of, write_random_file

SALT = bytes(range(16))
DATA = 0x10


def run(coroutine: Callable[[], Coroutine[Any, Any, None]], timeout: float = 60) -> None:
    asyncio.run(asyncio.wait_for(coroutine(), timeout))


@asynccontextmanager
async def relay(cls: type[RelayServer] = RelayServer, port: int = 0) -> AsyncIterator[Any]:
    server = cls(RelayConfig(host="127.0.0.1", port=port))
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def url(server: RelayServer) -> str:
    return f"http://127.0.0.1:{server.port}"


async def transfer(
    server_url: str,
    source: Path,
    out: Path,
    *,
    code: Callable[[str], str] = lambda c: c,
    send_options: dict[str, Any] | None = None,
    receive_options: dict[str, Any] | None = None,
) -> tuple[SendResult | BaseException, ReceiveResult | BaseException]:
    """Send ``source`` and receive it into ``out`` at once; results or exceptions."""
    loop = asyncio.get_running_loop()
    given_code: asyncio.Future[str] = loop.create_future()
    sending = asyncio.create_task(
        send_file(
            server_url,
            source,
            salt=SALT,
            on_code=lambda c, _link: given_code.set_result(c),
            **(send_options or {}),
        )
    )
    waits: set[asyncio.Future[Any]] = {sending, given_code}
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    if not given_code.done():
        return sending.exception() or RuntimeError("no code"), RuntimeError("no code")
    receiving = asyncio.create_task(
        receive_file(server_url, code(given_code.result()), out, **(receive_options or {}))
    )
    results = await asyncio.gather(sending, receiving, return_exceptions=True)
    return results[0], results[1]


def files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# ------------------------------------------------------------------ whole transfers


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, 3 * CHUNK + 5])
def test_a_file_arrives_whole_under_its_name(tmp_path: Path, size: int) -> None:
    source = tmp_path / "report.pdf"
    digest = write_random_file(source, size)
    out = tmp_path / "out"
    out.mkdir()

    async def main() -> None:
        async with relay() as server:
            sent, received = await transfer(url(server), source, out)
        assert isinstance(sent, SendResult) and isinstance(received, ReceiveResult), (
            sent,
            received,
        )
        assert received.path == out / "report.pdf"
        assert sha256_of(received.path) == digest
        assert files(out) == ["report.pdf"]  # no partial file, no sidecar left
        assert received.offer.type == "application/pdf"
        assert sent.chunks_sent == max(1, -(-size // CHUNK)) == received.chunks_received
        assert sent.verifier == received.verifier and len(sent.verifier) == 6

    run(main)


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    digest = write_random_file(source, 1000)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_bytes(b"mine")
    (out / "notes (1).txt").write_bytes(b"mine too")

    async def main() -> None:
        async with relay() as server:
            _, received = await transfer(url(server), source, out)
        assert isinstance(received, ReceiveResult), received
        assert received.path == out / "notes (2).txt"
        assert sha256_of(received.path) == digest
        assert (out / "notes.txt").read_bytes() == b"mine"

    run(main)


def test_link_mode_and_the_same_verifier_on_both_sides(tmp_path: Path) -> None:
    source = tmp_path / "a.bin"
    digest = write_random_file(source, 10)
    out = tmp_path / "out"
    out.mkdir()
    digits: dict[str, str] = {}

    async def sender_compares(verifier: str) -> bool:
        digits["send"] = verifier
        return True

    async def main() -> None:
        async with relay() as server:
            loop = asyncio.get_running_loop()
            link: asyncio.Future[str] = loop.create_future()
            sending = asyncio.create_task(
                send_file(
                    url(server),
                    source,
                    link=True,
                    salt=SALT,
                    on_code=lambda _code, text: link.set_result(text or ""),
                    on_verified=sender_compares,
                )
            )
            received = await receive_file(
                url(server), await link, out, on_verified=lambda v: digits.update(recv=v)
            )
            sent = await sending
            base = url(server)
        assert sent.link is not None and sent.link.startswith(base + "/#")
        assert sent.link.endswith("#" + sent.code) and len(sent.code.split(".")[1]) == 22
        assert sha256_of(received.path) == digest
        assert digits == {"send": sent.verifier, "recv": sent.verifier}

    run(main)


def test_the_sender_holds_the_offer_until_the_digits_are_confirmed(tmp_path: Path) -> None:
    source = tmp_path / "secret.txt"
    write_random_file(source, 10)
    out = tmp_path / "out"
    out.mkdir()
    offers: list[IncomingOffer] = []

    async def main() -> None:
        async with relay() as server:
            sent, received = await transfer(
                url(server),
                source,
                out,
                send_options={"on_verified": lambda digits: False},
                receive_options={"accept": offers.append},
            )
        assert isinstance(sent, TransferCancelled) and not sent.by_peer
        assert isinstance(received, TransferCancelled) and received.by_peer
        assert "did not match" in str(received)
        assert offers == []  # the name and size never left the sender
        assert files(out) == []

    run(main)


def test_a_declined_offer_ends_both_sides_and_writes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "a.bin"
    write_random_file(source, 3 * CHUNK)
    out = tmp_path / "out"
    out.mkdir()
    offers: list[IncomingOffer] = []

    async def decline(offer: IncomingOffer) -> bool:
        offers.append(offer)
        return False

    async def main() -> None:
        async with relay() as server:
            sent, received = await transfer(
                url(server), source, out, receive_options={"accept": decline}
            )
        assert isinstance(sent, TransferCancelled) and sent.by_peer and sent.reason == "declined"
        assert str(sent) == "the receiver declined the file"
        assert isinstance(received, TransferCancelled) and not received.by_peer
        assert [(o.name, o.size, o.resume_bytes) for o in offers] == [("a.bin", 3 * CHUNK, 0)]
        assert files(out) == []

    run(main)


def test_a_wrong_code_fails_both_sides_and_burns_the_nameplate(tmp_path: Path) -> None:
    source = tmp_path / "a.bin"
    write_random_file(source, 100)
    out = tmp_path / "out"
    out.mkdir()

    def wrong(code: str) -> str:
        nameplate, first, second = code.split("-", 2)
        return f"{nameplate}-{'zebra' if first != 'zebra' else 'ahead'}-{second}"

    async def main() -> None:
        async with relay() as server:
            codes: list[str] = []

            def remember_and_mistype(code: str) -> str:
                codes.append(code)
                return wrong(code)

            sent, received = await transfer(url(server), source, out, code=remember_and_mistype)
            assert isinstance(sent, WrongCodeError) and isinstance(received, WrongCodeError)
            assert str(sent) == "wrong code or interference"
            with pytest.raises(RelayError, match=r"no such code \(already used or expired\)"):
                await receive_file(url(server), codes[0], out)
        assert files(out) == []

    run(main)


def test_an_unknown_code_and_an_absent_relay(tmp_path: Path, unused_port: int) -> None:
    source = tmp_path / "a.bin"
    write_random_file(source, 1)

    async def main() -> None:
        async with relay() as server:
            with pytest.raises(RelayError, match="no such code") as unknown:
                await receive_file(url(server), "98765432-ahead-zebra", tmp_path)
            assert unknown.value.close_code == 4002
        absent = f"http://127.0.0.1:{unused_port}"
        with pytest.raises(RelayUnavailable, match="connection refused"):
            await send_file(absent, source, salt=SALT)
        with pytest.raises(RelayUnavailable, match="connection refused"):
            await receive_file(absent, "4821-ahead-zebra", tmp_path)

    run(main)


# ------------------------------------------------------------------ hostile and failing relays


class TamperingRelay(RelayServer):
    """Flips one bit in the fifth DATA frame it forwards."""

    data_frames = 0

    async def forward(self, source: int, destination: aio.Connection, frame: bytes) -> None:
        if frame[:1] == bytes([DATA]):
            self.data_frames += 1
            if self.data_frames == 5:
                frame = frame[:100] + bytes([frame[100] ^ 1]) + frame[101:]
        await super().forward(source, destination, frame)


def test_a_tampered_chunk_is_an_integrity_error_and_the_partial_output_is_deleted(
    tmp_path: Path,
) -> None:
    source = tmp_path / "a.bin"
    write_random_file(source, 12 * CHUNK)
    out = tmp_path / "out"
    out.mkdir()

    async def main() -> None:
        async with relay(TamperingRelay) as server:
            sent, received = await transfer(url(server), source, out)
        assert isinstance(received, IntegrityFailure), received
        assert str(received).startswith("integrity error")
        # The receiver told the sender why (a sealed cancel), not only that it left.
        assert isinstance(sent, TransferCancelled), sent
        assert sent.by_peer and sent.reason == "integrity"
        assert str(sent) == "the receiver stopped: integrity error"
        assert files(out) == []  # neither the partial file nor its sidecar

    run(main)


class CuttingRelay(RelayServer):
    """Drops one side's TCP connection (no close frame) after forwarding ``cut_after`` DATA
    frames; ``victim`` is ``"recv"`` (the destination of DATA) or ``"send"``."""

    cut_after = 20
    victim = "recv"
    data_frames = 0

    async def forward(self, source: int, destination: aio.Connection, frame: bytes) -> None:
        await super().forward(source, destination, frame)
        if frame[:1] != bytes([DATA]):
            return
        self.data_frames += 1
        if self.data_frames == self.cut_after:
            victim = destination if self.victim == "recv" else self._links[source]
            assert victim.transport is not None
            victim.transport.abort()


@pytest.mark.parametrize("victim", ["recv", "send"])
def test_a_cut_connection_resumes_within_grace_and_resends_at_most_a_window(
    tmp_path: Path, victim: str
) -> None:
    chunks = 48
    source = tmp_path / "big.bin"
    digest = write_random_file(source, chunks * CHUNK - 7)
    out = tmp_path / "out"
    out.mkdir()
    notices: list[str] = []

    class Relay(CuttingRelay):
        pass

    Relay.victim = victim

    async def main() -> None:
        async with relay(Relay) as server:
            sent, received = await transfer(
                url(server),
                source,
                out,
                send_options={"on_notice": notices.append},
                receive_options={"on_notice": notices.append},
            )
        assert isinstance(sent, SendResult) and isinstance(received, ReceiveResult), (
            sent,
            received,
        )
        assert sha256_of(received.path) == digest
        resent = sent.chunks_sent - chunks
        assert 0 <= resent <= 16, resent
        assert received.chunks_received == chunks  # each chunk written once
        assert "resumed" in notices
        assert any("lost its connection" in n for n in notices)

    run(main)


def test_after_a_relay_restart_a_new_code_continues_from_the_chunks_on_disk(
    tmp_path: Path,
) -> None:
    chunks = 40
    source = tmp_path / "movie.mkv"
    digest = write_random_file(source, chunks * CHUNK + 1234)
    out = tmp_path / "out"
    out.mkdir()
    final = out / "movie.mkv"
    part, sidecar = partial_paths(out, "movie.mkv")

    async def main() -> None:
        first = RelayServer(RelayConfig(host="127.0.0.1", port=0))
        await first.start()
        port = first.port
        restarted = asyncio.Event()
        second = RelayServer(RelayConfig(host="127.0.0.1", port=port))

        async def restart() -> None:
            await first.close()
            await second.start()
            restarted.set()

        restarts: list[asyncio.Task[None]] = []

        def progress(update: TransferProgress) -> None:
            assert not final.exists()  # never presented as complete early
            if update.done >= 12 * CHUNK and not restarts:
                restarts.append(asyncio.create_task(restart()))

        options = {"resume_timeout": 20.0}
        try:
            sent, received = await transfer(
                f"http://127.0.0.1:{port}",
                source,
                out,
                send_options=options,
                receive_options={**options, "on_progress": progress},
            )
            await restarted.wait()
            assert isinstance(sent, ResumeFailed), sent
            assert isinstance(received, ResumeFailed), received
            assert received.close_code == 4010
            assert not final.exists()
            kept = json.loads(sidecar.read_text())["chunks"]
            assert 12 <= kept < chunks and part.stat().st_size >= kept * CHUNK
            # Same file, same salt: the same file_id. A new code, the same folder.
            offers: list[IncomingOffer] = []

            def accept(offer: IncomingOffer) -> bool:
                offers.append(offer)
                return True

            sent, received = await transfer(
                f"http://127.0.0.1:{port}",
                source,
                out,
                receive_options={"accept": accept, "on_progress": progress},
            )
        finally:
            await second.close()
        assert isinstance(sent, SendResult) and isinstance(received, ReceiveResult)
        assert offers[0].resume_bytes == kept * CHUNK
        assert received.resumed_from == sent.resumed_from == kept
        assert received.chunks_received == sent.chunks_sent == chunks + 1 - kept
        assert sha256_of(final) == digest
        assert files(out) == ["movie.mkv"]

    run(main)


def test_a_partial_file_of_another_file_with_the_same_name_is_not_resumed(tmp_path: Path) -> None:
    source = tmp_path / "x.bin"
    digest = write_random_file(source, 3 * CHUNK)
    out = tmp_path / "out"
    out.mkdir()
    part, sidecar = partial_paths(out, "x.bin")
    part.write_bytes(os.urandom(2 * CHUNK))
    meta = {"v": 1, "file_id": "A" * 22, "name": "x.bin", "size": 3 * CHUNK}
    sidecar.write_text(json.dumps({**meta, "chunk": CHUNK, "chunks": 2}))

    async def main() -> None:
        async with relay() as server:
            sent, received = await transfer(url(server), source, out)
        assert isinstance(received, ReceiveResult) and isinstance(sent, SendResult)
        assert received.resumed_from == 0 and sent.chunks_sent == 3
        assert sha256_of(received.path) == digest

    run(main)


# ------------------------------------------------------------------ pure helpers


@given(st.text(max_size=400))
def test_safe_names_are_plain_visible_and_bounded(name: str) -> None:
    safe = safe_name(name)
    assert safe and not safe.startswith(".") and safe == safe.strip()
    assert "/" not in safe and "\\" not in safe
    assert all(unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp") for c in safe)
    assert len(safe.encode()) <= 200
    assert safe_name(safe) == safe


@pytest.mark.parametrize(
    ("offered", "saved"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\evil.bat", "evil.bat"),
        (".bashrc", "bashrc"),
        ("..", "file"),
        ("", "file"),
        ("a\x1b[31mred\x07.txt", "a[31mred.txt"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("what?.txt", "what_.txt"),
        ("NUL", "file-NUL"),
        ("name. . ", "name"),
        ("x" * 300 + ".tar", "x" * 196 + ".tar"),
        ("é" * 150, "é" * 100),
    ],
)
def test_safe_name_examples(offered: str, saved: str) -> None:
    assert safe_name(offered) == saved


@pytest.mark.parametrize(
    ("reason", "by_peer", "peer_role", "message"),
    [
        ("integrity", True, "recv", "the receiver stopped: integrity error"),
        ("protocol", True, "send", "the sender stopped: protocol error"),
        ("integrity", True, None, "the other side stopped: integrity error"),
        ("failed on the sender", True, "send", "cancelled by the other side: failed on the sender"),
        ("integrity", False, None, "cancelled by this side: integrity"),
        ("declined", True, "recv", "the receiver declined the file"),
    ],
)
def test_what_a_cancel_says(
    reason: str, by_peer: bool, peer_role: str | None, message: str
) -> None:
    cancelled = TransferCancelled(reason, by_peer=by_peer, peer_role=peer_role)
    assert str(cancelled) == message
    assert (cancelled.reason, cancelled.by_peer) == (reason, by_peer)


def test_relay_urls() -> None:
    assert relay_urls("http://127.0.0.1:8080/") == ("http://127.0.0.1:8080", "ws://127.0.0.1:8080")
    assert relay_urls("wss://t.example/tube/") == ("https://t.example/tube", "wss://t.example/tube")
    assert relay_urls("localhost:9") == ("http://localhost:9", "ws://localhost:9")
    assert relay_urls("[::1]:80")[1] == "ws://[::1]:80"
    for bad in ("ftp://x", "http://", "http:///path"):
        with pytest.raises(ValueError):
            relay_urls(bad)


def test_the_salt_is_kept_private_and_stable(tmp_path: Path) -> None:
    state = tmp_path / "state"
    salt = load_salt(state)
    assert len(salt) == 16 and load_salt(state) == salt
    assert (state / "file-id-salt").stat().st_mode & 0o777 == 0o600
    assert load_salt(tmp_path / "other") != salt


class SwallowingRelay(RelayServer):
    """Forwards the key exchange and the offer, then swallows every frame silently (no close,
    nothing queued: the relay's own stall timer cannot see it)."""

    forwarded = 0

    async def forward(self, source: int, destination: aio.Connection, frame: bytes) -> None:
        self.forwarded += 1
        if self.forwarded <= 7:  # COMMIT, CPACE, CPACE, CONFIRM, CONFIRM, offer, accept
            await super().forward(source, destination, frame)


def test_a_relay_that_swallows_frames_ends_in_a_stall_error_not_a_hang(tmp_path: Path) -> None:
    source = tmp_path / "a.bin"
    write_random_file(source, 6 * CHUNK)
    out = tmp_path / "out"
    out.mkdir()

    async def main() -> None:
        async with relay(SwallowingRelay) as server:
            sent, received = await transfer(
                url(server),
                source,
                out,
                send_options={"stall_timeout": 0.5},
                receive_options={"stall_timeout": 0.5},
            )
        for result in (sent, received):
            assert isinstance(result, TransferError), result
            assert "stalled" in str(result) or "gave up" in str(result), result
        assert "stalled" in str(received)
        # Not an integrity failure: what arrived is kept to continue later with a new code,
        # under its partial name only.
        assert files(out) == [".a.bin.tube-part", ".a.bin.tube-part.json"]

    run(main)


@pytest.mark.parametrize(
    ("target", "current", "followed"),
    [
        ("ws://relay-2.internal:8080/v1/relay/4821", "ws://lb/v1/relay/4821", True),
        ("wss://relay-2.internal/v1/relay", "ws://lb/v1/relay", True),
        ("wss://relay-2.internal/v1/relay", "wss://lb/v1/relay", True),
        ("ws://relay-2.internal/v1/relay", "wss://lb/v1/relay", False),  # no downgrade
        ("http://relay-2.internal/v1/relay", "ws://lb/v1/relay", False),
        ("ws:///v1/relay", "ws://lb/v1/relay", False),
        (None, "ws://lb/v1/relay", False),
    ],
)
def test_which_redirects_are_followed(target: object, current: str, followed: bool) -> None:
    from tube.relay.transfer.channel import Channel

    if followed:
        assert Channel.redirect_target(target, current) == target
    else:
        with pytest.raises(RelayError, match="do not follow"):
            Channel.redirect_target(target, current)
