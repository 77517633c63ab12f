"""The life cycle's and the receiver's edges that the second mutation run found untested
(issue 24, docs/mutation.md): what the session logs and the reasons it gives, pings and
failures at every state, compression passed through, the error for a send while our close
waits, and every ProtocolError message of the frame parser word for word."""

from __future__ import annotations

import logging

import pytest

from tests.core.test_session import OPTIONS, feed, frames, kinds, opened
from tube.websocket.core.actions import Abort, EndIncoming, Write
from tube.websocket.core.errors import (
    ConnectionClosed,
    HandshakeError,
    InvalidState,
    ProtocolError,
    closed_error,
)
from tube.websocket.core.events import ProtocolFailure
from tube.websocket.core.handshake_checks import check_extra_headers, check_origins
from tube.websocket.core.http import Request
from tube.websocket.core.keepalive import tcp_keepalive
from tube.websocket.core.options import ConnectionOptions
from tube.websocket.core.protocol import Protocol, Role
from tube.websocket.core.session import (
    ConnectionState,
    Session,
    frame_messages,
    protocol_closed_error,
)

from .test_mutants_wire import negotiated
from .wsframes import frame

KEY = b"\x01\x02\x03\x04"


def test_the_open_deadline_logs_who_and_how_long_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    session = Session(OPTIONS, peer=lambda: "192.0.2.1:4000")
    session.begin_opening(now=0.0)
    with caplog.at_level(logging.INFO, logger="tube.websocket"):
        assert session.on_deadline(2.0) == [Abort("the opening handshake timed out")]
    assert [r.getMessage() for r in caplog.records] == [
        "dropping 192.0.2.1:4000: the opening handshake took more than 2.0 s"
    ]
    assert session.abort_reason == "the opening handshake timed out"
    assert repr(session) == "<Session opening>"


def test_the_keepalive_timeout_logs_who_and_aborts_with_its_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    options = OPTIONS.replace(ping_interval=1.0, ping_timeout=0.5)
    session = Session(options, peer=lambda: "192.0.2.1:4000")
    session.begin_opening()
    session.opened(options.make_protocol(Role.SERVER), 0.0)
    session.on_deadline(1.0)  # the ping
    with caplog.at_level(logging.INFO, logger="tube.websocket"):
        actions = session.on_deadline(1.5)
    assert actions[-1] == Abort("keepalive ping timeout")
    assert [r.getMessage() for r in caplog.records] == [
        "WebSocket peer 192.0.2.1:4000 did not answer a ping within 0.5 s; closing with 1011"
    ]
    assert session.next_deadline() == 1.5 + options.close_give_up_time


def test_no_keepalive_ping_while_a_peers_end_waits_for_the_application() -> None:
    options = OPTIONS.replace(ping_interval=1.0, ping_timeout=0.5)
    session, peer = opened(options=options)
    peer.send_close(1000, "")
    data = b"".join(bytes(chunk) for chunk in peer.data_to_send())
    assert session.protocol is not None
    session.received(session.protocol.receive_data(data), 0.2)
    assert session.end_deferred
    # The reply waits (close_reply_time, until 1.2); no ping goes out meanwhile, and no 1011.
    assert session.on_deadline(1.0) == []
    assert frames(session.on_deadline(1.2)) == [(0x8, b"\x03\xe8")]


def test_a_ping_is_queued_with_its_payload() -> None:
    session, _ = opened()
    actions = session.send_ping(b"abc", 0.0)
    assert frames(actions) == [(0x9, b"abc")]


def test_fail_with_a_reason_sends_it_once_and_not_after_the_end() -> None:
    session, _ = opened()
    actions = session.fail(1011, "internal error", 0.0)
    assert frames(actions) == [(0x8, b"\x03\xf3internal error")]
    assert session.close_reason == "internal error"
    assert session.fail(1011, "again", 1.0) == []
    never = Session(OPTIONS)
    assert never.fail(1011, "", 0.0) == []  # not open: nothing to fail


def test_an_opening_that_fails_after_attaching_is_closed_with_its_reason() -> None:
    session, _ = opened()
    [end] = session.opening_failed("the peer went away")
    assert end == EndIncoming(1006, "the peer went away", None)
    assert session.state is ConnectionState.CLOSED
    assert session.close_reason == "the peer went away"
    assert session.next_deadline() is None
    assert session.opening_failed("twice") == []


def test_a_deferred_end_committed_at_its_bound_keeps_the_actions_before_it() -> None:
    options = OPTIONS.replace(ping_interval=1.0, ping_timeout=10.0)
    session, peer = opened(options=options)
    peer.send_close(1000, "")
    data = b"".join(bytes(chunk) for chunk in peer.data_to_send())
    assert session.protocol is not None
    session.received(session.protocol.receive_data(data), 0.0)
    actions = session.on_deadline(1.0)  # close_reply_time (1 s) and the ping interval at once
    assert kinds(actions)[0] is Write and EndIncoming in kinds(actions)


def test_frame_messages_passes_compression_on() -> None:
    protocol = Protocol(Role.SERVER, deflate=negotiated())
    frame_messages(protocol, ["t" * 100, b"b" * 100], compress=False)
    data = b"".join(bytes(chunk) for chunk in protocol.data_to_send())
    assert not data[0] & 0x40  # no RSV1: sent uncompressed as asked
    compressed = Protocol(Role.SERVER, deflate=negotiated())
    frame_messages(compressed, ["t" * 100, b"b" * 100], compress=True)
    data = b"".join(bytes(chunk) for chunk in compressed.data_to_send())
    assert data[0] & 0x40
    assert frame_messages(Protocol(Role.SERVER), [b"x"], None) is False


def test_a_send_while_our_close_waits_names_our_code_and_reason() -> None:
    session, peer = opened()
    closing = session.initiate_close(4000, "done here", 0.0)
    protocol = session.protocol
    assert protocol is not None
    waiting = protocol_closed_error(protocol)
    assert (waiting.code, waiting.reason) == (4000, "done here")
    assert "closing at our request" in str(waiting)
    # Once the peer answered, the connection is closed: how it ended, no longer "closing".
    ours = b"".join(bytes(c) for a in closing if isinstance(a, Write) for c in a.chunks)
    peer.receive_data(ours)
    peer.reply_close()
    answer = b"".join(bytes(chunk) for chunk in peer.data_to_send())
    session.received(protocol.receive_data(answer), 0.1)
    ended = protocol_closed_error(protocol)
    assert str(ended) == str(protocol.closed_error())
    assert "closing at our request" not in str(ended)


def test_the_session_repr_names_the_state_in_lower_case() -> None:
    assert repr(Session(ConnectionOptions())) == "<Session new>"


# ---------------------------------------------------------------------- parser messages


@pytest.mark.parametrize(
    ("role", "data", "message"),
    [
        (
            Role.SERVER,
            bytes([0x82, 0xFF]) + (1 << 63).to_bytes(8, "big") + KEY,
            "frame length has its most significant bit set",
        ),
        (Role.SERVER, frame(0x2, b"x", key=None), "frames from a client must be masked"),
        (Role.CLIENT, frame(0x2, b"x", key=KEY), "frames from a server must not be masked"),
        (
            Role.SERVER,
            frame(0x0, b"x", key=KEY),
            "unexpected continuation frame: no message is open",
        ),
        (Role.SERVER, frame(0x1, b"\xff", key=KEY), "invalid UTF-8 in a text message"),
    ],
)
def test_every_parser_refusal_says_what_was_wrong(role: Role, data: bytes, message: str) -> None:
    [failure] = Protocol(role).receive_data(data)
    assert isinstance(failure, ProtocolFailure)
    assert isinstance(failure.error, ProtocolError)
    assert failure.error.reason == message


# ---------------------------------------------------------------------- errors and options


def test_the_end_action_builds_its_error_from_all_three_fields() -> None:
    error = EndIncoming(1001, "going away", "remote").error()
    assert (error.code, error.reason, error.initiated_by) == (1001, "going away", "remote")
    assert str(error) == "connection closed: code 1001 'going away', closed by the remote side"


def test_connection_closed_defaults_and_its_text_for_either_side() -> None:
    error = closed_error(1000)
    assert (error.reason, error.initiated_by, error.closing) == ("", None, False)
    assert str(error) == "connection closed: code 1000"
    theirs = closed_error(4000, "", "remote", closing=True)
    assert str(theirs) == "connection closing at the peer's request: code 4000"
    ours = closed_error(4000, "bye", "local", closing=True)
    assert str(ours) == "connection closing at our request: code 4000 'bye'"


@pytest.mark.parametrize(
    ("headers", "kind", "message"),
    [
        ("X-A: b", TypeError, "headers must be a mapping or (name, value) pairs, not a string"),
        ([("X-A",)], TypeError, "expected a (name, value) pair, got ('X-A',)"),
        ([("X-A", 1)], TypeError, "header names and values must be str, got 'X-A': 1"),
        ([(1, "b")], TypeError, "header names and values must be str, got 1: 'b'"),
        (
            [("X-A", "\u20ac")],
            ValueError,
            "invalid value for header X-A: '\u20ac' holds a character outside ISO-8859-1 "
            "(percent-encode or base64 it)",
        ),
        (
            [("Sec-WebSocket-Protocol", "chat")],
            ValueError,
            "the Sec-WebSocket-Protocol header is set by the handshake itself; "
            "use the subprotocols= or origin= options where they apply",
        ),
    ],
)
def test_extra_header_refusals_say_what_was_wrong(
    headers: object, kind: type[Exception], message: str
) -> None:
    with pytest.raises(kind) as info:
        check_extra_headers(headers, request=True)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_origin_refusals_say_what_was_wrong() -> None:
    for origins, kind, message in [
        ("https://x", TypeError, "origins must be a sequence of origins, not a single string"),
        ([1], TypeError, "origins must be strings, got 1"),
        (["*"], ValueError, 'origins may not contain "*"; pass check_origin=False instead'),
    ]:
        with pytest.raises(kind) as info:
            check_origins(origins)  # type: ignore[arg-type]
        assert str(info.value) == message
    with pytest.raises(ValueError) as error:
        check_origins(["https://example.com/"])
    assert str(error.value).endswith(
        "(for example 'https://example.com'), without path or trailing slash"
    )


def test_unknown_options_are_named_with_the_known_ones() -> None:
    with pytest.raises(TypeError) as info:
        ConnectionOptions.from_kwargs(pign_interval=1)
    assert str(info.value).startswith("unknown connection options ['pign_interval']; known: [")
    assert "'ping_interval'" in str(info.value)


def test_the_options_accept_applies_origins_check_origin_and_extra_headers() -> None:
    request = Request(
        "GET",
        "/",
        "HTTP/1.1",
        [
            ("Host", "example.com"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
            ("Origin", "https://other.example"),
        ],
    )
    with pytest.raises(HandshakeError):
        ConnectionOptions().accept(request)  # another origin: refused by default
    response, _, _ = ConnectionOptions(origins=("https://other.example",)).accept(request)
    assert response.status == 101
    response, _, _ = ConnectionOptions(check_origin=False, extra_headers=(("X-A", "b"),)).accept(
        request
    )
    assert ("X-A", "b") in response.headers


def test_make_protocol_uses_the_role_and_the_size_limit() -> None:
    protocol = ConnectionOptions(max_message_size=10).make_protocol(Role.CLIENT)
    assert protocol.role is Role.CLIENT
    [failure] = protocol.receive_data(frame(0x2, b"x" * 11, key=None))
    assert isinstance(failure, ProtocolFailure) and failure.error.close_code == 1009


def test_tcp_keepalive_spreads_the_timeout_over_three_probes() -> None:
    assert tcp_keepalive(20.0, 20.0) == (20, 7, 3)
    assert tcp_keepalive(0.2, 0.5) == (1, 1, 3)
    assert tcp_keepalive(None, 20.0) is None
    assert tcp_keepalive(20.0, None) is None


# ---------------------------------------------------------------------- what the session logs


def records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("tube")]


def test_a_close_handshake_logs_the_peers_frame_and_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    session, peer = opened()
    peer.send_close(4001, "done")
    data = b"".join(bytes(chunk) for chunk in peer.data_to_send())
    assert session.protocol is not None
    with caplog.at_level(logging.DEBUG, logger="tube.websocket"):
        session.received(session.protocol.receive_data(data), 0.0)
        session.end_reached(0.0)
    logged = records(caplog)
    assert (logging.DEBUG, "close frame from (unknown peer): 4001 'done'") in logged
    assert (logging.DEBUG, "WebSocket connection closed: code 4001 'done'") in logged
    error = session.closed_error()
    assert (error.code, error.reason, error.initiated_by) == (4001, "done", "remote")


def test_a_violation_logs_the_peer_and_the_error(caplog: pytest.LogCaptureFixture) -> None:
    session = Session(OPTIONS, peer=lambda: "192.0.2.1:4000")
    session.begin_opening()
    session.opened(OPTIONS.make_protocol(Role.SERVER), 0.0)
    assert session.protocol is not None
    with caplog.at_level(logging.INFO, logger="tube.websocket"):
        events = session.protocol.receive_data(frame(0x2, b"x", key=None))
        session.received(events, 0.0)
    assert records(caplog) == [
        (
            logging.INFO,
            "WebSocket peer 192.0.2.1:4000 broke the protocol: "
            "frames from a client must be masked (close code 1002)",
        )
    ]
    actions = session.end_reached(0.0)
    assert frames(actions)[0] == (0x8, b"\x03\xeaframes from a client must be masked")


def test_an_eof_without_close_frame_and_the_give_up_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    session = Session(OPTIONS, peer=lambda: "192.0.2.1:4000")
    session.begin_opening()
    session.opened(OPTIONS.make_protocol(Role.SERVER), 0.0)
    with caplog.at_level(logging.DEBUG, logger="tube.websocket"):
        session.eof_received(0.0)
    assert (
        logging.DEBUG,
        "WebSocket peer 192.0.2.1:4000 closed TCP without a close frame",
    ) in records(caplog)
    caplog.clear()
    closing = Session(OPTIONS, peer=lambda: "192.0.2.1:4000")
    closing.begin_opening()
    closing.opened(OPTIONS.make_protocol(Role.SERVER), 0.0)
    closing.initiate_close(1000, "", 0.0)
    with caplog.at_level(logging.INFO, logger="tube.websocket"):
        actions = closing.on_deadline(OPTIONS.close_give_up_time)
    assert actions[-1] == Abort("the closing handshake did not finish in time")
    assert (
        logging.INFO,
        "closing the TCP connection to 192.0.2.1:4000: the close did not finish within 4.0 s",
    ) in records(caplog)


def test_a_session_never_opened_says_so_and_a_lost_opening_fails_it() -> None:
    session = Session(OPTIONS)
    error = session.closed_error()
    assert (error.code, error.reason) == (1006, "the connection was never opened")
    session.begin_opening()
    [end] = session.transport_closed(0.0)
    assert isinstance(end, EndIncoming) and end.code == 1006
    assert session.state is ConnectionState.FAILED
    assert session.transport_closed(0.0) == []


def test_the_close_retry_resends_only_while_the_peer_has_not_answered() -> None:
    session, _ = opened()
    session.initiate_close(1000, "", 0.0)
    resent = session.on_deadline(OPTIONS.close_retry_time or 1.0)
    assert frames(resent) == [(0x8, b"\x03\xe8")]


# ---------------------------------------------------------------------- re-measured at 59ed4ff


def test_a_new_session_has_no_end_yet() -> None:
    """The documented values before any end: no code, an empty reason, no initiator, no abort,
    TCP not reported closed, nothing armed."""
    session = Session(OPTIONS)
    assert session.close_code is None
    assert session.close_reason == ""
    assert session.close_initiator is None
    assert session.abort_reason == ""
    assert session.tcp_closed is False
    assert (session.connected, session.closing, session.end_deferred) == (False, False, False)
    assert session.next_deadline() is None


def test_a_second_handshake_or_attach_is_refused_naming_the_state() -> None:
    session = Session(OPTIONS)
    session.begin_opening()
    with pytest.raises(InvalidState) as info:
        session.begin_opening()
    assert str(info.value) == "<Session opening> is already used by another handshake"
    session.opened(OPTIONS.make_protocol(Role.SERVER), 0.0)
    with pytest.raises(InvalidState) as info:
        session.opened(OPTIONS.make_protocol(Role.SERVER), 0.0)
    assert str(info.value) == "<Session open> cannot be attached twice"


def test_a_ping_from_the_peer_is_answered_with_debug_logging_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only a close frame is logged at DEBUG: a ping or a pong in the same read is not."""
    session, peer = opened()
    peer.send_ping(b"hi")
    peer.send_pong(b"ho")
    with caplog.at_level(logging.DEBUG, logger="tube.websocket"):
        messages, actions = feed(session, peer)
    assert messages == []
    assert frames(actions) == [(0xA, b"hi")]
    assert records(caplog) == []


def test_a_session_never_opened_has_no_end_to_reach() -> None:
    session = Session(OPTIONS)
    assert session.end_reached(0.0) == []
    session.begin_opening()
    assert session.end_reached(0.0) == []


def test_nothing_is_sent_once_an_attached_session_is_over() -> None:
    """After the end, neither the peer's unanswered close frame nor a failure writes anything:
    an opening that failed after attaching ends the connection, whatever its protocol holds."""
    session, peer = opened()
    peer.send_close(1000, "")
    feed(session, peer)
    assert session.end_deferred
    session.opening_failed("the transport gave up")
    assert not session.end_deferred
    assert session.end_reached(1.0) == []
    assert session.fail(1011, "late", 1.0) == []
    assert session.initiate_close(1000, "", 1.0) == []


def test_a_lost_connection_refuses_every_later_send() -> None:
    """TCP ended without a close frame: the protocol is closed too, so a transport's send
    through it raises ConnectionClosed (1006) instead of queueing bytes nobody writes."""
    session, _ = opened()
    [end] = session.transport_closed(0.0)
    assert end == EndIncoming(1006, "", None)
    protocol = session.protocol
    assert protocol is not None
    with pytest.raises(ConnectionClosed) as info:
        frame_messages(protocol, ["late"], None)
    assert info.value.code == 1006
    assert protocol.data_to_send() == []


def test_a_violation_waiting_when_tcp_ends_is_no_longer_deferred() -> None:
    session, _ = opened()
    assert session.protocol is not None
    session.received(session.protocol.receive_data(frame(0x2, b"x", key=None)), 0.0)
    assert session.end_deferred
    [end] = session.transport_closed(0.1)
    assert isinstance(end, EndIncoming) and end.code == 1006
    assert not session.end_deferred
    assert session.next_deadline() is None
    assert session.initiate_close(1000, "", 0.2) == []


def test_no_end_is_deferred_after_a_completed_closing_handshake() -> None:
    session, peer = opened()
    peer.send_close(1000, "")
    feed(session, peer)
    actions = session.end_reached(0.0)
    assert EndIncoming(1000, "", "remote") in actions
    assert not session.end_deferred
    assert session.initiate_close(1000, "", 0.1) == []


def test_the_keepalive_state_is_dropped_at_the_end() -> None:
    """Transports record a sign of life on ``session.keepalive`` when it is not None, reads
    included after the end (waiting for the peer's EOF): at the end it is None."""
    session, peer = opened(options=OPTIONS.replace(ping_interval=1.0))
    assert session.keepalive is not None
    peer.send_close(1000, "")
    feed(session, peer)
    session.end_reached(0.0)
    assert session.keepalive is None


def test_an_abort_after_the_peers_close_keeps_the_peers_code_and_reason() -> None:
    """The abort's reason replaces only a 1006 end: a peer that closed with 1000 "bye" before
    our write side got stuck (send_timeout) still ended the connection with 1000 "bye"."""
    session, peer = opened()
    peer.send_close(1000, "bye")
    feed(session, peer)
    session.aborted("send timed out")
    [end] = session.transport_closed(0.5)
    assert end == EndIncoming(1000, "bye", "remote")
    assert (session.close_code, session.close_reason) == (1000, "bye")
    # And a 1006 end takes the abort's reason.
    lost, _ = opened()
    lost.aborted("send timed out")
    assert lost.transport_closed(0.5) == [EndIncoming(1006, "send timed out", None)]


def test_frame_messages_compresses_binary_messages_only_when_asked() -> None:
    """``compress`` applies to binary messages as to text: False sends them plain, None and
    True compress them (the negotiated ``min_size`` is 4 bytes)."""
    for compress, first_byte in [(False, 0x82), (None, 0xC2), (True, 0xC2)]:
        protocol = Protocol(Role.SERVER, deflate=negotiated())
        frame_messages(protocol, [b"b" * 100], compress=compress)
        data = b"".join(bytes(chunk) for chunk in protocol.data_to_send())
        assert data[0] == first_byte, compress


def test_frame_messages_says_whether_a_buffer_other_than_bytes_was_queued() -> None:
    protocol = Protocol(Role.SERVER)
    assert frame_messages(protocol, [], None) is False
    assert frame_messages(protocol, ["text"], None) is False
    assert frame_messages(protocol, [b"x", "y"], None) is False
    assert frame_messages(protocol, [bytearray(b"x"), b"y", "z"], None) is True
    assert frame_messages(protocol, [memoryview(b"x")], None) is True
