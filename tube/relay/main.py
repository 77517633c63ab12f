"""``python -m tube``: run the relay and its page; ``send`` and ``receive`` run the peer.

``python -m tube [serve] [--host H] [--port P] ...`` starts the relay and prints
``Tube relay on http://H:P/`` once it listens. SIGTERM and Ctrl-C drain it: every WebSocket is
closed with 1001 (going away) and the process exits 0. ``python -m tube send FILE`` and
``python -m tube receive CODE`` are the command-line peer (:mod:`tube.relay.cli`, which needs
the ``relay-cli`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import ssl
import sys
from collections.abc import Sequence
from typing import Any

from ..websocket import keep_freed_memory
from .limits import Limits

__all__ = ["main", "serve_main"]

logger = logging.getLogger("tube.relay")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tube",
        description=(
            "Tube: an end-to-end-encrypted file relay. Runs the relay and its page; open the "
            "printed URL in two browsers, or use 'python -m tube send FILE' and "
            "'python -m tube receive CODE'."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    parser.add_argument("--certfile", "--tls-cert", help="TLS certificate (PEM): serve https/wss")
    parser.add_argument("--keyfile", "--tls-key", help="TLS private key (PEM)")
    parser.add_argument(
        "--trust-proxy",
        action="append",
        default=[],
        metavar="ADDR",
        help="a proxy whose forwarded client address counts (repeatable)",
    )
    parser.add_argument(
        "--client-ip-header",
        default="X-Forwarded-For",
        help="the header a trusted proxy puts the client address in (right-most entry counts)",
    )
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web origin allowed besides the relay's own (repeatable), e.g. https://example.com",
    )
    parser.add_argument("--metrics", action="store_true", help="serve /metrics (Prometheus)")
    parser.add_argument(
        "--max-bytes", type=int, default=Limits().max_bytes, help="bytes one pair may forward"
    )
    parser.add_argument(
        "--idle", type=float, default=Limits().idle_s, help="seconds a stalled receiver may hold"
    )
    parser.add_argument(
        "--wait", type=float, default=Limits().wait_s, help="seconds a code waits for a receiver"
    )
    parser.add_argument(
        "--grace", type=float, default=Limits().grace_s, help="seconds a dropped side may resume"
    )
    parser.add_argument(
        "--pairs-per-ip", type=int, default=Limits().pairs_per_ip, help="transfers per address"
    )
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=(
            "set any field of tube.relay.limits.Limits (repeatable), e.g. "
            "--limit claims_per_minute=60 --limit max_pairs=2000"
        ),
    )
    parser.add_argument("--reuse-port", action="store_true", help="share the port (SO_REUSEPORT)")
    parser.add_argument(
        "--redis",
        default=os.environ.get("TUBE_REDIS") or None,
        metavar="URL",
        help=(
            "share nameplates and resume ids with other instances through this Redis "
            "(redis://host:6379/0; default: $TUBE_REDIS; needs the redis extra)"
        ),
    )
    parser.add_argument(
        "--instance-url",
        default=os.environ.get("TUBE_INSTANCE_URL") or None,
        metavar="URL",
        help=(
            "this instance's own address for redirects from the others, e.g. "
            "wss://relay-2.internal:8443 (default: $TUBE_INSTANCE_URL, else ws://HOST:PORT)"
        ),
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="logging level (default: warning)",
    )
    return parser


def serve_main(argv: Sequence[str]) -> int:
    """Run the relay until SIGTERM or Ctrl-C; the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    from .server import RelayConfig  # imported here: `--help` stays light

    try:
        limits = Limits(
            max_bytes=args.max_bytes,
            idle_s=args.idle,
            wait_s=args.wait,
            grace_s=args.grace,
            pairs_per_ip=args.pairs_per_ip,
        ).replace(**_limit_overrides(args.limit))
    except ValueError as error:
        parser.error(str(error))
    context = None
    if args.certfile or args.keyfile:
        if not (args.certfile and args.keyfile):
            parser.error("--certfile and --keyfile go together")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(args.certfile, args.keyfile)
        except (OSError, ssl.SSLError) as error:
            parser.exit(2, f"python -m tube: cannot load the TLS certificate: {error}\n")
    origins = tuple(args.allow_origin)
    config = RelayConfig(
        host=args.host,
        port=args.port,
        ssl=context,
        trusted_proxies=frozenset(args.trust_proxy),
        client_ip_header=args.client_ip_header,
        allowed_origins=origins,
        metrics=args.metrics,
        limits=limits,
        reuse_port=args.reuse_port,
    )
    registry = None
    if args.redis:
        try:
            from .redis_registry import RedisRegistry

            registry = RedisRegistry(args.redis, args.instance_url or "")
        except ImportError:
            parser.exit(
                2,
                "python -m tube: --redis needs the redis package: "
                "pip install 'tube-websocket[redis]'\n",
            )
        except ValueError as error:  # a malformed URL
            parser.error(f"--redis: {error}")
    # Every chunk forwarded is a new 256 KiB bytes object: keep freed memory (up to 16 MiB)
    # for the next one instead of faulting fresh pages in for each (glibc; see the function).
    keep_freed_memory(16 * 1024 * 1024)
    try:
        return asyncio.run(_run(config, registry))
    except ValueError as error:  # an invalid origin, ...
        parser.exit(2, f"python -m tube: {error}\n")
    except OSError as error:
        parser.exit(1, f"python -m tube: cannot listen on {args.host}:{args.port}: {error}\n")


async def _run(config: object, registry: Any) -> int:
    from .server import RelayConfig, RelayServer

    assert isinstance(config, RelayConfig)
    relay = RelayServer(config, registry=registry)
    await relay.start()
    if registry is not None and not registry.instance:
        scheme = "wss" if config.ssl is not None else "ws"
        registry.instance = f"{scheme}://{_host(config.host)}:{relay.port}"
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    scheme = "https" if config.ssl is not None else "http"
    print(f"Tube relay on {scheme}://{_host(config.host)}:{relay.port}/", flush=True)  # noqa: T201
    try:
        await stop.wait()
    finally:
        logger.info("draining: closing every connection with 1001")
        await relay.close()
    return 0


def _limit_overrides(items: Sequence[str]) -> dict[str, int | float]:
    """``--limit NAME=VALUE`` items as keyword arguments of :class:`Limits`."""
    fields = {field.name: field.type for field in dataclasses.fields(Limits)}
    overrides: dict[str, int | float] = {}
    for item in items:
        name, equals, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not equals or name not in fields:
            known = ", ".join(sorted(fields))
            raise ValueError(f"--limit {item!r}: expected NAME=VALUE, NAME one of {known}")
        kind = fields[name]
        try:
            overrides[name] = float(text) if kind in (float, "float") else int(text)
        except ValueError:
            raise ValueError(f"--limit {item!r}: {text!r} is not a number") from None
    return overrides


def _host(host: str) -> str:
    return host if ":" not in host else f"[{host}]"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tube``: dispatch to the relay, or to the ``send``/``receive`` peer."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in ("send", "receive"):
        from .cli import main as peer_main  # the peer needs the optional crypto extra

        status: int = peer_main(arguments)
        return status
    if arguments and arguments[0] == "serve":
        arguments = arguments[1:]
    return serve_main(arguments)
