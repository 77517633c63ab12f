"""Bounded HTTP head parsing and serialisation (tube.websocket.core.http)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tube.websocket.core.errors import HandshakeError, InvalidHandshake
from tube.websocket.core.http import (
    MAX_HEADERS,
    MAX_LINE_SIZE,
    HeadScanner,
    Request,
    Response,
    get_header,
    get_header_values,
    header_tokens,
    parse_request_head,
    parse_response_head,
    split_list,
)

BROWSER_REQUEST = (
    b"GET /chat?room=1 HTTP/1.1\r\n"
    b"Host: localhost:8000\r\n"
    b"Connection: keep-alive, Upgrade\r\n"
    b"Pragma: no-cache\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.0.0 Safari/537.36\r\n"
    b"Upgrade: websocket\r\n"
    b"Origin: http://localhost:8000\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    b"\r\n"
)

RESPONSE_101 = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"\r\n"
)


def request_error(data: bytes) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        parse_request_head(data)
    return info.value


def response_error(data: bytes) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        parse_response_head(data)
    return info.value


def head_with_headers(count: int, start: bytes = b"GET / HTTP/1.1\r\n") -> bytes:
    return start + b"".join(b"X-H%d: v\r\n" % i for i in range(count)) + b"\r\n"


# ------------------------------------------------------------------------- requests


def test_parse_browser_request() -> None:
    parsed = parse_request_head(BROWSER_REQUEST)
    assert parsed is not None
    request, consumed = parsed
    assert consumed == len(BROWSER_REQUEST)
    assert request.method == "GET"
    assert request.target == "/chat?room=1"
    assert request.version == "HTTP/1.1"
    assert request.headers[0] == ("Host", "localhost:8000")
    assert request.headers[1] == ("Connection", "keep-alive, Upgrade")
    assert len(request.headers) == 10
    assert get_header(request.headers, "sec-websocket-key") == "dGhlIHNhbXBsZSBub25jZQ=="


def test_bytes_after_the_head_are_not_consumed() -> None:
    frame = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
    parsed = parse_request_head(BROWSER_REQUEST + frame)
    assert parsed is not None
    assert parsed[1] == len(BROWSER_REQUEST)
    assert (BROWSER_REQUEST + frame)[parsed[1] :] == frame


def test_bytearray_input() -> None:
    parsed = parse_request_head(bytearray(BROWSER_REQUEST))
    assert parsed is not None
    assert parsed[0] == parse_request_head(BROWSER_REQUEST)[0]  # type: ignore[index]


def test_incomplete_returns_none() -> None:
    for end in range(len(BROWSER_REQUEST)):
        assert parse_request_head(BROWSER_REQUEST[:end]) is None, end


def test_header_values_are_stripped_and_names_keep_their_case() -> None:
    parsed = parse_request_head(b"GET / HTTP/1.1\r\nX-Mixed-CASE:  \t a b \t\r\nEmpty:\r\n\r\n")
    assert parsed is not None
    assert parsed[0].headers == [("X-Mixed-CASE", "a b"), ("Empty", "")]


def test_request_without_headers() -> None:
    parsed = parse_request_head(b"GET / HTTP/1.0\r\n\r\n")
    assert parsed == (Request("GET", "/", "HTTP/1.0", []), 18)


def test_latin1_values_are_kept() -> None:
    parsed = parse_request_head(b"GET / HTTP/1.1\r\nX-Name: caf\xe9\r\n\r\n")
    assert parsed is not None
    assert parsed[0].headers == [("X-Name", "caf\xe9")]


@pytest.mark.parametrize(
    "line",
    [
        b"GET /",
        b"GET / HTTP/1.1 extra",
        b"GET  / HTTP/1.1",
        b"GET / HTTP/1",
        b"GET / HTTP/1.1.1",
        b"GET / http/1.1",
        b"G(T / HTTP/1.1",
        b" GET / HTTP/1.1",
        b"GET / HTTP/\xb9.1",
    ],
)
def test_malformed_request_line_is_400(line: bytes) -> None:
    error = request_error(line + b"\r\nHost: x\r\n\r\n")
    assert error.status == 400
    assert "request line" in error.reason


def test_empty_request_line_is_400() -> None:
    assert request_error(b"\r\n\r\n").status == 400
    # Also while incomplete: nothing can make an empty first line valid.
    assert request_error(b"\r\nGET / HTTP/1.1\r\n").status == 400


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (b"Host : x", "name: value"),
        (b"Ho st: x", "name: value"),
        (b": x", "name: value"),
        (b"NoColon", "name: value"),
        (b"X(y): z", "name: value"),
        (b" folded", "folding"),
        (b"\tfolded", "folding"),
    ],
)
def test_malformed_header_line_is_400(header: bytes, words: str) -> None:
    error = request_error(b"GET / HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n")
    assert error.status == 400
    assert words in error.reason


def test_bare_lf_is_400() -> None:
    assert request_error(b"GET / HTTP/1.1\nHost: x\r\n\r\n").status == 400
    assert request_error(b"GET / HTTP/1.1\r\nHost: x\n\r\n\r\n").status == 400
    # While incomplete too, so a bare-LF client is not left waiting for a CRLFCRLF.
    error = request_error(b"GET / HTTP/1.1\nHost: x\n\n")
    assert error.status == 400
    assert "LF" in error.reason
    assert request_error(b"\n").status == 400


def test_bare_cr_and_nul_are_400() -> None:
    assert request_error(b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n").status == 400
    assert request_error(b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n").status == 400


def test_request_line_limit() -> None:
    target = b"/" + b"a" * (MAX_LINE_SIZE - len(b"GET  HTTP/1.1") - 1)
    line = b"GET " + target + b" HTTP/1.1"
    assert len(line) == MAX_LINE_SIZE
    assert parse_request_head(line + b"\r\nHost: x\r\n\r\n") is not None
    long_line = b"GET " + target + b"a HTTP/1.1"
    error = request_error(long_line + b"\r\nHost: x\r\n\r\n")
    assert error.status == 414
    # Incomplete: a long line without its CRLF yet, and a complete long line.
    assert request_error(long_line + b"xx").status == 414
    assert request_error(long_line + b"\r\n").status == 414


def test_header_line_limit() -> None:
    name = b"X-Long: "
    ok = name + b"v" * (MAX_LINE_SIZE - len(name))
    assert parse_request_head(b"GET / HTTP/1.1\r\n" + ok + b"\r\n\r\n") is not None
    error = request_error(b"GET / HTTP/1.1\r\n" + ok + b"v\r\n\r\n")
    assert error.status == 431
    assert request_error(b"GET / HTTP/1.1\r\n" + ok + b"vvv").status == 431
    assert request_error(b"GET / HTTP/1.1\r\n" + ok + b"v\r\nX: y\r\n").status == 431


def test_header_count_limit() -> None:
    assert parse_request_head(head_with_headers(MAX_HEADERS)) is not None
    error = request_error(head_with_headers(MAX_HEADERS + 1))
    assert error.status == 431
    assert str(MAX_HEADERS) in error.reason
    # Incomplete: the 129th header line is complete, no blank line yet.
    assert request_error(head_with_headers(MAX_HEADERS + 1)[:-2]).status == 431
    # 128 complete header lines and no blank line yet: still waiting.
    assert parse_request_head(head_with_headers(MAX_HEADERS)[:-2]) is None


def test_custom_limits() -> None:
    head = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n"
    assert parse_request_head(head, max_headers=2) is not None
    assert request_error_with(head, max_headers=1).status == 431
    assert request_error_with(head, max_line_size=10).status == 414


def request_error_with(data: bytes, **limits: int) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        parse_request_head(data, **limits)
    return info.value


def test_huge_buffer_is_rejected_without_parsing_it_all() -> None:
    data = b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200_000 + b"\r\n"
    assert request_error(data).status == 431


# ------------------------------------------------------------------------ responses


def test_parse_response() -> None:
    parsed = parse_response_head(RESPONSE_101 + b"\x81\x02hi")
    assert parsed is not None
    response, consumed = parsed
    assert consumed == len(RESPONSE_101)
    assert response.status == 101
    assert response.reason == "Switching Protocols"
    assert response.body == b""
    assert response.headers[2] == ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")


@pytest.mark.parametrize(
    ("line", "status", "reason"),
    [
        (b"HTTP/1.1 403 Forbidden", 403, "Forbidden"),
        (b"HTTP/1.1 404 Not  Found here", 404, "Not  Found here"),
        (b"HTTP/1.1 200", 200, ""),
        (b"HTTP/1.1 200 ", 200, ""),
        (b"HTTP/1.0 426 Upgrade Required", 426, "Upgrade Required"),
    ],
)
def test_parse_status_lines(line: bytes, status: int, reason: str) -> None:
    parsed = parse_response_head(line + b"\r\nContent-Length: 0\r\n\r\n")
    assert parsed is not None
    assert (parsed[0].status, parsed[0].reason) == (status, reason)


@pytest.mark.parametrize(
    "line",
    [
        b"HTTP/1.1",
        b"HTTP/1.1 1O1 Switching",
        b"HTTP/1.1 1010 X",
        b"ICY 200 OK",
        b"HTTP/1.1 \xb9\xb9\xb9 X",
    ],
)
def test_malformed_status_line_is_invalid_handshake_without_status(line: bytes) -> None:
    error = response_error(line + b"\r\n\r\n")
    assert isinstance(error, InvalidHandshake)
    assert error.status is None
    assert "status line" in error.reason


def test_response_errors_have_no_status() -> None:
    # No valid HTTP response arrived: InvalidHandshake with status None (never 0).
    assert response_error(b"HTTP/1.1 101 " + b"x" * MAX_LINE_SIZE + b"\r\n\r\n").status is None
    assert response_error(b"HTTP/1.1 101 " + b"x" * MAX_LINE_SIZE).status is None
    assert response_error(head_with_headers(MAX_HEADERS + 1, b"HTTP/1.1 101 OK\r\n")).status is None
    assert response_error(b"HTTP/1.1 101 OK\r\nBad Name: x\r\n\r\n").status is None
    assert response_error(b"HTTP/1.1 101 OK\nX: y\n\n").status is None


# ------------------------------------------------------------------ header look-ups


def test_get_header() -> None:
    headers = [("Connection", "keep-alive"), ("X", "1"), ("connection", "Upgrade")]
    assert get_header(headers, "CONNECTION") == "keep-alive, Upgrade"
    assert get_header_values(headers, "connection") == ["keep-alive", "Upgrade"]
    assert get_header(headers, "x") == "1"
    assert get_header(headers, "missing") is None
    assert get_header([("Empty", "")], "empty") == ""


def test_split_list_and_tokens() -> None:
    assert split_list(" a ,b,, \tc\t, ") == ["a", "b", "c"]
    assert split_list("") == []
    assert split_list(None) == []
    headers = [("Connection", "keep-alive, Upgrade"), ("connection", "CLOSE")]
    assert header_tokens(headers, "Connection") == ["keep-alive", "upgrade", "close"]
    assert header_tokens(headers, "Upgrade") == []


# -------------------------------------------------------------------- serialisation


def test_response_to_bytes() -> None:
    response = Response(101, "Switching Protocols", [("Upgrade", "websocket")])
    assert response.to_bytes() == b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    with_body = Response(403, "Forbidden", [("Content-Length", "3")], b"no\n")
    assert with_body.to_bytes() == b"HTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\n\r\nno\n"


def test_request_to_bytes_round_trip() -> None:
    request = Request("GET", "/a?b=c", "HTTP/1.1", [("Host", "h"), ("X-Y", "caf\xe9")])
    data = request.to_bytes()
    assert data == b"GET /a?b=c HTTP/1.1\r\nHost: h\r\nX-Y: caf\xe9\r\n\r\n"
    assert parse_request_head(data) == (request, len(data))


@pytest.mark.parametrize(
    "header",
    [
        ("X", "a\r\nSet-Cookie: evil=1"),
        ("X", "a\nb"),
        ("X", "a\rb"),
        ("X", "a\x00b"),
        ("X\r\nY", "a"),
        ("X\x00", "a"),
        ("X Y", "a"),
        ("X:Y", "a"),
        ("", "a"),
        ("X", "\u20ac"),
    ],
)
def test_to_bytes_refuses_header_injection(header: tuple[str, str]) -> None:
    with pytest.raises(ValueError):
        Response(200, "OK", [header]).to_bytes()
    with pytest.raises(ValueError):
        Request("GET", "/", "HTTP/1.1", [header]).to_bytes()


def test_to_bytes_refuses_bad_start_lines() -> None:
    with pytest.raises(ValueError):
        Response(200, "OK\r\nX: y", []).to_bytes()
    with pytest.raises(ValueError):
        Response(20, "OK", []).to_bytes()
    with pytest.raises(ValueError):
        Request("GET", "/a b", "HTTP/1.1", []).to_bytes()
    with pytest.raises(ValueError):
        Request("GET", "/a\r\n", "HTTP/1.1", []).to_bytes()
    with pytest.raises(ValueError):
        Request("G T", "/", "HTTP/1.1", []).to_bytes()
    with pytest.raises(ValueError):
        Request("GET", "/", "HTTP/1.1\r\n", []).to_bytes()


# ------------------------------------------------------------------------ hypothesis

TOKEN = st.text(
    alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    min_size=1,
    max_size=20,
)
# Field values: visible ISO-8859-1 plus space and tab, never CR, LF or NUL.
VALUE = st.text(
    alphabet=st.characters(
        min_codepoint=0x09, max_codepoint=0xFF, exclude_characters="\r\n\x0b\x0c"
    ),
    max_size=40,
)
TARGET = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40
)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    headers = draw(st.lists(st.tuples(TOKEN, VALUE), max_size=12))
    return Request(
        draw(TOKEN), draw(TARGET), draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0"])), headers
    )


@settings(max_examples=150)
@given(requests(), st.binary(max_size=20), st.data())
def test_any_split_gives_the_same_request(
    request: Request, trailer: bytes, data: st.DataObject
) -> None:
    head = request.to_bytes()
    stream = head + trailer
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    expected = Request(
        request.method,
        request.target,
        request.version,
        [(name, value.strip(" \t")) for name, value in request.headers],
    )
    for cut in [*cuts, len(stream)]:
        result = parse_request_head(stream[:cut])
        if cut < len(head):
            assert result is None
        else:
            assert result == (expected, len(head))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_handshake_error(data: bytes) -> None:
    for parse in (parse_request_head, parse_response_head):
        try:
            result = parse(data)
        except HandshakeError as error:
            assert error.status in (None, 400, 414, 431)
            assert isinstance(error, InvalidHandshake) == (parse is parse_response_head)
        else:
            if result is not None:
                assert 0 < result[1] <= len(data)


@given(
    st.lists(
        st.sampled_from(
            [b"GET", b" ", b"/", b"HTTP/1.1", b"\r\n", b"\n", b"\r", b":", b"X", b"\t", b"\x00"]
        ),
        max_size=40,
    )
)
def test_arbitrary_head_like_bytes_only_raise_handshake_error(parts: list[bytes]) -> None:
    data = b"".join(parts)
    for parse in (parse_request_head, parse_response_head):
        try:
            result = parse(data)
        except HandshakeError as error:
            assert error.status in (None, 400, 414, 431)
            assert isinstance(error, InvalidHandshake) == (parse is parse_response_head)
        else:
            assert result is None or result[1] <= len(data)


Parser = Callable[[bytes], object]


def feed_until_error(
    stream: bytes, chunk_sizes: list[int], parse: Parser = parse_request_head
) -> tuple[HandshakeError, int]:
    """Feed ``stream`` cumulatively in chunks; return the error and how much was buffered."""
    buffered = 0
    sizes = iter(chunk_sizes)
    while buffered < len(stream):
        buffered = min(len(stream), buffered + next(sizes, 512))
        try:
            assert parse(stream[:buffered]) is None
        except HandshakeError as error:
            return error, buffered
    raise AssertionError("no error raised")


CHUNKS = st.lists(st.integers(1, 700), max_size=200)


@settings(max_examples=20)
@given(st.integers(MAX_LINE_SIZE + 1, 3 * MAX_LINE_SIZE), CHUNKS)
def test_oversize_status_line_rejected_early(length: int, chunk_sizes: list[int]) -> None:
    stream = b"HTTP/1.1 101 " + b"x" * length + b"\r\n\r\n"
    error, buffered = feed_until_error(stream, chunk_sizes, parse_response_head)
    assert isinstance(error, InvalidHandshake)
    assert error.status is None
    assert buffered < 9 * 1024


@settings(max_examples=40)
@given(st.integers(MAX_LINE_SIZE + 1, 3 * MAX_LINE_SIZE), CHUNKS)
def test_oversize_request_line_rejected_early(length: int, chunk_sizes: list[int]) -> None:
    stream = b"GET /" + b"a" * length + b" HTTP/1.1\r\n\r\n"
    error, buffered = feed_until_error(stream, chunk_sizes)
    assert error.status == 414
    # Chunks are at most 700 bytes: the error came with the chunk that crossed the limit.
    assert buffered < 9 * 1024


@settings(max_examples=40)
@given(st.integers(0, 20), st.integers(MAX_LINE_SIZE + 1, 3 * MAX_LINE_SIZE), CHUNKS)
def test_oversize_header_line_rejected_early(
    before: int, length: int, chunk_sizes: list[int]
) -> None:
    prefix = head_with_headers(before)[:-2]
    stream = prefix + b"X-Big: " + b"v" * length + b"\r\n\r\n"
    error, buffered = feed_until_error(stream, chunk_sizes)
    assert error.status == 431
    # Never more than one over-long line (plus one chunk) buffered beyond the valid lines.
    assert buffered - len(prefix) < 9 * 1024


@settings(max_examples=20)
@given(CHUNKS)
def test_too_many_headers_rejected_early(chunk_sizes: list[int]) -> None:
    stream = head_with_headers(10 * MAX_HEADERS)
    error, buffered = feed_until_error(stream, chunk_sizes)
    assert error.status == 431
    # The error comes with the chunk that completes the 129th header line.
    assert buffered < len(head_with_headers(MAX_HEADERS + 2)) + 700


# ------------------------------------------------------------------------ HeadScanner


def first_answer(stream: bytes, cuts: list[int], every_read: bool) -> tuple[int, object]:
    """Feed ``stream`` in reads ending at ``cuts``; parse after every read or when the scanner
    says so. Returns the read at which the parser first answered, and its answer."""
    scanner = HeadScanner()
    buffer = bytearray()
    start = 0
    for index, cut in enumerate([*cuts, len(stream)]):
        buffer += stream[start:cut]
        start = max(start, cut)
        if every_read or scanner.ready(buffer):
            try:
                result = parse_request_head(buffer)
            except HandshakeError as error:
                return index, (error.status, str(error))
            if result is not None:
                return index, result
    return -1, None


HEAD_PARTS = st.sampled_from(
    [
        b"GET",
        b" ",
        b"/",
        b"HTTP/1.1",
        b"\r\n",
        b"\n",
        b"\r",
        b":",
        b"X",
        b"\t",
        b"\x00",
        b"\r\n\r\n",
    ]
)


@settings(max_examples=300)
@given(st.one_of(st.lists(HEAD_PARTS, max_size=40), requests()), st.data())
def test_the_scanner_answers_at_the_same_read_as_parsing_every_read(
    head: list[bytes] | Request, data: st.DataObject
) -> None:
    # Issue 22 §2: parsing only when HeadScanner.ready() says so changes neither the answer
    # nor the read it comes with (an early 400, 414 or 431 stays early).
    stream = head.to_bytes() if isinstance(head, Request) else b"".join(head)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    assert first_answer(stream, cuts, every_read=False) == first_answer(
        stream, cuts, every_read=True
    )


@settings(max_examples=20)
@given(st.sampled_from([b"GET /" + b"a" * 20_000, head_with_headers(10 * MAX_HEADERS)]), CHUNKS)
def test_the_scanner_answers_limits_at_the_same_read(stream: bytes, chunk_sizes: list[int]) -> None:
    cuts = list(itertools.accumulate(chunk_sizes))
    assert first_answer(stream, cuts, every_read=False) == first_answer(
        stream, cuts, every_read=True
    )


def test_a_dribbled_head_is_parsed_a_bounded_number_of_times() -> None:
    # 100 header lines of about 8 KB (within the limits), arriving 100 bytes at a time: 8,000
    # reads, of which at most three are worth a parse (first line, blank line).
    stream = (
        b"GET / HTTP/1.1\r\n"
        + b"".join(b"X-%d: %s\r\n" % (n, b"v" * 8000) for n in range(100))
        + b"\r\n"
    )
    scanner = HeadScanner()
    buffer = bytearray()
    parses = 0
    for start in range(0, len(stream), 100):
        buffer += stream[start : start + 100]
        if scanner.ready(buffer):
            parses += 1
            result = parse_request_head(buffer)
    assert result is not None and len(result[0].headers) == 100
    assert parses <= 3
