"""The opening handshake, server and client roles (tube.websocket.core.handshake)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tube.websocket.core.client_handshake import build_request, refusal_error, validate_response
from tube.websocket.core.errors import HandshakeError, HandshakeRejected, InvalidHandshake
from tube.websocket.core.handshake import accept_key, accept_request, rejection_response
from tube.websocket.core.handshake_checks import (
    RESERVED_REQUEST_HEADERS,
    RESERVED_RESPONSE_HEADERS,
    check_extra_headers,
    check_origins,
    check_subprotocols,
)
from tube.websocket.core.http import (
    Request,
    Response,
    get_header,
    parse_request_head,
    parse_response_head,
)

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

BASE_HEADERS = [
    ("Host", "example.com"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", RFC_KEY),
    ("Sec-WebSocket-Version", "13"),
]


def make_request(
    *,
    method: str = "GET",
    version: str = "HTTP/1.1",
    drop: tuple[str, ...] = (),
    replace: dict[str, str] | None = None,
    add: list[tuple[str, str]] | None = None,
) -> Request:
    """A valid handshake request, with some headers dropped, replaced or added."""
    replace = replace or {}
    headers = [(name, replace.get(name, value)) for name, value in BASE_HEADERS if name not in drop]
    return Request(method, "/chat", version, headers + (add or []))


def rejected(request: Request, **options: object) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        accept_request(request, **options)  # type: ignore[arg-type]
    return info.value


# ---------------------------------------------------------------------- accept key


def test_accept_key_rfc_6455_vector() -> None:
    # RFC 6455 §1.3.
    assert accept_key(RFC_KEY) == RFC_ACCEPT


def test_accept_key_matches_a_second_computation() -> None:
    key = base64.b64encode(bytes(range(16))).decode()
    guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    expected = base64.b64encode(hashlib.sha1((key + guid).encode()).digest()).decode()
    assert accept_key(key) == expected


# ----------------------------------------------------------------- server: success


def test_accept_valid_request() -> None:
    response, subprotocol = accept_request(make_request())
    assert subprotocol is None
    assert response.status == 101
    assert response.reason == "Switching Protocols"
    assert response.headers == [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", RFC_ACCEPT),
    ]
    assert response.body == b""
    assert response.to_bytes() == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("upgrade", "connection"),
    [
        ("websocket", "keep-alive, Upgrade"),  # Firefox
        ("WebSocket", "upgrade"),
        ("h2c, websocket", "Upgrade, HTTP2-Settings"),
        ("websocket", "UPGRADE ,keep-alive"),
    ],
)
def test_accept_token_lists_case_insensitively(upgrade: str, connection: str) -> None:
    request = make_request(replace={"Upgrade": upgrade, "Connection": connection})
    response, _ = accept_request(request)
    assert response.status == 101


def test_accept_repeated_connection_headers() -> None:
    request = make_request(replace={"Connection": "keep-alive"}, add=[("connection", "Upgrade")])
    assert accept_request(request)[0].status == 101


def test_header_names_are_case_insensitive() -> None:
    request = Request("GET", "/", "HTTP/1.1", [(n.upper(), v) for n, v in BASE_HEADERS])
    assert accept_request(request)[0].status == 101


def test_later_http_versions_are_accepted() -> None:
    assert accept_request(make_request(version="HTTP/2.0"))[0].status == 101


def test_extensions_are_ignored() -> None:
    request = make_request(
        add=[("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")]
    )
    response, _ = accept_request(request)
    assert get_header(response.headers, "Sec-WebSocket-Extensions") is None


def test_extra_headers_are_appended() -> None:
    response, _ = accept_request(make_request(), extra_headers=[("Server", "tube"), ("X-A", "1")])
    assert response.headers[-2:] == [("Server", "tube"), ("X-A", "1")]


@pytest.mark.parametrize(
    "name",
    [
        "Upgrade",
        "connection",
        "Sec-WebSocket-Accept",
        "SEC-WEBSOCKET-PROTOCOL",
        "Sec-WebSocket-Extensions",
    ],
)
def test_extra_headers_may_not_override_handshake_headers(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        accept_request(make_request(), extra_headers=[(name, "x")])


@pytest.mark.parametrize("header", [("X", "a\r\nSet-Cookie: x"), ("X\n", "a"), ("X", "a\x00")])
def test_extra_headers_refuse_injection(header: tuple[str, str]) -> None:
    with pytest.raises(ValueError):
        accept_request(make_request(), extra_headers=[header])


# ----------------------------------------------------------------- server: refusals


@pytest.mark.parametrize("method", ["POST", "get", "HEAD", "CONNECT"])
def test_method_must_be_get_405(method: str) -> None:
    error = rejected(make_request(method=method))
    assert error.status == 405
    assert error.headers == [("Allow", "GET")]
    assert error.reason == f"expected method GET, got {method!r}"


@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/0.9", "HTTP/1", "FOO", "HTTP/1.x", ""])
def test_version_must_be_at_least_1_1_505(version: str) -> None:
    error = rejected(make_request(version=version))
    assert error.status == 505
    assert "HTTP/1.1 or later" in error.reason
    assert error.headers == []


def test_host_missing_400() -> None:
    error = rejected(make_request(drop=("Host",)))
    assert error.status == 400
    assert "Host" in error.reason


def test_host_twice_400() -> None:
    error = rejected(make_request(add=[("host", "evil.com")]))
    assert error.status == 400
    assert "got 2 headers" in error.reason


def test_host_empty_400() -> None:
    assert rejected(make_request(replace={"Host": ""})).status == 400


@pytest.mark.parametrize("upgrade", [None, "h2c", "websocket2", "web socket", ""])
def test_upgrade_must_hold_websocket_400(upgrade: str | None) -> None:
    if upgrade is None:
        request = make_request(drop=("Upgrade",))
    else:
        request = make_request(replace={"Upgrade": upgrade})
    error = rejected(request)
    assert error.status == 400
    assert "Upgrade" in error.reason
    assert error.headers == []


@pytest.mark.parametrize("connection", [None, "keep-alive", "close", "upgraded", ""])
def test_connection_must_hold_upgrade_400(connection: str | None) -> None:
    if connection is None:
        request = make_request(drop=("Connection",))
    else:
        request = make_request(replace={"Connection": connection})
    error = rejected(request)
    assert error.status == 400
    assert "Connection" in error.reason


@pytest.mark.parametrize("version", [None, "8", "12", "14", "13, 8", " 13x", ""])
def test_websocket_version_must_be_13_426(version: str | None) -> None:
    if version is None:
        request = make_request(drop=("Sec-WebSocket-Version",))
    else:
        request = make_request(replace={"Sec-WebSocket-Version": version})
    error = rejected(request)
    assert error.status == 426
    assert error.headers == [("Sec-WebSocket-Version", "13")]
    assert "expected Sec-WebSocket-Version: 13" in error.reason


def test_websocket_version_twice_426() -> None:
    error = rejected(make_request(add=[("Sec-WebSocket-Version", "13")]))
    assert error.status == 426
    assert error.headers == [("Sec-WebSocket-Version", "13")]


@pytest.mark.parametrize(
    "key",
    [
        "",
        "not base64!",
        base64.b64encode(b"x" * 15).decode(),
        base64.b64encode(b"x" * 17).decode(),
        "dGhlIHNhbXBsZSBub25jZR==",  # non-zero padding bits: not canonical
        "dGhlIHNhbXBsZSBub25jZQ",  # padding missing
        "dGhl IHNhbXBsZSBub25jZQ==",
        "dGhlIHNhbXBsZSBub25jZQ=\u00e9",
        "dGhlIHNhbXBsZSBub25jZQ-_",
    ],
)
def test_key_must_be_base64_of_16_bytes_400(key: str) -> None:
    error = rejected(make_request(replace={"Sec-WebSocket-Key": key}))
    assert error.status == 400
    assert "Sec-WebSocket-Key" in error.reason


def test_surrounding_whitespace_is_not_part_of_values() -> None:
    # Front-ends other than our parser (http.server, WSGI) may leave it in.
    request = make_request(
        replace={
            "Host": " example.com ",
            "Sec-WebSocket-Key": RFC_KEY + "\t",
            "Sec-WebSocket-Version": "13 ",
        },
        add=[("Origin", " https://example.com")],
    )
    response, _ = accept_request(request)
    assert get_header(response.headers, "Sec-WebSocket-Accept") == RFC_ACCEPT


def test_key_missing_or_twice_400() -> None:
    assert rejected(make_request(drop=("Sec-WebSocket-Key",))).status == 400
    error = rejected(make_request(add=[("Sec-WebSocket-Key", RFC_KEY)]))
    assert error.status == 400
    assert "2 headers" in error.reason


def test_checks_run_in_the_documented_order() -> None:
    everything_wrong = Request("POST", "/", "HTTP/1.0", [("Origin", "https://evil.com")])
    assert rejected(everything_wrong).status == 405
    everything_wrong.method = "GET"
    assert rejected(everything_wrong).status == 505
    everything_wrong.version = "HTTP/1.1"
    assert rejected(everything_wrong).status == 400  # Host
    everything_wrong.headers.append(("Host", "example.com"))
    assert "Upgrade" in rejected(everything_wrong).reason
    everything_wrong.headers.append(("Upgrade", "websocket"))
    assert "Connection" in rejected(everything_wrong).reason
    everything_wrong.headers.append(("Connection", "upgrade"))
    assert rejected(everything_wrong).status == 426
    everything_wrong.headers.append(("Sec-WebSocket-Version", "13"))
    assert "Sec-WebSocket-Key" in rejected(everything_wrong).reason
    everything_wrong.headers.append(("Sec-WebSocket-Key", RFC_KEY))
    assert rejected(everything_wrong).status == 403


# -------------------------------------------------------------------------- origin


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("example.com", "https://example.com"),
        ("example.com", "http://example.com"),
        ("Example.COM", "https://example.com"),
        ("example.com", "HTTPS://EXAMPLE.COM"),
        ("example.com:443", "https://example.com"),
        ("example.com", "https://example.com:443"),
        ("example.com:80", "http://example.com"),
        ("example.com:8000", "http://example.com:8000"),
        ("localhost:8000", "http://localhost:8000"),
        ("[::1]:8000", "http://[::1]:8000"),
        ("[::1]", "https://[::1]:443"),
        ("127.0.0.1:9000", "http://127.0.0.1:9000"),
    ],
)
def test_same_host_origin_is_accepted(host: str, origin: str) -> None:
    request = make_request(replace={"Host": host}, add=[("Origin", origin)])
    assert accept_request(request)[0].status == 101


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("example.com", "https://evil.com"),
        ("example.com", "https://example.com.evil.com"),
        ("example.com", "https://evil.example.com"),
        ("example.com", "http://example.com:8080"),
        ("example.com:8000", "http://example.com"),
        ("example.com:8000", "http://example.com:8001"),
        ("example.com:80", "https://example.com"),
        ("example.com:443", "http://example.com"),
        ("example.com", "null"),
        ("example.com", "chrome-extension://example.com"),
        ("example.com", "ftp://example.com"),
        ("example.com", "example.com"),
        ("example.com", "https://example.com/path"),
        ("example.com", "https://user@example.com"),
        ("example.com", "https://example.com:99999"),
        ("example.com", "https://example.com:x"),
        ("example.com", "https://"),
        ("[::1]:8000", "http://[::1]:8001"),
        ("[::1]:8000", "http://[::1"),
        ("example.com", "https://example.com, https://example.com"),
    ],
)
def test_cross_origin_is_refused_403(host: str, origin: str) -> None:
    request = make_request(replace={"Host": host}, add=[("Origin", origin)])
    error = rejected(request)
    assert error.status == 403
    assert error.reason == f"origin not allowed: {origin}"


def test_missing_origin_is_accepted() -> None:
    assert accept_request(make_request())[0].status == 101


def test_two_origin_headers_are_refused() -> None:
    request = make_request(add=[("Origin", "https://example.com"), ("Origin", "https://evil.com")])
    error = rejected(request)
    assert error.status == 403
    assert error.reason == "origin not allowed: https://example.com, https://evil.com"


def test_allow_listed_origin_is_accepted() -> None:
    request = make_request(add=[("Origin", "https://app.example.org")])
    assert rejected(request).status == 403
    response, _ = accept_request(request, origins=["https://other.org", "https://app.example.org"])
    assert response.status == 101
    # Scheme and host are case-insensitive.
    assert accept_request(request, origins=["HTTPS://APP.example.org"])[0].status == 101
    # The same host stays allowed with an allow-list.
    same = make_request(add=[("Origin", "https://example.com")])
    assert accept_request(same, origins=["https://other.org"])[0].status == 101


def test_allow_list_is_exact() -> None:
    request = make_request(add=[("Origin", "https://app.example.org:8443")])
    assert rejected(request, origins=["https://app.example.org"]).status == 403
    request = make_request(add=[("Origin", "http://app.example.org")])
    assert rejected(request, origins=["https://app.example.org"]).status == 403


def test_null_origin_only_when_allow_listed() -> None:
    request = make_request(add=[("Origin", "null")])
    assert rejected(request).status == 403
    assert accept_request(request, origins=["null"])[0].status == 101


def test_check_origin_false_allows_any_origin() -> None:
    request = make_request(add=[("Origin", "https://evil.com")])
    assert accept_request(request, check_origin=False)[0].status == 101
    request = make_request(add=[("Origin", "null"), ("Origin", "x")])
    assert accept_request(request, check_origin=False)[0].status == 101


def test_star_is_not_a_wildcard() -> None:
    with pytest.raises(ValueError, match="check_origin=False"):
        accept_request(make_request(), origins=["*"])


def test_origins_must_not_be_a_string() -> None:
    with pytest.raises(TypeError):
        accept_request(make_request(), origins="https://example.com")


# -------------------------------------------------------------------- subprotocols


def offering(*values: str) -> Request:
    return make_request(add=[("Sec-WebSocket-Protocol", value) for value in values])


def test_subprotocol_server_preference_order() -> None:
    response, subprotocol = accept_request(
        offering("chat, superchat"), subprotocols=["superchat", "chat"]
    )
    assert subprotocol == "superchat"
    assert get_header(response.headers, "Sec-WebSocket-Protocol") == "superchat"
    assert response.headers[3] == ("Sec-WebSocket-Protocol", "superchat")


def test_subprotocol_from_repeated_headers() -> None:
    _, subprotocol = accept_request(offering("a", "b, c"), subprotocols=["c", "a"])
    assert subprotocol == "c"


def test_subprotocol_no_match_is_not_an_error() -> None:
    response, subprotocol = accept_request(offering("chat"), subprotocols=["mqtt"])
    assert subprotocol is None
    assert get_header(response.headers, "Sec-WebSocket-Protocol") is None


def test_subprotocols_are_case_sensitive() -> None:
    assert accept_request(offering("Chat"), subprotocols=["chat"])[1] is None


def test_subprotocol_none_offered() -> None:
    response, subprotocol = accept_request(make_request(), subprotocols=["chat"])
    assert subprotocol is None
    assert get_header(response.headers, "Sec-WebSocket-Protocol") is None


def test_offered_subprotocol_ignored_without_server_support() -> None:
    response, subprotocol = accept_request(offering("chat"))
    assert subprotocol is None
    assert get_header(response.headers, "Sec-WebSocket-Protocol") is None


def test_subprotocol_callback() -> None:
    seen: list[list[str]] = []

    def select(offered: list[str]) -> str | None:
        seen.append(offered)
        return offered[-1]

    response, subprotocol = accept_request(offering("a, b", "c"), subprotocols=select)
    assert seen == [["a", "b", "c"]]
    assert subprotocol == "c"
    assert get_header(response.headers, "Sec-WebSocket-Protocol") == "c"


def test_subprotocol_callback_may_decline() -> None:
    response, subprotocol = accept_request(offering("a"), subprotocols=lambda offered: None)
    assert subprotocol is None
    assert get_header(response.headers, "Sec-WebSocket-Protocol") is None


def test_subprotocol_callback_not_called_without_offer() -> None:
    def select(offered: list[str]) -> str | None:
        raise AssertionError("called")

    assert accept_request(make_request(), subprotocols=select)[1] is None


def test_subprotocol_callback_returning_unoffered_is_a_local_bug() -> None:
    with pytest.raises(ValueError, match="did not offer"):
        accept_request(offering("a"), subprotocols=lambda offered: "b")


def test_subprotocols_must_not_be_a_string() -> None:
    with pytest.raises(TypeError):
        accept_request(offering("chat"), subprotocols="chat")


# ------------------------------------------------------------------------ rejection


def test_rejection_response_426() -> None:
    error = rejected(make_request(replace={"Sec-WebSocket-Version": "8"}))
    response = rejection_response(error)
    body = b"expected Sec-WebSocket-Version: 13, got '8'\n"
    assert response.status == 426
    assert response.reason == "Upgrade Required"
    assert response.headers == [
        ("Sec-WebSocket-Version", "13"),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    assert response.body == body


def test_rejection_response_405_bytes() -> None:
    response = rejection_response(rejected(make_request(method="POST")))
    assert response.to_bytes() == (
        b"HTTP/1.1 405 Method Not Allowed\r\n"
        b"Allow: GET\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 32\r\n"
        b"Connection: close\r\n"
        b"\r\n"
        b"expected method GET, got 'POST'\n"
    )


def test_rejection_response_403_utf8_body() -> None:
    error = HandshakeError(403, "origin not allowed: https://caf\u00e9.example")
    response = rejection_response(error)
    assert response.reason == "Forbidden"
    assert response.body == "origin not allowed: https://caf\u00e9.example\n".encode()
    assert get_header(response.headers, "Content-Length") == str(len(response.body))


def test_rejection_of_parse_errors() -> None:
    with pytest.raises(HandshakeError) as info:
        parse_request_head(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n")
    response = rejection_response(info.value)
    assert response.status == 431
    assert response.reason == "Request Header Fields Too Large"


# ------------------------------------------------------------------ client: request


def test_build_request_with_given_key() -> None:
    request, key = build_request("example.com:8000", "/chat?x=1", key=RFC_KEY)
    assert key == RFC_KEY
    assert request.to_bytes() == (
        b"GET /chat?x=1 HTTP/1.1\r\n"
        b"Host: example.com:8000\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"\r\n"
    )


def test_build_request_random_keys() -> None:
    keys = {build_request("h", "/")[1] for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert len(base64.b64decode(key, validate=True)) == 16


def test_build_request_key_comes_from_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []

    def token_bytes(size: int) -> bytes:
        sizes.append(size)
        return b"\x01" * size

    monkeypatch.setattr(secrets, "token_bytes", token_bytes)
    request, key = build_request("h", "/")
    assert sizes == [16]
    assert key == base64.b64encode(b"\x01" * 16).decode()
    assert get_header(request.headers, "Sec-WebSocket-Key") == key


def test_build_request_options() -> None:
    request, _ = build_request(
        "example.com",
        "/",
        subprotocols=["chat", "superchat"],
        origin="https://example.com",
        extra_headers=[("Authorization", "Bearer x"), ("User-Agent", "tube")],
    )
    assert request.headers[5:] == [
        ("Sec-WebSocket-Protocol", "chat, superchat"),
        ("Origin", "https://example.com"),
        ("Authorization", "Bearer x"),
        ("User-Agent", "tube"),
    ]


@pytest.mark.parametrize(
    "name",
    [
        "Host",
        "upgrade",
        "CONNECTION",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Protocol",
        "Sec-WebSocket-Extensions",
        "Origin",
    ],
)
def test_build_request_refuses_overriding_handshake_headers(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        build_request("h", "/", extra_headers=[(name, "x")])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host": "h\r\nX-Evil: 1"},
        {"host": "h\x00"},
        {"host": ""},
        {"resource": "/a b"},
        {"resource": "/a\r\nX: y"},
        {"resource": "chat"},
        {"resource": ""},
        {"origin": "https://a\r\nX: y"},
        {"extra_headers": [("X", "a\nb")]},
        {"extra_headers": [("X Y", "a")]},
        {"subprotocols": ["chat", "a b"]},
        {"subprotocols": ["a,b"]},
        {"subprotocols": [""]},
        {"subprotocols": ["chat", "chat"]},
        {"key": "short"},
        {"key": "dGhlIHNhbXBsZSBub25jZR=="},
    ],
)
def test_build_request_refuses_bad_arguments(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {"host": "example.com", "resource": "/"}
    arguments.update(kwargs)
    with pytest.raises(ValueError):
        build_request(**arguments)  # type: ignore[arg-type]


def test_build_request_subprotocols_string_is_type_error() -> None:
    with pytest.raises(TypeError):
        build_request("h", "/", subprotocols="chat")


# ----------------------------------------------------------------- client: response


def good_response(key: str = RFC_KEY, *extra: tuple[str, str]) -> Response:
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    ]
    return Response(101, "Switching Protocols", headers + list(extra))


def invalid(response: Response, subprotocols: list[str] | None = None) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        validate_response(response, RFC_KEY, subprotocols=subprotocols)
    return info.value


def test_validate_good_response() -> None:
    assert validate_response(good_response(), RFC_KEY) is None


def test_validate_case_insensitive_tokens() -> None:
    response = Response(
        101,
        "Switching Protocols",
        [
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, UPGRADE"),
            ("sec-websocket-accept", RFC_ACCEPT),
        ],
    )
    assert validate_response(response, RFC_KEY) is None


def test_validate_non_101_status() -> None:
    headers = [("Content-Type", "text/plain")]
    error = invalid(Response(403, "Forbidden", headers, b"origin not allowed\n"))
    assert isinstance(error, HandshakeRejected)
    assert error.status == 403
    # The server's plain-text body explains the refusal, as connect() reports it.
    assert error.reason == "origin not allowed"
    assert error.headers == headers
    assert error.body == b"origin not allowed\n"
    assert invalid(Response(200, "", [])).reason == "the server refused the WebSocket upgrade"


@pytest.mark.parametrize(
    ("drop", "replace"),
    [
        ("Upgrade", None),
        (None, ("Upgrade", "h2c")),
        ("Connection", None),
        (None, ("Connection", "keep-alive")),
        ("Sec-WebSocket-Accept", None),
        (None, ("Sec-WebSocket-Accept", accept_key(base64.b64encode(b"y" * 16).decode()))),
        (None, ("Sec-WebSocket-Accept", RFC_KEY)),
    ],
)
def test_validate_bad_headers(drop: str | None, replace: tuple[str, str] | None) -> None:
    response = good_response()
    response.headers = [
        (name, replace[1] if replace and name == replace[0] else value)
        for name, value in response.headers
        if name != drop
    ]
    error = invalid(response)
    assert error.status == 101
    assert error.headers == response.headers
    name = drop or (replace[0] if replace else "")
    assert name in error.reason


def test_validate_accept_twice() -> None:
    assert (
        "Sec-WebSocket-Accept"
        in invalid(good_response(RFC_KEY, ("Sec-WebSocket-Accept", RFC_ACCEPT))).reason
    )


def test_validate_subprotocol_selected() -> None:
    response = good_response(RFC_KEY, ("Sec-WebSocket-Protocol", "superchat"))
    assert validate_response(response, RFC_KEY, subprotocols=["chat", "superchat"]) == "superchat"


@pytest.mark.parametrize(
    ("offered", "answer"),
    [
        (None, "chat"),
        ([], "chat"),
        (["chat"], "superchat"),
        (["chat"], "Chat"),
        (["chat", "superchat"], "chat, superchat"),
        (["chat"], ""),
    ],
)
def test_validate_subprotocol_not_offered(offered: list[str] | None, answer: str) -> None:
    error = invalid(good_response(RFC_KEY, ("Sec-WebSocket-Protocol", answer)), offered)
    assert "Sec-WebSocket-Protocol" in error.reason


def test_validate_two_subprotocol_headers() -> None:
    response = good_response(
        RFC_KEY, ("Sec-WebSocket-Protocol", "chat"), ("Sec-WebSocket-Protocol", "chat")
    )
    assert "Sec-WebSocket-Protocol" in invalid(response, ["chat"]).reason


def test_validate_refuses_any_extension() -> None:
    response = good_response(RFC_KEY, ("Sec-WebSocket-Extensions", "permessage-deflate"))
    error = invalid(response)
    assert "Sec-WebSocket-Extensions" in error.reason
    assert "permessage-deflate" in error.reason


# ---------------------------------------------------------------------- round trip


def round_trip(
    client_protocols: list[str] | None,
    server_protocols: list[str] | Callable[[list[str]], str | None] | None,
    origin: str | None = None,
) -> tuple[str | None, str | None, bytes]:
    request, key = build_request(
        "example.com:8000", "/ws", subprotocols=client_protocols, origin=origin
    )
    first_frame = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
    parsed = parse_request_head(request.to_bytes() + first_frame)
    assert parsed is not None
    server_request, consumed = parsed
    response, server_choice = accept_request(server_request, subprotocols=server_protocols)
    response_bytes = response.to_bytes()
    parsed_response = parse_response_head(response_bytes + b"\x81\x02hi")
    assert parsed_response is not None
    client_response, response_consumed = parsed_response
    assert response_consumed == len(response_bytes)
    client_choice = validate_response(client_response, key, subprotocols=client_protocols)
    return server_choice, client_choice, (request.to_bytes() + first_frame)[consumed:]


def test_round_trip() -> None:
    server, client, rest = round_trip(
        ["chat", "superchat"], ["superchat"], "http://example.com:8000"
    )
    assert server == client == "superchat"
    assert rest == b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
    assert round_trip(None, ["chat"])[:2] == (None, None)


def test_round_trip_rejection() -> None:
    request, key = build_request("example.com", "/", origin="https://evil.com")
    parsed = parse_request_head(request.to_bytes())
    assert parsed is not None
    with pytest.raises(HandshakeError) as info:
        accept_request(parsed[0])
    data = rejection_response(info.value).to_bytes()
    parsed_response = parse_response_head(data)
    assert parsed_response is not None
    response, consumed = parsed_response
    response.body = data[consumed:]
    with pytest.raises(HandshakeError) as client_info:
        validate_response(response, key)
    assert client_info.value.status == 403
    assert client_info.value.body == b"origin not allowed: https://evil.com\n"
    assert isinstance(client_info.value, HandshakeRejected)
    assert str(client_info.value) == "403 Forbidden: origin not allowed: https://evil.com"


PROTOCOL = st.text(alphabet="abcdefgh.-_0123456789", min_size=1, max_size=6)


@settings(max_examples=100)
@given(
    st.lists(PROTOCOL, unique=True, max_size=5),
    st.lists(PROTOCOL, unique=True, max_size=5),
    st.binary(min_size=16, max_size=16),
)
def test_round_trip_any_subprotocols(client: list[str], server: list[str], raw_key: bytes) -> None:
    key = base64.b64encode(raw_key).decode()
    request, _ = build_request("h", "/", subprotocols=client or None, key=key)
    parsed = parse_request_head(request.to_bytes())
    assert parsed is not None
    response, chosen = accept_request(parsed[0], subprotocols=server)
    expected = next((p for p in server if p in client), None)
    assert chosen == expected
    parsed_response = parse_response_head(response.to_bytes())
    assert parsed_response is not None
    assert validate_response(parsed_response[0], key, subprotocols=client) == expected


@given(st.lists(st.tuples(st.text(max_size=30), st.text(max_size=60)), max_size=10))
def test_arbitrary_headers_only_raise_handshake_error(headers: list[tuple[str, str]]) -> None:
    request = make_request(add=headers)
    try:
        response, _ = accept_request(request, subprotocols=["a", "b"])
    except HandshakeError as error:
        assert error.status in (400, 403, 426)
    else:
        assert response.status == 101


@given(st.text(max_size=40), st.text(min_size=1, max_size=40))
def test_arbitrary_origin_and_host_only_403_or_accept(origin: str, host: str) -> None:
    request = make_request(replace={"Host": host}, add=[("Origin", origin)])
    try:
        response, _ = accept_request(request)
    except HandshakeError as error:
        # 400 only for a Host made of whitespace, which is empty once stripped.
        assert error.status == 403 or (error.status == 400 and not host.strip(" \t"))
    else:
        assert response.status == 101
        scheme = origin.strip(" \t").partition("://")[0].lower()
        assert scheme in {"http", "https", "ws", "wss"}


# --------------------------------------------------------- hardening of accept_request (issue 8 §5)


@pytest.mark.parametrize(
    "header",
    [
        ("Content-Length", "5"),
        ("Content-Length", "00x"),
        ("content-length", " 1 "),
        ("Transfer-Encoding", "chunked"),
        ("Transfer-Encoding", "identity"),
    ],
)
def test_request_with_a_body_400(header: tuple[str, str]) -> None:
    # The bytes of a body would be read as WebSocket frames here, as a body by a proxy.
    error = rejected(make_request(add=[header]))
    assert error.status == 400
    assert "request body" in error.reason


def test_request_with_content_length_0_is_accepted() -> None:
    response, _ = accept_request(make_request(add=[("Content-Length", "0")]))
    assert response.status == 101


@pytest.mark.parametrize("target", ["/a\tb", "/a\x0bb", "/a\x7f", "/a\x00", "/a b", "/\x1b[2J"])
def test_control_bytes_in_the_target_400(target: str) -> None:
    request = make_request()
    request.target = target
    error = rejected(request)
    assert error.status == 400
    assert "control characters" in error.reason
    assert str(error).isprintable()


@pytest.mark.parametrize("offer", ["a,\r\n b", "chat, \x1b[31m", "a b", "x/y"])
def test_offered_subprotocols_must_be_tokens_400(offer: str) -> None:
    # An obs-folded header as http.server hands it over: the selector never sees garbage, and
    # the client gets 400 instead of a ValueError dropping it without an answer.
    calls: list[list[str]] = []

    def selector(offered: list[str]) -> str | None:
        calls.append(offered)
        return offered[-1]

    error = rejected(offering(offer), subprotocols=selector)
    assert error.status == 400
    assert "Sec-WebSocket-Protocol" in error.reason
    assert calls == []


@given(st.lists(st.tuples(st.sampled_from(["Sec-WebSocket-Protocol", "X"]), st.text(max_size=20))))
def test_any_offer_with_a_selector_gives_a_writable_101_or_an_error(
    headers: list[tuple[str, str]],
) -> None:
    try:
        response, _ = accept_request(make_request(add=headers), subprotocols=lambda o: o[0])
    except HandshakeError as error:
        assert error.status == 400
        return
    response.to_bytes()  # never a ValueError while answering


# ------------------------------------------------------------ validators of the options


def test_check_extra_headers() -> None:
    assert check_extra_headers(None) == ()
    assert check_extra_headers({"X-A": "1", "X-B": "\tb é"}) == (("X-A", "1"), ("X-B", "\tb é"))
    assert check_extra_headers([("Set-Cookie", "a=1")]) == (("Set-Cookie", "a=1"),)
    # A client's request may carry Authorization; a response header set is another matter.
    assert check_extra_headers({"Authorization": "x"}, request=True) == (("Authorization", "x"),)


@pytest.mark.parametrize(
    ("headers", "what"),
    [
        ([("X-A", "1\r\nX-B: 2")], "CR, LF or NUL"),
        ([("X-A", "1\nX")], "CR, LF or NUL"),
        ([("X-A", "a\x00")], "CR, LF or NUL"),
        ([("X-A", "a\x1b[2J")], "control character"),
        ([("X-A", "a\x7f")], "control character"),
        ([("X-A", "\u20ac")], "ISO-8859-1"),
        ([("X A", "1")], "header name"),
        ([("X\u00e9", "1")], "header name"),
        ([("", "1")], "header name"),
        ([("X:", "1")], "header name"),
        ([("Sec-WebSocket-Accept", "x")], "set by the handshake"),
        ([("upgrade", "x")], "set by the handshake"),
    ],
)
def test_check_extra_headers_refuses(headers: list[tuple[str, str]], what: str) -> None:
    with pytest.raises(ValueError, match=what):
        check_extra_headers(headers)


def test_check_extra_headers_reserved_sets() -> None:
    for name in RESERVED_RESPONSE_HEADERS:
        with pytest.raises(ValueError):
            check_extra_headers([(name.title(), "x")])
    for name in RESERVED_REQUEST_HEADERS:
        with pytest.raises(ValueError):
            check_extra_headers([(name.upper(), "x")], request=True)
    # Host and Origin belong to requests only: a response may carry them.
    assert check_extra_headers([("Origin", "x")]) == (("Origin", "x"),)


def test_check_extra_headers_types() -> None:
    with pytest.raises(TypeError):
        check_extra_headers("X-A: 1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        check_extra_headers([("X-A", 1)])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        check_extra_headers([("X-A", "1", "2")])  # type: ignore[list-item]


# RFC 9110 §5.6.2: a token; §5.5: a field value of visible ISO-8859-1 characters, SP and HTAB.
_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_VALUE_CHARS = st.characters(codec="latin-1", exclude_categories=["Cc"], include_characters="\t")
_VALID_NAMES = st.text(_TOKEN_CHARS, min_size=1, max_size=20).filter(
    lambda name: name.lower() not in RESERVED_RESPONSE_HEADERS
)


@given(_VALID_NAMES, st.text(_VALUE_CHARS, max_size=40))
def test_check_extra_headers_accepts_every_valid_header_and_it_is_writable(
    name: str, value: str
) -> None:
    """Every valid header is accepted as given (the strategy generates only valid ones, so
    every example reaches the property), and what passes can be written into a 101 head."""
    assert check_extra_headers([(name, value)]) == ((name, value),)
    head = Response(101, "Switching Protocols", [(name, value)]).to_bytes()
    assert f"\r\n{name}: {value}".encode("latin-1") in head


@given(_VALID_NAMES, st.text(_VALUE_CHARS, max_size=20), st.sampled_from("\r\n\x00\x7f\x1b"))
def test_check_extra_headers_refuses_a_control_character_anywhere(
    name: str, value: str, control: str
) -> None:
    """Header injection: a control character (CR, LF, NUL, DEL, ESC) anywhere in a value that
    is otherwise valid is refused."""
    for cut in sorted({0, len(value) // 2, len(value)}):
        with pytest.raises(ValueError):
            check_extra_headers([(name, value[:cut] + control + value[cut:])])


def test_check_origins() -> None:
    assert check_origins(None) is None
    origins = ["https://example.com", "http://127.0.0.1:8080", "http://[::1]:9", "null"]
    assert check_origins(origins) == tuple(origins)
    assert check_origins(iter(["chrome-extension://abc"])) == ("chrome-extension://abc",)


@pytest.mark.parametrize(
    "origin",
    [
        "*",
        "https://example.com/",
        "https://example.com/path",
        "example.com",
        "https://",
        "https://user@example.com",
        "https://example.com:99999",
        "https://b\u00fccher.example",
        "https://example.com\r\nX: 1",
        "",
    ],
)
def test_check_origins_refuses(origin: str) -> None:
    with pytest.raises(ValueError):
        check_origins([origin])


def test_check_origins_refuses_a_string() -> None:
    with pytest.raises(TypeError, match="not a single string"):
        check_origins("https://example.com")


def test_check_subprotocols() -> None:
    def selector(offered: list[str]) -> str | None:
        return None

    assert check_subprotocols(None) is None
    assert check_subprotocols(selector) is selector
    assert check_subprotocols(["chat", "v2.chat"]) == ("chat", "v2.chat")
    with pytest.raises(ValueError, match="token"):
        check_subprotocols(["a b"])
    with pytest.raises(ValueError, match="unique"):
        check_subprotocols(["a", "a"])


def test_single_string_subprotocols_one_message_everywhere() -> None:
    messages = set()
    for call in (
        lambda: check_subprotocols("chat"),
        lambda: build_request("h", "/", subprotocols="chat"),
        lambda: accept_request(offering("chat"), subprotocols="chat"),
    ):
        with pytest.raises(TypeError) as info:
            call()
        messages.add(str(info.value))
    assert messages == {"subprotocols must be a sequence of strings, not a single string"}


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"extra_headers": [("X", "\u20ac")]}, "ISO-8859-1"),
        ({"extra_headers": [("X", "a\x1bb")]}, "control character"),
        ({"origin": "https://b\u00fccher.example"}, "ASCII"),
        ({"origin": "https://x\x1b"}, "ASCII"),
    ],
)
def test_build_request_refuses_what_it_could_not_write(
    kwargs: dict[str, object], what: str
) -> None:
    # Refused when the request is built, before a client opens any connection (issue 8 §5).
    with pytest.raises(ValueError, match=what):
        build_request("h", "/", **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------- client: refusals


def test_invalid_101_is_invalid_handshake() -> None:
    error = invalid(good_response("x" * 22 + "=="))
    assert isinstance(error, InvalidHandshake)
    assert error.status == 101


def test_refusal_error() -> None:
    error = refusal_error(Response(403, "Forbidden", [], b"origin not allowed\nmore"))
    assert isinstance(error, HandshakeRejected)
    assert (error.status, error.reason) == (403, "origin not allowed")
    html = refusal_error(Response(500, "Oops", [], b"<html>boom</html>"))
    assert html.reason == "the server refused the WebSocket upgrade"
    escape = refusal_error(Response(400, "Bad", [], b"\x1b[2Jcleared"))
    assert escape.reason == "the server refused the WebSocket upgrade"
    moved = refusal_error(Response(302, "Found", [("Location", "ws://x/\x1b[31m")], b""))
    assert moved.reason == (
        "redirected to ws://x/\\x1b[31m (pass follow_redirects=True to follow redirects)"
    )


@given(st.integers(100, 999), st.binary(max_size=300), st.text(max_size=50))
def test_refusal_message_is_printable(status: int, body: bytes, location: str) -> None:
    response = Response(status, "X", [("Location", location)], body)
    error = refusal_error(response)
    assert str(error).isprintable()
    assert error.reason.isprintable()
