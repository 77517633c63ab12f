"""The opening request's and response's edges that the second mutation run found untested
(issue 24, docs/mutation.md): which whitespace around a field value is not part of it, what a
refusal says about the one bad value it got, the HTTP versions that are no HTTP/1.1, response
status bounds, and partial text frames checked as they arrive (RFC 6455 §8.1)."""

from __future__ import annotations

import base64
import os

import pytest

from tube.websocket.core.deflate import DeflateOptions
from tube.websocket.core.errors import HandshakeError
from tube.websocket.core.events import ProtocolFailure, TextMessage
from tube.websocket.core.handshake import accept_request
from tube.websocket.core.http import Request, Response
from tube.websocket.core.protocol import Protocol, Role

from .wsframes import frame

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
MASK = b"\x11\x22\x33\x44"


def request(*replace: tuple[str, str], version: str = "HTTP/1.1") -> Request:
    """A valid opening request, with the named headers' values replaced (or added)."""
    headers = {
        "Host": "example.com",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    headers.update(dict(replace))
    return Request("GET", "/", version, list(headers.items()))


def refused(req: Request) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        accept_request(req)
    return info.value


# ------------------------------------------------------------------ whitespace is SP and HTAB


@pytest.mark.parametrize("around", ["\xa0", "\x85", "X"])
def test_only_spaces_and_tabs_around_a_value_are_stripped(around: str) -> None:
    """RFC 9110 §5.5 trims SP and HTAB only: NBSP and NEL (whitespace to str.strip()) and
    other characters around a value are part of it, so the value is wrong."""
    assert refused(request(("Sec-WebSocket-Version", f"{around}13{around}"))).status == 426
    assert refused(request(("Sec-WebSocket-Key", f"{KEY}{around}"))).status == 400
    body = refused(request(("Content-Length", f"{around}0{around}")))
    assert body.status == 400 and "no request body" in body.reason
    # Host and Origin are compared for the same-host policy: with the character kept, they
    # differ.
    assert refused(request(("Host", f"example.com{around}"), ("Origin", "http://example.com")))
    assert refused(request(("Origin", f"http://example.com{around}"))).status == 403


def test_spaces_and_tabs_around_values_are_not_part_of_them() -> None:
    response, _ = accept_request(
        request(
            ("Host", " \texample.com\t "),
            ("Sec-WebSocket-Version", " 13\t"),
            ("Sec-WebSocket-Key", f"\t{KEY} "),
            ("Origin", " http://example.com\t"),
            ("Content-Length", " 0 "),
        )
    )
    assert response.status == 101


def test_a_valid_key_that_begins_and_ends_with_x_is_accepted() -> None:
    while True:  # a random key whose base64 starts with X (1 in 64)
        key = base64.b64encode(os.urandom(16)).decode()
        if key.startswith("X"):
            break
    response, _ = accept_request(request(("Sec-WebSocket-Key", key)))
    assert response.status == 101


# ------------------------------------------------------------------ what a refusal says


def test_a_refusal_quotes_the_one_bad_value_it_got() -> None:
    assert refused(request(("Host", ""))).reason == (
        "expected exactly one non-empty Host header, got ''"
    )
    assert refused(request(("Sec-WebSocket-Key", "abc"))).reason == (
        "expected Sec-WebSocket-Key to be the base64 encoding of 16 bytes, got 'abc'"
    )
    assert refused(request(("Connection", "keep-alive"))).reason == (
        "expected a Connection header with 'Upgrade', got 'keep-alive'"
    )
    assert refused(request(("Content-Length", "5"))).reason == (
        "expected no request body in a WebSocket handshake, got Content-Length: '5'"
    )


def test_compression_arguments_are_checked_with_messages_naming_the_function() -> None:
    with pytest.raises(TypeError) as info:
        accept_request(request(), compression="deflate")  # type: ignore[arg-type]
    assert str(info.value) == "compression must be DeflateOptions or None, got 'deflate'"
    with pytest.raises(ValueError) as error:
        accept_request(request(), compression=DeflateOptions())
    assert str(error.value) == (
        "accept_request(compression=...) needs negotiated=Negotiated() to hand back the "
        "parameters the Protocol must use"
    )


# ------------------------------------------------------------------ HTTP versions


@pytest.mark.parametrize(
    "version",
    ["FTP/1.1", "HTTP1.1", "HTTP/11", "HTTP/x.1", "HTTP/1.x", "HTTP/\u0661.\u0661", "HTTP/1.0"],
)
def test_versions_that_are_not_http_1_1_or_later_are_refused_with_505(version: str) -> None:
    # The last but one: Arabic-Indic digits, which str.isdigit() and int() accept.
    error = refused(request(version=version))
    assert error.status == 505


def test_later_http_versions_are_accepted() -> None:
    assert accept_request(request(version="HTTP/2.0"))[0].status == 101
    assert accept_request(request(version="HTTP/1.9"))[0].status == 101


# ------------------------------------------------------------------ response status bounds


def test_a_response_status_has_three_digits() -> None:
    assert Response(100, "Continue", []).to_bytes() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert Response(999, "x", []).to_bytes() == b"HTTP/1.1 999 x\r\n\r\n"
    for status in (99, 1000):
        with pytest.raises(ValueError) as info:
            Response(status, "x", []).to_bytes()
        assert str(info.value) == f"invalid status {status}: expected three digits"
    with pytest.raises(ValueError) as error:
        Response(200, "a\nb", []).to_bytes()
    assert str(error.value) == "invalid reason phrase 'a\\nb': contains CR, LF or NUL"


# ------------------------------------------------------------------ partial text frames


def masked_text(payload: bytes, *, fin: bool = True) -> bytes:
    return frame(0x1, payload, fin=fin, key=MASK)


def feed_in_pieces(protocol: Protocol, data: bytes, sizes: list[int]) -> list[object]:
    events: list[object] = []
    position = 0
    for size in sizes:
        events += protocol.receive_data(data[position : position + size])
        position += size
    events += protocol.receive_data(data[position:])
    return events


@pytest.mark.parametrize("length", [1000, 70_000])
def test_a_text_frame_fed_header_byte_by_byte_arrives_whole(length: int) -> None:
    """16-bit and 64-bit lengths: the partial check waits for the whole header, reads the
    length at its place, and unmasks the payload from the right offset."""
    payload = ("é" * (length // 2)).encode()
    data = masked_text(payload)
    protocol = Protocol(Role.SERVER, max_message_size=1 << 20)
    events = feed_in_pieces(protocol, data, [1] * 16 + [777] * 20)
    assert events == [TextMessage(payload.decode())]


@pytest.mark.parametrize(
    ("length", "fin"), [(1000, True), (1000, False), (70_000, True), (70_000, False)]
)
def test_invalid_utf8_fails_before_the_rest_of_the_frame_arrives(length: int, fin: bool) -> None:
    """RFC 6455 §8.1: the failure comes with the piece that holds the bad byte, for frames
    with 16-bit and 64-bit lengths, final or not."""
    payload = bytearray(b"a" * length)
    payload[550] = 0xFF
    data = masked_text(bytes(payload), fin=fin)
    protocol = Protocol(Role.SERVER, max_message_size=1 << 20)
    header = len(data) - length
    events = protocol.receive_data(data[: header + 700])  # the bad byte, not the end
    assert len(events) == 1 and isinstance(events[0], ProtocolFailure)
    assert events[0].error.close_code == 1007
