"""One vocabulary on both transports (issue 21): the same names and signatures for the same
operations and fields, where they differ only by being coroutines on asyncio. Differences that
are on purpose are listed here, with why."""

from __future__ import annotations

import inspect

import pytest

from tube.websocket import aio
from tube.websocket.aio.channel import Incoming as AioIncoming
from tube.websocket.core.session import SessionFields
from tube.websocket.threads.channel import Incoming as ThreadsIncoming
from tube.websocket.threads.connection import Connection as ThreadsConnection

AioConnection = aio.Connection

# Same name, same parameters (asyncio's are coroutines).
SHARED_METHODS = ["send", "send_many", "initiate_close", "wait_closed", "wait_until_connected"]

# On purpose:
# * ping(): threads return once the ping is written (the seed's API); asyncio waits for the
#   pong, with a timeout (ping_timeout by default), since awaiting costs nothing there.
# * close(): threads take wait= (a blocking call may want not to wait); on asyncio the caller
#   chooses by awaiting initiate_close() instead.
DIFFERENT_ON_PURPOSE = {"ping", "close"}


def parameters(function: object) -> list[tuple[str, object, object]]:
    signature = inspect.signature(function)  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


@pytest.mark.parametrize("name", SHARED_METHODS)
def test_the_same_operation_has_the_same_parameters(name: str) -> None:
    assert parameters(getattr(ThreadsConnection, name)) == parameters(
        getattr(AioConnection, name)
    ), name


def test_the_seed_fields_are_one_definition_for_both() -> None:
    for name in ("connected", "closing", "close_code", "close_reason", "close_retry_time"):
        assert getattr(ThreadsConnection, name) is getattr(SessionFields, name)
        assert getattr(AioConnection, name) is getattr(SessionFields, name)


def test_the_channels_answer_to_both_names() -> None:
    # `closed` (the threaded channel's first name) and `ended` (asyncio's) on both.
    for channel in (ThreadsIncoming, AioIncoming):
        for name in ("closed", "ended", "get", "get_many", "buffered_bytes"):
            assert hasattr(channel, name), (channel.__module__, name)


def test_differences_on_purpose_are_still_differences() -> None:
    # If one of these becomes the same, move it to SHARED_METHODS.
    for name in DIFFERENT_ON_PURPOSE:
        assert parameters(getattr(ThreadsConnection, name)) != parameters(
            getattr(AioConnection, name)
        ), name
