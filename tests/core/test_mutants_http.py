"""HTTP head edges that mutation testing found untested (issue 24, docs/mutation.md).

:class:`HeadScanner` was only checked for giving the parser's answer at the right read; a
scanner that said "worth parsing" too often passed (only slower), and so did one that missed a
bare LF in the first byte. Here its answer is compared, read by read, with the rule its
docstring states, recomputed naively from the whole buffer.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tube.websocket.core.http import HeadScanner, decode_chunked, split_list

MAX_LINE = 12
MAX_HEADERS = 3


def worth_parsing(data: bytes, previous: int) -> bool | str:
    """The rule of HeadScanner.ready(), from the whole buffer: ``data[previous:]`` is new.

    Returns False, True, or "final" when the parser's answer is then final (the blank line, or
    a bare LF which it refuses), so no further read is scanned.
    """
    if b"\n" in data[previous:]:
        blank = data.find(b"\r\n\r\n")
        if blank >= 0 and blank + 4 > previous:
            return "final"  # the blank line arrived
        if any(
            data[i] == 0x0A and (i == 0 or data[i - 1] != 0x0D) for i in range(previous, len(data))
        ):
            return "final"  # a bare LF arrived
        if b"\n" not in data[:previous]:
            return True  # the first line is complete
        if data.count(b"\n") > MAX_HEADERS + 1:
            return True  # more header lines than allowed
    # The partial last line is longer than a line may be (its CR not counted).
    return len(data) - (data.rfind(b"\n") + 1) > MAX_LINE + 1


PIECES = st.sampled_from(
    [b"G", b"ET / HTTP/1.1", b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"X: y", b"z" * 9]
)


@settings(max_examples=400)
@given(st.lists(st.lists(PIECES, max_size=4).map(b"".join), max_size=12))
def test_the_scanner_says_ready_exactly_when_its_rule_says_so(reads: list[bytes]) -> None:
    scanner = HeadScanner(max_line_size=MAX_LINE, max_headers=MAX_HEADERS)
    buffer = bytearray()
    for read in reads:
        previous = len(buffer)
        buffer += read
        expected = worth_parsing(bytes(buffer), previous)
        assert scanner.ready(buffer) is bool(expected), (bytes(buffer), previous)
        if expected == "final":
            return  # the parser answers now: the transport stops scanning this head


def test_a_bare_lf_as_the_first_byte_is_worth_parsing() -> None:
    assert HeadScanner().ready(bytearray(b"\n")) is True


def test_split_list_strips_only_spaces_and_tabs() -> None:
    assert split_list(" Xa ,\tbX\t, ,XX") == ["Xa", "bX", "XX"]
    assert split_list("") == [] and split_list(None) == []


def test_more_header_lines_than_allowed_are_worth_parsing_at_once() -> None:
    scanner = HeadScanner(max_line_size=MAX_LINE, max_headers=MAX_HEADERS)
    buffer = bytearray(b"GET / HTTP/1.1\r\n")
    assert scanner.ready(buffer) is True  # the first line
    for _ in range(MAX_HEADERS):
        buffer += b"X: y\r\n"
        assert scanner.ready(buffer) is False
    buffer += b"X: y\r\n"  # one header line too many
    assert scanner.ready(buffer) is True


# ------------------------------------------------------------------------ decode_chunked


@st.composite
def chunked(draw: st.DrawFn) -> tuple[bytes, bytes, list[tuple[int, int, int]]]:
    """A chunked body: its bytes, its payload, and per chunk (line end, payload start, size)."""
    body = bytearray()
    payload = bytearray()
    chunks = []
    for data in draw(st.lists(st.binary(min_size=1, max_size=40), max_size=5)):
        size = format(len(data), draw(st.sampled_from(["x", "X", "03x"])))
        extension = draw(st.sampled_from([b"", b";name=value", b" ;x"]))
        body += size.encode() + extension + b"\r\n"
        chunks.append((len(body), len(body), len(data)))
        body += data + b"\r\n"
        payload += data
    body += b"0\r\n" + draw(st.sampled_from([b"", b"Trailer: x\r\n"])) + b"\r\n"
    return bytes(body), bytes(payload), chunks


@given(chunked(), st.data())
def test_decode_chunked_gives_the_payload_received_so_far(
    body: tuple[bytes, bytes, list[tuple[int, int, int]]], data: st.DataObject
) -> None:
    encoded, payload, chunks = body
    assert decode_chunked(encoded) == payload
    cut = data.draw(st.integers(0, len(encoded)))
    # Each chunk whose size line arrived gives what arrived of it; the first one not complete
    # (with its CRLF) ends decoding.
    expected = bytearray()
    for line_end, start, size in chunks:
        if line_end > cut:
            break
        piece = encoded[start : min(cut, start + size)]
        expected += piece
        if start + size + 2 > cut:
            break
    assert decode_chunked(encoded[:cut]) == expected


def test_decode_chunked_stops_at_anything_but_plain_hex_sizes() -> None:
    assert decode_chunked(b"2\r\nab\r\n+1\r\nc\r\n0\r\n\r\n") == b"ab"
    assert decode_chunked(b"1_0\r\n" + b"x" * 16 + b"\r\n") == b""
    assert decode_chunked(b"\r\nab\r\n") == b""
    assert decode_chunked(b"g\r\nab\r\n") == b""
    assert decode_chunked(b"X\r\nab\r\n") == b""
    assert decode_chunked(b"2;a=1;b=2\r\nab\r\n0\r\n\r\n") == b"ab"
    assert decode_chunked(b" 2 ;e\r\nab\r\n0\r\n\r\n") == b"ab"
    assert decode_chunked(b"0\r\n\r\n2\r\nab\r\n") == b""
    assert decode_chunked(b"2\r\nab") == b"ab"
    assert decode_chunked(b"2\r\nabc") == b"ab"
    assert decode_chunked(b"2\r\nab\r\n2\r\ncd\r\n") == b"abcd"
