"""WebSocket URLs and the redirect policy: :mod:`tube.websocket.core.uri`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tube.websocket.core.errors import HandshakeRejected, InvalidURI
from tube.websocket.core.http import Response
from tube.websocket.core.uri import (
    CREDENTIAL_HEADERS,
    DEFAULT_PORTS,
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    WebSocketURI,
    headers_for_redirect,
    parse_uri,
    redirect_target,
)

# ---------------------------------------------------------------- URL parsing

VALID_URLS = [
    # url, secure, host, port, resource, Host header
    ("ws://example.com", False, "example.com", 80, "/", "example.com"),
    ("ws://example.com/", False, "example.com", 80, "/", "example.com"),
    ("wss://example.com", True, "example.com", 443, "/", "example.com"),
    ("WSS://Example.COM/Chat", True, "example.com", 443, "/Chat", "example.com"),
    ("ws://example.com:80/", False, "example.com", 80, "/", "example.com"),
    ("ws://example.com:443/", False, "example.com", 443, "/", "example.com:443"),
    ("wss://example.com:80/", True, "example.com", 80, "/", "example.com:80"),
    ("wss://example.com:443/x", True, "example.com", 443, "/x", "example.com"),
    ("ws://example.com:8080/chat", False, "example.com", 8080, "/chat", "example.com:8080"),
    ("ws://example.com:/", False, "example.com", 80, "/", "example.com"),
    ("ws://127.0.0.1:9000/a/b?x=1&y=2", False, "127.0.0.1", 9000, "/a/b?x=1&y=2", "127.0.0.1:9000"),
    ("ws://example.com?room=1", False, "example.com", 80, "/?room=1", "example.com"),
    ("ws://example.com/?", False, "example.com", 80, "/", "example.com"),
    ("ws://[::1]/", False, "::1", 80, "/", "[::1]"),
    ("ws://[::1]:8765/x", False, "::1", 8765, "/x", "[::1]:8765"),
    ("wss://[2001:DB8:0:0::1]:443/", True, "2001:db8::1", 443, "/", "[2001:db8::1]"),
    ("ws://h/a%20b", False, "h", 80, "/a%20b", "h"),
    ("ws://h/caf\u00e9", False, "h", 80, "/caf%C3%A9", "h"),
    ("ws://h/p?q=a/b?c", False, "h", 80, "/p?q=a/b?c", "h"),
    ("ws://b\u00fccher.example/", False, "xn--bcher-kva.example", 80, "/", "xn--bcher-kva.example"),
    ("ws://under_score.local:1/", False, "under_score.local", 1, "/", "under_score.local:1"),
    ("ws://h:65535/", False, "h", 65535, "/", "h:65535"),
]


@pytest.mark.parametrize(("url", "secure", "host", "port", "resource", "host_header"), VALID_URLS)
def test_parse_valid_urls(
    url: str, secure: bool, host: str, port: int, resource: str, host_header: str
) -> None:
    uri = parse_uri(url)
    assert uri == WebSocketURI(secure=secure, host=host, port=port, resource=resource)
    assert uri.host_header == host_header
    # The normal form parses back to the same thing.
    assert parse_uri(uri.url) == uri


INVALID_URLS = [
    ("http://example.com/", "scheme"),
    ("https://example.com/", "scheme"),
    ("example.com/chat", "scheme"),
    ("ftp://example.com/", "scheme"),
    ("ws:/example.com", "no host"),
    ("ws:///path", "no host"),
    ("ws://", "no host"),
    ("ws://example.com/#frag", "fragment"),
    ("ws://example.com/#", "fragment"),
    ("ws://user:secret@example.com/", "user information"),
    ("ws://user@example.com/", "user information"),
    ("ws://example.com:0/", "port"),
    ("ws://example.com:65536/", "port"),
    ("ws://example.com:http/", "port"),
    ("ws://example.com:-1/", "port"),
    ("ws://[::1/", "IPv6"),
    ("ws://[not-an-ip]/", "IPv6"),
    ("ws://[fe80::1%25eth0]/", "zone"),
    ("ws://example.com/a b", "spaces"),
    ("ws://example.com/\r\nX-Injected: 1", "control"),
    ("ws://exa\tmple.com/", "control"),
    ("ws://exa%41mple.com/", "host name"),
    ("ws://exa!mple.com/", "host name"),
    ("ws://1.2.3.4]/", "IPv6"),
    # urlsplit ignores what follows "]": this was accepted as port 80 of ::1 (issue 8 §5).
    ("ws://[::1]junk/", "after ]"),
    ("ws://[::1]junk:80/", "after ]"),
    ("ws://[::1]:80junk/", "port"),
]


@pytest.mark.parametrize(("url", "what"), INVALID_URLS)
def test_parse_invalid_urls(url: str, what: str) -> None:
    with pytest.raises(InvalidURI) as info:
        parse_uri(url)
    assert what.lower() in str(info.value).lower()


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(InvalidURI, match="str"):
        parse_uri(b"ws://example.com/")  # type: ignore[arg-type]


def test_invalid_uri_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_uri("http://example.com/")


@given(st.text(max_size=60))
def test_parse_arbitrary_text(text: str) -> None:
    for url in (text, "ws://" + text, "wss://h/" + text):
        try:
            uri = parse_uri(url)
        except InvalidURI:
            continue
        # Whatever is accepted gives a request target and Host header that cannot break the
        # request head: ASCII, no whitespace or control characters.
        for field in (uri.resource, uri.host_header):
            assert field.isascii()
            assert all(" " < char < "\x7f" for char in field)
        assert uri.resource.startswith("/")
        assert 1 <= uri.port <= 65535
        assert parse_uri(uri.url) == uri


# Characters that make URL parsers take odd paths: brackets, colons, percent, digits, dots.
URLISH = st.text(alphabet="[]:%@/?#.0123456789abcdefABCDEF-_~!$&'()*+,;=\u00e9\u0661", max_size=40)


@given(st.sampled_from(["ws://", "wss://", "WS://", "ws:", ""]), URLISH)
def test_parse_urlish_text_only_raises_invalid_uri(scheme: str, rest: str) -> None:
    # Whatever the text, parse_uri returns or raises InvalidURI (never a bare ValueError,
    # IndexError or UnicodeError from urllib, ipaddress or the IDNA codec).
    try:
        uri = parse_uri(scheme + rest)
    except InvalidURI:
        return
    assert 1 <= uri.port <= 65535
    assert uri.resource.startswith("/")
    assert parse_uri(uri.url) == uri


def test_default_ports() -> None:
    assert DEFAULT_PORTS == {"ws": 80, "wss": 443, "http": 80, "https": 443}
    assert parse_uri("ws://h").port == 80
    assert parse_uri("wss://h").port == 443


# ---------------------------------------------------------------- redirects

BASE = parse_uri("ws://example.com:8080/dir/page?q=1")


def moved(location: str | None, status: int = 302, *more: str) -> Response:
    headers = [] if location is None else [("Location", location)]
    headers += [("Location", extra) for extra in more]
    return Response(status, "Found", headers, b"moved")


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("ws://other.example/x", "ws://other.example/x"),
        ("/abs?y=2", "ws://example.com:8080/abs?y=2"),
        ("rel", "ws://example.com:8080/dir/rel"),
        ("https://secure.example/a#frag", "wss://secure.example/a"),
        ("http://[::1]:9/", "ws://[::1]:9/"),
        ("  ws://spaced.example/  ", "ws://spaced.example/"),
    ],
)
def test_redirect_target(location: str, expected: str) -> None:
    assert redirect_target(BASE, moved(location), redirects=0).url == expected


@pytest.mark.parametrize(
    ("response", "what"),
    [
        # urljoin raises a bare ValueError on this one (issue 8 §5).
        (moved("ws://[::1"), "cannot follow the redirect"),
        (moved("ws://[::1]junk/"), "cannot follow the redirect"),
        (moved("ftp://example.com/"), "cannot follow the redirect"),
        (moved("ws://user@example.com/"), "cannot follow the redirect"),
        (moved(None), "expected one Location, got 0"),
        (moved("/a", 302, "/b"), "expected one Location, got 2"),
        (moved(""), "expected one Location"),
    ],
)
def test_redirect_refused(response: Response, what: str) -> None:
    with pytest.raises(HandshakeRejected, match=what) as info:
        redirect_target(BASE, response, redirects=0)
    assert info.value.status == 302
    assert info.value.body == b"moved"


def test_redirect_limit() -> None:
    assert redirect_target(BASE, moved("/x"), redirects=MAX_REDIRECTS - 1).resource == "/x"
    with pytest.raises(HandshakeRejected, match="too many redirects"):
        redirect_target(BASE, moved("/x"), redirects=MAX_REDIRECTS)


def test_redirect_from_wss_to_ws_is_refused() -> None:
    secure = parse_uri("wss://example.com/")
    with pytest.raises(HandshakeRejected, match="from wss:// to ws://"):
        redirect_target(secure, moved("ws://example.com/"), redirects=0)
    assert redirect_target(secure, moved("/next"), redirects=0).secure


def test_redirect_statuses() -> None:
    assert {301, 302, 303, 307, 308} == REDIRECT_STATUSES


@given(st.text(max_size=80))
def test_redirect_to_arbitrary_location(location: str) -> None:
    # A Location is the server's text: it gives a URL or HandshakeRejected, nothing else, and the
    # error's message holds no control character (it may end up on a terminal).
    try:
        target = redirect_target(BASE, moved(location), redirects=0)
    except HandshakeRejected as error:
        assert str(error).isprintable()
        assert error.reason.isprintable()
        return
    assert isinstance(target, WebSocketURI)


def test_location_with_terminal_escapes_is_escaped() -> None:
    with pytest.raises(HandshakeRejected) as info:
        redirect_target(BASE, moved("ftp://x/\x1b[2J\x1b]0;pwned\x07"), redirects=0)
    assert "\x1b" not in str(info.value)
    assert "\\x1b[2J" in str(info.value)


def test_credentials_dropped_only_across_origins() -> None:
    headers = [("Authorization", "a"), ("Cookie", "c"), ("Proxy-Authorization", "p"), ("X", "1")]
    same = parse_uri("ws://example.com:8080/elsewhere")
    assert headers_for_redirect(headers, BASE, same) == headers
    for other in ("ws://example.com:8081/", "wss://example.com:8080/", "ws://other:8080/"):
        kept = headers_for_redirect(headers, BASE, parse_uri(other))
        assert kept == [("X", "1")]
    assert {"authorization", "cookie", "proxy-authorization"} == CREDENTIAL_HEADERS
