"""The testee client of scripts/autobahn: Tube's client against Autobahn's fuzzingserver.

    autobahn_client.py [--offer {browser,default}] {threads,asyncio} URL AGENT

Asks the fuzzingserver at URL (``ws://127.0.0.1:PORT``) how many cases it has
(``/getCaseCount``), runs each one (``/runCase?case=N&agent=AGENT``) by echoing every message,
text as text and binary as binary, until the server closes, then asks the server to write its
reports (``/updateReports?agent=AGENT``). ``threads`` uses ``tube.websocket.connect``,
``asyncio`` uses ``tube.websocket.aio.connect``; both accept messages up to
:data:`MAX_MESSAGE_SIZE`, as the echo servers of scripts/autobahn do, and offer permessage-deflate:

- ``--offer browser`` (the default): ``permessage-deflate; client_max_window_bits``, the offer of
  browsers and of Autobahn's own testee client, which the fuzzingserver's cases 13.x are written
  for (``DeflateOptions`` with both window sizes at 15).
- ``--offer default``: Tube's default offer (``server_max_window_bits=12;
  client_max_window_bits=12``). The fuzzingserver answers cases 13.4.x and 13.6.x with
  ``client_max_window_bits=15`` whatever was offered, which RFC 7692 §7.1.2.2 forbids above an
  offered value: Tube's client then fails the handshake and those 36 cases are FAILED
  (docs/conformance.md).

A case whose connection fails (a refused handshake, an error while echoing) is logged to standard
error and the run goes on: the server judges every case, from what it saw on the wire. Exits 0
once the reports were requested, 1 if the case count could not be read.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any
from urllib.parse import quote

from tube.websocket import ConnectionClosed, DeflateOptions, WebSocketError, aio, connect

#: The largest message echoed, in bytes: above the 16 MiB of Autobahn's cases 9.1.6 and 9.2.6.
MAX_MESSAGE_SIZE = 32 * 1024 * 1024
#: Seconds allowed for one case's opening handshake.
OPEN_TIMEOUT = 30.0
OFFERS: dict[str, Any] = {
    "browser": DeflateOptions(server_max_window_bits=15, client_max_window_bits=15),
    "default": "deflate",
}
OPTIONS: dict[str, Any] = {"max_message_size": MAX_MESSAGE_SIZE, "ping_interval": None}


def say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def run_threads(url: str, agent: str) -> int:
    """Every case on the threaded client, one connection after another."""
    with connect(f"{url}/getCaseCount", open_timeout=OPEN_TIMEOUT, **OPTIONS) as connection:
        count = int(connection.incoming.get(timeout=OPEN_TIMEOUT))
    say(f"{count} cases")
    for case in range(1, count + 1):
        try:
            with (
                connect(
                    f"{url}/runCase?case={case}&agent={quote(agent)}",
                    open_timeout=OPEN_TIMEOUT,
                    **OPTIONS,
                ) as connection,
                contextlib.suppress(ConnectionClosed),
            ):
                for message in connection.incoming:
                    connection.send(message)
        except (WebSocketError, OSError) as error:
            say(f"case {case}: {type(error).__name__}: {error}")
    with connect(f"{url}/updateReports?agent={quote(agent)}", open_timeout=OPEN_TIMEOUT):
        pass
    return 0


async def run_asyncio(url: str, agent: str) -> int:
    """Every case on the asyncio client, one connection after another."""
    async with aio.connect(
        f"{url}/getCaseCount", open_timeout=OPEN_TIMEOUT, **OPTIONS
    ) as connection:
        count = int(await connection.incoming.get(timeout=OPEN_TIMEOUT))
    say(f"{count} cases")
    for case in range(1, count + 1):
        try:
            async with aio.connect(
                f"{url}/runCase?case={case}&agent={quote(agent)}",
                open_timeout=OPEN_TIMEOUT,
                **OPTIONS,
            ) as connection:
                with contextlib.suppress(ConnectionClosed):
                    async for message in connection.incoming:
                        await connection.send(message)
        except (WebSocketError, OSError) as error:
            say(f"case {case}: {type(error).__name__}: {error}")
    async with aio.connect(f"{url}/updateReports?agent={quote(agent)}", open_timeout=OPEN_TIMEOUT):
        pass
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--offer", choices=sorted(OFFERS), default="browser")
    parser.add_argument("transport", choices=["threads", "asyncio"])
    parser.add_argument("url", help="the fuzzingserver, ws://127.0.0.1:PORT")
    parser.add_argument("agent", help="the name the reports give this client")
    args = parser.parse_args(argv)
    OPTIONS["compression"] = OFFERS[args.offer]
    if args.transport == "threads":
        return run_threads(args.url, args.agent)
    return asyncio.run(run_asyncio(args.url, args.agent))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
