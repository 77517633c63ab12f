"""Core decisions no core test ran before mutation testing (issue 24, docs/mutation.md):
keepalive (only the transports' timing tests touched it), a closed connection's message,
``ConnectionOptions.replace`` and the size a message counts for.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tube.websocket.core.errors import closed_error
from tube.websocket.core.keepalive import Keepalive, KeepaliveAction
from tube.websocket.core.options import ConnectionOptions
from tube.websocket.core.utf8 import message_size

WAIT, PING, TIMEOUT = KeepaliveAction.WAIT, KeepaliveAction.PING, KeepaliveAction.TIMEOUT


def test_keepalive_waits_for_the_interval_of_silence_then_pings() -> None:
    keepalive = Keepalive(interval=20.0, timeout=10.0, now=100.0)
    assert keepalive.check(110.0) == (WAIT, 120.0)
    assert keepalive.check(119.999) == (WAIT, 120.0)
    # At exactly interval seconds of silence: a ping, and the answer is due timeout later.
    assert keepalive.check(120.0) == (PING, 130.0)


def test_keepalive_gives_up_when_nothing_arrives_after_the_ping() -> None:
    keepalive = Keepalive(interval=20.0, timeout=10.0, now=100.0)
    assert keepalive.check(125.0) == (PING, 135.0)
    assert keepalive.check(135.0) == (TIMEOUT, 135.0)


def test_keepalive_counts_any_byte_after_the_ping_as_alive() -> None:
    keepalive = Keepalive(interval=20.0, timeout=10.0, now=100.0)
    assert keepalive.check(125.0) == (PING, 135.0)
    keepalive.last_received = 125.0  # arrived in the same instant as the ping: alive
    assert keepalive.check(135.0) == (WAIT, 145.0)
    assert keepalive.check(145.0) == (PING, 155.0)
    keepalive.last_received = 144.0  # before that ping: no answer to it
    assert keepalive.check(155.0) == (TIMEOUT, 155.0)


def test_keepalive_without_timeout_pings_every_interval_and_never_gives_up() -> None:
    keepalive = Keepalive(interval=20.0, timeout=None, now=100.0)
    assert keepalive.check(120.0) == (PING, 140.0)
    assert keepalive.check(140.0) == (PING, 160.0)
    assert keepalive.check(1000.0) == (PING, 1020.0)


def test_keepalive_while_reading_is_paused_counts_the_peer_alive() -> None:
    keepalive = Keepalive(interval=20.0, timeout=10.0, now=100.0)
    assert keepalive.check(125.0) == (PING, 135.0)
    # The application stopped taking messages: the silence is ours, not the peer's.
    assert keepalive.check(135.0, reading_paused=True) == (WAIT, 155.0)
    assert keepalive.last_received == 135.0
    assert keepalive.check(155.0) == (PING, 165.0)


@given(
    st.floats(0.1, 100.0),
    st.floats(0.1, 100.0) | st.none(),
    st.lists(st.tuples(st.floats(0.0, 50.0), st.booleans()), max_size=20),
)
def test_keepalive_never_waits_past_the_interval_of_silence(
    interval: float, timeout: float | None, steps: list[tuple[float, bool]]
) -> None:
    now = 0.0
    keepalive = Keepalive(interval, timeout, now)
    for step, received in steps:
        now += step
        if received:
            keepalive.last_received = now
        action, when = keepalive.check(now)
        if action is WAIT:
            assert now < when == keepalive.last_received + interval
        elif action is PING:
            assert when == now + (interval if timeout is None else timeout)
        else:
            assert timeout is not None
            return


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (
            closed_error(1000, "bye", "remote"),
            "connection closed: code 1000 'bye', closed by the remote side",
        ),
        (closed_error(1011, "", "local"), "connection closed: code 1011, closed by the local side"),
        (closed_error(1006), "connection closed: code 1006"),
    ],
)
def test_a_closed_connection_says_its_code_reason_and_who_closed(
    error: Exception, text: str
) -> None:
    assert str(error) == text


def test_connection_options_replace_changes_one_option_and_checks_it() -> None:
    options = ConnectionOptions()
    changed = options.replace(ping_interval=5.0)
    assert changed.ping_interval == 5.0
    assert changed.replace(ping_interval=options.ping_interval) == options
    with pytest.raises(ValueError, match=r"^ping_interval must be a positive number"):
        options.replace(ping_interval=-1.0)


@pytest.mark.parametrize(
    ("message", "size"),
    [("", 0), ("ab", 2), ("é", 2), ("€x", 4), (b"ab\xff", 3), ("\U0001f600", 4)],
)
def test_a_message_counts_its_utf8_bytes(message: str | bytes, size: int) -> None:
    assert message_size(message) == size
