"""ConnectionOptions' edges that the mutation runs found untested (issue 24, docs/mutation.md):
every option's refusal, word for word, with the exception the README promises (``TypeError``
for a wrong type, ``ValueError`` for a value out of range, the message naming the option and
what it got), the smallest values accepted, ``None`` where it is allowed, and the protocol
built from an explicit ``max_fragments``."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tube.websocket.core.events import BinaryMessage, CloseReceived, ProtocolFailure
from tube.websocket.core.options import ConnectionOptions
from tube.websocket.core.protocol import Role

from .test_mutants_wire import negotiated
from .wsframes import close_payload, frame

# (option, None allowed) for the times in seconds and for the sizes and counts.
SECONDS = [
    ("close_retry_time", True),
    ("close_give_up_time", False),
    ("ping_interval", True),
    ("ping_timeout", True),
    ("send_timeout", True),
    ("open_timeout", True),
]
SIZES = [
    ("max_message_size", True),
    ("max_fragments", True),
    ("incoming_size", False),
    ("incoming_bytes", False),
]


def build(**options: Any) -> ConnectionOptions:
    """The options from keyword arguments of any type (the wrong ones on purpose)."""
    return ConnectionOptions(**options)


def refused(kind: type[Exception], **options: Any) -> str:
    with pytest.raises(kind) as info:
        ConnectionOptions(**options)
    assert type(info.value) is kind
    return str(info.value)


# ---------------------------------------------------------------------- times in seconds


@pytest.mark.parametrize(("name", "none_allowed"), SECONDS)
def test_a_time_of_the_wrong_type_is_a_type_error_naming_the_option(
    name: str, none_allowed: bool
) -> None:
    """A string or a bool is no number of seconds (``True`` would be 1 s otherwise)."""
    expected = "a positive number of seconds" + (" or None" if none_allowed else "")
    assert refused(TypeError, **{name: "20"}) == f"{name} must be {expected}, got '20'"
    assert refused(TypeError, **{name: True}) == f"{name} must be {expected}, got True"
    assert refused(TypeError, **{name: [1.0]}) == f"{name} must be {expected}, got [1.0]"


@pytest.mark.parametrize(("name", "none_allowed"), SECONDS)
def test_a_time_out_of_range_is_a_value_error_naming_the_option(
    name: str, none_allowed: bool
) -> None:
    """Zero, negative and NaN are refused: a deadline must lie in the future."""
    expected = "a positive number of seconds" + (" or None" if none_allowed else "")
    for value, shown in [(0, "0"), (0.0, "0.0"), (-1.5, "-1.5"), (math.nan, "nan")]:
        assert refused(ValueError, **{name: value}) == f"{name} must be {expected}, got {shown}"


@pytest.mark.parametrize(("name", "none_allowed"), SECONDS)
def test_any_positive_time_is_kept_as_given_and_none_only_where_documented(
    name: str, none_allowed: bool
) -> None:
    """An int or a float above zero is the option's value; ``None`` (no retry, no keepalive,
    no timeout) is accepted where the README allows it, a ValueError for the give-up time."""
    assert getattr(build(**{name: 1e-9}), name) == 1e-9
    assert getattr(build(**{name: 3}), name) == 3
    if none_allowed:
        assert getattr(build(**{name: None}), name) is None
    else:
        message = refused(ValueError, **{name: None})
        assert message == f"{name} must be a positive number of seconds, got None"


# ---------------------------------------------------------------------- sizes and counts


@pytest.mark.parametrize(("name", "none_allowed"), SIZES)
def test_a_size_of_the_wrong_type_is_a_type_error_naming_the_option(
    name: str, none_allowed: bool
) -> None:
    """A size or a count is an int: ``1.5``, ``"64k"`` and ``True`` are refused."""
    expected = "a positive int" + (" or None" if none_allowed else "")
    assert refused(TypeError, **{name: 1.5}) == f"{name} must be {expected}, got 1.5"
    assert refused(TypeError, **{name: "64k"}) == f"{name} must be {expected}, got '64k'"
    assert refused(TypeError, **{name: True}) == f"{name} must be {expected}, got True"


@pytest.mark.parametrize(("name", "none_allowed"), SIZES)
def test_a_size_out_of_range_is_a_value_error_naming_the_option(
    name: str, none_allowed: bool
) -> None:
    expected = "a positive int" + (" or None" if none_allowed else "")
    assert refused(ValueError, **{name: 0}) == f"{name} must be {expected}, got 0"
    assert refused(ValueError, **{name: -1}) == f"{name} must be {expected}, got -1"


@pytest.mark.parametrize(("name", "none_allowed"), SIZES)
def test_a_size_of_one_is_accepted_and_none_only_where_documented(
    name: str, none_allowed: bool
) -> None:
    """One is the smallest size (a one-byte message, a one-message channel); ``None`` (no
    limit) only for the message size and the fragment count."""
    assert getattr(build(**{name: 1}), name) == 1
    if none_allowed:
        assert getattr(build(**{name: None}), name) is None
    else:
        assert refused(ValueError, **{name: None}) == f"{name} must be a positive int, got None"


def test_max_fragments_auto_is_the_only_string_accepted() -> None:
    assert ConnectionOptions().max_fragments == "auto"
    assert ConnectionOptions(max_fragments="auto").max_fragments == "auto"
    message = refused(TypeError, max_fragments="AUTO")
    assert message == "max_fragments must be a positive int or None, got 'AUTO'"


def test_check_origin_must_be_a_bool() -> None:
    """A truthy string is not taken for True: the origin policy is a security decision."""
    message = refused(TypeError, check_origin="no")
    assert message == "check_origin must be a bool, got 'no'"
    assert refused(TypeError, check_origin=0) == "check_origin must be a bool, got 0"
    assert ConnectionOptions(check_origin=False).check_origin is False


def test_replace_checks_the_changed_option_with_the_same_message() -> None:
    message = "close_give_up_time must be a positive number of seconds, got None"
    with pytest.raises(ValueError) as info:
        ConnectionOptions().replace(close_give_up_time=None)
    assert str(info.value) == message


# ---------------------------------------------------------------------- the protocol built


def test_an_explicit_max_fragments_limits_the_frames_of_one_message() -> None:
    """With ``max_fragments=3`` a message of three frames arrives, one of four fails with 1009,
    on the role asked for and with the size limit given."""
    options = ConnectionOptions(max_fragments=3, max_message_size=10)
    protocol = options.make_protocol(Role.CLIENT)
    assert protocol.role is Role.CLIENT
    three = frame(0x2, b"a", fin=False, key=None) + frame(0x0, b"b", fin=False, key=None)
    three += frame(0x0, b"c", key=None)
    assert protocol.receive_data(three) == [BinaryMessage(b"abc")]
    four = frame(0x2, b"a", fin=False, key=None)
    four += b"".join(frame(0x0, b"b", fin=False, key=None) for _ in range(2))
    four += frame(0x0, b"c", key=None)
    [failure] = protocol.receive_data(four)
    assert isinstance(failure, ProtocolFailure) and failure.error.close_code == 1009


def test_an_explicit_max_fragments_keeps_the_message_size_limit() -> None:
    protocol = ConnectionOptions(max_fragments=3, max_message_size=10).make_protocol(Role.SERVER)
    assert protocol.role is Role.SERVER
    [failure] = protocol.receive_data(frame(0x2, b"x" * 11))
    assert isinstance(failure, ProtocolFailure) and failure.error.close_code == 1009
    accepted = ConnectionOptions(max_fragments=3, max_message_size=10).make_protocol(Role.SERVER)
    assert accepted.receive_data(frame(0x2, b"x" * 10)) == [BinaryMessage(b"x" * 10)]


def test_max_fragments_none_lifts_the_fragment_limit_that_auto_sets() -> None:
    """``"auto"`` with a 100-byte limit allows 1,024 frames; ``None`` any number."""
    message = frame(0x2, b"", fin=False) + frame(0x0, b"", fin=False) * 1100 + frame(0x0, b"x")
    [failure] = (
        ConnectionOptions(max_message_size=100).make_protocol(Role.SERVER).receive_data(message)
    )
    assert isinstance(failure, ProtocolFailure) and failure.error.close_code == 1009
    unlimited = ConnectionOptions(max_message_size=100, max_fragments=None)
    assert unlimited.make_protocol(Role.SERVER).receive_data(message) == [BinaryMessage(b"x")]


@pytest.mark.parametrize("max_fragments", ["auto", 3])
def test_the_protocol_compresses_with_the_negotiated_parameters(
    max_fragments: int | str,
) -> None:
    options = ConnectionOptions(max_fragments=max_fragments)  # type: ignore[arg-type]
    protocol = options.make_protocol(Role.SERVER, negotiated())
    protocol.send_binary(b"b" * 100)
    data = b"".join(bytes(chunk) for chunk in protocol.data_to_send())
    assert data[0] == 0xC2  # FIN, RSV1 (compressed), binary
    plain = options.make_protocol(Role.SERVER)
    plain.send_binary(b"b" * 100)
    assert b"".join(bytes(chunk) for chunk in plain.data_to_send())[0] == 0x82


@pytest.mark.parametrize("max_fragments", ["auto", 3])
def test_the_protocol_leaves_the_close_reply_to_the_session(max_fragments: int | str) -> None:
    """Every transport answers a peer's close frame once the application reached it: the
    protocol built from the options does not answer by itself."""
    options = ConnectionOptions(max_fragments=max_fragments)  # type: ignore[arg-type]
    protocol = options.make_protocol(Role.SERVER)
    events = protocol.receive_data(frame(0x8, close_payload(1000)))
    assert [type(event) for event in events] == [CloseReceived]
    assert protocol.close_reply_pending
    assert protocol.data_to_send() == []
    protocol.reply_close()
    assert b"".join(bytes(chunk) for chunk in protocol.data_to_send()) == b"\x88\x02\x03\xe8"
