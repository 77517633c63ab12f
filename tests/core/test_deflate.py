"""permessage-deflate (RFC 7692) in the core: options, negotiation tables, the codec, and the
Protocol receiving and sending compressed messages (round trips, RSV1 rules, bombs)."""

from __future__ import annotations

import gc
import os
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tube.websocket.core.deflate import (
    DeflateOptions,
    DeflateParameters,
    PerMessageDeflate,
    client_accept,
    client_offer,
    compression_options,
    server_negotiate,
)
from tube.websocket.core.errors import MessageTooBig, ProtocolError
from tube.websocket.core.events import BinaryMessage, Event, ProtocolFailure, TextMessage
from tube.websocket.core.extensions import parse_extensions
from tube.websocket.core.protocol import Protocol, Role, State

from .wsframes import frame

TAIL = b"\x00\x00\xff\xff"
KEY = b"\x01\x02\x03\x04"
# RFC-neutral options: no window limit of our own, so the tables show the RFC's rules alone.
PLAIN = DeflateOptions(server_max_window_bits=15, client_max_window_bits=15)
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def params(
    *,
    snct: bool = False,
    cnct: bool = False,
    server_bits: int = 15,
    client_bits: int = 15,
    options: DeflateOptions = PLAIN,
) -> DeflateParameters:
    return DeflateParameters(snct, cnct, server_bits, client_bits, options)


def wire(protocol: Protocol) -> bytes:
    return b"".join(bytes(buffer) for buffer in protocol.data_to_send())


def pair(parameters: DeflateParameters, **limits: int | None) -> tuple[Protocol, Protocol]:
    """A (client, server) pair of protocols with the same negotiated parameters."""
    return (
        Protocol(Role.CLIENT, deflate=parameters, **limits),  # type: ignore[arg-type]
        Protocol(Role.SERVER, deflate=parameters, **limits),  # type: ignore[arg-type]
    )


def failure(events: list[Event]) -> ProtocolError:
    assert events, "expected a ProtocolFailure, got no event"
    assert isinstance(events[-1], ProtocolFailure), events
    return events[-1].error


# ---------------------------------------------------------------- options


def test_default_options() -> None:
    options = DeflateOptions()
    assert (options.server_max_window_bits, options.client_max_window_bits) == (12, 12)
    assert (options.memory_level, options.min_size) == (5, 128)
    assert not options.server_no_context_takeover
    assert not options.client_no_context_takeover


@pytest.mark.parametrize(
    "field, value",
    [
        ("server_max_window_bits", 7),
        ("server_max_window_bits", 16),
        ("client_max_window_bits", 7),
        ("client_max_window_bits", True),
        ("client_max_window_bits", 12.0),
        ("memory_level", 0),
        ("memory_level", 10),
        ("compression_level", -1),
        ("compression_level", 10),
        ("min_size", -1),
        ("server_no_context_takeover", 1),
        ("client_no_context_takeover", None),
    ],
)
def test_invalid_options(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        DeflateOptions(**{field: value})  # type: ignore[arg-type]


def test_compression_option_values() -> None:
    assert compression_options(None) is None
    assert compression_options("deflate") == DeflateOptions()
    options = DeflateOptions(min_size=0)
    assert compression_options(options) is options
    with pytest.raises(ValueError, match="compression"):
        compression_options("gzip")
    with pytest.raises(ValueError, match="compression"):
        compression_options(True)


def test_options_are_frozen() -> None:
    with pytest.raises(AttributeError):
        DeflateOptions().min_size = 1  # type: ignore[misc]


# ---------------------------------------------------------------- the header grammar


def test_parse_extensions() -> None:
    assert parse_extensions(
        [
            'permessage-deflate; client_max_window_bits, permessage-deflate;a="10" ;b',
            "x-other",
        ]
    ) == [
        ("permessage-deflate", [("client_max_window_bits", None)]),
        ("permessage-deflate", [("a", "10"), ("b", None)]),
        ("x-other", []),
    ]
    assert parse_extensions(["", " , ,"]) == []
    # A comma inside a quoted string does not split elements, but the value must be a token.
    with pytest.raises(ValueError, match="not a token"):
        parse_extensions(['a; b="1,2"'])


@pytest.mark.parametrize("text", ["a;", "a b", "a;b=", ";a", "a=1", 'a;b="1', "a;;b", "é"])
def test_parse_extensions_refuses_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        parse_extensions([text])


# ---------------------------------------------------------------- server negotiation (§7.1)


def negotiate(offer: str | list[str], options: DeflateOptions = PLAIN) -> str | None:
    values = [offer] if isinstance(offer, str) else offer
    result = server_negotiate(parse_extensions(values), options)
    return None if result is None else result[0]


SERVER_TABLE = [
    # (offer, answer with PLAIN options) -- RFC 7692 §7.1.1 and §7.1.2, one parameter each.
    ("permessage-deflate", "permessage-deflate"),
    ("PerMessage-Deflate", "permessage-deflate"),
    (
        "permessage-deflate; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover",
    ),
    (
        "permessage-deflate; client_no_context_takeover",
        "permessage-deflate; client_no_context_takeover",
    ),
    (
        "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=10",
    ),
    (
        'permessage-deflate; server_max_window_bits="10"',
        "permessage-deflate; server_max_window_bits=10",
    ),
    (
        "permessage-deflate; server_max_window_bits=15",
        "permessage-deflate; server_max_window_bits=15",
    ),
    (
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; server_max_window_bits=8",
    ),
    ("permessage-deflate; client_max_window_bits", "permessage-deflate"),
    (
        "permessage-deflate; client_max_window_bits=9",
        "permessage-deflate; client_max_window_bits=9",
    ),
    # Invalid offers are declined (None), never answered.
    ("permessage-deflate; server_max_window_bits", None),
    ("permessage-deflate; server_max_window_bits=7", None),
    ("permessage-deflate; server_max_window_bits=16", None),
    ("permessage-deflate; server_max_window_bits=08", None),
    ("permessage-deflate; server_max_window_bits=1.5", None),
    ("permessage-deflate; client_max_window_bits=0", None),
    ("permessage-deflate; client_max_window_bits=16", None),
    ("permessage-deflate; server_no_context_takeover=1", None),
    ("permessage-deflate; client_no_context_takeover=true", None),
    ("permessage-deflate; unknown_parameter", None),
    ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
    ("permessage-deflate; client_max_window_bits; client_max_window_bits=10", None),
    ("x-webkit-deflate-frame", None),
    ("", None),
]


@pytest.mark.parametrize("offer, answer", SERVER_TABLE)
def test_server_negotiation_table(offer: str, answer: str | None) -> None:
    assert negotiate(offer) == answer


def test_server_with_default_options_limits_windows() -> None:
    # The browser's offer: the server lowers both windows to 12 bits.
    assert negotiate("permessage-deflate; client_max_window_bits", DeflateOptions()) == (
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    )
    # Without client_max_window_bits in the offer the server may not limit the client (§7.1.2.2).
    text, parameters = server_negotiate(
        parse_extensions(["permessage-deflate"]), DeflateOptions()
    ) or ("", None)
    assert text == "permessage-deflate; server_max_window_bits=12"
    assert parameters is not None
    assert parameters.client_max_window_bits == 15
    # A smaller limit from the client wins.
    assert negotiate("permessage-deflate; server_max_window_bits=10", DeflateOptions()) == (
        "permessage-deflate; server_max_window_bits=10"
    )


def test_server_imposes_its_own_no_context_takeover() -> None:
    options = DeflateOptions(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=8,  # sent as 9: zlib cannot compress with 8
    )
    assert negotiate("permessage-deflate; client_max_window_bits=10", options) == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=9; client_max_window_bits=10"
    )


def test_server_takes_the_first_acceptable_offer() -> None:
    offers = [
        "x-webkit-deflate-frame, permessage-deflate; bogus",
        "permessage-deflate; server_max_window_bits=10, permessage-deflate",
    ]
    assert negotiate(offers) == "permessage-deflate; server_max_window_bits=10"
    assert negotiate(["permessage-deflate; bogus", "permessage-deflate"]) == "permessage-deflate"


def test_server_parameters() -> None:
    result = server_negotiate(
        parse_extensions(
            ["permessage-deflate; client_no_context_takeover; client_max_window_bits=11"]
        ),
        PLAIN,
    )
    assert result is not None
    assert result[1] == params(cnct=True, client_bits=11)


# ---------------------------------------------------------------- client negotiation (§7.1)


def test_client_offers() -> None:
    assert client_offer(DeflateOptions()) == (
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    )
    assert client_offer(PLAIN) == "permessage-deflate; client_max_window_bits"
    assert client_offer(
        DeflateOptions(
            server_no_context_takeover=True,
            client_no_context_takeover=True,
            server_max_window_bits=8,
            client_max_window_bits=8,
        )
    ) == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=9; client_max_window_bits=9"
    )


def accept(answer: str, options: DeflateOptions = PLAIN) -> DeflateParameters:
    return client_accept(parse_extensions([answer]), options)


CLIENT_TABLE_OK = [
    # (answer to the PLAIN offer, parameters)
    ("permessage-deflate", params()),
    ("permessage-deflate; server_no_context_takeover", params(snct=True)),
    ("permessage-deflate; client_no_context_takeover", params(cnct=True)),
    ("permessage-deflate; server_max_window_bits=10", params(server_bits=10)),
    ("permessage-deflate; server_max_window_bits=8", params(server_bits=8)),
    ("permessage-deflate; client_max_window_bits=10", params(client_bits=10)),
    ('permessage-deflate; client_max_window_bits="9"', params(client_bits=9)),
]


@pytest.mark.parametrize("answer, expected", CLIENT_TABLE_OK)
def test_client_accepts(answer: str, expected: DeflateParameters) -> None:
    assert accept(answer) == expected


CLIENT_TABLE_FAIL = [
    # (answer, options offered, error)
    ("x-webkit-deflate-frame", PLAIN, "expected only permessage-deflate"),
    ("permessage-deflate, permessage-deflate", PLAIN, "expected only permessage-deflate"),
    ("permessage-deflate; unknown", PLAIN, "unknown parameter"),
    (
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        PLAIN,
        "repeated",
    ),
    ("permessage-deflate; server_no_context_takeover=1", PLAIN, "takes no value"),
    ("permessage-deflate; server_max_window_bits=7", PLAIN, "must be 8-15"),
    ("permessage-deflate; server_max_window_bits=16", PLAIN, "must be 8-15"),
    ("permessage-deflate; server_max_window_bits", PLAIN, "needs a value"),
    ("permessage-deflate; client_max_window_bits", PLAIN, "needs a value"),
    ("permessage-deflate; client_max_window_bits=010", PLAIN, "must be 8-15"),
    # More than offered, or an offered parameter not accepted.
    ("permessage-deflate; server_max_window_bits=13", DeflateOptions(), "larger than the 12"),
    (
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=13",
        DeflateOptions(),
        "larger than the 12",
    ),
    ("permessage-deflate", DeflateOptions(), "offered, not answered"),
    ("permessage-deflate", DeflateOptions(server_no_context_takeover=True), "not in the answer"),
]


@pytest.mark.parametrize("answer, options, error", CLIENT_TABLE_FAIL)
def test_client_refuses(answer: str, options: DeflateOptions, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        accept(answer, options)


def test_client_default_options() -> None:
    parameters = accept(
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
        DeflateOptions(),
    )
    assert parameters == params(server_bits=12, client_bits=12, options=DeflateOptions())
    # Without a client_max_window_bits answer, the client keeps the limit it offered.
    assert accept("permessage-deflate; server_max_window_bits=11", DeflateOptions()) == params(
        server_bits=11, client_bits=12, options=DeflateOptions()
    )
    # The client's own no-context-takeover holds whatever the server says.
    options = DeflateOptions(client_no_context_takeover=True, server_max_window_bits=15)
    assert accept("permessage-deflate", options).client_no_context_takeover


# ---------------------------------------------------------------- the codec


def test_compressed_payload_drops_the_tail_and_decodes_with_zlib() -> None:
    codec = PerMessageDeflate(params(), is_server=True)
    message = b"hello hello hello hello " * 20
    payload = codec.compress(message)
    reference = zlib.compressobj(6, zlib.DEFLATED, -15, 5)
    full = reference.compress(message) + reference.flush(zlib.Z_SYNC_FLUSH)
    assert full.endswith(TAIL)
    assert payload == full[:-4]
    assert zlib.decompressobj(-15).decompress(payload + TAIL) == message


def test_context_takeover_shrinks_repeated_messages() -> None:
    message = os.urandom(64).hex().encode() * 2
    keep = PerMessageDeflate(params(), is_server=True)
    reset = PerMessageDeflate(params(snct=True), is_server=True)
    first_keep, second_keep = keep.compress(message), keep.compress(message)
    first_reset, second_reset = reset.compress(message), reset.compress(message)
    assert len(second_keep) < len(first_keep) // 4
    assert first_reset == second_reset == first_keep
    # Without takeover, each message decodes on its own.
    assert zlib.decompressobj(-15).decompress(second_reset + TAIL) == message


def test_window_of_eight_bits_disables_sending_compressed() -> None:
    assert not PerMessageDeflate(params(server_bits=8), is_server=True).can_compress
    assert PerMessageDeflate(params(server_bits=8), is_server=False).can_compress
    assert not PerMessageDeflate(params(client_bits=8), is_server=False).can_compress


def test_decompress_budget() -> None:
    codec = PerMessageDeflate(params(), is_server=True)
    payload = zlib.compress(b"a" * 1000, wbits=-15)
    with pytest.raises(MessageTooBig):
        codec.decompress(payload, fin=True, max_size=999)
    codec = PerMessageDeflate(params(), is_server=True)
    assert codec.decompress(payload, fin=True, max_size=1000) == b"a" * 1000


def test_decompress_refuses_garbage() -> None:
    codec = PerMessageDeflate(params(), is_server=True)
    with pytest.raises(ProtocolError, match="invalid compressed data"):
        codec.decompress(b"\xff\xff\xff\xff", fin=True, max_size=None)


def test_decompress_refuses_data_after_the_final_block() -> None:
    codec = PerMessageDeflate(params(), is_server=True)
    with pytest.raises(ProtocolError, match="after the end"):
        codec.decompress(zlib.compress(b"x", wbits=-15) + b"junk", fin=False, max_size=None)


def test_final_block_resets_the_decompressor() -> None:
    # A sender that ends each message with BFINAL (allowed, RFC 7692 §7.2.3.3).
    protocol = Protocol(Role.CLIENT, deflate=params())
    events: list[Event] = []
    for text in ("one", "two"):
        payload = zlib.compress(text.encode() * 50, wbits=-15)
        events += protocol.receive_data(frame(1, payload, rsv=4, key=None))
    assert events == [TextMessage("one" * 50), TextMessage("two" * 50)]


# ---------------------------------------------------------------- the Protocol: receiving


def compressed(message: bytes, bits: int = 15) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -bits)
    return (compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def test_receives_compressed_text_and_binary() -> None:
    server = Protocol(Role.SERVER, deflate=params())
    events = server.receive_data(
        frame(1, compressed("héllo".encode()), rsv=4)
        + frame(2, compressed(b"\x00" * 500), rsv=4)
        + frame(2, b"plain")
    )
    assert events == [TextMessage("héllo"), BinaryMessage(b"\x00" * 500), BinaryMessage(b"plain")]


def test_receives_fragmented_compressed_message() -> None:
    message = "fragmented ✓ " * 100
    payload = compressed(message.encode())
    third = len(payload) // 3
    server = Protocol(Role.SERVER, deflate=params())
    events = server.receive_data(
        frame(1, payload[:third], fin=False, rsv=4)
        + frame(9, b"ping")
        + frame(0, payload[third : 2 * third], fin=False)
        + frame(0, payload[2 * third :])
    )
    assert [e for e in events if isinstance(e, TextMessage)] == [TextMessage(message)]


@pytest.mark.parametrize(
    "data, reason",
    [
        (frame(9, b"", rsv=4), "RSV1 set on a PING frame"),
        (frame(8, b"", rsv=4), "RSV1 set on a CLOSE frame"),
        (frame(2, b"", rsv=2), "RSV2-3"),
        (frame(2, b"", rsv=1), "RSV2-3"),
        (frame(2, compressed(b"abc"), rsv=4, key=None), "must be masked"),
        (frame(2, b"x", fin=False, rsv=4) + frame(0, b"y", rsv=4), "CONTINUATION"),
        (frame(2, b"x", fin=False) + frame(0, b"y", rsv=4), "CONTINUATION"),
        (frame(2, b"x", fin=False) + frame(2, b"y", rsv=4), "expected a continuation frame"),
        (frame(2, b"\xff\xff\xff", rsv=4), "invalid compressed data"),
    ],
)
def test_rsv1_rules(data: bytes, reason: str) -> None:
    server = Protocol(Role.SERVER, deflate=params())
    error = failure(server.receive_data(data))
    assert reason in error.reason
    assert error.close_code == 1002
    # Nothing after the violation is parsed (the transport then commits it with fail()).
    assert server.receive_data(frame(2, b"after")) == []


@pytest.mark.parametrize("rsv", [1, 2, 4])
def test_rsv_without_extension_is_a_protocol_error(rsv: int) -> None:
    server = Protocol(Role.SERVER)
    error = failure(server.receive_data(frame(2, b"abc", rsv=rsv)))
    assert error.close_code == 1002
    assert "no extension was negotiated" in error.reason


def test_invalid_utf8_in_compressed_text_fails_with_1007() -> None:
    server = Protocol(Role.SERVER, deflate=params())
    assert failure(server.receive_data(frame(1, compressed(b"ok \xff"), rsv=4))).close_code == 1007
    # Fragmented: it fails at the fragment that holds the bad byte, not at the end.
    server = Protocol(Role.SERVER, deflate=params())
    codec = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = codec.compress(b"fine") + codec.flush(zlib.Z_SYNC_FLUSH)
    second = codec.compress(b"\xc0\xaf") + codec.flush(zlib.Z_SYNC_FLUSH)
    events = server.receive_data(frame(1, first, fin=False, rsv=4) + frame(0, second, fin=False))
    assert failure(events).close_code == 1007


def test_compressed_text_ending_inside_a_character_fails_with_1007() -> None:
    """Issue 24: the last fragment of a compressed text message ends inside a character (the
    first byte of "é"): the end of the message is checked, a 1007 failure and no
    ``UnicodeDecodeError`` escaping ``receive_data``."""
    codec = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = codec.compress(b"fine ") + codec.flush(zlib.Z_SYNC_FLUSH)
    last = (codec.compress("é".encode()[:1]) + codec.flush(zlib.Z_SYNC_FLUSH))[:-4]
    server = Protocol(Role.SERVER, deflate=params())
    events = server.receive_data(frame(1, first, fin=False, rsv=4) + frame(0, last))
    error = failure(events)
    assert error.close_code == 1007
    assert "UTF-8" in error.reason


def test_compressed_text_arriving_in_pieces_is_not_validated_compressed() -> None:
    # The partial-frame UTF-8 check must not look at compressed bytes.
    data = frame(1, compressed("naïve ".encode() * 300), rsv=4)
    server = Protocol(Role.SERVER, deflate=params())
    events: list[Event] = []
    for start in range(0, len(data), 7):
        events += server.receive_data(data[start : start + 7])
    assert events == [TextMessage("naïve " * 300)]


def test_large_compressed_frame_across_reads() -> None:
    message = os.urandom(20_000)
    data = frame(2, compressed(message), rsv=4)
    server = Protocol(Role.SERVER, deflate=params())
    events = server.receive_data(data[:1000]) + server.receive_data(data[1000:])
    assert events == [BinaryMessage(message)]


def test_size_limit_counts_decompressed_bytes() -> None:
    exact = Protocol(Role.SERVER, max_message_size=1000, deflate=params())
    assert exact.receive_data(frame(2, compressed(b"z" * 1000), rsv=4)) == [
        BinaryMessage(b"z" * 1000)
    ]
    over = Protocol(Role.SERVER, max_message_size=1000, deflate=params())
    error = failure(over.receive_data(frame(2, compressed(b"z" * 1001), rsv=4)))
    assert error.close_code == 1009
    # Fragmented: the total counts.
    payload = compressed(b"z" * 1001)
    over = Protocol(Role.SERVER, max_message_size=1000, deflate=params())
    data = frame(2, payload[:5], fin=False, rsv=4) + frame(0, payload[5:])
    assert failure(over.receive_data(data)).close_code == 1009


def test_unlimited_size() -> None:
    server = Protocol(Role.SERVER, max_message_size=None, deflate=params())
    payload = compressed(b"q" * 100_000)
    data = frame(2, payload[:10], fin=False, rsv=4) + frame(0, payload[10:])
    assert server.receive_data(data) == [BinaryMessage(b"q" * 100_000)]


# ---------------------------------------------------------------- the Protocol: sending


def test_min_size_and_per_send_override() -> None:
    client = Protocol(Role.CLIENT, deflate=params(options=DeflateOptions(min_size=10)))
    client.send_binary(b"short")
    client.send_binary(b"long enough to compress")
    client.send_binary(b"short", compress=True)
    client.send_text("long enough but not compressed", compress=False)
    firsts = [first for first, _ in _frames_with_first_byte(wire(client))]
    assert firsts == [0x82, 0xC2, 0xC2, 0x81]


def test_rsv1_only_on_the_first_fragment() -> None:
    server = Protocol(Role.SERVER, deflate=params())
    message = os.urandom(3000)
    server.send_binary(message, fragment_size=1000)
    data = wire(server)
    firsts = []
    position = 0
    while position < len(data):
        firsts.append(data[position])
        length = data[position + 1] & 0x7F
        header = 2
        if length == 126:
            length = int.from_bytes(data[position + 2 : position + 4], "big")
            header = 4
        position += header + length
    assert firsts[0] == 0x42  # not FIN, RSV1, BINARY
    assert firsts[-1] == 0x80  # FIN, CONTINUATION
    assert all(first & 0x70 == 0 for first in firsts[1:])
    client = Protocol(Role.CLIENT, deflate=params())
    assert client.receive_data(data) == [BinaryMessage(message)]


def test_no_compression_without_extension_even_when_asked() -> None:
    server = Protocol(Role.SERVER)
    server.send_text("x" * 1000, compress=True)
    assert wire(server)[0] == 0x81


def test_peer_limited_window_of_eight_bits_sends_uncompressed() -> None:
    server = Protocol(Role.SERVER, deflate=params(server_bits=8))
    server.send_text("x" * 1000, compress=True)
    assert wire(server)[0] == 0x81


# ---------------------------------------------------------------- properties

MESSAGES = st.lists(
    st.one_of(st.text(max_size=400), st.binary(max_size=400), st.just(b"\x00" * 3000)),
    min_size=1,
    max_size=6,
)


@SETTINGS
@given(
    messages=MESSAGES,
    fragment_size=st.one_of(st.none(), st.integers(1, 300)),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
    server_sends=st.booleans(),
    snct=st.booleans(),
    cnct=st.booleans(),
    bits=st.sampled_from([9, 12, 15]),
    compress=st.sampled_from([None, True, False]),
)
def test_round_trip(
    messages: list[str | bytes],
    fragment_size: int | None,
    cuts: list[int],
    server_sends: bool,
    snct: bool,
    cnct: bool,
    bits: int,
    compress: bool | None,
) -> None:
    options = DeflateOptions(min_size=64)
    parameters = params(snct=snct, cnct=cnct, server_bits=bits, client_bits=bits, options=options)
    client, server = pair(parameters)
    sender, receiver = (server, client) if server_sends else (client, server)
    for message in messages:
        if isinstance(message, str):
            sender.send_text(message, fragment_size=fragment_size, compress=compress)
        else:
            sender.send_binary(message, fragment_size=fragment_size, compress=compress)
    data = wire(sender)
    events: list[Event] = []
    previous = 0
    for point in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        events += receiver.receive_data(data[previous:point])
        previous = point
    expected = [TextMessage(m) if isinstance(m, str) else BinaryMessage(m) for m in messages]
    assert events == expected

    # The sender's stream decodes with zlib alone, by the RFC's rules.
    decoder = zlib.decompressobj(-bits)
    reassembled: list[bytes] = []
    current: bytearray | None = None
    is_compressed = False
    for first, payload in _frames_with_first_byte(data):
        if first & 0x0F in (1, 2):
            current = bytearray()
            is_compressed = bool(first & 0x40)
        assert current is not None
        current += payload
        if first & 0x80:
            if is_compressed:
                reassembled.append(decoder.decompress(bytes(current) + TAIL))
                if snct if server_sends else cnct:
                    decoder = zlib.decompressobj(-bits)
            else:
                reassembled.append(bytes(current))
    assert reassembled == [m.encode() if isinstance(m, str) else m for m in messages]


def _frames_with_first_byte(data: bytes) -> list[tuple[int, bytes]]:
    """(first header byte, unmasked payload) of every frame."""
    result = []
    position = 0
    while position < len(data):
        first, second = data[position], data[position + 1]
        length = second & 0x7F
        position += 2
        if length == 126:
            length = int.from_bytes(data[position : position + 2], "big")
            position += 2
        elif length == 127:
            length = int.from_bytes(data[position : position + 8], "big")
            position += 8
        key = b""
        if second & 0x80:
            key = data[position : position + 4]
            position += 4
        payload = data[position : position + length]
        position += length
        if key:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        result.append((first, payload))
    return result


@SETTINGS
@given(garbage=st.binary(max_size=200), rsv_opcode=st.sampled_from([0xC1, 0xC2, 0x41, 0x42]))
def test_garbage_compressed_payload_ends_in_library_errors(garbage: bytes, rsv_opcode: int) -> None:
    server = Protocol(Role.SERVER, max_message_size=10_000, deflate=params())
    fin = rsv_opcode & 0x80
    data = frame(rsv_opcode & 0x0F, garbage, fin=bool(fin), rsv=4)
    for event in server.receive_data(data):
        if isinstance(event, ProtocolFailure):
            assert event.error.close_code in (1002, 1007, 1009)


# ---------------------------------------------------------------- bombs

BOMB_SIZE = 200 * 1024 * 1024
MEMORY_BOUND = 32 * 1024 * 1024


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """200 MiB of zeros, deflated (about 200 KB), without the tail."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    chunk = bytes(1 << 20)
    parts = [compressor.compress(chunk) for _ in range(BOMB_SIZE // len(chunk))]
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(parts)[:-4]


def run_bounded(data: list[bytes]) -> tuple[list[Event], int]:
    """Feed ``data`` to a server protocol (1 MiB limit); return its events and peak memory."""
    server = Protocol(Role.SERVER, deflate=params())
    events: list[Event] = []
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for piece in data:
            events += server.receive_data(piece)
            if server.state is State.CLOSED:
                break
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return events, peak


def test_bomb_in_one_frame_fails_with_1009_in_flat_memory(bomb: bytes) -> None:
    assert len(bomb) < 1 << 20  # the compressed frame itself is within the limit
    data = frame(2, bomb, rsv=4)
    events, peak = run_bounded([data[i : i + 65536] for i in range(0, len(data), 65536)])
    assert failure(events).close_code == 1009
    assert peak < MEMORY_BOUND, f"peak {peak / 2**20:.1f} MiB"


def test_bomb_over_10000_tiny_frames_fails_with_1009_in_flat_memory(bomb: bytes) -> None:
    size = len(bomb) // 10_000 + 1
    pieces = [bomb[i : i + size] for i in range(0, len(bomb), size)]
    assert len(pieces) <= 10_000
    frames = [frame(2, pieces[0], fin=False, rsv=4)]
    frames += [frame(0, piece, fin=False) for piece in pieces[1:-1]]
    frames.append(frame(0, pieces[-1]))
    events, peak = run_bounded(frames)
    assert failure(events).close_code == 1009
    assert peak < MEMORY_BOUND, f"peak {peak / 2**20:.1f} MiB"


def test_refused_bomb_is_freed_at_once_without_the_cyclic_collector(bomb: bytes) -> None:
    # Issue 22 §1: the MessageTooBig's traceback reached decompress()'s output buffer (the
    # limit plus one byte) and the receiver's event list, which holds the failure that holds
    # the error: a cycle only the collector freed. With the collector off, memory must still
    # come back as soon as the events are dropped, and the kept error must hold no frame.
    data = frame(2, bomb, rsv=4)
    limit = 4 << 20
    gc.disable()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        errors = []
        for _ in range(3):
            server = Protocol(Role.SERVER, max_message_size=limit, deflate=params())
            events = server.receive_data(data)
            errors.append(failure(events))  # a transport keeps the error until it commits it
            del server, events
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        gc.enable()
    assert all(error.close_code == 1009 for error in errors)
    assert all(error.__traceback__ is None for error in errors)
    assert held < limit // 4, f"{held / 2**20:.1f} MiB still allocated"
