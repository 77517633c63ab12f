"""The handshake's edges that mutation testing found untested (issue 24, docs/mutation.md).

Each test names what a surviving mutant changed: a port bound, a cut at 200 characters of the
peer's text in a message, the headers a refusal carries, where a redirect's scheme is read.
"""

from __future__ import annotations

import pytest

from tube.websocket.core.client_handshake import refusal_error
from tube.websocket.core.errors import HandshakeError, HandshakeRejected, InvalidHandshake
from tube.websocket.core.handshake import accept_request, rejection_response
from tube.websocket.core.handshake_checks import check_origins
from tube.websocket.core.http import Request, Response
from tube.websocket.core.uri import MAX_REDIRECTS, parse_uri, redirect_target

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def request(host: str = "example.com", *extra: tuple[str, str]) -> Request:
    headers = [
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", KEY),
        ("Sec-WebSocket-Version", "13"),
        *extra,
    ]
    return Request("GET", "/", "HTTP/1.1", headers)


def refused(req: Request) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        accept_request(req)
    return info.value


# ------------------------------------------------------------------ server: same-host origin


def test_same_host_origin_with_the_highest_port_is_accepted() -> None:
    response, _ = accept_request(
        request("example.com:65535", ("Origin", "http://example.com:65535"))
    )
    assert response.status == 101


def test_same_host_origin_with_a_port_above_65535_is_refused() -> None:
    # Host and Origin agree, but 65536 is no port: neither parses, so they do not match.
    error = refused(request("example.com:65536", ("Origin", "http://example.com:65536")))
    assert error.status == 403


def test_refused_origin_is_cut_to_200_characters_in_the_reason() -> None:
    origin = "http://" + "a" * 300 + ".example"
    error = refused(request("example.com", ("Origin", origin)))
    assert error.status == 403
    assert error.reason == f"origin not allowed: {origin[:200]}"


# ------------------------------------------------------------------ server: what arrived


def test_a_missing_upgrade_header_is_described_as_none() -> None:
    req = request()
    req.headers[:] = [h for h in req.headers if h[0] != "Upgrade"]
    error = refused(req)
    assert error.reason == "expected an Upgrade header with 'websocket', got none"


def test_several_upgrade_headers_are_listed_comma_separated() -> None:
    req = request("example.com", ("Upgrade", "h2c"), ("Upgrade", "tls"))
    req.headers.remove(("Upgrade", "websocket"))
    error = refused(req)
    assert error.reason == "expected an Upgrade header with 'websocket', got 'h2c, tls'"


def test_rejection_response_refuses_an_error_without_status_and_says_why() -> None:
    error = InvalidHandshake(None, "no HTTP response")
    with pytest.raises(ValueError, match="without status cannot be answered: no HTTP response"):
        rejection_response(error)


# ------------------------------------------------------------------ allow-listed origins


def test_allowed_origin_ports_end_at_65535() -> None:
    assert check_origins(["http://example.com:65535"]) == ("http://example.com:65535",)
    with pytest.raises(ValueError, match="invalid origin"):
        check_origins(["http://example.com:65536"])


def test_allowed_ipv6_origin_port_is_read_after_the_bracket() -> None:
    assert check_origins(["http://[::1]:65535"]) == ("http://[::1]:65535",)
    with pytest.raises(ValueError, match="invalid origin"):
        check_origins(["http://[::1]:65536"])


# ------------------------------------------------------------------ client: refusals


def test_a_location_on_a_refusal_that_is_no_redirect_is_not_called_a_redirect() -> None:
    response = Response(403, "Forbidden", [("Location", "/elsewhere")], b"go away\n")
    error = refusal_error(response)
    assert error.reason == "go away"


def test_a_redirect_location_is_cut_to_200_characters() -> None:
    location = "ws://example.com/" + "p" * 300
    error = refusal_error(Response(302, "Found", [("Location", location)], b""))
    assert error.reason == (
        f"redirected to {location[:200]}... (pass follow_redirects=True to follow redirects)"
    )


def test_a_refusal_explanation_is_its_first_line_cut_to_200_characters() -> None:
    error = refusal_error(Response(403, "Forbidden", [], b"x" * 300 + b"\nsecond line"))
    assert error.reason == "x" * 200


def test_a_refusal_without_body_says_the_upgrade_was_refused() -> None:
    for body in (b"", b"\xff\xfe binary", b"<html>no</html>"):
        error = refusal_error(Response(403, "Forbidden", [], body))
        assert error.reason == "the server refused the WebSocket upgrade"


# ------------------------------------------------------------------ client: redirects


def redirect(location: str | None, *, status: int = 302, redirects: int = 0) -> HandshakeRejected:
    headers = [] if location is None else [("Location", location), ("X-Trace", "1")]
    response = Response(status, "Found", headers, b"moved")
    with pytest.raises(HandshakeRejected) as info:
        redirect_target(parse_uri("wss://example.com/a"), response, redirects=redirects)
    assert info.value.status == status
    assert info.value.headers == headers
    assert info.value.body == b"moved"
    return info.value


def test_a_refused_redirect_carries_the_response_headers_and_body() -> None:
    assert redirect(None).reason == "cannot follow the redirect: expected one Location, got 0"
    assert redirect("ws://example.com/").reason == (
        "refusing to follow a redirect from wss:// to ws:// (ws://example.com/)"
    )


def test_a_refused_redirect_shows_its_location_cut_to_200_characters() -> None:
    location = "wss://example.com/" + "p" * 300
    error = redirect(location, redirects=MAX_REDIRECTS)
    assert error.reason == (
        f"too many redirects (more than {MAX_REDIRECTS}), the last to {location[:200]}..."
    )


def test_a_location_urllib_refuses_is_explained() -> None:
    error = redirect("https://[::1")
    assert error.reason == "cannot follow the redirect to https://[::1: Invalid IPv6 URL"


def test_an_http_location_is_read_up_to_its_first_scheme_separator() -> None:
    response = Response(302, "Found", [("Location", "https://example.com/b?next=ws://x")], b"")
    target = redirect_target(parse_uri("wss://example.com/a"), response, redirects=0)
    assert (target.secure, target.host, target.resource) == (True, "example.com", "/b?next=ws://x")
