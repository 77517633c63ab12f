"""What the core's errors say, word for word (issue 24, docs/mutation.md).

STYLE.md asks every message to say what was expected and what arrived, and the peer's text to be
cut and escaped before it reaches a message. Mutation testing found most messages unchecked (a
message replaced by ``None`` survived); these tests pin them, and the cut lengths with them.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable

import pytest

from tube.websocket.core.client_handshake import build_request, validate_response
from tube.websocket.core.deflate import DeflateOptions
from tube.websocket.core.errors import HandshakeError, InvalidHandshake, body_excerpt, printable
from tube.websocket.core.extensions import parse_extensions
from tube.websocket.core.handshake import Negotiated, accept_key
from tube.websocket.core.handshake_checks import check_subprotocols
from tube.websocket.core.http import Request, Response, parse_request_head, parse_response_head
from tube.websocket.core.masking import python_apply_mask, python_unmask_in_place
from tube.websocket.core.protocol import Protocol, Role
from tube.websocket.core.uri import parse_uri

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
LONG = "x" * 300

# (call, exception type, exact message)
CASES: list[tuple[Callable[[], object], type[Exception], str]] = [
    # build_request: the caller's arguments
    (lambda: build_request("", "/"), ValueError, "host must not be empty"),
    (
        lambda: build_request("h", "/", key="abc"),
        ValueError,
        "invalid key 'abc': expected the base64 encoding of 16 bytes",
    ),
    (
        lambda: build_request("h", "x"),
        ValueError,
        "invalid resource 'x': expected a path starting with '/'",
    ),
    (
        lambda: build_request("h", "/", subprotocols=["a b"]),
        ValueError,
        "invalid subprotocol 'a b': expected an HTTP token",
    ),
    (
        lambda: build_request("h", "/", subprotocols=["a", "a"]),
        ValueError,
        "subprotocols must be unique, got ['a', 'a']",
    ),
    (
        lambda: build_request("h", "/", compression="deflate"),  # type: ignore[arg-type]
        TypeError,
        "compression must be DeflateOptions or None, got 'deflate'",
    ),
    (
        lambda: validate_response(
            Response(101, "Switching Protocols", [], b""), KEY, compression=DeflateOptions()
        ),
        ValueError,
        "validate_response(compression=...) needs negotiated=Negotiated() to hand back the "
        "parameters the Protocol must use",
    ),
    # Request.to_bytes: what an application asked to send
    (
        lambda: Request("G T", "/", "HTTP/1.1", []).to_bytes(),
        ValueError,
        "invalid method 'G T': expected an HTTP token",
    ),
    (
        lambda: Request("GET", "/ x", "HTTP/1.1", []).to_bytes(),
        ValueError,
        "invalid request target '/ x'",
    ),
    (
        lambda: Request("GET", "/", "HTTP/x", []).to_bytes(),
        ValueError,
        "invalid HTTP version 'HTTP/x': expected e.g. 'HTTP/1.1'",
    ),
    # the peer's heads: cut to 60 characters
    (
        lambda: parse_request_head(b"GET / HTTP/1.1\r\nHost " + b"h" * 100 + b"\r\n\r\n"),
        HandshakeError,
        "400 Bad Request: expected a header line 'name: value', got 'Host " + "h" * 55 + "'...",
    ),
    (
        lambda: parse_request_head(b"GET / HTTP/1.1\r\nHost " + b"h" * 55 + b"\r\n\r\n"),
        HandshakeError,
        "400 Bad Request: expected a header line 'name: value', got 'Host " + "h" * 55 + "'",
    ),
    (
        lambda: parse_response_head(b"HTTP/1.1\t101 Switching Protocols\r\n\r\n"),
        InvalidHandshake,
        "expected a status line 'HTTP/1.1 101 Switching Protocols', "
        "got 'HTTP/1.1\\t101 Switching Protocols'",
    ),
    # Sec-WebSocket-Extensions: cut to 200 characters, a quoted value to 60
    (
        lambda: parse_extensions(["a b" + LONG]),
        ValueError,
        f"expected ',' at offset 1 of {('a b' + LONG)[:200]!r}",
    ),
    (
        lambda: parse_extensions([",;" + LONG]),
        ValueError,
        f"expected an extension name at offset 1 of {(',;' + LONG)[:200]!r}",
    ),
    (
        lambda: parse_extensions(["a; =" + LONG]),
        ValueError,
        f"expected a parameter name at offset 2 of {('a; =' + LONG)[:200]!r}",
    ),
    (
        lambda: parse_extensions(["a; b=;" + LONG]),
        ValueError,
        f"expected a parameter value at offset 5 of {('a; b=;' + LONG)[:200]!r}",
    ),
    (
        lambda: parse_extensions(['a; b="' + "@" * 80 + '"']),
        ValueError,
        f"quoted parameter value {'@' * 60!r} is not a token",
    ),
    # URLs
    (lambda: parse_uri(3), Exception, "expected the URL as a str, got int"),  # type: ignore[arg-type]
    (
        lambda: parse_uri("ws://h/a\x7f"),
        Exception,
        "'ws://h/a\\x7f': control characters and spaces are not allowed in a URL",
    ),
    (
        lambda: parse_uri("//h/"),
        Exception,
        "'//h/': expected the scheme ws:// or wss://, got none",
    ),
    (
        lambda: parse_uri("ftp://h/"),
        Exception,
        "'ftp://h/': expected the scheme ws:// or wss://, got ftp://",
    ),
    (
        lambda: parse_uri("ws://u:p@h/"),
        Exception,
        "'ws://u:p@h/': user information (user:password@) is not supported in the URL; "
        "pass an Authorization header instead",
    ),
    (
        lambda: parse_uri("ws://a:b:80/"),
        Exception,
        "'ws://a:b:80/': 'a:b' is not a valid host name",
    ),
    (
        lambda: parse_uri("ws://" + "a" * 64 + "/"),
        Exception,
        f"'ws://{'a' * 64}/': {'a' * 64!r} is not a valid host name",
    ),
    (
        lambda: parse_uri("ws://a..b/"),
        Exception,
        "'ws://a..b/': 'a..b' is not a valid host name",
    ),
    (
        lambda: parse_uri("ws:h"),
        Exception,
        "'ws:h': the URL has no host",
    ),
    (
        lambda: parse_uri("ws://h?x#y"),
        Exception,
        "'ws://h?x#y': a WebSocket URL cannot have a #fragment",
    ),
    # masking: offsets
    (
        lambda: python_unmask_in_place(bytearray(8), b"abcd", -1),
        ValueError,
        "expected non-negative offsets, got start=-1, stop=None",
    ),
    (
        lambda: python_unmask_in_place(bytearray(8), b"abcd", 0, -1),
        ValueError,
        "expected non-negative offsets, got start=0, stop=-1",
    ),
    # the protocol's API
    (
        lambda: Protocol(Role.SERVER).send_text(b"x"),  # type: ignore[arg-type]
        TypeError,
        "send_text takes a str, got bytes",
    ),
]


@pytest.mark.parametrize(("call", "kind", "message"), CASES)
def test_the_error_says_what_was_expected_and_what_arrived(
    call: Callable[[], object], kind: type[Exception], message: str
) -> None:
    with pytest.raises(kind) as info:
        call()
    text = info.value.reason if isinstance(info.value, HandshakeError) else str(info.value)
    if isinstance(info.value, HandshakeError) and info.value.status is not None:
        text = str(info.value)
    assert text == message


def response(drop: str = "", add: tuple[tuple[str, str], ...] = ()) -> Response:
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(KEY)),
    ]
    return Response(
        101, "Switching Protocols", [h for h in headers if h[0] != drop] + list(add), b"body"
    )


@pytest.mark.parametrize(
    ("answer", "subprotocols", "reason"),
    [
        (response("Upgrade"), None, "expected an Upgrade header with 'websocket', got none"),
        (response("Connection"), None, "expected a Connection header with 'Upgrade', got none"),
        (
            response("Sec-WebSocket-Accept"),
            None,
            f"expected Sec-WebSocket-Accept: {accept_key(KEY)}, got none",
        ),
        (
            response(add=(("Sec-WebSocket-Protocol", "chat"),)),
            None,
            "expected Sec-WebSocket-Protocol none (none was offered), got 'chat'",
        ),
        (
            response(add=(("Sec-WebSocket-Protocol", "chat"),)),
            ["x", "y"],
            "expected Sec-WebSocket-Protocol one of ['x', 'y'], got 'chat'",
        ),
        (
            response(add=(("Sec-WebSocket-Protocol", "a"), ("Sec-WebSocket-Protocol", "b"))),
            ["a", "b"],
            "expected Sec-WebSocket-Protocol one of ['a', 'b'], got 'a, b'",
        ),
        (
            response(add=(("Sec-WebSocket-Extensions", "permessage-deflate"),)),
            None,
            "expected no Sec-WebSocket-Extensions (none was offered), got 'permessage-deflate'",
        ),
    ],
)
def test_an_invalid_101_says_what_was_expected_and_keeps_the_response(
    answer: Response, subprotocols: list[str] | None, reason: str
) -> None:
    with pytest.raises(InvalidHandshake) as info:
        validate_response(answer, KEY, subprotocols=subprotocols)
    assert info.value.reason == reason
    assert (info.value.status, info.value.headers, info.value.body) == (
        101,
        answer.headers,
        b"body",
    )


def test_an_invalid_extensions_answer_names_the_header_received() -> None:
    answer = response(add=(("Sec-WebSocket-Extensions", 'permessage-deflate; x="'),))
    with pytest.raises(InvalidHandshake) as info:
        validate_response(answer, KEY, compression=DeflateOptions(), negotiated=Negotiated())
    assert info.value.reason.startswith(
        "invalid Sec-WebSocket-Extensions 'permessage-deflate; x=\"': "
    )


def test_a_server_may_decline_the_compression_offered() -> None:
    negotiated = Negotiated()
    assert (
        validate_response(response(), KEY, compression=DeflateOptions(), negotiated=negotiated)
        is None
    )
    assert negotiated.deflate is None


def test_validate_response_without_compression_ignores_negotiated() -> None:
    negotiated = Negotiated()
    assert validate_response(response(), KEY, negotiated=negotiated) is None
    assert negotiated.deflate is None


def test_printable_cuts_only_beyond_the_limit_and_escapes_only_what_is_not_printable() -> None:
    assert printable("abc", 3) == "abc"
    assert printable("abcd", 3) == "abc..."
    assert printable("é\x1b\u202e") == "é\\x1b\\u202e"


def test_a_handshake_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(HandshakeError(403, "origin not allowed")))
    assert (error.status, error.reason) == (403, "origin not allowed")


def test_python_unmask_in_place_on_a_memoryview_and_at_offset_zero() -> None:
    data = bytes(range(40))
    buffer = bytearray(data)
    python_unmask_in_place(memoryview(buffer), b"wxyz", 3, 31)
    assert buffer == data[:3] + python_apply_mask(data[3:31], b"wxyz") + data[31:]
    python_unmask_in_place(buffer, b"wxyz", 0, 0)  # an empty range is no error
    assert buffer == data[:3] + python_apply_mask(data[3:31], b"wxyz") + data[31:]


@pytest.mark.parametrize(
    ("drop", "add", "reason"),
    [
        ("Upgrade", ("Upgrade", "h2c"), "expected an Upgrade header with 'websocket', got 'h2c'"),
        (
            "Connection",
            ("Connection", "keep-alive"),
            "expected a Connection header with 'Upgrade', got 'keep-alive'",
        ),
        (
            "Sec-WebSocket-Accept",
            ("Sec-WebSocket-Accept", "bm90IGl0"),
            f"expected Sec-WebSocket-Accept: {accept_key(KEY)}, got 'bm90IGl0'",
        ),
    ],
)
def test_an_invalid_101_quotes_the_wrong_value_received(
    drop: str, add: tuple[str, str], reason: str
) -> None:
    with pytest.raises(InvalidHandshake) as info:
        validate_response(response(drop, (add,)), KEY)
    assert info.value.reason == reason


def test_an_extension_answered_without_compression_offered_is_refused_even_with_negotiated() -> (
    None
):
    answer = response(add=(("Sec-WebSocket-Extensions", "permessage-deflate"),))
    with pytest.raises(InvalidHandshake, match="none was offered"):
        validate_response(answer, KEY, negotiated=Negotiated())


def test_an_empty_subprotocol_header_beside_the_selected_one_is_ignored() -> None:
    answer = response(add=(("Sec-WebSocket-Protocol", "chat"), ("Sec-WebSocket-Protocol", "")))
    assert validate_response(answer, KEY, subprotocols=["chat"]) == "chat"


def test_the_offer_goes_out_under_the_rfc_header_name() -> None:
    request, _ = build_request("h", "/", compression=DeflateOptions())
    assert request.headers[-1] == (
        "Sec-WebSocket-Extensions",
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
    )


def test_a_quoted_parameter_value_is_unescaped() -> None:
    assert parse_extensions(['a; b="\\1\\2"']) == [("a", [("b", "12")])]


@pytest.mark.parametrize(
    ("head", "kind", "message"),
    [
        (
            b"GET /" + b"a" * 20,
            HandshakeError,
            "414 Request-URI Too Long: request line longer than 16 bytes",
        ),
        (b"HTTP/1.1 101 " + b"a" * 20, InvalidHandshake, "status line longer than 16 bytes"),
        (
            b"GET / HTTP/1.1\r\nX: " + b"a" * 20,
            HandshakeError,
            "431 Request Header Fields Too Large: header line longer than 16 bytes",
        ),
        (
            b"HTTP/1.1 101 OK\r\nX: " + b"a" * 20,
            InvalidHandshake,
            "header line longer than 16 bytes",
        ),
        (
            b"GET / HTTP/1.1\nHost",
            HandshakeError,
            "400 Bad Request: expected CRLF line endings, got a bare LF",
        ),
        (b"HTTP/1.1 101 OK\nX", InvalidHandshake, "expected CRLF line endings, got a bare LF"),
    ],
)
def test_an_incomplete_head_that_can_no_longer_be_valid_is_refused_at_once(
    head: bytes, kind: type[HandshakeError], message: str
) -> None:
    parse = parse_request_head if head.startswith(b"GET") else parse_response_head
    with pytest.raises(kind) as info:
        parse(head, max_line_size=16)
    assert (str(info.value) if info.value.status else info.value.reason) == message


@pytest.mark.parametrize("parse", [parse_request_head, parse_response_head])
def test_an_incomplete_line_may_reach_the_limit_plus_its_cr(
    parse: Callable[..., object],
) -> None:
    first = b"GET /" if parse is parse_request_head else b"HTTP/1.1 "
    # 16 bytes of line and the CR of its CRLF: still possibly valid, so incomplete (None).
    assert parse(first.ljust(16, b"a") + b"\r", max_line_size=16) is None
    with pytest.raises(HandshakeError):
        parse(first.ljust(17, b"a") + b"\r", max_line_size=16)


def test_send_binary_names_itself_when_refusing_a_str() -> None:
    with pytest.raises(TypeError, match=r"^send_binary takes bytes-like data, got str$"):
        Protocol(Role.SERVER).send_binary("text")  # type: ignore[arg-type]


def test_fragment_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"^fragment_size must be positive, got 0$"):
        Protocol(Role.SERVER).send_binary(b"abc", fragment_size=0)


@pytest.mark.parametrize(
    ("body", "excerpt"),
    [
        (b" " * 4096 + b"beyond the first 4 KiB", ""),
        (b"a <b> c", "a <b> c"),  # plain text keeps its angle brackets
        (b"  <p>x</p>", "x"),  # an HTML page after white space loses its tags
        (b"y" * 100, "y" * 100),  # exactly EXCERPT_LENGTH: whole
        (b"y" * 101, "y" * 97 + "..."),
    ],
)
def test_body_excerpt(body: bytes, excerpt: str) -> None:
    assert body_excerpt(body) == excerpt


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"server_max_window_bits": 16}, "server_max_window_bits must be an int in 8-15, got 16"),
        ({"client_max_window_bits": 16}, "client_max_window_bits must be an int in 8-15, got 16"),
        ({"memory_level": 0}, "memory_level must be an int in 1-9, got 0"),
        ({"compression_level": 10}, "compression_level must be an int in 0-9, got 10"),
        ({"min_size": -1}, "min_size must be an int in >= 0, got -1"),
    ],
)
def test_deflate_options_out_of_range_say_the_range(options: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError) as info:
        DeflateOptions(**options)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_compression_level_0_is_allowed() -> None:
    assert DeflateOptions(compression_level=0).compression_level == 0


def test_an_empty_extensions_header_leaves_compression_off() -> None:
    negotiated = Negotiated()
    answer = response(add=(("Sec-WebSocket-Extensions", ""),))
    assert (
        validate_response(answer, KEY, compression=DeflateOptions(), negotiated=negotiated) is None
    )
    assert negotiated.deflate is None


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (
            b"GET /" + b"a" * 20 + b"\r\n",
            "414 Request-URI Too Long: request line longer than 16 bytes",
        ),
        (
            b"GET / HTTP/1.1\r\nX: " + b"a" * 20 + b"\r\n",
            "431 Request Header Fields Too Large: header line longer than 16 bytes",
        ),
    ],
)
def test_a_complete_line_too_long_is_refused_before_the_head_ends(
    head: bytes, message: str
) -> None:
    with pytest.raises(HandshakeError) as info:
        parse_request_head(head, max_line_size=16)
    assert str(info.value) == message


def test_a_request_line_with_an_empty_target_is_refused() -> None:
    with pytest.raises(HandshakeError) as info:
        parse_request_head(b"GET  HTTP/1.1\r\nHost: x\r\n\r\n")
    assert str(info.value) == (
        "400 Bad Request: expected a request line 'METHOD target HTTP/1.1', got 'GET  HTTP/1.1'"
    )


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (
            b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
            "400 Bad Request: expected CRLF line endings, got a bare CR or LF",
        ),
        (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", "400 Bad Request: NUL byte in the message head"),
        (
            b"GET / HTTP/1.1\r\nno colon\r\nY: z\r\nW: v\r\n\r\n",
            "400 Bad Request: expected a header line 'name: value', got 'no colon'",
        ),
    ],
)
def test_a_complete_request_head_refused_says_why(head: bytes, message: str) -> None:
    with pytest.raises(HandshakeError) as info:
        parse_request_head(head)
    assert str(info.value) == message


def test_a_complete_status_line_too_long_is_named() -> None:
    with pytest.raises(InvalidHandshake) as info:
        parse_response_head(b"HTTP/1.1 101 " + b"a" * 20 + b"\r\n\r\n", max_line_size=16)
    assert info.value.reason == "status line longer than 16 bytes"


def test_obsolete_line_folding_and_non_str_subprotocols_are_refused_saying_so() -> None:
    with pytest.raises(HandshakeError) as info:
        parse_request_head(b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n")
    assert str(info.value) == "400 Bad Request: obsolete line folding is not supported"
    with pytest.raises(TypeError) as type_info:
        check_subprotocols([3])  # type: ignore[list-item]
    assert str(type_info.value) == "subprotocols must be strings, got 3"
