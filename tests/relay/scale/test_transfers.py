"""Whole transfers through the cluster an operator runs (redis-server, two ``python -m tube``
processes, haproxy with ``deploy/haproxy.cfg``), with the Python peer (``tube.relay.transfer``):
redirects, a Redis outage, a process killed, a drain, Redis carrying no file bytes, and 200
pairs at once."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from tube.relay.transfer import (
    ReceiveResult,
    RelayError,
    SendResult,
    TransferError,
    allocate_nameplate,
    receive_file,
    send_file,
)

from ..cli.conftest import CHUNK, sha256_of, write_random_file
from .cluster import Cluster, Instance, cluster
from .conftest import Redis, redis_command

SALT = b"s" * 32
# Every peer of these tests comes from 127.0.0.1 through haproxy: lift the per-address limits.
LIMITS = (
    "--limit", "allocations_per_minute=2000",
    "--limit", "claims_per_minute=2000",
    "--limit", "outstanding_per_ip=1000",
    "--limit", "connections_per_ip=2000",
    "--grace", "5",
)  # fmt: skip


def run(coroutine: Callable[[], Coroutine[Any, Any, None]], timeout: float = 90) -> None:
    asyncio.run(asyncio.wait_for(coroutine(), timeout))


def owner_of(running: Cluster, nameplate: str) -> Instance:
    reply = redis_command(running.redis.port, "GET", f"tube:np:{nameplate}")
    url = reply.split(b"\r\n")[1].decode()
    return next(instance for instance in running.instances if instance.url == url)


async def send_and_receive(
    send_url: str,
    source: Path,
    out: Path,
    *,
    receive_url: Callable[[str], str] | None = None,
    during: Callable[[int], Coroutine[Any, Any, None]] | None = None,
    during_at: int = 0,
) -> tuple[SendResult | BaseException, ReceiveResult | BaseException, str]:
    """Send ``source`` through ``send_url`` and receive it into ``out``; ``during(bytes)`` runs
    once the receiver has ``during_at`` bytes. The results and the code."""
    loop = asyncio.get_running_loop()
    code: asyncio.Future[str] = loop.create_future()
    reached: asyncio.Future[None] = loop.create_future()

    def progress(update: Any) -> None:
        if during is not None and update.done >= during_at and not reached.done():
            reached.set_result(None)

    sending = asyncio.create_task(
        send_file(
            send_url, source, salt=SALT, on_code=lambda c, _l: code.set_result(c), resume_timeout=8
        )
    )
    first: list[asyncio.Future[Any]] = [sending, code]
    await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
    if not code.done():
        return sending.exception() or RuntimeError("no code"), RuntimeError("no code"), ""
    where = receive_url(code.result()) if receive_url is not None else send_url
    receiving = asyncio.create_task(
        receive_file(where, code.result(), out, on_progress=progress, resume_timeout=8)
    )
    if during is not None:
        either: list[asyncio.Future[Any]] = [reached, receiving]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if reached.done():
            await during(during_at)
    sent, received = await asyncio.gather(sending, receiving, return_exceptions=True)
    return sent, received, code.result()


def test_a_file_crosses_the_cluster_and_redis_carries_none_of_it(
    redis: Redis, tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    digest = write_random_file(source, 256 << 20)
    out = tmp_path / "out"
    out.mkdir()
    with cluster(redis, extra=LIMITS) as running:
        before = redis.stats()

        async def main() -> None:
            # The sender goes through haproxy; the receiver is sent to the instance that does
            # not own the code, which redirects it.
            def elsewhere(code: str) -> str:
                owner = owner_of(running, code.split("-")[0])
                other = next(i for i in running.instances if i is not owner)
                return other.http

            sent, received, _ = await send_and_receive(
                running.url, source, out, receive_url=elsewhere
            )
            assert isinstance(sent, SendResult) and isinstance(received, ReceiveResult), (
                sent,
                received,
            )
            assert sha256_of(received.path) == digest

        run(main)
        after = redis.stats()
    moved = after["total_net_input_bytes"] + after["total_net_output_bytes"]
    moved -= before["total_net_input_bytes"] + before["total_net_output_bytes"]
    assert moved < 64 * 1024, moved  # a handful of commands for 256 MiB of file


def test_a_redis_outage_mid_transfer_loses_nothing_and_heals(redis: Redis, tmp_path: Path) -> None:
    source = tmp_path / "a.bin"
    digest = write_random_file(source, 64 * CHUNK)
    out = tmp_path / "out"
    out.mkdir()
    with cluster(redis, extra=LIMITS) as running:

        async def main() -> None:
            async def outage(_: int) -> None:
                redis.stop()
                # New codes wait for Redis: "busy, retry" with when, not a false promise.
                with pytest.raises(RelayError) as refused:
                    await allocate_nameplate(running.url)
                assert refused.value.retry_after and refused.value.retry_after > 0

            sent, received, _ = await send_and_receive(
                running.url, source, out, during=outage, during_at=8 * CHUNK
            )
            assert isinstance(received, ReceiveResult), received
            assert isinstance(sent, SendResult), sent
            assert sha256_of(received.path) == digest

            redis.start()  # back, empty: no relay is restarted
            again = tmp_path / "again"
            again.mkdir()
            sent, received, _ = await send_and_receive(running.url, source, again)
            assert isinstance(received, ReceiveResult), received
            assert sha256_of(received.path) == digest

        run(main)


def test_a_killed_instance_costs_a_new_code_and_only_the_missing_chunks(
    redis: Redis, tmp_path: Path
) -> None:
    source = tmp_path / "a.bin"
    digest = write_random_file(source, 96 * CHUNK)
    out = tmp_path / "out"
    out.mkdir()
    with cluster(redis, extra=LIMITS) as running:

        async def main() -> None:
            killed: list[Instance] = []

            async def crash(_: int) -> None:
                owner = owner_of_pair(running)
                owner.stop(signal.SIGKILL)
                killed.append(owner)

            sent, received, _ = await send_and_receive(
                running.url, source, out, during=crash, during_at=32 * CHUNK
            )
            assert isinstance(sent, TransferError) and isinstance(received, TransferError)
            assert not (out / "a.bin").exists()  # never presented as complete
            # Again with a new code: haproxy sends it to the survivor; the receiver asks only
            # for what its partial file lacks.
            sent, received, _ = await send_and_receive(running.url, source, out)
            assert isinstance(received, ReceiveResult), received
            assert isinstance(sent, SendResult), sent
            assert received.resumed_from >= 32
            assert received.chunks_received == 96 - received.resumed_from
            assert sha256_of(received.path) == digest
            survivor = next(i for i in running.instances if i not in killed)
            assert survivor.process is not None and survivor.process.poll() is None

        run(main)


def owner_of_pair(running: Cluster) -> Instance:
    """The instance holding the one live pair: the one with a resume id in Redis."""
    reply = redis_command(running.redis.port, "KEYS", "tube:rid:*")
    key = reply.split(b"\r\n")[2].decode()
    value = redis_command(running.redis.port, "GET", key).split(b"\r\n")[1].decode()
    return next(instance for instance in running.instances if instance.url == value)


def test_a_drained_instance_stops_cleanly_while_the_other_serves(
    redis: Redis, tmp_path: Path
) -> None:
    source = tmp_path / "a.bin"
    digest = write_random_file(source, 4 * CHUNK)
    with cluster(redis, extra=LIMITS) as running:
        first = running.instances[0]
        assert first.process is not None
        first.process.send_signal(signal.SIGTERM)  # drain: 1001 to its clients, then exit 0
        first.process.communicate(timeout=10)
        assert first.process.returncode == 0
        first.process = None

        async def main() -> None:
            for attempt in range(3):  # codes land on both; haproxy redispatches the dead one's
                out = tmp_path / f"out{attempt}"
                out.mkdir()
                sent, received, _ = await send_and_receive(running.url, source, out)
                assert isinstance(sent, SendResult), sent
                assert isinstance(received, ReceiveResult), received
                assert sha256_of(received.path) == digest

        run(main)


def test_200_pairs_at_once_through_haproxy(redis: Redis, tmp_path: Path) -> None:
    pairs = 200
    sources = []
    for number in range(pairs):
        path = tmp_path / f"f{number}.bin"
        data = os.urandom(40_000 + number)
        path.write_bytes(data)
        sources.append((path, hashlib.sha256(data).hexdigest()))
    with cluster(redis, extra=LIMITS) as running:
        baseline = [instance.rss_kib() for instance in running.instances]
        peaks = list(baseline)

        async def main() -> None:
            async def one(number: int) -> None:
                source, digest = sources[number]
                out = tmp_path / f"out{number}"
                out.mkdir()
                sent, received, _ = await send_and_receive(running.url, source, out)
                assert isinstance(sent, SendResult), sent
                assert isinstance(received, ReceiveResult), received
                assert sha256_of(received.path) == digest

            async def sample() -> None:
                while True:
                    for index, instance in enumerate(running.instances):
                        peaks[index] = max(peaks[index], instance.rss_kib())
                    await asyncio.sleep(0.05)  # a sampling period, not a wait for an event

            sampler = asyncio.create_task(sample())
            try:
                await asyncio.gather(*(one(number) for number in range(pairs)))
            finally:
                sampler.cancel()

        run(main, timeout=240)
    for base, peak in zip(baseline, peaks, strict=True):
        # Both instances took part, and none grew past the per-pair bound for all the pairs.
        assert (peak - base) / 1024 <= 2.5 * pairs, (base, peak)
