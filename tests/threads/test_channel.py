"""The bounded incoming channel on its own: order, end of stream, timeouts, water marks."""

from __future__ import annotations

import collections
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tube.websocket import ConnectionClosed, Incoming
from tube.websocket.threads.channel import Message


def closed_error() -> ConnectionClosed:
    return ConnectionClosed(1000, "bye", "remote")


def test_messages_come_out_in_order_then_the_iteration_ends() -> None:
    channel = Incoming(100, 1 << 20)
    channel._put(["a", b"b"])
    channel._put(["c"])
    channel._close(closed_error)
    assert channel.closed
    assert len(channel) == 3
    assert list(channel) == ["a", b"b", "c"]
    assert list(channel) == []
    with pytest.raises(ConnectionClosed) as info:
        channel.get()
    assert (info.value.code, info.value.reason, info.value.initiated_by) == (1000, "bye", "remote")
    # A fresh exception every time (no traceback growing on a shared instance).
    with pytest.raises(ConnectionClosed) as again:
        channel.get(timeout=0)
    assert again.value is not info.value


def test_get_timeout() -> None:
    channel = Incoming(10, 1000)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        channel.get(timeout=0.05)
    assert time.monotonic() - started >= 0.05
    with pytest.raises(TimeoutError):
        channel.get(timeout=0)


def test_waiting_consumer_is_woken_by_put_and_by_close() -> None:
    channel = Incoming(10, 1000)
    results: list[Message | str] = []

    def consume() -> None:
        results.append(channel.get(timeout=5))
        try:
            channel.get(timeout=5)
        except ConnectionClosed as error:
            results.append(f"closed {error.code}")

    consumer = threading.Thread(target=consume)
    consumer.start()
    channel._put([b"x"])
    channel._close(closed_error)
    consumer.join(5)
    assert results == [b"x", "closed 1000"]


def test_producer_blocks_at_the_count_bound_until_the_low_water_mark() -> None:
    channel = Incoming(4, 1 << 20)
    done = threading.Event()

    def produce() -> None:
        channel._put([b"1", b"2", b"3", b"4"])
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    assert not done.wait(0.2), "the producer did not block at 4 messages"
    assert channel._paused
    assert channel.get() == b"1"
    assert not done.wait(0.1), "resumed above the low water mark (2 messages)"
    assert channel.get() == b"2"
    assert done.wait(5)
    producer.join()
    assert not channel._paused
    assert [channel.get(), channel.get()] == [b"3", b"4"]


def test_producer_blocks_at_the_byte_bound() -> None:
    channel = Incoming(1000, 1000)
    done = threading.Event()

    def produce() -> None:
        channel._put([bytes(600), bytes(600)])  # a whole batch is accepted, then it waits
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    assert not done.wait(0.2)
    assert channel.buffered_bytes == 1200
    channel.get()
    assert not done.wait(0.1)  # 600 bytes left: above the low mark of 250
    channel.get()
    assert done.wait(5)
    producer.join()
    assert channel.buffered_bytes == 0


def test_release_unblocks_the_producer_without_dropping_messages() -> None:
    channel = Incoming(1, 1000)
    producer = threading.Thread(target=channel._put, args=([b"kept", b"also kept"],))
    producer.start()
    producer.join(0.1)
    assert producer.is_alive()
    channel._release()
    producer.join(5)
    assert not producer.is_alive()
    channel._close(closed_error)
    assert list(channel) == [b"kept", b"also kept"]


def test_several_consumers_get_each_message_once() -> None:
    channel = Incoming(8, 1 << 20)
    got: list[list[Message]] = [[], [], []]

    def consume(index: int) -> None:
        for message in channel:
            got[index].append(message)

    consumers = [threading.Thread(target=consume, args=(i,)) for i in range(3)]
    for consumer in consumers:
        consumer.start()
    for batch in range(100):
        channel._put([f"{batch}-{i}" for i in range(7)])
    channel._close(closed_error)
    for consumer in consumers:
        consumer.join(5)
    everything = sorted(m for part in got for m in part if isinstance(m, str))
    assert everything == sorted(f"{b}-{i}" for b in range(100) for i in range(7))
    for part in got:  # each consumer sees messages in channel order
        order = [tuple(map(int, str(m).split("-"))) for m in part]
        assert order == sorted(order)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.binary(max_size=50), max_size=5), max_size=20))
def test_any_batches_come_out_whole_and_in_order(batches: list[list[bytes]]) -> None:
    channel = Incoming(1 << 20, 1 << 30)  # never blocks here
    for batch in batches:
        channel._put(batch)
    channel._close(closed_error)
    assert list(channel) == [m for batch in batches for m in batch]
    assert channel.buffered_bytes == 0


# One step on the channel: put a batch, get one message, or get_many(max_count).
_step = st.one_of(
    st.tuples(
        st.just("put"),
        st.lists(st.one_of(st.binary(max_size=20), st.text(max_size=5)), max_size=40),
    ),
    st.tuples(st.just("get"), st.none()),
    st.tuples(st.just("get_many"), st.one_of(st.none(), st.integers(1, 150))),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_step, max_size=80))
def test_interleaved_puts_and_takes_match_a_fifo(
    steps: list[tuple[str, list[str | bytes] | int | None]],
) -> None:
    # The channel keeps its messages in a list read from a moving head, compacted now and
    # then: whatever the interleaving, it must behave as a plain FIFO.
    channel = Incoming(1 << 20, 1 << 30)  # never blocks here
    model: collections.deque[str | bytes] = collections.deque()
    for action, argument in steps:
        if action == "put":
            assert isinstance(argument, list)
            channel._put(argument)
            model.extend(argument)
        elif not model:
            with pytest.raises(TimeoutError):
                channel.get(timeout=0)
        elif action == "get":
            assert channel.get() == model.popleft()
        else:
            assert argument is None or isinstance(argument, int)
            count = len(model) if argument is None else min(argument, len(model))
            assert channel.get_many(argument) == [model.popleft() for _ in range(count)]
        assert len(channel) == len(model)
        assert channel.buffered_bytes == sum(
            len(m.encode() if isinstance(m, str) else m) for m in model
        )


def test_get_many_takes_every_waiting_message_in_order() -> None:
    channel = Incoming(100, 1 << 20)
    channel._put(["a", b"bb", "c"])
    channel._put([b"d"])
    assert channel.get_many() == ["a", b"bb", "c", b"d"]
    assert len(channel) == 0
    assert channel.buffered_bytes == 0


def test_get_many_respects_max_count_and_accounts_bytes() -> None:
    channel = Incoming(100, 1 << 20)
    channel._put([b"12", b"345", b"6789"])
    assert channel.get_many(max_count=2) == [b"12", b"345"]
    assert channel.buffered_bytes == 4
    assert channel.get_many(max_count=5) == [b"6789"]
    with pytest.raises(ValueError):
        channel.get_many(max_count=0)


def test_get_many_waits_for_the_first_message_then_ends_with_the_channel() -> None:
    channel = Incoming(100, 1 << 20)
    with pytest.raises(TimeoutError):
        channel.get_many(timeout=0.01)
    producer = threading.Thread(target=channel._put, args=(["late"],))
    producer.start()
    assert channel.get_many(timeout=5) == ["late"]
    producer.join()
    channel._put(["last"])
    channel._close(closed_error)
    assert channel.get_many() == ["last"]
    with pytest.raises(ConnectionClosed):
        channel.get_many()


def test_get_many_releases_a_blocked_producer() -> None:
    channel = Incoming(4, 1 << 20)
    producer = threading.Thread(target=channel._put, args=([b"x"] * 6,))
    producer.start()
    # The producer blocks while the channel is over its bound, until get_many drains it.
    taken: list[Message] = []
    while producer.is_alive() or len(channel):
        taken += channel.get_many(timeout=5)
        producer.join(0.01)
    assert taken == [b"x"] * 6
