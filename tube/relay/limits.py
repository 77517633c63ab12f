"""Every number the relay enforces, and the token buckets that rate-limit clients.

Nothing here reads a clock: every method that depends on time takes ``now`` (seconds on any
monotonic scale), so the relay's core stays sans-I/O and its tests choose the time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from dataclasses import dataclass

__all__ = ["CHUNK_FRAME", "Limits", "RateLimiter", "TokenBucket"]

#: The size of a full DATA frame: type byte, u64 index, a 256 KiB chunk and its 16-byte tag.
CHUNK_FRAME = 1 + 8 + 262_144 + 16

_GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class Limits:
    """The relay's limits and timeouts (relay-design §5.4-5.6); sizes in bytes, times in seconds.

    Attributes:
        frame: The largest binary frame forwarded (1 MiB + 64); larger ones close with 1009.
        control: The largest control (text) message, in UTF-8 bytes; larger ones close with 1009.
        window_hint: The credit window the relay suggests to peers in ``welcome`` (chunks).
        hello_s: From the upgrade until ``hello`` and the routing message (``wait``, ``claim``,
            ``resume``) must have arrived.
        wait_s: A nameplate's life from allocation until pairing (then 4005, "nobody came").
        idle_s: A forwarded frame may wait this long for the destination (then 4008, stalled).
        grace_s: A resumable pair waits this long for a dropped side (then 4006 / 4010).
        bye_s: After one side's ``bye``, the other has this long for its own (then 4006).
        lifetime_s: The longest a pair may live (then 4007).
        max_bytes: The most bytes a pair may forward, both ways (then 4007): the 64 GiB file
            cap plus 1 % for framing and resends.
        high_water: Per direction, reading a sender stops while this much waits for its peer.
        low_water: ... and resumes under this much.
        allocations_per_minute: Nameplate allocations per client address and minute.
        outstanding_per_ip: Nameplates one address may hold unpaired at once.
        claims_per_minute: Claims per client address and minute.
        unknown_claims: Claims of unknown nameplates allowed per address in
            ``unknown_claims_window_s``; one more blocks the address for ``block_s``.
        unknown_claims_window_s: See ``unknown_claims``.
        block_s: How long a guessing address stays blocked.
        pairs_per_ip: Transfers one address may take part in at once: a side of its own
            waiting for the other side, or a pair with a side from it (one, even when both
            sides are; then 4004, too many transfers).
        connections_per_ip: WebSocket connections one address may hold at once.
        resumes_per_minute: Resume attempts per resume id and minute.
        max_pairs: Transfers the relay holds at once: pairs, and codes given and not paired
            yet (a pair counts once, not once per side); beyond it, no code is given (503).
        max_connections: WebSocket connections the relay holds at once (then 4009).
        space_factor: The nameplate space is kept at least this many times the number of
            nameplates in use, so that blind claims mostly miss.
        tracked_addresses: Rate-limit state kept for at most this many addresses; the
            longest-idle ones are forgotten first.
    """

    frame: int = 1_048_640
    control: int = 4096
    window_hint: int = 16
    hello_s: float = 10.0
    wait_s: float = 600.0
    idle_s: float = 60.0
    grace_s: float = 120.0
    bye_s: float = 5.0
    lifetime_s: float = 24 * 3600.0
    max_bytes: int = 64 * _GIB + (64 * _GIB) // 100
    high_water: int = 1 << 20
    low_water: int = 256 << 10
    allocations_per_minute: int = 30
    outstanding_per_ip: int = 8
    claims_per_minute: int = 20
    unknown_claims: int = 10
    unknown_claims_window_s: float = 600.0
    block_s: float = 600.0
    pairs_per_ip: int = 8
    connections_per_ip: int = 32
    resumes_per_minute: int = 10
    max_pairs: int = 10_000
    max_connections: int = 30_000
    space_factor: int = 30
    tracked_addresses: int = 100_000

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{field.name} must be a positive number, got {value!r}")
        if self.low_water > self.high_water:
            raise ValueError("low_water must not exceed high_water")
        if self.frame < CHUNK_FRAME:
            raise ValueError(f"frame must hold a full DATA frame ({CHUNK_FRAME} bytes)")

    def replace(self, **changes: float) -> Limits:
        """A copy with some limits changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second; the caller passes the time.

    Concurrency: none; owned by one core.
    """

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, now: float) -> float:
        """Take one token: 0.0 if there was one, else the seconds until one is there."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        """True when the bucket is full again (its state can be forgotten)."""
        self._refill(now)
        return self.tokens >= self.capacity


class RateLimiter:
    """One token bucket per key (a client address, a resume id), with a bounded memory.

    Buckets that are full again say nothing a new bucket would not, so they are dropped when
    the table outgrows ``max_keys``; if it is still too large, the oldest keys go.
    """

    __slots__ = ("_buckets", "capacity", "max_keys", "rate")

    def __init__(self, capacity: float, per_seconds: float, max_keys: int) -> None:
        self.capacity = capacity
        self.rate = capacity / per_seconds
        self.max_keys = max_keys
        self._buckets: dict[Hashable, TokenBucket] = {}

    def take(self, key: Hashable, now: float) -> float:
        """Take a token for ``key``: 0.0 if allowed, else the seconds to wait."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self.prune(now)
            bucket = self._buckets[key] = TokenBucket(self.capacity, self.rate, now)
        return bucket.take(now)

    def prune(self, now: float) -> None:
        """Forget the buckets that are full again; then the oldest, down to 3/4 of the cap."""
        buckets = self._buckets
        for key in [key for key, bucket in buckets.items() if bucket.full(now)]:
            del buckets[key]
        excess = len(buckets) - (self.max_keys * 3) // 4
        if excess > 0:
            for key in list(buckets)[:excess]:  # dicts keep insertion order: oldest first
                del buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
