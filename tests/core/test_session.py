"""The sans-I/O life cycle (tube.websocket.core.session): states, the order of the end, every
deadline, the one ConnectionClosed constructor; driven with the time passed in, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tube.websocket.core.actions import (
    Abort,
    Action,
    CloseTransport,
    DeferEnd,
    EndIncoming,
    SendWatch,
    Write,
    send_timeout_reason,
)
from tube.websocket.core.errors import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidState,
    closed_error,
)
from tube.websocket.core.events import Event
from tube.websocket.core.options import ConnectionOptions
from tube.websocket.core.protocol import Protocol, Role
from tube.websocket.core.session import ConnectionState, Session, frame_messages

OPTIONS = ConnectionOptions(
    ping_interval=None, close_retry_time=1.0, close_give_up_time=4.0, open_timeout=2.0
)


def opened(
    role: Role = Role.SERVER, options: ConnectionOptions = OPTIONS, now: float = 0.0
) -> tuple[Session, Protocol]:
    session = Session(options)
    session.begin_opening()
    session.opened(options.make_protocol(role), now)
    assert session.protocol is not None
    return session, Protocol(Role.CLIENT if role is Role.SERVER else Role.SERVER)


def feed(session: Session, peer: Protocol, now: float = 0.0) -> tuple[list[object], list[Action]]:
    """What ``peer`` queued, received by the session's protocol, as a transport does it."""
    assert session.protocol is not None
    data = b"".join(bytes(chunk) for chunk in peer.data_to_send())
    events: list[Event] = session.protocol.receive_data(data)
    messages, actions = session.received(events, now)
    return list(messages), actions


def frames(actions: list[Action]) -> list[tuple[int, bytes]]:
    """(opcode, payload) of every unmasked frame of small payload in the Write actions."""
    data = b"".join(bytes(c) for a in actions if isinstance(a, Write) for c in a.chunks)
    out = []
    while data:
        length = data[1] & 0x7F
        assert length < 126 and not data[1] & 0x80
        out.append((data[0] & 0x0F, data[2 : 2 + length]))
        data = data[2 + length :]
    return out


def kinds(actions: list[Action]) -> list[type]:
    return [type(action) for action in actions]


# ---------------------------------------------------------------------- the one constructor


def test_closed_error_picks_ok_or_error_by_code() -> None:
    assert type(closed_error(1000)) is ConnectionClosedOK
    assert type(closed_error(1005)) is ConnectionClosedOK
    assert type(closed_error(1006, "send timed out")) is ConnectionClosedError
    assert type(closed_error(1011)) is ConnectionClosedError


def test_send_after_initiate_close_says_closing_at_our_request_with_1000() -> None:
    session, _ = opened()
    actions = session.initiate_close(1000, "", 0.0)
    assert frames(actions) == [(0x8, b"\x03\xe8")]
    assert session.state is ConnectionState.CLOSING
    with pytest.raises(ConnectionClosed):
        assert session.protocol is not None
        session.protocol.send_text("late")
    error = session.closed_error()  # what a transport raises for the refused send
    assert type(error) is ConnectionClosedOK
    assert (error.code, error.initiated_by, error.closing) == (1000, "local", True)
    assert str(error) == "connection closing at our request: code 1000"


def test_send_timeout_reason_is_one_text_and_an_error() -> None:
    watch = SendWatch(0.5)
    assert watch.blocked(10.0) == 10.5
    assert watch.blocked(10.3) == 10.5  # still blocked: the deadline does not move
    assert not watch.expired(10.4) and watch.expired(10.5)
    watch.progressed()
    assert watch.deadline is None and watch.blocked(11.0) == 11.5
    assert watch.reason == send_timeout_reason(0.5)
    assert "no byte could be written for 0.5 s" in watch.reason
    session, _ = opened()
    session.aborted(watch.reason)
    error = session.closed_error()
    assert type(error) is ConnectionClosedError and error.code == 1006
    assert error.reason == watch.reason
    assert SendWatch(None).blocked(1.0) is None


# ---------------------------------------------------------------------- opening


def test_opening_states_and_the_open_deadline() -> None:
    session = Session(OPTIONS)
    assert session.state is ConnectionState.NEW and session.next_deadline() is None
    session.begin_opening(now=5.0)
    assert session.state.name == "OPENING"
    assert session.next_deadline() == 7.0
    with pytest.raises(InvalidState):
        session.begin_opening()
    assert session.on_deadline(6.9) == []
    assert session.on_deadline(7.0) == [Abort("the opening handshake timed out")]
    assert session.next_deadline() is None


def test_an_opened_session_has_no_open_deadline_and_cannot_open_twice() -> None:
    session = Session(OPTIONS)
    session.begin_opening(now=0.0)
    protocol = OPTIONS.make_protocol(Role.SERVER)
    session.opened(protocol, 1.0)
    assert session.state is ConnectionState.OPEN and session.connected
    assert session.next_deadline() is None
    with pytest.raises(InvalidState):
        session.opened(protocol, 1.0)


def test_a_failed_opening_ends_incoming_with_1006() -> None:
    session = Session(OPTIONS)
    session.begin_opening()
    [end] = session.opening_failed()
    assert end == EndIncoming(1006, "the opening handshake failed", None)
    assert session.state is ConnectionState.FAILED and session.close_code == 1006
    assert type(end.error()) is ConnectionClosedError
    assert session.opening_failed() == []


# ---------------------------------------------------------------------- the end, in order


def test_server_close_handshake_ends_incoming_then_closes_tcp_first() -> None:
    session, peer = opened(Role.SERVER)
    session.initiate_close(1000, "bye", 0.0)
    assert session.next_deadline() == 1.0  # the close retry, before the give-up at 4.0
    resend = session.on_deadline(1.0)
    assert frames(resend) == [(0x8, b"\x03\xe8bye")]
    assert session.next_deadline() == 4.0
    peer.send_close(1000, "bye")
    messages, actions = feed(session, peer, 2.0)
    assert messages == []
    assert kinds(actions) == [EndIncoming, CloseTransport]
    assert actions[0] == EndIncoming(1000, "bye", "local")
    assert session.state is ConnectionState.CLOSED and not session.connected
    assert session.next_deadline() == 4.0  # the give-up bounds the teardown


def test_client_close_handshake_waits_for_the_servers_eof() -> None:
    session, peer = opened(Role.CLIENT)
    session.initiate_close(1001, "", 0.0)
    peer.send_close(1001)
    _, actions = feed(session, peer)
    assert kinds(actions) == [EndIncoming]  # no CloseTransport: the server closes first
    assert session.eof_received(0.5) == []
    assert session.transport_closed(0.5) == []
    assert session.next_deadline() is None and session.tcp_closed


def test_a_violation_waits_behind_the_messages_before_it() -> None:
    session, peer = opened()
    peer.send_text("one")
    peer.send_text("two")
    data = b"".join(bytes(c) for c in peer.data_to_send()) + b"\xff\x80\0\0\0\0"
    assert session.protocol is not None
    messages, actions = session.received(session.protocol.receive_data(data), 10.0)
    assert messages == ["one", "two"] and actions == [DeferEnd(stop_reading=True)]
    assert session.state is ConnectionState.OPEN and session.end_deferred
    assert session.next_deadline() == 14.0  # close_give_up_time after the violation
    session.protocol.send_text("reply")  # replies still go out first
    assert frames([Write(session.protocol.data_to_send())]) == [(0x1, b"reply")]
    actions = session.end_reached(11.0)
    assert frames(actions)[0][0] == 0x8 and frames(actions)[0][1][:2] == b"\x03\xea"
    assert kinds(actions)[1:] == [EndIncoming, CloseTransport]
    end = actions[1]
    assert isinstance(end, EndIncoming) and (end.code, end.initiated_by) == (1002, "local")
    assert session.end_reached(11.0) == []


def test_a_violation_is_committed_at_its_bound_if_the_application_stays_away() -> None:
    session, _ = opened()
    assert session.protocol is not None
    session.received(session.protocol.receive_data(b"\xff\x80\0\0\0\0"), 0.0)
    assert session.on_deadline(3.9) == []
    actions = session.on_deadline(4.0)
    assert kinds(actions) == [Write, EndIncoming, CloseTransport]
    assert session.close_code == 1002


def test_a_closing_while_a_violation_waits_sends_the_violation_code() -> None:
    session, _ = opened()
    assert session.protocol is not None
    session.received(session.protocol.receive_data(b"\xff\x80\0\0\0\0"), 0.0)
    actions = session.initiate_close(1000, "", 0.5)
    assert frames(actions)[0][1][:2] == b"\x03\xea"  # 1002, not our 1000
    assert session.close_code == 1002


def test_a_peers_close_is_answered_when_reached_or_after_close_reply_time() -> None:
    session, peer = opened()
    peer.send_text("last")
    peer.send_close(1001, "going")
    messages, actions = feed(session, peer, 0.0)
    assert messages == ["last"] and actions == [DeferEnd(stop_reading=False)]
    assert session.state is ConnectionState.CLOSING and session.closing
    assert session.next_deadline() == OPTIONS.close_reply_time
    actions = session.on_deadline(OPTIONS.close_reply_time)
    assert frames(actions) == [(0x8, b"\x03\xe9")]  # the peer's code echoed
    assert actions[1] == EndIncoming(1001, "going", "remote")
    assert isinstance(actions[2], CloseTransport)


def test_initiate_close_while_the_peers_close_waits_answers_it() -> None:
    session, peer = opened()
    peer.send_close(4000)
    feed(session, peer)
    actions = session.initiate_close(1000, "", 0.1)
    assert frames(actions) == [(0x8, b"\x0f\xa0")]
    assert session.close_code == 4000


def test_give_up_aborts_and_an_end_without_close_frame_says_why() -> None:
    session, _ = opened(Role.CLIENT)
    session.initiate_close(1000, "", 0.0)
    session.on_deadline(1.0)  # the retry
    actions = session.on_deadline(4.0)
    assert actions == [Abort("the closing handshake did not finish in time")]
    [end] = session.transport_closed(4.1)
    assert end == EndIncoming(1006, "the closing handshake did not finish in time", "local")
    assert type(session.closed_error()) is ConnectionClosedError


def test_a_local_failure_ends_incoming_and_closes_tcp() -> None:
    session, _ = opened(Role.SERVER)
    actions = session.fail(1011, "", 0.0)
    assert frames(actions) == [(0x8, b"\x03\xf3")]
    assert kinds(actions) == [Write, EndIncoming, CloseTransport]
    assert session.close_code == 1011 and session.fail(1011, "", 0.0) == []


# ---------------------------------------------------------------------- keepalive


def test_keepalive_pings_a_silent_peer_and_fails_with_1011() -> None:
    options = OPTIONS.replace(ping_interval=1.0, ping_timeout=0.5)
    session, _ = opened(options=options)
    assert session.next_deadline() == 1.0
    assert frames(session.on_deadline(1.0)) == [(0x9, b"")]
    assert session.next_deadline() == 1.5
    actions = session.on_deadline(1.5)
    assert frames(actions) == [(0x8, b"\x03\xf3keepalive ping timeout")]
    assert kinds(actions)[1:] == [EndIncoming, CloseTransport, Abort]
    assert session.close_code == 1011


def test_keepalive_counts_any_byte_and_a_paused_reader_as_alive() -> None:
    options = OPTIONS.replace(ping_interval=1.0, ping_timeout=0.5)
    session, _ = opened(options=options)
    assert session.keepalive is not None
    session.keepalive.last_received = 0.8
    assert session.on_deadline(1.0) == [] and session.next_deadline() == 1.8
    session.on_deadline(1.8)  # ping
    assert session.on_deadline(2.3, reading_paused=True) == []
    assert session.state is ConnectionState.OPEN


def test_keepalive_stops_once_the_closing_starts() -> None:
    options = OPTIONS.replace(ping_interval=1.0, close_retry_time=None)
    session, _ = opened(options=options)
    session.initiate_close(1000, "", 0.5)
    assert session.next_deadline() == 4.5


# ---------------------------------------------------------------------- every path


class SessionMachine(RuleBasedStateMachine):
    """Random events and time: every path ends CLOSED with one close code, deadlines move
    forward, the state never goes back, at most one close frame is written (no retry here)."""

    def __init__(self) -> None:
        super().__init__()
        self.options = ConnectionOptions(
            ping_interval=1.0, ping_timeout=0.5, close_retry_time=None, close_give_up_time=3.0
        )
        self.session, self.peer = opened(Role.SERVER, self.options)
        self.now = 0.0
        self.ends: list[EndIncoming] = []
        self.closes_written = 0
        self.written_after_close = 0
        self.last_state = self.session.state
        self.deferred = False

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Write):
                for opcode, _ in frames([action]):
                    if self.closes_written:
                        self.written_after_close += 1
                    if opcode == 0x8:
                        self.closes_written += 1
            elif isinstance(action, EndIncoming):
                self.ends.append(action)
            elif isinstance(action, DeferEnd):
                self.deferred = True

    @rule(text=st.text(max_size=20))
    def peer_sends(self, text: str) -> None:
        if self.peer.close_sent is None and self.peer.state.name == "OPEN":
            self.peer.send_text(text)
        self.receive()

    @rule()
    def peer_pings(self) -> None:
        if self.peer.close_sent is None and self.peer.state.name == "OPEN":
            self.peer.send_ping(b"p")
        self.receive()

    @rule(code=st.sampled_from([1000, 1001, 4000]))
    def peer_closes(self, code: int) -> None:
        if self.peer.close_sent is None and self.peer.state.name != "CLOSED":
            self.peer.send_close(code)
        self.receive()

    @rule()
    def peer_breaks_the_protocol(self) -> None:
        protocol = self.session.protocol
        assert protocol is not None
        if self.session.state < ConnectionState.CLOSED and not self.session.tcp_closed:
            _, actions = self.session.received(protocol.receive_data(b"\xff\x80\0\0\0\0"), self.now)
            self.apply(actions)

    def receive(self) -> None:
        if self.session.state >= ConnectionState.CLOSED or self.session.tcp_closed:
            self.peer.data_to_send()
            return
        _, actions = feed(self.session, self.peer, self.now)
        self.apply(actions)

    @rule(code=st.sampled_from([1000, 1001, 3000]))
    def application_closes(self, code: int) -> None:
        self.apply(self.session.initiate_close(code, "", self.now))

    @rule()
    def application_sends(self) -> None:
        protocol = self.session.protocol
        assert protocol is not None
        try:
            protocol.send_text("x")
        except ConnectionClosed:
            # What a transport raises instead: the session's error.
            error = self.session.closed_error()
            assert type(error) in (ConnectionClosedOK, ConnectionClosedError)
            session = self.session
            if session.state is ConnectionState.CLOSING and not session.abort_reason:
                # A send after initiate_close(): closing at our request, with our code.
                assert protocol.close_sent is not None
                assert (error.code, error.closing) == (protocol.close_sent[0], True)
            if session.state is ConnectionState.CLOSED:
                assert (error.code, error.closing) == (session.close_code, False)
        else:
            self.apply([Write(protocol.data_to_send())])

    @precondition(lambda self: self.deferred)
    @rule()
    def application_reaches_the_end(self) -> None:
        self.apply(self.session.end_reached(self.now))

    @rule(delay=st.floats(min_value=0.0, max_value=2.0))
    def time_passes(self, delay: float) -> None:
        self.now += delay
        deadline = self.session.next_deadline()
        while deadline is not None and deadline <= self.now:
            self.apply(self.session.on_deadline(self.now))
            after = self.session.next_deadline()
            assert after is None or after > self.now, "a deadline stayed due after on_deadline"
            deadline = after

    @rule()
    def peer_closes_tcp(self) -> None:
        self.apply(self.session.eof_received(self.now))

    @invariant()
    def state_only_moves_forward(self) -> None:
        state = self.session.state
        assert state >= self.last_state
        self.last_state = state

    @invariant()
    def one_end_one_close_frame(self) -> None:
        assert len(self.ends) <= 1
        assert self.closes_written <= 1 and self.written_after_close == 0
        if self.ends:
            end = self.ends[0]
            assert self.session.state is ConnectionState.CLOSED
            assert (end.code, end.reason) == (self.session.close_code, self.session.close_reason)

    def teardown(self) -> None:
        # Whatever happened, the transport's end: every path ends CLOSED with one close code.
        self.apply(self.session.transport_closed(self.now + 100.0))
        assert self.session.state is ConnectionState.CLOSED
        assert len(self.ends) == 1 and self.session.close_code == self.ends[0].code
        assert self.session.next_deadline() is None


TestSessionMachine = SessionMachine.TestCase
TestSessionMachine.settings = settings(max_examples=200, stateful_step_count=25, deadline=None)


def test_frame_messages_queues_text_and_binary_in_order_and_tells_mutable_buffers() -> None:
    protocol = Protocol(Role.SERVER)
    assert frame_messages(protocol, ["a", b"b"], None) is False
    assert frames([Write(protocol.data_to_send())]) == [(0x1, b"a"), (0x2, b"b")]
    assert frame_messages(protocol, [bytearray(b"c")], None) is True
    assert frames([Write(protocol.data_to_send())]) == [(0x2, b"c")]
    protocol.send_close()
    protocol.data_to_send()
    with pytest.raises(ConnectionClosed):
        frame_messages(protocol, ["late"], None)
