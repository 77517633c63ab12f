"""Bounded parsing and serialisation of HTTP/1.1 message heads, for the opening handshake.

Only what the WebSocket opening handshake needs: a request head (the server reads it from raw bytes
when it does not sit behind ``http.server``), a response head (the client reads the server's answer)
and their serialisation. Bodies are not parsed.

Limits (RFC 9110/9112 leave them to the implementation; these match common servers): the request or
status line and each header line may hold at most :data:`MAX_LINE_SIZE` bytes (CRLF excluded), and a
head at most :data:`MAX_HEADERS` header lines. A limit is enforced as soon as it is exceeded, also
while the head is still incomplete, so a peer can never make the caller buffer more than about
``MAX_LINE_SIZE * (MAX_HEADERS + 1)`` bytes (about 1 MiB) waiting for the blank line. The parse
functions are stateless: each call rescans the bytes given, at C speed and never past that bound,
so a transport should still put a deadline on the whole opening handshake, and call them only
when :class:`HeadScanner` says a read made it worth it (a rescan per read would cost the square of
the head's size).

Deliberate strictness (RFC 9112 §2.2 and §5.2 allow some leniency; we do not take it):

* Lines must end with CRLF. A bare LF (or a bare CR) is refused with 400 rather than tolerated:
  every WebSocket client sends CRLF, and disagreeing with a proxy about line ends is a classic
  request-smuggling vector.
* Obsolete line folding (a header line starting with a space or tab) is refused with 400.
* A header name must be a non-empty ``token`` (no spaces, no colon), otherwise 400.
* A NUL byte anywhere in the head is refused with 400.

Header bytes are decoded as ISO-8859-1 (every byte maps to one character, so decoding never fails)
and names keep the spelling they arrived with; look-ups with :func:`get_header` ignore case.

This module is sans-I/O: it imports nothing that touches sockets, threads or clocks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import HandshakeError, InvalidHandshake

__all__ = [
    "MAX_HEADERS",
    "MAX_LINE_SIZE",
    "HeadScanner",
    "Headers",
    "Request",
    "Response",
    "decode_chunked",
    "get_header",
    "get_header_values",
    "header_tokens",
    "parse_request_head",
    "parse_response_head",
    "split_list",
]

#: Maximum size in bytes of the request or status line and of each header line (CRLF excluded).
MAX_LINE_SIZE = 8192
#: Maximum number of header lines in a head.
MAX_HEADERS = 128

Headers = list[tuple[str, str]]
"""Header fields as ``(name, value)`` pairs, names as received; look-ups are case-insensitive."""

# RFC 9110 §5.6.2: tchar. Used with str.strip(): a string made only of these characters strips to
# "" -- a C-speed membership test without a per-character Python loop or a regex.
_TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_VERSION_RE = re.compile(r"HTTP/[0-9]\.[0-9]")
_FORBIDDEN_IN_VALUE_RE = re.compile(r"[\r\n\x00]")
# A request target never holds whitespace or control characters (RFC 9112 §3.2).
BAD_TARGET_RE = re.compile(r"[\x00-\x20\x7f]")
_CRLF2 = b"\r\n\r\n"
# A line break not followed by "token:" starts an invalid header line (RFC 9112 §5: field-name ":").
_BAD_HEADER_LINE_RE = re.compile(r"\r\n(?![!#$%&'*+\-.^_`|~0-9A-Za-z]+:)")


def is_token(text: str) -> bool:
    """Return True when ``text`` is a non-empty RFC 9110 token."""
    return bool(text) and not text.strip(_TCHARS)


def quote_peer_text(text: str, limit: int = 60) -> str:
    """Quote a peer-supplied string for an error message, cut to about ``limit`` characters."""
    if len(text) > limit:
        return repr(text[:limit]) + "..."
    return repr(text)


def check_field(name: str, value: str) -> None:
    """Refuse a header that would corrupt the head it is written into (header injection)."""
    if not is_token(name):
        raise ValueError(f"invalid header name {name!r}: expected an HTTP token")
    if _FORBIDDEN_IN_VALUE_RE.search(value):
        raise ValueError(f"invalid value for header {name}: {value!r} contains CR, LF or NUL")


def _encode_head(start_line: str, headers: Sequence[tuple[str, str]]) -> bytes:
    """Serialise a start line and header fields into a head, blank line included."""
    parts = [start_line]
    for name, value in headers:
        check_field(name, value)
        parts.append(f"{name}: {value}")
    parts.append("\r\n")
    try:
        return "\r\n".join(parts).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"HTTP heads are ISO-8859-1; cannot encode {exc.object[exc.start : exc.end]!r}"
        ) from None


@dataclass(slots=True)
class Request:
    """An HTTP request head.

    Attributes:
        method: The request method, e.g. ``"GET"`` (case-sensitive).
        target: The request target as sent, e.g. ``"/chat?room=1"``.
        version: The protocol version, e.g. ``"HTTP/1.1"``.
        headers: The header fields, in order.
        remote_address: Who sent it, as the server's socket gives the peer's address (e.g.
            ``("203.0.113.9", 50312)``), set by the server that received the request (the
            threaded and asyncio ``serve()``, ``http.server``, WSGI's ``REMOTE_ADDR``, ASGI's
            ``client``); ``None`` for a request we build or parse ourselves. Not part of the
            head: :meth:`to_bytes` ignores it and it takes no part in comparisons. Behind a
            proxy it is the proxy's address; forwarded headers are the application's to trust.
    """

    method: str
    target: str
    version: str
    headers: Headers
    remote_address: Any = field(default=None, compare=False, repr=False)

    def to_bytes(self) -> bytes:
        """Serialise the head, blank line included.

        Raises:
            ValueError: A field would break the head: a method or header name that is not a token,
                a target with whitespace or control characters, a header value with CR, LF or NUL,
                or a character outside ISO-8859-1.
        """
        if not is_token(self.method):
            raise ValueError(f"invalid method {self.method!r}: expected an HTTP token")
        if not self.target or BAD_TARGET_RE.search(self.target):
            raise ValueError(f"invalid request target {self.target!r}")
        if not _VERSION_RE.fullmatch(self.version):
            raise ValueError(f"invalid HTTP version {self.version!r}: expected e.g. 'HTTP/1.1'")
        return _encode_head(f"{self.method} {self.target} {self.version}", self.headers)


@dataclass(slots=True)
class Response:
    """An HTTP response: status, headers and an optional (already complete) body.

    Attributes:
        status: The status code, e.g. ``101``.
        reason: The reason phrase, e.g. ``"Switching Protocols"``.
        headers: The header fields, in order. :meth:`to_bytes` adds none (no ``Content-Length``).
        body: The body bytes, written after the head. :func:`parse_response_head` leaves it empty.
    """

    status: int
    reason: str
    headers: Headers
    body: bytes = b""

    def to_bytes(self) -> bytes:
        """Serialise the status line, headers, blank line and body as HTTP/1.1.

        Raises:
            ValueError: The status is not three digits, the reason phrase or a header value
                holds CR, LF or NUL, a header name is not a token, or a character is outside
                ISO-8859-1.
        """
        if not 100 <= self.status <= 999:
            raise ValueError(f"invalid status {self.status}: expected three digits")
        if _FORBIDDEN_IN_VALUE_RE.search(self.reason):
            raise ValueError(f"invalid reason phrase {self.reason!r}: contains CR, LF or NUL")
        head = _encode_head(f"HTTP/1.1 {self.status} {self.reason}", self.headers)
        return head + self.body if self.body else head


# --- look-ups -------------------------------------------------------------------------------------


def get_header_values(headers: Sequence[tuple[str, str]], name: str) -> list[str]:
    """Return the values of every header called ``name`` (case-insensitive), in order."""
    name = name.lower()
    return [v for n, v in headers if n.lower() == name]


def get_header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    """Return the values of every header called ``name`` joined with ``", "``, or None if absent.

    Joining is how RFC 9110 §5.3 combines repeated fields that hold comma-separated lists.
    """
    values = get_header_values(headers, name)
    return ", ".join(values) if values else None


def split_list(value: str | None) -> list[str]:
    """Split a comma-separated header value into its elements.

    Whitespace around elements is removed and empty elements are dropped (RFC 9110 §5.6.1);
    case is kept. ``None`` (header absent) gives an empty list.
    """
    if not value:
        return []
    return [item for item in (part.strip(" \t") for part in value.split(",")) if item]


def header_tokens(headers: Sequence[tuple[str, str]], name: str) -> list[str]:
    """Return the comma-separated elements of every ``name`` header, lower-cased.

    For case-insensitive token lists such as ``Connection: keep-alive, Upgrade`` (which gives
    ``["keep-alive", "upgrade"]``).
    """
    return [token.lower() for token in split_list(get_header(headers, name))]


# --- parsing --------------------------------------------------------------------------------------


def _fail(is_request: bool, status: int, reason: str) -> HandshakeError:
    """Build the error for a bad head.

    A bad request head is a :class:`HandshakeError` carrying the status to answer with; a bad
    *response* head an :class:`InvalidHandshake` without status (no valid answer arrived).
    """
    if is_request:
        return HandshakeError(status, reason)
    return InvalidHandshake(None, reason)


def _check_incomplete(
    data: bytes | bytearray, is_request: bool, max_line: int, max_headers: int
) -> None:
    """Raise if an incomplete head already breaks a limit or uses bare LF line ends.

    Called only while the blank line has not arrived; walks the complete lines with C-speed
    ``find`` calls, at most ``max_headers + 2`` of them, so its cost is bounded.
    """
    first = "request line" if is_request else "status line"
    pos = 0
    count = 0  # complete lines seen
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            # The partial line may end with the CR of its CRLF, hence the + 1.
            if len(data) - pos > max_line + 1:
                if count == 0:
                    raise _fail(is_request, 414, f"{first} longer than {max_line} bytes")
                raise _fail(is_request, 431, f"header line longer than {max_line} bytes")
            return
        if nl == pos or data[nl - 1] != 0x0D:
            raise _fail(is_request, 400, "expected CRLF line endings, got a bare LF")
        length = nl - 1 - pos
        if length > max_line:
            if count == 0:
                raise _fail(is_request, 414, f"{first} longer than {max_line} bytes")
            raise _fail(is_request, 431, f"header line longer than {max_line} bytes")
        if length == 0:
            # Only possible on the first line: a later empty line would have ended the head.
            raise _fail(is_request, 400, f"expected a {first}, got an empty line")
        count += 1
        if count > max_headers + 1:
            raise _fail(is_request, 431, f"more than {max_headers} header lines")
        pos = nl + 1


def _split_head(
    data: bytes | bytearray, is_request: bool, max_line: int, max_headers: int
) -> tuple[str, Headers, int] | None:
    """Find and parse a head: (start line, headers, bytes consumed), or None while incomplete."""
    # A head that respects the limits ends within this window; searching no further bounds the
    # work on a huge buffer (_check_incomplete then reports which limit was broken).
    window = (max_headers + 1) * (max_line + 2) + 2
    end = data.find(_CRLF2, 0, window)
    if end < 0:
        _check_incomplete(data, is_request, max_line, max_headers)
        return None
    text = data[:end].decode("latin-1")
    lines = text.split("\r\n")
    crlf_count = len(lines) - 1
    # CR and LF may only appear as the CRLF pairs we split on; NUL never (RFC 9110 §5.5).
    if text.count("\n") != crlf_count or text.count("\r") != crlf_count:
        raise _fail(is_request, 400, "expected CRLF line endings, got a bare CR or LF")
    if "\x00" in text:
        raise _fail(is_request, 400, "NUL byte in the message head")
    start_line = lines[0]
    first = "request line" if is_request else "status line"
    if len(start_line) > max_line:
        raise _fail(is_request, 414, f"{first} longer than {max_line} bytes")
    if not start_line:
        raise _fail(is_request, 400, f"expected a {first}, got an empty line")
    if crlf_count > max_headers:
        raise _fail(is_request, 431, f"more than {max_headers} header lines")
    if len(text) > max_line:
        # Only a head longer than the limit can hold a line longer than it: skip the common case.
        for line in lines[1:]:
            if len(line) > max_line:
                raise _fail(is_request, 431, f"header line longer than {max_line} bytes")
    # Every header line must start with "token:" -- one regex search over the head checks them
    # all at C speed, so the loop below only splits.
    bad = _BAD_HEADER_LINE_RE.search(text)
    if bad is not None:
        stop = text.find("\r\n", bad.end())
        line = text[bad.end() : stop if stop >= 0 else len(text)]
        if line.startswith((" ", "\t")):
            # RFC 9112 §5.2: a server MUST either reject obs-fold or replace it; we reject.
            raise _fail(is_request, 400, "obsolete line folding is not supported")
        raise _fail(
            is_request, 400, f"expected a header line 'name: value', got {quote_peer_text(line)}"
        )
    headers: Headers = []
    append = headers.append
    for line in lines[1:]:
        name, _, value = line.partition(":")
        append((name, value.strip(" \t")))
    return start_line, headers, end + 4


class HeadScanner:
    """Tells when a head arriving in pieces is worth parsing, looking at each byte once.

    The parse functions are stateless and rescan everything they are given; a transport that
    called them after every read would do work in the square of the head's size (a peer
    dribbling a 1 MiB head in 100-byte reads: about 10,000 rescans). A transport asks
    :meth:`ready` after each read instead, and parses only when the parser may now answer
    something other than "incomplete": the blank line arrived, the first line is complete (an
    empty one is refused at once), a bare LF arrived, or a limit is broken (a line longer than
    ``max_line_size``, more than ``max_headers`` header lines). That happens at most a few times
    per head, so the work is linear in the bytes received.

    Concurrency: not thread-safe; one per head being received.
    """

    __slots__ = ("_line_start", "_lines", "_max_headers", "_max_line", "_scanned")

    def __init__(self, *, max_line_size: int = MAX_LINE_SIZE, max_headers: int = MAX_HEADERS):
        self._max_line = max_line_size
        self._max_headers = max_headers
        self._scanned = 0  # bytes of the head looked at so far
        self._lines = 0  # complete lines so far
        self._line_start = 0  # where the partial last line starts

    def ready(self, data: bytes | bytearray) -> bool:
        """Look at the bytes added to ``data`` since the last call; True if it is worth parsing.

        Args:
            data: Everything received so far (the same growing buffer on every call).
        """
        start = self._scanned
        end = self._scanned = len(data)
        lines = data.count(b"\n", start, end)
        if lines:
            # The blank line, or a bare LF: look back over the bytes that pair with new ones.
            if data.find(_CRLF2, max(0, start - 3), end) >= 0:
                return True
            if data.count(b"\r\n", max(0, start - 1), end) != lines:
                return True
            first_line = self._lines == 0
            self._lines += lines
            self._line_start = data.rfind(b"\n", start, end) + 1
            if first_line or self._lines > self._max_headers + 1:
                return True
        # The partial line may end with the CR of its CRLF, hence the + 1 (as the parser).
        return end - self._line_start > self._max_line + 1


def parse_request_head(
    data: bytes | bytearray,
    *,
    max_line_size: int = MAX_LINE_SIZE,
    max_headers: int = MAX_HEADERS,
) -> tuple[Request, int] | None:
    """Parse an HTTP request head from the start of ``data``.

    Call it again with the accumulated bytes each time more arrive. Bytes after the blank line
    (for example a first WebSocket frame sent right behind the handshake) are not consumed.

    Args:
        data: The bytes received so far.
        max_line_size: Maximum size in bytes of the request line and of each header line.
        max_headers: Maximum number of header lines.

    Returns:
        None while the head is incomplete, else ``(request, number of bytes consumed)``.

    Raises:
        HandshakeError: 414 when the request line is too long, 431 when a header line is too long or
            there are too many headers, 400 when the head is malformed -- as soon as it is certain,
            even before the head is complete.
    """
    parsed = _split_head(data, True, max_line_size, max_headers)
    if parsed is None:
        return None
    start_line, headers, consumed = parsed
    parts = start_line.split(" ")
    if (
        len(parts) != 3
        or not is_token(parts[0])
        or not parts[1]
        or not _VERSION_RE.fullmatch(parts[2])
    ):
        raise HandshakeError(
            400,
            f"expected a request line 'METHOD target HTTP/1.1', got {quote_peer_text(start_line)}",
        )
    method, target, version = parts
    return Request(method, target, version, headers), consumed


def parse_response_head(
    data: bytes | bytearray,
    *,
    max_line_size: int = MAX_LINE_SIZE,
    max_headers: int = MAX_HEADERS,
) -> tuple[Response, int] | None:
    """Parse an HTTP response head from the start of ``data``; the body is left unread.

    Call it again with the accumulated bytes each time more arrive. Bytes after the blank line
    (a body, or the server's first WebSocket frame) are not consumed.

    Args:
        data: The bytes received so far.
        max_line_size: Maximum size in bytes of the status line and of each header line.
        max_headers: Maximum number of header lines.

    Returns:
        None while the head is incomplete, else ``(response, number of bytes consumed)``; the
        response's ``body`` is empty.

    Raises:
        InvalidHandshake: with status None (no valid HTTP response arrived) when the head is
            malformed or breaks a limit, as soon as that is certain.
    """
    parsed = _split_head(data, False, max_line_size, max_headers)
    if parsed is None:
        return None
    start_line, headers, consumed = parsed
    parts = start_line.split(" ", 2)
    if (
        len(parts) < 2
        or not _VERSION_RE.fullmatch(parts[0])
        or len(parts[1]) != 3
        or not parts[1].isascii()
        or not parts[1].isdigit()
    ):
        raise InvalidHandshake(
            None,
            "expected a status line 'HTTP/1.1 101 Switching Protocols', "
            f"got {quote_peer_text(start_line)}",
        )
    reason = parts[2] if len(parts) == 3 else ""
    return Response(int(parts[1]), reason, headers), consumed


def decode_chunked(data: bytes) -> bytes:
    """Decode the complete chunks at the start of a chunked body (RFC 9112 §7.1).

    Best effort, for showing the start of an error page: decoding stops without error at the
    last-chunk, at an incomplete chunk or at anything malformed, and returns what was decoded.
    Chunk extensions and trailers are ignored.

    Args:
        data: The body bytes received so far (possibly cut anywhere).

    Returns:
        The payload of the complete chunks; never longer than ``data``.
    """
    out = bytearray()
    position = 0
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            break
        size_text = data[position:line_end].split(b";", 1)[0].strip()
        # int() also takes "+1", "1_0" and non-ASCII digits: only plain hex digits are a size.
        if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
            break
        size = int(size_text, 16)
        if size == 0:
            break
        start = line_end + 2
        out += data[start : start + size]
        if start + size + 2 > len(data):
            break
        position = start + size + 2
    return bytes(out)
