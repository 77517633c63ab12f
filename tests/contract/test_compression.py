"""permessage-deflate between two Tube ends, the same on both transports (issue 21): each rule is
one test body, run once per transport through the ``driver`` fixture (its ``serve()`` and
``connect()``).

* ``connect()`` offers compression by default; a server given ``compression="deflate"``
  accepts: both ends then compress, and messages (text, binary, large, uncompressed on request)
  round-trip.
* ``compression=None`` declines: on the client nothing is offered, on the server (its default)
  an offer is left unanswered; the connection then works uncompressed.
"""

from __future__ import annotations

from typing import Any

from ..conftest import RawPeer
from .drivers import Driver

# What a browser offers (and what a raw peer sends here).
OFFER = "permessage-deflate; client_max_window_bits"
MESSAGES: list[str | bytes] = ["compressible " * 10_000, b"\x00" * 100_000, "", "small"]


def negotiated(connection: Any) -> bool:
    """True if ``connection`` runs permessage-deflate (its protocol's codec)."""
    protocol = connection._protocol
    assert protocol is not None
    return protocol._deflate is not None


def round_trip(driver: Driver, client: Any) -> None:
    for message in MESSAGES:
        driver.send(client, message)
        assert driver.get(client) == message
    driver.close(client)
    assert client.close_code == 1000


def answers_the_offer(port: int) -> bool:
    """True if the server's 101 accepts a browser's permessage-deflate offer."""
    with RawPeer(port, headers=[("Sec-WebSocket-Extensions", OFFER)]) as peer:
        accepted = b"\r\nsec-websocket-extensions: permessage-deflate" in peer.response_head.lower()
        peer.send_close()
        peer.expect_eof()
    return accepted


def test_two_tube_ends_negotiate_permessage_deflate(driver: Driver) -> None:
    port = driver.serve(compression="deflate")
    assert answers_the_offer(port)
    client = driver.connect(f"ws://127.0.0.1:{port}/", ping_interval=None)  # offers by default
    assert negotiated(client)
    round_trip(driver, client)  # echoed: the server's handler has its connection
    assert len(driver.accepted) == 2 and negotiated(driver.accepted[1])


def test_a_client_with_compression_none_offers_nothing(driver: Driver) -> None:
    port = driver.serve(compression="deflate")
    client = driver.connect(f"ws://127.0.0.1:{port}/", compression=None, ping_interval=None)
    assert not negotiated(client)
    round_trip(driver, client)
    assert len(driver.accepted) == 1 and not negotiated(driver.accepted[0])


def test_a_server_with_compression_none_declines_the_offer(driver: Driver) -> None:
    port = driver.serve()  # compression=None, a server's default
    assert not answers_the_offer(port)
    client = driver.connect(f"ws://127.0.0.1:{port}/", ping_interval=None)  # offers
    assert not negotiated(client)
    round_trip(driver, client)
    assert len(driver.accepted) == 2 and not negotiated(driver.accepted[1])
