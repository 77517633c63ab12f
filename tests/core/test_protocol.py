"""Every RFC 6455 rule of the sans-I/O core, with the exact close code it sends."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest

from tube.websocket.core.errors import ConnectionClosed, MessageTooBig, ProtocolError
from tube.websocket.core.events import (
    BinaryMessage,
    CloseReceived,
    Ping,
    Pong,
    ProtocolFailure,
    TextMessage,
)
from tube.websocket.core.protocol import Protocol, Role, State

from .wsframes import close_payload, frame, parse_frames

TEXT, BINARY, CONT, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10


def sent_frames(protocol: Protocol) -> list[tuple[int, int, bytes]]:
    return parse_frames(b"".join(bytes(b) for b in protocol.data_to_send()))


def assert_failed_with(protocol: Protocol, events: Sequence[object], code: int) -> ProtocolError:
    assert isinstance(events[-1], ProtocolFailure), events
    error = events[-1].error
    assert error.close_code == code
    # Nothing is sent before the transport commits the failure: the application's replies to
    # the messages before the violation go out first.
    assert protocol.data_to_send() == []
    assert not protocol.should_close_transport()
    protocol.fail(error.close_code, error.reason)
    frames = sent_frames(protocol)
    assert len(frames) == 1 and frames[0][1] == CLOSE
    assert int.from_bytes(frames[0][2][:2], "big") == code
    assert protocol.state is State.CLOSED
    assert protocol.should_close_transport()
    # Everything after a failure is discarded.
    assert protocol.receive_data(frame(TEXT, b"late")) == []
    assert protocol.data_to_send() == []
    return error


# ---------------------------------------------------------------- RFC 6455 §5.7 examples


def test_rfc_single_frame_unmasked_text() -> None:
    client = Protocol(Role.CLIENT)
    assert client.receive_data(b"\x81\x05\x48\x65\x6c\x6c\x6f") == [TextMessage("Hello")]


def test_rfc_single_frame_masked_text() -> None:
    server = Protocol(Role.SERVER)
    data = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
    assert server.receive_data(data) == [TextMessage("Hello")]


def test_rfc_fragmented_unmasked_text() -> None:
    client = Protocol(Role.CLIENT)
    assert client.receive_data(b"\x01\x03\x48\x65\x6c") == []
    assert client.receive_data(b"\x80\x02\x6c\x6f") == [TextMessage("Hello")]


def test_rfc_ping_and_pong_examples() -> None:
    client = Protocol(Role.CLIENT, mask_key_source=lambda: b"\x37\xfa\x21\x3d")
    assert client.receive_data(b"\x89\x05\x48\x65\x6c\x6c\x6f") == [Ping(b"Hello")]
    # The automatic pong is the RFC's masked pong example, byte for byte.
    assert b"".join(client.data_to_send()) == b"\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"


def test_rfc_length_encodings_serialised_both_ways() -> None:
    server = Protocol(Role.SERVER)
    server.send_binary(bytes(256))
    assert bytes(server.data_to_send()[0][:4]) == b"\x82\x7e\x01\x00"
    server.send_binary(bytes(65536))
    assert bytes(server.data_to_send()[0][:10]) == b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"
    client = Protocol(Role.CLIENT)
    assert client.receive_data(b"\x82\x7e\x01\x00" + bytes(256)) == [BinaryMessage(bytes(256))]
    data = b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00" + bytes(65536)
    assert client.receive_data(data) == [BinaryMessage(bytes(65536))]


# ---------------------------------------------------------------- framing rules


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
def test_reserved_bits_fail_with_1002(rsv: int) -> None:
    server = Protocol(Role.SERVER)
    assert_failed_with(server, server.receive_data(frame(TEXT, b"x", rsv=rsv)), 1002)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes_fail_with_1002(opcode: int) -> None:
    server = Protocol(Role.SERVER)
    assert_failed_with(server, server.receive_data(frame(opcode, b"")), 1002)


def test_unmasked_frame_from_client_fails_with_1002() -> None:
    server = Protocol(Role.SERVER)
    error = assert_failed_with(server, server.receive_data(frame(TEXT, b"x", key=None)), 1002)
    assert "must be masked" in str(error)


def test_masked_frame_from_server_fails_with_1002() -> None:
    client = Protocol(Role.CLIENT)
    error = assert_failed_with(client, client.receive_data(frame(TEXT, b"x")), 1002)
    assert "must not be masked" in str(error)


def test_64_bit_length_with_msb_set_fails_with_1002() -> None:
    server = Protocol(Role.SERVER)
    data = b"\x82\xff" + b"\x80" + bytes(7)
    assert_failed_with(server, server.receive_data(data), 1002)


@pytest.mark.parametrize("opcode", [CLOSE, PING, PONG])
def test_control_frame_over_125_bytes_fails_with_1002(opcode: int) -> None:
    server = Protocol(Role.SERVER)
    assert_failed_with(server, server.receive_data(frame(opcode, bytes(126))), 1002)


@pytest.mark.parametrize("opcode", [CLOSE, PING, PONG])
def test_fragmented_control_frame_fails_with_1002(opcode: int) -> None:
    server = Protocol(Role.SERVER)
    assert_failed_with(server, server.receive_data(frame(opcode, b"", fin=False)), 1002)


def test_continuation_without_open_message_fails_with_1002() -> None:
    server = Protocol(Role.SERVER)
    error = assert_failed_with(server, server.receive_data(frame(CONT, b"x")), 1002)
    assert "no message is open" in str(error)


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_new_data_frame_inside_a_fragmented_message_fails_with_1002(opcode: int) -> None:
    server = Protocol(Role.SERVER)
    assert server.receive_data(frame(BINARY, b"a", fin=False)) == []
    error = assert_failed_with(server, server.receive_data(frame(opcode, b"b")), 1002)
    assert "expected a continuation frame" in str(error)


def test_control_frames_between_fragments_do_not_disturb_reassembly() -> None:
    server = Protocol(Role.SERVER)
    events = server.receive_data(
        frame(TEXT, b"He", fin=False)
        + frame(PING, b"p")
        + frame(CONT, b"ll", fin=False)
        + frame(PONG, b"q")
        + frame(CONT, b"o")
    )
    assert events == [Ping(b"p"), Pong(b"q"), TextMessage("Hello")]
    assert sent_frames(server) == [(1, PONG, b"p")]


def test_unsolicited_pong_is_reported_and_ignored() -> None:
    server = Protocol(Role.SERVER)
    assert server.receive_data(frame(PONG, b"hi")) == [Pong(b"hi")]
    assert server.data_to_send() == []
    assert server.state is State.OPEN


# ---------------------------------------------------------------- UTF-8


def test_invalid_utf8_in_single_frame_fails_with_1007() -> None:
    server = Protocol(Role.SERVER)
    assert_failed_with(server, server.receive_data(frame(TEXT, b"\xff")), 1007)


def test_character_split_across_fragments_is_accepted() -> None:
    server = Protocol(Role.SERVER)
    euro = "€".encode()
    events = server.receive_data(
        frame(TEXT, euro[:1], fin=False) + frame(CONT, euro[1:2], fin=False) + frame(CONT, euro[2:])
    )
    assert events == [TextMessage("€")]


def test_invalid_utf8_fails_at_the_first_bad_fragment_not_at_the_end() -> None:
    server = Protocol(Role.SERVER)
    assert server.receive_data(frame(TEXT, b"ok", fin=False)) == []
    # A surrogate prefix (ED A0) can never be valid, even though the message is not finished.
    events = server.receive_data(frame(CONT, b"\xed\xa0", fin=False))
    assert_failed_with(server, events, 1007)


def test_truncated_character_at_end_of_message_fails_with_1007() -> None:
    server = Protocol(Role.SERVER)
    events = server.receive_data(frame(TEXT, b"a\xe2\x82", fin=False) + frame(CONT, b""))
    assert_failed_with(server, events, 1007)


# ---------------------------------------------------------------- limits


def test_declared_length_over_limit_fails_with_1009_before_payload() -> None:
    server = Protocol(Role.SERVER, max_message_size=1000)
    # Only the header: the payload never arrives, the limit is enforced anyway.
    header = frame(BINARY, b"", length=1001)
    assert_failed_with(server, server.receive_data(header), 1009)


def test_absurd_declared_length_is_refused_without_allocation() -> None:
    server = Protocol(Role.SERVER)
    header = b"\x82\xff" + (2**63 - 1).to_bytes(8, "big") + b"abcd"
    events = server.receive_data(header)
    assert isinstance(events[-1].error, MessageTooBig)  # type: ignore[union-attr]


def test_message_size_is_cumulative_across_fragments() -> None:
    server = Protocol(Role.SERVER, max_message_size=10)
    assert server.receive_data(frame(BINARY, bytes(6), fin=False)) == []
    assert_failed_with(server, server.receive_data(frame(CONT, bytes(5))), 1009)


def test_message_at_exactly_the_limit_is_accepted() -> None:
    server = Protocol(Role.SERVER, max_message_size=10)
    events = server.receive_data(frame(BINARY, bytes(6), fin=False) + frame(CONT, bytes(4)))
    assert events == [BinaryMessage(bytes(10))]


def test_fragment_count_is_capped() -> None:
    server = Protocol(Role.SERVER, max_fragments=3)
    events = server.receive_data(
        frame(BINARY, b"a", fin=False) + frame(CONT, b"b", fin=False) + frame(CONT, b"c", fin=False)
    )
    assert events == []
    assert_failed_with(server, server.receive_data(frame(CONT, b"d")), 1009)


def test_default_fragment_cap_follows_message_size() -> None:
    server = Protocol(Role.SERVER)  # 1 MiB -> max(1024, 16384)
    data = frame(BINARY, b"", fin=False) + frame(CONT, b"", fin=False) * 16383
    assert server.receive_data(data) == []
    assert_failed_with(server, server.receive_data(frame(CONT, b"")), 1009)


def test_fragment_cap_floor_is_1024_for_small_messages() -> None:
    """Issue 24: ``max(1024, max_message_size // 64)`` keeps a floor of 1024 frames when the size
    limit is small (4096 // 64 is only 64): 1024 frames pass, the 1025th fails with 1009."""
    server = Protocol(Role.SERVER, max_message_size=4096)
    data = frame(BINARY, b"", fin=False) + frame(CONT, b"", fin=False) * 1022
    assert server.receive_data(data + frame(CONT, b"")) == [BinaryMessage(b"")]
    server = Protocol(Role.SERVER, max_message_size=4096)
    assert server.receive_data(data + frame(CONT, b"", fin=False)) == []
    assert_failed_with(server, server.receive_data(frame(CONT, b"")), 1009)


def test_unlimited_message_size_accepts_large_messages() -> None:
    server = Protocol(Role.SERVER, max_message_size=None)
    payload = bytes(3 << 20)
    assert server.receive_data(frame(BINARY, payload)) == [BinaryMessage(payload)]


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("10", TypeError)]
)
def test_invalid_limits_raise_at_once(value: object, error: type[Exception]) -> None:
    # Out of range: ValueError; not an int: TypeError (as the options, issue 23).
    with pytest.raises(error):
        Protocol(Role.SERVER, max_message_size=value)  # type: ignore[arg-type]
    with pytest.raises(error):
        Protocol(Role.SERVER, max_fragments=value)


def test_buffered_input_is_bounded_by_one_frame() -> None:
    server = Protocol(Role.SERVER, max_message_size=1000)
    data = frame(BINARY, bytes(1000))
    for index in range(len(data) - 1):
        assert server.receive_data(data[index : index + 1]) == []
    assert len(server._receiver._buffer) == len(data) - 1
    assert server.receive_data(data[-1:]) == [BinaryMessage(bytes(1000))]
    assert len(server._receiver._buffer) == 0


# ---------------------------------------------------------------- closing


def test_remote_close_is_echoed_with_its_code() -> None:
    server = Protocol(Role.SERVER)
    events = server.receive_data(frame(CLOSE, close_payload(1001, b"bye")))
    assert events == [CloseReceived(1001, "bye")]
    assert sent_frames(server) == [(1, CLOSE, close_payload(1001))]
    assert server.state is State.CLOSED
    assert server.close_initiator == "remote"
    assert server.should_close_transport()
    assert (server.close_code, server.close_reason) == (1001, "bye")


def state_of(protocol: Protocol) -> State:
    return protocol.state


def test_a_close_answered_later_lets_data_out_first() -> None:
    # Issue 22 §6, the core's half: with reply_close_later the peer's close frame waits for
    # reply_close(), and messages can be sent meanwhile (RFC 6455 §5.5.1).
    server = Protocol(Role.SERVER, reply_close_later=True)
    events = server.receive_data(frame(TEXT, b"last") + frame(CLOSE, close_payload(4000, b"bye")))
    assert events == [TextMessage("last"), CloseReceived(4000, "bye")]
    assert sent_frames(server) == []
    assert server.state is State.CLOSING and server.close_reply_pending
    assert not server.should_close_transport()
    assert (server.close_code, server.close_initiator) == (4000, "remote")
    server.send_text("LAST")
    server.reply_close()
    assert sent_frames(server) == [(1, TEXT, b"LAST"), (1, CLOSE, close_payload(4000))]
    # Read through a function: mypy would keep the CLOSING narrowed above.
    assert state_of(server) is State.CLOSED and not server.close_reply_pending
    assert server.should_close_transport()
    server.reply_close()  # nothing pending any more
    assert sent_frames(server) == []
    with pytest.raises(ConnectionClosed):
        server.send_text("too late")


@pytest.mark.parametrize("answer", ["send_close", "fail", "eof"])
def test_a_pending_close_answer_by_other_means(answer: str) -> None:
    client = Protocol(Role.CLIENT, reply_close_later=True)
    client.receive_data(frame(CLOSE, b"", key=None))
    assert client.close_reply_pending
    if answer == "send_close":
        client.send_close(1001, "ignored")  # the answer echoes the peer's (empty) close
        assert [f[1:] for f in sent_frames(client)] == [(CLOSE, b"")]
    elif answer == "fail":
        client.fail(1011)
        assert [f[1:] for f in sent_frames(client)] == [(CLOSE, close_payload(1011))]
    else:
        client.receive_eof()
        assert sent_frames(client) == []
    assert client.state is State.CLOSED and not client.close_reply_pending
    assert client.close_code == 1005


def test_empty_close_is_echoed_empty_and_reported_as_1005() -> None:
    server = Protocol(Role.SERVER)
    assert server.receive_data(frame(CLOSE, b"")) == [CloseReceived(1005, "")]
    assert sent_frames(server) == [(1, CLOSE, b"")]


def test_close_with_one_byte_payload_fails_with_1002() -> None:
    server = Protocol(Role.SERVER)
    assert_failed_with(server, server.receive_data(frame(CLOSE, b"\x03")), 1002)


VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999]
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_valid_close_codes_are_accepted(code: int) -> None:
    server = Protocol(Role.SERVER)
    assert server.receive_data(frame(CLOSE, close_payload(code))) == [CloseReceived(code, "")]


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_close_codes_fail_with_1002(code: int) -> None:
    server = Protocol(Role.SERVER)
    assert_failed_with(server, server.receive_data(frame(CLOSE, close_payload(code))), 1002)


def test_close_reason_with_invalid_utf8_fails_with_1007() -> None:
    server = Protocol(Role.SERVER)
    events = server.receive_data(frame(CLOSE, close_payload(1000, b"\xff")))
    assert_failed_with(server, events, 1007)


def test_close_in_the_middle_of_a_fragmented_message_is_answered() -> None:
    server = Protocol(Role.SERVER)
    events = server.receive_data(frame(TEXT, b"par", fin=False) + frame(CLOSE, close_payload(1000)))
    assert events == [CloseReceived(1000, "")]
    assert sent_frames(server) == [(1, CLOSE, close_payload(1000))]


def test_frames_after_a_received_close_are_discarded() -> None:
    server = Protocol(Role.SERVER)
    events = server.receive_data(frame(CLOSE, close_payload(1000)) + frame(TEXT, b"ignored"))
    assert events == [CloseReceived(1000, "")]
    assert server.receive_data(frame(PING, b"")) == []
    assert sent_frames(server) == [(1, CLOSE, close_payload(1000))]


def test_local_close_then_remote_answer() -> None:
    server = Protocol(Role.SERVER)
    server.send_close(1000, "done")
    assert sent_frames(server) == [(1, CLOSE, close_payload(1000, b"done"))]
    assert server.state is State.CLOSING
    assert not server.should_close_transport()
    # Data may still arrive until the peer's close frame (RFC 6455 §1.4).
    assert server.receive_data(frame(TEXT, b"still")) == [TextMessage("still")]
    assert server.receive_data(frame(CLOSE, close_payload(1000))) == [CloseReceived(1000, "")]
    assert server.data_to_send() == []  # no second close frame
    state: State = server.state  # (not narrowed by the assertion above: it changed)
    assert state is State.CLOSED
    assert server.close_initiator == "local"
    assert server.should_close_transport()


def test_client_waits_for_server_eof_after_close_handshake() -> None:
    client = Protocol(Role.CLIENT)
    client.send_close()
    client.data_to_send()
    client.receive_data(frame(CLOSE, close_payload(1000), key=None))
    assert client.state is State.CLOSED
    assert not client.should_close_transport()
    client.receive_eof()
    assert client.should_close_transport()


def test_pings_are_not_answered_after_sending_close() -> None:
    server = Protocol(Role.SERVER)
    server.send_close()
    server.data_to_send()
    assert server.receive_data(frame(PING, b"x")) == [Ping(b"x")]
    assert server.data_to_send() == []


@pytest.mark.parametrize(
    "send",
    [
        lambda p: p.send_text("x"),
        lambda p: p.send_binary(b"x"),
        lambda p: p.send_ping(),
        lambda p: p.send_pong(),
        lambda p: p.send_close(),
    ],
)
def test_sending_after_close_raises_connection_closed(send: object) -> None:
    server = Protocol(Role.SERVER)
    server.send_close(1001, "away")
    with pytest.raises(ConnectionClosed):
        send(server)  # type: ignore[operator]


def test_eof_without_close_reports_1006() -> None:
    server = Protocol(Role.SERVER)
    server.receive_eof()
    assert server.state is State.CLOSED
    assert server.close_code == 1006
    error = server.closed_error()
    assert (error.code, error.initiated_by) == (1006, None)
    assert not error.ok


def test_resend_close_repeats_the_close_frame_only_while_waiting() -> None:
    server = Protocol(Role.SERVER)
    server.send_close(1000, "x")
    first = sent_frames(server)
    server.resend_close()
    assert sent_frames(server) == first
    server.receive_data(frame(CLOSE, close_payload(1000)))
    server.resend_close()
    assert server.data_to_send() == []


def test_local_fail_sends_code_and_closes() -> None:
    server = Protocol(Role.SERVER)
    server.fail(1011, "keepalive ping timeout")
    assert sent_frames(server) == [(1, CLOSE, close_payload(1011, b"keepalive ping timeout"))]
    assert server.should_close_transport()
    assert server.close_code == 1011
    with pytest.raises(ConnectionClosed):
        server.send_text("x")


# ---------------------------------------------------------------- sending


def test_server_frames_are_not_masked_and_client_frames_are() -> None:
    server = Protocol(Role.SERVER)
    server.send_text("hi")
    assert b"".join(server.data_to_send()) == b"\x81\x02hi"
    keys = iter([b"\x01\x02\x03\x04", b"\x05\x06\x07\x08"])
    client = Protocol(Role.CLIENT, mask_key_source=lambda: next(keys))
    client.send_text("hi")
    client.send_text("hi")
    first, second = client.data_to_send()
    assert first[:6] == b"\x81\x82\x01\x02\x03\x04"
    assert second[:6] == b"\x81\x82\x05\x06\x07\x08"
    assert parse_frames(bytes(first) + bytes(second)) == [(1, TEXT, b"hi")] * 2


def test_client_keys_are_fresh_by_default() -> None:
    client = Protocol(Role.CLIENT)
    for _ in range(50):
        client.send_binary(b"x")
    keys = {bytes(buffer[2:6]) for buffer in client.data_to_send()}
    assert len(keys) == 50


def test_outgoing_fragmentation() -> None:
    server = Protocol(Role.SERVER)
    server.send_binary(b"abcdefg", fragment_size=3)
    assert sent_frames(server) == [(0, BINARY, b"abc"), (0, CONT, b"def"), (1, CONT, b"g")]
    server.send_text("€", fragment_size=1)
    frames = sent_frames(server)
    assert [f[1] for f in frames] == [TEXT, CONT, CONT]
    receiver = Protocol(Role.CLIENT)
    server.send_text("€uro", fragment_size=2)
    assert receiver.receive_data(b"".join(server.data_to_send())) == [TextMessage("€uro")]


def test_ping_payload_over_125_bytes_raises_value_error() -> None:
    server = Protocol(Role.SERVER)
    with pytest.raises(ValueError, match="at most 125"):
        server.send_ping(bytes(126))
    server.send_ping(bytes(125))
    assert sent_frames(server) == [(1, PING, bytes(125))]


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2000, 5000])
def test_sending_an_invalid_close_code_raises_value_error(code: int) -> None:
    with pytest.raises(ValueError, match="may not be sent"):
        Protocol(Role.SERVER).send_close(code)


def test_close_reason_longer_than_123_bytes_raises_value_error() -> None:
    server = Protocol(Role.SERVER)
    server.send_close(1000, "x" * 123)
    with pytest.raises(ValueError, match="at most 123"):
        Protocol(Role.SERVER).send_close(1000, "é" * 62)


def test_failure_reason_is_truncated_on_a_character_boundary() -> None:
    server = Protocol(Role.SERVER)
    server._fail(1002, "é" * 100)
    (frame_,) = sent_frames(server)
    assert len(frame_[2]) <= 125
    frame_[2][2:].decode()


def test_send_type_errors() -> None:
    server = Protocol(Role.SERVER)
    with pytest.raises(TypeError):
        server.send_text(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        server.send_binary("text")  # type: ignore[arg-type]


def test_role_must_be_a_role() -> None:
    with pytest.raises(TypeError):
        Protocol("server")  # type: ignore[arg-type]


def test_message_too_big_is_a_protocol_error_with_1009() -> None:
    assert MessageTooBig("x").close_code == 1009
    assert issubclass(MessageTooBig, ProtocolError)


# ---------------------------------------------------------------- fail fast inside one frame


def test_invalid_utf8_inside_one_frame_fails_before_the_frame_is_complete() -> None:
    server = Protocol(Role.SERVER)
    data = frame(TEXT, b"valid " + b"\xed\xa0\x80" + b" rest of the frame")
    # The frame arrives in chops: the bad bytes are in the second chop, the end never comes.
    assert server.receive_data(data[:10]) == []
    assert_failed_with(server, server.receive_data(data[10:16]), 1007)


def test_invalid_utf8_inside_a_continuation_frame_fails_early() -> None:
    server = Protocol(Role.SERVER)
    assert server.receive_data(frame(TEXT, b"ab\xe2", fin=False)) == []
    data = frame(CONT, b"\x82\xac ok then \xff and more")
    assert server.receive_data(data[:12]) == []
    assert_failed_with(server, server.receive_data(data[12:20]), 1007)


@pytest.mark.parametrize("chop", [1, 2, 3, 5, 7, 64])
@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
def test_text_frames_in_chops_are_reassembled_exactly(chop: int, role: Role) -> None:
    key = None if role is Role.CLIENT else b"\x01\x02\x03\x04"
    text = "héllo wörld € 𝄞 " * 20
    encoded = text.encode()
    data = (
        frame(TEXT, encoded[:50], fin=False, key=key)
        + frame(CONT, encoded[50:], key=key)
        + frame(TEXT, encoded, key=key)
    )
    protocol = Protocol(role)
    events = []
    for index in range(0, len(data), chop):
        events += protocol.receive_data(data[index : index + chop])
    assert events == [TextMessage(text), TextMessage(text)]


@pytest.mark.parametrize("chunk", [1000, 4097, 65536])
@pytest.mark.parametrize("length", [4097, 10_000, 300_001])
def test_large_masked_frames_arriving_over_several_reads(chunk: int, length: int) -> None:
    # Frames held in the receive buffer are unmasked in place there (a separate code path).
    payload = os.urandom(length)
    data = frame(BINARY, payload, key=b"\x9a\x01\xfe\x42") + frame(TEXT, b"after")
    server = Protocol(Role.SERVER, max_message_size=None)
    events = []
    for index in range(0, len(data), chunk):
        events += server.receive_data(data[index : index + chunk])
    assert events == [BinaryMessage(payload), TextMessage("after")]


def test_a_message_at_the_limit_in_64_byte_fragments_is_accepted() -> None:
    # Conformance suites send large messages in 64-byte fragments; the default cap allows it.
    limit = 1 << 18
    server = Protocol(Role.SERVER, max_message_size=limit)
    payload = os.urandom(limit)
    pieces = [payload[i : i + 64] for i in range(0, limit, 64)]
    data = b"".join(
        frame(BINARY if i == 0 else CONT, piece, fin=i == len(pieces) - 1)
        for i, piece in enumerate(pieces)
    )
    assert server.receive_data(data) == [BinaryMessage(payload)]


def test_send_counts_bytes_of_any_buffer_format() -> None:
    # Issue 8 §5: a memoryview of wider items counts bytes, not items, in the frame length,
    # and the control-frame limit is checked in bytes.
    import array

    server = Protocol(Role.SERVER)
    numbers = array.array("i", [1, 2, 3])
    server.send_binary(memoryview(numbers))
    assert sent_frames(server) == [(True, BINARY, numbers.tobytes())]
    server.send_binary(memoryview(b"abcdef")[::2])
    assert sent_frames(server) == [(True, BINARY, b"ace")]
    with pytest.raises(ValueError, match="125"):
        server.send_ping(memoryview(array.array("d", range(20))))
    with pytest.raises(TypeError, match="send_ping"):
        server.send_ping(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="send_binary"):
        server.send_binary("text")  # type: ignore[arg-type]
