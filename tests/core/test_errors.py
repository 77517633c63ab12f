"""The error hierarchy: :mod:`tube.websocket.core.errors`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tube.websocket
from tube.websocket.core import errors
from tube.websocket.core.errors import (
    HandshakeError,
    HandshakeRejected,
    InvalidHandshake,
    WebSocketError,
    printable,
)


def test_handshake_errors_are_one_family() -> None:
    for kind in (HandshakeRejected, InvalidHandshake):
        assert issubclass(kind, HandshakeError)
        assert issubclass(kind, WebSocketError)
    assert not issubclass(HandshakeRejected, InvalidHandshake)
    assert not issubclass(InvalidHandshake, HandshakeRejected)


def test_new_names_are_public() -> None:
    for name in ("HandshakeError", "HandshakeRejected", "InvalidHandshake"):
        assert name in tube.websocket.__all__
        assert getattr(tube.websocket, name) is getattr(errors, name)


def test_status_meanings() -> None:
    # Server side: the status we answer with.
    sent = HandshakeError(403, "origin not allowed: https://evil.example")
    assert (sent.status, str(sent)) == (
        403,
        "403 Forbidden: origin not allowed: https://evil.example",
    )
    # Client side: the status received ...
    rejected = HandshakeRejected(404, "no such path", headers=[("X", "1")], body=b"gone")
    assert (rejected.status, rejected.headers, rejected.body) == (404, [("X", "1")], b"gone")
    assert str(rejected) == "404 Not Found: no such path (gone)"
    # ... or None when no HTTP response arrived: never 0.
    nothing = InvalidHandshake(None, "the server closed the connection without answering")
    assert nothing.status is None
    assert nothing.status_phrase == ""
    assert str(nothing) == "the server closed the connection without answering"
    bad_101 = InvalidHandshake(101, "expected Sec-WebSocket-Accept: x, got 'y'")
    assert str(bad_101) == "101 Switching Protocols: expected Sec-WebSocket-Accept: x, got 'y'"


def test_terminal_escapes_in_a_body_are_escaped() -> None:
    # A server must not be able to write escape sequences to the user's terminal (issue 8 §5).
    body = b"\x1b[2J\x1b]0;owned\x07 denied\r\nX-Forged: 1"
    text = str(HandshakeRejected(403, "refused", body=body))
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text and "\n" not in text
    # The excerpt is one line (issue 23): line breaks become spaces, other controls escapes.
    assert text == "403 Forbidden: refused (\\x1b[2J\\x1b]0;owned\\x07 denied X-Forged: 1)"


def test_control_characters_in_a_reason_are_escaped() -> None:
    text = str(HandshakeRejected(302, "redirected to ws://x/\x1b[31mred"))
    assert text == "302 Found: redirected to ws://x/\\x1b[31mred"


def test_printable() -> None:
    assert printable("plain é 日本") == "plain é 日本"
    assert printable("a\x00b\x7fc\u202ed\x9b") == "a\\x00b\\x7fc\\u202ed\\x9b"
    assert printable("abcdef", 3) == "abc..."
    assert printable("ab", 3) == "ab"


@given(st.binary(max_size=300), st.text(max_size=100), st.one_of(st.none(), st.integers(100, 999)))
def test_message_never_holds_a_control_character(
    body: bytes, reason: str, status: int | None
) -> None:
    for error in (
        HandshakeError(status, reason, body=body),
        InvalidHandshake(status, reason, body=body),
        HandshakeRejected(status or 400, reason, body=body),
    ):
        assert str(error).isprintable()


@given(st.text(max_size=100), st.one_of(st.none(), st.integers(0, 200)))
def test_printable_is_printable(text: str, limit: int | None) -> None:
    shown = printable(text, limit)
    assert shown.isprintable()
    if text.isprintable() and (limit is None or len(text) <= limit):
        assert shown == text


@pytest.mark.parametrize("kind", [HandshakeError, HandshakeRejected, InvalidHandshake])
def test_fields(kind: type[HandshakeError]) -> None:
    error = kind(400, "bad", headers=(("A", "b"),), body=b"x")
    assert (error.status, error.reason, error.headers, error.body) == (
        400,
        "bad",
        [("A", "b")],
        b"x",
    )
