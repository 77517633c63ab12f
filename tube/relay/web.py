"""The relay's plain HTTP: the page and its assets, allocation, health and metrics.

Everything that is not a WebSocket upgrade on ``/v1/relay`` is answered here, through the
asyncio server's ``process_request``:

=========================  ==================================================================
``GET /``                  the page (``static/index.html``, its asset names filled in)
``GET /s/<hash>/<path>``   a static file under its content hash, cached as ``immutable``
``GET /sw.js``             the page's service worker at a fixed URL (its scope is ``/``)
``POST /v1/nameplates``    ``201 {"nameplate": "4821", "expires_in": 600}``, or 429/503
``OPTIONS /v1/nameplates`` the CORS preflight: 204 for an origin in ``--allow-origin``, else 403
``GET /healthz``           ``200 ok`` (for load balancers)
``GET /metrics``           Prometheus text (only with ``--metrics``); aggregates only
``GET /v1/relay[/N]``      ``None``: the upgrade goes on (the library checks Origin: 403)
=========================  ==================================================================

Asset names carry the first 16 hex digits of the file's SHA-256 and the page refers to them
with Subresource Integrity, so a copy of the page can be checked against published hashes
(relay-design §1, §6). HTML goes out with a strict Content-Security-Policy.

The page's JavaScript modules (``static/js/*.js``, and the vendored ``static/vendor/*.js``)
import each other by bare names (``tube/peer.js``, ``tube/vendor/qrcodegen.js``): every module
lives under its own hash, so a relative import could not find its neighbour. The page carries
an import map from those names to the hashed URLs, with an ``integrity`` entry for each, and a
``modulepreload`` link per module. The import map is an inline script, so the CSP allows exactly
it by its SHA-256 and nothing else inline.

CORS: a page on another origin listed in ``--allow-origin`` (a copy of the page, or another
relay's page with ``?relay=``) may read the answer of ``POST /v1/nameplates``: the answer
carries ``Access-Control-Allow-Origin`` for that origin only (``Vary: Origin``), and exposes
``Retry-After``. No other path answers CORS, and no other origin is told anything; the
WebSocket's own Origin check (403 at the upgrade) uses the same list.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import mimetypes
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..websocket.aio import http_response
from ..websocket.core.http import Request, Response, get_header
from .core import Allocation

__all__ = [
    "HTML_HEADERS",
    "Assets",
    "client_address",
    "nameplate_of",
    "rate_key",
]

#: Headers of every HTML page (relay-design §1: the served-JavaScript caveat).
HTML_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'self'; connect-src 'self' ws: wss: http: https:; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-cache"),
)

_COMMON = (("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"))

#: The service worker's fixed URL: a worker's scope cannot be wider than its own folder, and
#: the download URLs it answers (``/dl/<id>``) sit at the root.
SERVICE_WORKER = "sw.js"
# The page's ES modules, imported by bare name through the import map: ``js/x.js`` as
# ``tube/x.js``, and the vendored ones (``vendor/x.js``, see its README.md) as ``tube/vendor/x.js``.
_MODULE_DIRS = {"js/": "tube/", "vendor/": "tube/vendor/"}

_RELAY_PATH = re.compile(r"/v1/relay(?:/([1-9][0-9]{2,7}))?")
_TEMPLATE = re.compile(r"\{\{(asset|sri):([A-Za-z0-9_./-]+)\}\}")
_GENERATED = re.compile(r"\{\{(importmap|modulepreload)\}\}")

STATIC_DIR = Path(__file__).resolve().parent / "static"


def nameplate_of(target: str) -> tuple[bool, str | None]:
    """``(True, nameplate)`` for ``/v1/relay/<nameplate>``, ``(True, None)`` for ``/v1/relay``,
    ``(False, None)`` for any other target (the query string is ignored)."""
    match = _RELAY_PATH.fullmatch(target.partition("?")[0])
    if match is None:
        return False, None
    return True, match.group(1)


def client_address(
    request: Request, trusted_proxies: frozenset[str], header: str = "X-Forwarded-For"
) -> str:
    """The client's address: the TCP peer, unless that peer is a proxy we trust.

    Only when the connection comes from an address in ``trusted_proxies`` does ``header``
    count, and then only its right-most entry: the address that proxy saw (the entries before
    it were written by whoever connected to the proxy, so anyone could forge them).
    """
    peer = request.remote_address
    address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
    address = _canonical(address) or address
    if address in trusted_proxies:
        value = get_header(request.headers, header)
        if value:
            forwarded = _canonical(value.rsplit(",", 1)[-1].strip())
            if forwarded is not None:
                return forwarded
    return address


def _canonical(text: str) -> str | None:
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def rate_key(address: str) -> str:
    """The key rate limits count under: an IPv4 address, or an IPv6 address's /64 network.

    One IPv6 subscriber usually holds a whole /64: counting single addresses would let one
    person claim codes from 2^64 addresses.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return address


@dataclass(frozen=True, slots=True)
class _Asset:
    url: str
    body: bytes
    content_type: str
    integrity: str


class Assets:
    """The static files, read and hashed once, served under content-hashed names.

    ``index.html`` is a template: ``{{asset:app.js}}`` becomes the file's hashed URL and
    ``{{sri:app.js}}`` its ``sha384-…`` integrity value; ``{{importmap}}`` the import map of the
    modules under ``js/`` and ``{{modulepreload}}`` their preload links. :attr:`html_headers`
    are the page's headers, its CSP allowing the import map by hash.
    """

    def __init__(self, root: Path = STATIC_DIR) -> None:
        self.root = root
        self._by_url: dict[str, _Asset] = {}
        self._by_name: dict[str, _Asset] = {}
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            name = path.relative_to(root).as_posix()
            if name == "index.html":
                continue
            body = path.read_bytes()
            digest = hashlib.sha256(body).hexdigest()[:16]
            integrity = "sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode()
            asset = _Asset(f"/s/{digest}/{name}", body, _content_type(name), integrity)
            self._by_url[asset.url] = asset
            self._by_name[name] = asset
        modules = sorted((name, asset) for name, asset in self._by_name.items() if _is_module(name))
        import_map = json.dumps(
            {
                "imports": {_module_name(name): asset.url for name, asset in modules},
                "integrity": {asset.url: asset.integrity for _, asset in modules},
            },
            indent=1,
            sort_keys=True,
        )
        generated = {
            "importmap": f'<script type="importmap">{import_map}</script>',
            "modulepreload": "\n".join(
                f'<link rel="modulepreload" href="{asset.url}" integrity="{asset.integrity}">'
                for _, asset in modules
            ),
        }
        template = (root / "index.html").read_text(encoding="utf-8")
        page = _TEMPLATE.sub(self._fill, template)
        self.index = _GENERATED.sub(lambda m: generated[m.group(1)], page).encode("utf-8")
        script_hash = base64.b64encode(hashlib.sha256(import_map.encode()).digest()).decode()
        #: The page's headers: HTML_HEADERS with the import map's hash allowed as a script.
        self.html_headers = tuple(
            (name, f"{value}; script-src 'self' 'sha256-{script_hash}'")
            if name == "Content-Security-Policy"
            else (name, value)
            for name, value in HTML_HEADERS
        )

    def _fill(self, match: re.Match[str]) -> str:
        asset = self._by_name.get(match.group(2))
        if asset is None:
            raise ValueError(f"index.html refers to a missing static file: {match.group(2)}")
        return asset.url if match.group(1) == "asset" else asset.integrity

    def get(self, path: str) -> _Asset | None:
        """The asset served at ``path`` (``/s/<hash>/<name>``), or None."""
        return self._by_url.get(path)

    def service_worker(self) -> bytes | None:
        """The service worker's source, served at ``/sw.js``, or None if there is none."""
        asset = self._by_name.get(SERVICE_WORKER)
        return asset.body if asset is not None else None

    def urls(self) -> Iterable[str]:
        """Every asset URL (for tests and published hashes)."""
        return self._by_url.keys()


def _is_module(name: str) -> bool:
    folder, _, file = name.rpartition("/")
    return f"{folder}/" in _MODULE_DIRS and file.endswith(".js")


def _module_name(name: str) -> str:
    """The bare name a module is imported by (``js/peer.js`` → ``tube/peer.js``)."""
    folder, _, file = name.rpartition("/")
    return _MODULE_DIRS[f"{folder}/"] + file


def _content_type(name: str) -> str:
    if name.endswith((".js", ".mjs")):
        return "text/javascript; charset=utf-8"
    if name.endswith(".txt"):
        return "text/plain; charset=utf-8"
    guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed


def _strip_body(response: Response, method: str) -> Response:
    if method == "HEAD":
        return Response(response.status, response.reason, response.headers, b"")
    return response


class Web:
    """``process_request`` of the relay's server: every plain HTTP answer.

    Args:
        allocate: ``allocate(request)`` → an :class:`~tube.relay.core.Allocation` or a
            refusal; awaited (the registry may be asked).
        metrics: ``metrics()`` → the Prometheus text, or None when ``/metrics`` is off.
        assets: The static files.
        allowed_origins: Web origins besides the relay's own (``--allow-origin``) whose pages
            may allocate: CORS on ``/v1/nameplates`` for them only.
    """

    def __init__(
        self,
        allocate: Callable[[Request], Any],
        metrics: Callable[[], str] | None,
        assets: Assets,
        *,
        allowed_origins: Iterable[str] = (),
    ) -> None:
        self._allocate = allocate
        self._metrics = metrics
        self.assets = assets
        # Origins are compared as the library's Origin check does: case-insensitively.
        self._origins = frozenset(origin.lower() for origin in allowed_origins)

    async def __call__(self, request: Request) -> Response | None:
        """Answer ``request``, or return None to let a relay upgrade go on."""
        path = request.target.partition("?")[0]
        method = request.method
        is_relay, _ = nameplate_of(request.target)
        if is_relay:
            if method != "GET":
                return _plain(405, "use GET with a WebSocket upgrade\n", [("Allow", "GET")])
            if not get_header(request.headers, "Upgrade"):
                return _plain(
                    426,
                    "this is a WebSocket endpoint (tube.relay.v1)\n",
                    [("Upgrade", "websocket")],
                )
            return None
        if path == "/v1/nameplates":
            cors = self._cors(request)
            if method == "OPTIONS":
                return self._preflight(request, cors)
            if method != "POST":
                return _plain(405, "use POST to get a nameplate\n", [("Allow", "POST, OPTIONS")])
            return _with_headers(await self._allocation(request), cors)
        if method not in ("GET", "HEAD"):
            return _plain(405, "method not allowed\n", [("Allow", "GET, HEAD")])
        if path == "/" or path == "/index.html":
            response = http_response(
                200,
                self.assets.index,
                headers=self.assets.html_headers,
                content_type="text/html; charset=utf-8",
            )
            return _strip_body(response, method)
        if path == "/sw.js":
            worker = self.assets.service_worker()
            if worker is not None:
                # Not immutable: a new page must be able to replace the worker at this URL.
                headers = (*_COMMON, ("Cache-Control", "no-cache"))
                response = http_response(
                    200, worker, headers=headers, content_type="text/javascript; charset=utf-8"
                )
                return _strip_body(response, method)
        if path == "/healthz":
            return _strip_body(_plain(200, "ok\n"), method)
        if path == "/metrics" and self._metrics is not None:
            body = self._metrics()
            response = http_response(
                200, body, headers=_COMMON, content_type="text/plain; version=0.0.4; charset=utf-8"
            )
            return _strip_body(response, method)
        asset = self.assets.get(path)
        if asset is not None:
            headers = (*_COMMON, ("Cache-Control", "public, max-age=31536000, immutable"))
            response = http_response(
                200, asset.body, headers=headers, content_type=asset.content_type
            )
            return _strip_body(response, method)
        return _strip_body(_plain(404, "not found\n"), method)

    def _cors(self, request: Request) -> tuple[tuple[str, str], ...]:
        """The CORS headers of an answer on ``/v1/nameplates``: some only for an allowed
        ``Origin``; ``Vary: Origin`` always, since the answer depends on it (caches)."""
        origin = get_header(request.headers, "Origin")
        if origin is None or origin.lower() not in self._origins:
            return (("Vary", "Origin"),)
        return (
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Expose-Headers", "Retry-After"),
            ("Vary", "Origin"),
        )

    def _preflight(self, request: Request, cors: tuple[tuple[str, str], ...]) -> Response:
        """Fetch's CORS preflight (``OPTIONS`` with ``Access-Control-Request-Method``): 204 for
        an allowed origin asking for POST, 403 otherwise."""
        wanted = get_header(request.headers, "Access-Control-Request-Method")
        if len(cors) == 1 or wanted != "POST":
            return _plain(403, "cross-origin allocation not allowed\n", [("Vary", "Origin")])
        headers = (
            *cors,
            ("Access-Control-Allow-Methods", "POST"),
            ("Access-Control-Max-Age", "600"),
        )
        # No Access-Control-Allow-Headers: the page's POST has no headers of its own, and the
        # browser refuses any other a request would ask for.
        return http_response(204, b"", headers=(*_COMMON, *headers))

    async def _allocation(self, request: Request) -> Response:
        length = get_header(request.headers, "Content-Length")
        if get_header(request.headers, "Transfer-Encoding") or (length not in (None, "0")):
            return _plain(400, "POST /v1/nameplates takes an empty body\n")
        result = await self._allocate(request)
        if isinstance(result, Allocation):
            body = json.dumps(
                {"nameplate": result.nameplate, "expires_in": round(result.expires_in)}
            )
            return http_response(
                201,
                body + "\n",
                headers=(*_COMMON, ("Cache-Control", "no-store")),
                content_type="application/json",
            )
        retry = str(max(1, round(result.retry_after)))
        body = json.dumps({"error": result.reason, "retry_after": int(retry)})
        return http_response(
            result.status,
            body + "\n",
            headers=(*_COMMON, ("Retry-After", retry), ("Cache-Control", "no-store")),
            content_type="application/json",
        )


def _with_headers(response: Response, headers: Iterable[tuple[str, str]]) -> Response:
    return Response(response.status, response.reason, [*response.headers, *headers], response.body)


def _plain(status: int, text: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return http_response(status, text, headers=(*_COMMON, *headers))
