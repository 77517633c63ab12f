"""Large frames read in place: Protocol.receive_buffer() / received_into() (issue 25).

A transport may read a large binary frame's payload straight into the buffer the protocol
hands out, or not: the events must be exactly those of receive_data() over any split of the
same bytes, the memory must follow what the peer actually sent, and the bytes handed to the
application must be ordinary, immutable ``bytes``.
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tube.websocket.core import payload
from tube.websocket.core.accelerator import speedups
from tube.websocket.core.events import BinaryMessage, Event, ProtocolFailure
from tube.websocket.core.masking import python_apply_mask, python_unmask_in_place
from tube.websocket.core.payload import PythonPayloadBuffer, new_payload_buffer
from tube.websocket.core.protocol import Protocol, Role

from .wsframes import close_payload, frame

KEY = b"\x37\xfa\x21\x3d"
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fast_frame(opcode: int, payload: bytes, *, masked: bool, fin: bool = True) -> bytes:
    """A frame like wsframes.frame, masked with the test key (by a fast XOR for large ones)."""
    header = frame(opcode, b"", fin=fin, key=None, length=len(payload))
    if not masked:
        return header + payload
    header = bytes([header[0], header[1] | 0x80]) + header[2:]
    repeated = (KEY * (len(payload) // 4 + 1))[: len(payload)]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )
    return header + KEY + body


def random_bytes(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


# A stream: large single-frame binary messages (the in-place path) between small ones, a
# fragmented large message, a text message, a ping (answered) and a close at the end.
SIZES = st.sampled_from([0, 5, 125, 126, 65535, 65536, 65537, 100_000, 300_000, 1 << 20])


@st.composite
def streams(draw: st.DrawFn) -> tuple[Role, bytes]:
    role = draw(st.sampled_from([Role.SERVER, Role.CLIENT]))
    masked = role is Role.SERVER
    rng = random.Random(draw(st.integers(0, 2**32)))
    parts = []
    for size in draw(st.lists(SIZES, min_size=1, max_size=5)):
        kind = draw(st.sampled_from(["binary", "binary", "text", "ping", "fragments"]))
        if kind == "binary":
            parts.append(fast_frame(0x2, random_bytes(rng, size), masked=masked))
        elif kind == "text":
            parts.append(fast_frame(0x1, b"x" * min(size, 70_000), masked=masked))
        elif kind == "ping":
            parts.append(fast_frame(0x9, b"p" * min(size, 125), masked=masked))
        else:
            data = random_bytes(rng, size)
            parts.append(fast_frame(0x2, data[: size // 2], masked=masked, fin=False))
            parts.append(fast_frame(0x0, data[size // 2 :], masked=masked))
    parts.append(fast_frame(0x8, close_payload(1000), masked=masked))
    return role, b"".join(parts)


def comparable(events: list[Event]) -> list[object]:
    """Events as comparable values (a failure's error compares by identity otherwise)."""
    return [
        (type(event.error), str(event.error), event.error.close_code)
        if isinstance(event, ProtocolFailure)
        else event
        for event in events
    ]


READS = st.lists(
    st.sampled_from([1, 2, 3, 7, 126, 1500, 65535, 65536, 100_000, 262_144, 400_000]),
    min_size=1,
    max_size=5,
).map(lambda reads: [*reads, 262_144])  # with a large read in the cycle, runs stay short


def read_like_a_transport(
    protocol: Protocol, data: bytes, reads: list[int], *, in_place: bool
) -> list[Event]:
    """Feed ``data`` as a transport would: reads of the given sizes (cycled), into the
    protocol's receive buffer when it offers one (and ``in_place``), else into our own."""
    events: list[Event] = []
    position = 0
    step = 0
    while position < len(data):
        size = reads[step % len(reads)]
        step += 1
        view = protocol.receive_buffer() if in_place else None
        if view is not None:
            count = min(size, len(view), len(data) - position)
            view[:count] = data[position : position + count]
            del view  # a transport drops its view before it reports the count
            events += protocol.received_into(count)
        else:
            count = min(size, len(data) - position)
            events += protocol.receive_data(memoryview(data)[position : position + count])
        position += count
    return events


@SETTINGS
@given(streams(), READS, st.booleans())
def test_any_reads_give_the_events_of_one_receive_data(
    stream: tuple[Role, bytes], reads: list[int], in_place: bool
) -> None:
    role, data = stream
    whole = Protocol(role, max_message_size=None).receive_data(data)
    protocol = Protocol(role, max_message_size=None)
    assert comparable(read_like_a_transport(protocol, data, reads, in_place=in_place)) == (
        comparable(whole)
    )
    for event in whole:
        if isinstance(event, BinaryMessage):
            assert type(event.data) is bytes


@SETTINGS
@given(st.integers(65536, 400_000), READS, st.binary(min_size=0, max_size=40))
def test_bytes_after_a_large_frame_are_parsed(size: int, reads: list[int], garbage: bytes) -> None:
    """Whatever follows the large frame (another frame, or garbage: a violation) is parsed
    exactly as it would be without the in-place path."""
    rng = random.Random(size)
    data = fast_frame(0x2, rng.randbytes(size), masked=True) + garbage
    whole = Protocol(Role.SERVER, max_message_size=None).receive_data(data)
    for in_place in (True, False):
        protocol = Protocol(Role.SERVER, max_message_size=None)
        events = read_like_a_transport(protocol, data, reads, in_place=in_place)
        assert comparable(events) == comparable(whole)


def grow_and_check(protocol: Protocol, data: bytes, size: int) -> None:
    """Read ``data`` (one masked ``size``-byte binary frame, 20 bytes of it already given)
    in place; every buffer handed out is at most twice the payload received so far (or the
    64 KiB first step)."""
    received = 20 - 14
    position = 20
    while True:
        view = protocol.receive_buffer()
        assert view is not None
        assert received + len(view) <= max(2 * received, payload.SMALLEST)
        count = len(view)
        view[:] = data[position : position + count]
        del view
        events = protocol.received_into(count)
        position += count
        received += count
        if events:
            assert events == [BinaryMessage(bytes(size))]
            break
    assert position == len(data)
    assert protocol.receive_buffer() is None


def test_the_pure_python_buffer_follows_what_the_peer_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A peer that declares a 4 MiB frame and sends a few bytes gets 64 KiB, not 4 MiB: the
    bytearray is zeroed (so touched) when made, so it grows with what arrived."""
    monkeypatch.setattr(payload, "speedups", None)
    protocol = Protocol(Role.SERVER, max_message_size=8 << 20)
    size = 4 << 20
    data = fast_frame(0x2, bytes(size), masked=True)
    assert protocol.receive_data(data[:20]) == []
    grow_and_check(protocol, data, size)


@pytest.mark.skipif(speedups is None, reason="the C payload buffer (TUBE_NO_SPEEDUPS=1 run)")
def test_the_c_buffer_is_whole_at_once_up_to_16_mib_and_grows_beyond() -> None:
    """Up to RESERVE_AT_ONCE the C buffer holds the whole payload from the header on (never
    copied to grow); a larger frame's buffer grows with what arrived."""
    protocol = Protocol(Role.SERVER, max_message_size=64 << 20)
    size = payload.RESERVE_AT_ONCE
    header = frame(0x2, b"", key=None, length=size)
    header = bytes([header[0], header[1] | 0x80]) + header[2:] + KEY
    assert protocol.receive_data(header + bytes(6)) == []
    view = protocol.receive_buffer()
    assert view is not None and len(view) == size - 6
    del view
    big = payload.RESERVE_AT_ONCE + 1
    protocol = Protocol(Role.SERVER, max_message_size=64 << 20)
    data = fast_frame(0x2, bytes(big), masked=True)
    assert protocol.receive_data(data[:20]) == []
    grow_and_check(protocol, data, big)


def resident_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(
    speedups is None or not os.path.exists("/proc/self/status"),
    reason="the C payload buffer's memory, measured on Linux",
)
def test_resident_memory_follows_what_the_peers_sent() -> None:
    """64 peers that each declare a 16 MiB frame (1 GiB in all) and send 20 bytes of it cost
    this process a few MiB, not 1 GiB: the C buffer is allocated uninitialised, and the kernel
    commits a page only when the peer's bytes are written into it."""
    header = frame(0x2, b"", key=None, length=payload.RESERVE_AT_ONCE)
    start = bytes([header[0], header[1] | 0x80]) + header[2:] + KEY + bytes(6)
    before = resident_kib()
    protocols = []
    for _ in range(64):
        protocol = Protocol(Role.SERVER, max_message_size=payload.RESERVE_AT_ONCE)
        assert protocol.receive_data(start) == []
        view = protocol.receive_buffer()
        assert view is not None and len(view) == payload.RESERVE_AT_ONCE - 6
        del view
        protocols.append(protocol)
    # Measured: about 1 MiB (a page or two per buffer, and the protocols themselves); the
    # bound leaves room for the interpreter's own allocations on a busy machine.
    assert resident_kib() - before < 32 * 1024


def test_no_buffer_for_small_text_fragmented_or_compressed_frames() -> None:
    for first in (
        fast_frame(0x2, bytes(1000), masked=True),  # small
        fast_frame(0x1, b"a" * 100_000, masked=True),  # text: UTF-8 checked as it arrives
        fast_frame(0x2, bytes(100_000), masked=True, fin=False),  # a fragment
    ):
        protocol = Protocol(Role.SERVER, max_message_size=None)
        protocol.receive_data(first[:-10])
        assert protocol.receive_buffer() is None


def test_a_count_larger_than_the_view_is_refused() -> None:
    protocol = Protocol(Role.SERVER, max_message_size=None)
    protocol.receive_data(fast_frame(0x2, bytes(200_000), masked=True)[:1000])
    view = protocol.receive_buffer()
    assert view is not None
    with pytest.raises(ValueError, match="room for fewer"):
        protocol.received_into(len(view) + 1)


def test_eof_or_a_violation_drops_the_payload_buffer() -> None:
    protocol = Protocol(Role.SERVER, max_message_size=None)
    protocol.receive_data(fast_frame(0x2, bytes(200_000), masked=True)[:1000])
    assert protocol.receive_buffer() is not None
    protocol.receive_eof()
    assert protocol.receive_buffer() is None
    # A too-large frame is refused from its header: no buffer is ever allocated for it.
    protocol = Protocol(Role.SERVER, max_message_size=100_000)
    events = protocol.receive_data(fast_frame(0x2, bytes(200_000), masked=True)[:1000])
    assert isinstance(events[-1], ProtocolFailure)
    assert events[-1].error.close_code == 1009
    assert protocol.receive_buffer() is None


IMPLEMENTATIONS = [PythonPayloadBuffer]
if speedups is not None:
    IMPLEMENTATIONS.append(speedups.PayloadBuffer)


@pytest.mark.parametrize("kind", IMPLEMENTATIONS, ids=lambda kind: kind.__module__)
def test_payload_buffer_contract(kind: type[PythonPayloadBuffer]) -> None:
    buffer = kind(8)
    assert len(buffer) == 8
    with memoryview(buffer) as view:
        view[:] = b"abcdefgh"
        with pytest.raises(BufferError):
            buffer.resize(16)  # exported
    buffer.resize(12)
    with memoryview(buffer) as view:
        view[8:] = b"ijkl"
    buffer.resize(10)
    data = buffer.take()
    assert data == b"abcdefghij"
    assert type(data) is bytes


@pytest.mark.parametrize("kind", IMPLEMENTATIONS, ids=lambda kind: kind.__module__)
def test_take_while_a_view_is_still_held(kind: type[PythonPayloadBuffer]) -> None:
    """asyncio's transport keeps the view from get_buffer() until buffer_updated() returns,
    and the message completes inside buffer_updated(): take() must work then."""
    buffer = kind(3)
    view = memoryview(buffer)
    view[:] = b"abc"
    assert buffer.take() == b"abc"
    view.release()


def test_a_message_completes_while_the_transport_holds_its_view() -> None:
    data = fast_frame(0x2, bytes(range(256)) * 1024, masked=True)
    protocol = Protocol(Role.SERVER, max_message_size=None)
    protocol.receive_data(data[:1000])
    position = 1000
    events: list[Event] = []
    while not events:
        view = protocol.receive_buffer()
        assert view is not None
        count = len(view)
        view[:] = data[position : position + count]
        position += count
        events = protocol.received_into(count)  # the view is still alive here
        view.release()
    assert events == [BinaryMessage(bytes(range(256)) * 1024)]


def test_c_payload_buffer_gives_no_view_once_taken() -> None:
    if speedups is None:
        pytest.skip("the C accelerator is not in use (TUBE_NO_SPEEDUPS or not built)")
    buffer = speedups.PayloadBuffer(4)
    with memoryview(buffer) as view:
        view[:] = b"wxyz"
    assert buffer.take() == b"wxyz"
    with pytest.raises(BufferError):
        memoryview(buffer)
    with pytest.raises(BufferError):
        buffer.take()
    with pytest.raises(BufferError):
        buffer.resize(2)
    with pytest.raises(ValueError):
        speedups.PayloadBuffer(-1)


def test_new_payload_buffer_is_the_accelerators_when_in_use() -> None:
    buffer = new_payload_buffer(3)
    expected = PythonPayloadBuffer if speedups is None else type(buffer)
    assert type(buffer) is expected
    assert len(buffer) == 3


@pytest.mark.parametrize("count", range(9))
def test_pure_python_unmasking_of_an_exported_bytearray(count: int) -> None:
    """A few bytes unmasked in place while a transport holds a view of the buffer (a read of
    1-3 bytes into a payload buffer): CPython refuses an empty slice assignment there."""
    data = bytearray(range(16))
    expected = bytes(data[:8]) + python_apply_mask(bytes(data[8 : 8 + count]), KEY)
    with memoryview(data):
        python_unmask_in_place(data, KEY, 8, 8 + count)
    assert bytes(data[: 8 + count]) == expected


@pytest.mark.parametrize("kind", ["python", "c"])
def test_a_view_still_held_when_the_buffer_must_grow_loses_nothing(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transport that keeps the last view while the rest arrives through receive_data():
    the buffer cannot be resized while exported, so the payload moves to a new one, whole."""
    if kind == "python":
        monkeypatch.setattr(payload, "speedups", None)
        size = 1 << 20
    elif speedups is None:
        pytest.skip("the C payload buffer (TUBE_NO_SPEEDUPS=1 run)")
    else:
        size = payload.RESERVE_AT_ONCE + (1 << 20)  # beyond it, the C buffer grows too
    body = random.Random(size).randbytes(size)
    data = fast_frame(0x2, body, masked=True)
    protocol = Protocol(Role.SERVER, max_message_size=64 << 20)
    assert protocol.receive_data(data[:100_000]) == []
    held = protocol.receive_buffer()
    assert held is not None and len(held) < size - 100_000  # so it must grow
    events = protocol.receive_data(data[100_000:])
    del held
    assert events == [BinaryMessage(body)]
    assert protocol.receive_buffer() is None


def test_bytes_received_into_no_buffer_are_refused() -> None:
    protocol = Protocol(Role.SERVER)
    assert protocol.received_into(0) == []
    with pytest.raises(ValueError, match="5 bytes received into no buffer"):
        protocol.received_into(5)
    with pytest.raises(ValueError, match="negative count"):
        protocol.received_into(-1)
    # After a large message is complete, its buffer is gone too.
    body = bytes(range(256)) * 512
    data = fast_frame(0x2, body, masked=True)
    assert protocol.receive_data(data[:20]) == []
    position = 20
    events: list[Event] = []
    while not events:
        view = protocol.receive_buffer()
        assert view is not None
        count = len(view)
        view[:] = data[position : position + count]
        del view
        position += count
        events = protocol.received_into(count)
    assert events == [BinaryMessage(body)]
    with pytest.raises(ValueError, match="1 bytes received into no buffer"):
        protocol.received_into(1)


def test_the_pure_python_first_buffer_is_at_most_twice_the_first_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A first read that brings 40,000 payload bytes gets a buffer of at most 80,000 (not the
    declared 4 MiB, nor three times what arrived)."""
    monkeypatch.setattr(payload, "speedups", None)
    protocol = Protocol(Role.SERVER, max_message_size=8 << 20)
    data = fast_frame(0x2, bytes(4 << 20), masked=True)
    header = 14
    assert protocol.receive_data(data[: header + 40_000]) == []
    view = protocol.receive_buffer()
    assert view is not None
    assert 40_000 + len(view) == 80_000


@pytest.mark.parametrize("masked", [True, False])
def test_a_large_binary_frame_whose_header_arrives_byte_by_byte(masked: bool) -> None:
    """The 64-bit length and the key arrive one byte per read: the frame moves to its payload
    buffer only once the whole header is there, and arrives whole."""
    body = random.Random(3).randbytes(70_000)
    data = fast_frame(0x2, body, masked=masked)
    protocol = Protocol(Role.SERVER if masked else Role.CLIENT, max_message_size=1 << 20)
    header = 14 if masked else 10
    for index in range(header):
        assert protocol.receive_data(data[index : index + 1]) == []
    assert protocol.receive_data(data[header:]) == [BinaryMessage(body)]
