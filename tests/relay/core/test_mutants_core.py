"""The relay core's edges that its mutation run found untested (issue 24, docs/mutation.md):
what each refusal says (the close reason and the error message before it, not only the code),
the counters /metrics shows, who forwards to whom, and what is forgotten when."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tube.relay.core import (
    BUSY,
    CROWDED,
    LIMIT_EXCEEDED,
    PROTOCOL_ERROR,
    RATE_LIMITED,
    RESUME_UNKNOWN,
    TOO_BIG,
    Action,
    Close,
    Refusal,
    Relay,
    decode_id,
    encode_id,
)
from tube.relay.limits import Limits, RateLimiter, TokenBucket

from .test_core import IP, OTHER_IP, World, msg, sent


def close_of(actions: list[Action], cid: int) -> Close:
    found = [a for a in actions if isinstance(a, Close) and a.cid == cid]
    assert len(found) == 1, actions
    return found[0]


def error_of(actions: list[Action], cid: int) -> dict[str, Any]:
    errors = [m for m in sent(actions, cid) if m["t"] == "error"]
    assert len(errors) == 1, actions
    return errors[0]


def resuming(world: World, role: str = "send") -> int:
    cid = world.connect(None)
    world.hello(cid, role)
    return cid


# ------------------------------------------------------------------ resume and resumable


def test_a_resume_without_rid_or_with_another_role_says_so() -> None:
    world = World()
    for message in (
        msg("resume", role="send"),
        msg("resume", rid=encode_id(bytes(16)), role="recv"),
    ):
        cid = resuming(world, "send")
        actions = world.relay.text(cid, message, world.now)
        assert close_of(actions, cid) == Close(
            cid, PROTOCOL_ERROR, "resume needs a rid and the hello's role"
        )


def test_a_rate_limited_resume_says_when_to_retry_and_is_counted() -> None:
    world = World(Limits(resumes_per_minute=2))
    rid = encode_id(bytes(range(16)))
    for _ in range(2):
        cid = resuming(world)
        actions = world.relay.text(cid, msg("resume", rid=rid, role="send"), world.now)
        assert close_of(actions, cid).code == RESUME_UNKNOWN
    cid = resuming(world)
    actions = world.relay.text(cid, msg("resume", rid=rid, role="send"), world.now)
    close = close_of(actions, cid)
    assert (close.code, close.reason) == (RATE_LIMITED, "rate limited")
    error = error_of(actions, cid)
    assert error["code"] == RATE_LIMITED and error["reason"] == "rate limited"
    assert isinstance(error["retry_after"], int) and 1 <= error["retry_after"] <= 60
    assert world.relay.stats()["rate_limited"]["resume"] == 1


def test_unknown_and_crowded_resumes_say_why() -> None:
    world = World()
    s, r, _ = world.pair()
    rid = world.resumable(s, r)
    assert world.relay.knows_rid(rid)
    assert not world.relay.knows_rid(bytes(16))
    cid = resuming(world)
    actions = world.relay.text(cid, msg("resume", rid=encode_id(bytes(16)), role="send"), world.now)
    assert close_of(actions, cid) == Close(cid, RESUME_UNKNOWN, "resume unknown or expired")
    assert error_of(actions, cid)["reason"] == "resume unknown or expired"
    cid = resuming(world)
    actions = world.relay.text(cid, msg("resume", rid=encode_id(rid), role="send"), world.now)
    assert close_of(actions, cid) == Close(cid, CROWDED, "that side of the pair is connected")


def test_resumable_without_a_rid_or_a_pair_says_so() -> None:
    world = World()
    s, _, _ = world.pair()
    actions = world.relay.text(s, msg("resumable"), world.now)
    assert close_of(actions, s) == Close(s, PROTOCOL_ERROR, "resumable needs a rid")
    # (A connection without a pair never gets here: its state refuses 'resumable' first.)


# ------------------------------------------------------------------ who forwards to whom


def test_peer_of_follows_the_pair() -> None:
    world = World(Limits(grace_s=120))
    assert world.relay.peer_of(12345) is None
    nameplate = world.allocate()
    s = world.connect(nameplate)
    world.hello(s, "send")
    assert world.relay.peer_of(s) is None  # not paired yet
    world.relay.text(s, msg("wait"), world.now)
    r = world.connect(nameplate, OTHER_IP)
    world.hello(r, "recv")
    world.relay.text(r, msg("claim"), world.now)
    assert (world.relay.peer_of(s), world.relay.peer_of(r)) == (r, s)
    rid = world.resumable(s, r)
    world.relay.disconnected(r, world.now)
    assert world.relay.peer_of(s) is None  # detached: frames go nowhere
    back = resuming(world, "recv")
    world.relay.text(back, msg("resume", rid=encode_id(rid), role="recv"), world.now)
    assert (world.relay.peer_of(s), world.relay.peer_of(back)) == (back, s)


def test_sent_for_an_unknown_or_unpaired_connection_does_nothing() -> None:
    world = World()
    world.relay.sent(999, world.now)
    cid = resuming(world)
    world.relay.sent(cid, world.now)


# ------------------------------------------------------------------ what is forgotten


def test_release_drops_only_a_nameplate_nobody_uses() -> None:
    world = World()
    unused = world.allocate()
    used = world.allocate()
    s = world.connect(used)
    world.hello(s, "send")
    world.relay.text(s, msg("wait"), world.now)
    assert world.relay.stats()["nameplates"] == 2
    world.relay.release_nameplate(used)  # a sender waits on it: kept
    world.relay.release_nameplate("no-such-nameplate")
    assert world.relay.stats()["nameplates"] == 2
    world.relay.release_nameplate(unused)
    assert world.relay.stats()["nameplates"] == 1
    # The sender still pairs through the kept one.
    r = world.connect(used, OTHER_IP)
    world.hello(r, "recv")
    actions = world.relay.text(r, msg("claim"), world.now)
    assert [m["t"] for m in sent(actions, r)] == ["paired"]


def test_an_ended_pair_leaves_no_trace_in_the_stats() -> None:
    world = World()
    s, r, _ = world.pair()
    world.relay.text(s, msg("bye", mood="happy"), world.now)
    world.relay.disconnected(s, world.now)
    world.relay.disconnected(r, world.now)
    stats = world.relay.stats()
    assert set(stats["pairs"].values()) == {0}, stats["pairs"]
    assert set(stats["connections"].values()) == {0}, stats["connections"]


class Colliding(random.Random):
    """A random source whose first two 16-byte draws are the same (a pair id collision)."""

    def __init__(self) -> None:
        super().__init__(7)
        self.draws = 0

    def randbytes(self, n: int) -> bytes:
        if n == 16:
            self.draws += 1
            if self.draws <= 2:
                return b"\xaa" * 16
        return super().randbytes(n)


def test_a_colliding_pair_id_is_drawn_again() -> None:
    world = World()
    world.relay = Relay(Limits(), rng=Colliding())
    _, _, first = world.pair(IP, OTHER_IP)
    _, _, second = world.pair("192.0.2.7", "198.51.100.9")
    assert first != second
    for pair_id in (first, second):
        decoded = decode_id(pair_id)
        assert decoded is not None and len(decoded) == 16


def test_a_blocked_guesser_is_counted_once() -> None:
    world = World()
    for _ in range(11):  # ten unknown claims, then the block (as in test_core)
        cid = world.connect("1234", "203.0.113.9")
        world.hello(cid, "recv")
        world.relay.text(cid, msg("claim"), world.now)
        world.relay.disconnected(cid, world.now)
    assert world.relay.stats()["rate_limited"]["guessing"] == 1


# ------------------------------------------------------------------ frames, claims and byes say why


def test_binary_refusals_say_why_and_forwarded_bytes_add_up() -> None:
    world = World(Limits(max_bytes=300_000))
    early = resuming(world)
    _, actions = world.relay.binary(early, 10, world.now)
    assert close_of(actions, early) == Close(early, PROTOCOL_ERROR, "binary frame before pairing")
    s, r, _ = world.pair()
    assert world.relay.binary(s, 100_000, world.now) == (r, [])
    world.relay.sent(s, world.now)
    assert world.relay.binary(r, 150_000, world.now) == (s, [])
    assert world.relay.stats()["bytes_forwarded"] == 250_000
    big = world.relay.limits.frame + 1
    peer, actions = world.relay.binary(s, big, world.now)
    assert peer is None and close_of(actions, s) == Close(s, TOO_BIG, "frame too big")
    s, r, _ = world.pair("192.0.2.7", "198.51.100.9")
    world.relay.binary(s, 200_000, world.now)
    world.relay.sent(s, world.now)
    peer, actions = world.relay.binary(s, 200_000, world.now)
    assert peer is None
    for cid in (s, r):
        assert close_of(actions, cid) == Close(cid, LIMIT_EXCEEDED, "transfer limit exceeded")


def test_claim_refusals_say_why_and_are_counted() -> None:
    world = World(Limits(claims_per_minute=1))
    nameplate = world.allocate()
    sender_claims = world.connect(nameplate)
    world.hello(sender_claims, "send")
    actions = world.relay.text(sender_claims, msg("claim"), world.now)
    assert close_of(actions, sender_claims) == Close(
        sender_claims, PROTOCOL_ERROR, "only a receiver claims"
    )
    first = world.connect(nameplate, OTHER_IP)
    world.hello(first, "recv")
    assert world.relay.text(first, msg("claim"), world.now) == []  # waits for the sender
    second = world.connect(nameplate, "198.51.100.3")
    world.hello(second, "recv")
    actions = world.relay.text(second, msg("claim"), world.now)
    assert close_of(actions, second) == Close(
        second, CROWDED, "this nameplate is being claimed already"
    )
    # One claim a minute per address: the second from OTHER_IP waits.
    again = world.connect(nameplate, OTHER_IP)
    world.hello(again, "recv")
    actions = world.relay.text(again, msg("claim"), world.now)
    assert close_of(actions, again) == Close(again, RATE_LIMITED, "rate limited")
    retry = error_of(actions, again)["retry_after"]
    assert isinstance(retry, int) and 1 <= retry <= 60
    assert world.relay.stats()["rate_limited"]["claim"] == 1


def test_a_blocked_address_is_told_how_long_and_counted() -> None:
    world = World()
    for _ in range(11):  # ten unknown claims, then the block
        cid = world.connect("1234", "203.0.113.9")
        world.hello(cid, "recv")
        world.relay.text(cid, msg("claim"), world.now)
        world.relay.disconnected(cid, world.now)
    world.now += 100
    cid = world.connect("1234", "203.0.113.9")
    world.hello(cid, "recv")
    actions = world.relay.text(cid, msg("claim"), world.now)
    assert close_of(actions, cid) == Close(cid, RATE_LIMITED, "rate limited")
    assert error_of(actions, cid)["retry_after"] == 500  # block_s 600, 100 s later
    assert world.relay.stats()["rate_limited"]["blocked"] == 1


def test_bye_closes_with_its_reason_and_an_unknown_mood_counts_as_errory() -> None:
    world = World()
    s, r, _ = world.pair()
    actions = world.relay.text(s, msg("bye", mood="elated"), world.now)
    assert close_of(actions, s) == Close(s, 1000, "bye")
    assert world.relay.stats()["moods"] == {"errory": 1}
    actions = world.relay.text(r, msg("bye", mood="happy"), world.now)
    assert close_of(actions, r) == Close(r, 1000, "bye")
    assert world.relay.stats()["moods"] == {"errory": 1, "happy": 1}
    # Not paired: a bye is still answered with its reason.
    lone = resuming(world)
    actions = world.relay.text(lone, msg("bye", mood="lonely"), world.now)
    assert close_of(actions, lone) == Close(lone, 1000, "bye")


def test_stats_count_connections_by_state_and_pairs_made() -> None:
    world = World()
    stats = world.relay.stats()
    assert set(stats["pairs"].values()) == {0} and set(stats["connections"].values()) == {0}
    world.pair()
    world.pair("192.0.2.7", "198.51.100.9")
    waiting = world.connect(world.allocate())
    world.hello(waiting, "send")
    world.relay.text(waiting, msg("wait"), world.now)
    stats = world.relay.stats()
    assert stats["paired"] == 2
    assert stats["pairs"]["paired"] == 2
    assert stats["connections"]["paired"] == 4
    assert stats["connections"]["waiting"] == 1
    assert sum(stats["connections"].values()) == 5


def test_limits_replace_changes_only_what_it_names_and_validates() -> None:
    limits = Limits()
    changed = limits.replace(idle_s=5)
    assert changed.idle_s == 5 and changed.grace_s == limits.grace_s
    assert limits.replace() == limits
    with pytest.raises(ValueError):
        limits.replace(idle_s=0)


def test_a_bucket_is_full_again_at_capacity_and_prune_keeps_three_quarters() -> None:
    bucket = TokenBucket(2, 1.0, 0.0)
    assert bucket.full(0.0)
    bucket.take(0.0)
    assert not bucket.full(0.5)
    assert bucket.full(1.0)  # exactly back to capacity
    limiter = RateLimiter(1, 60.0, 8)
    for key in range(8):
        assert limiter.take(key, 0.0) == 0.0  # every bucket now empty, none full
    limiter.prune(1.0)
    assert len(limiter) == 6  # the oldest two went: 3/4 of 8
    assert limiter.take(0, 1.0) == 0.0  # key 0 was among them: a fresh bucket
    assert limiter.take(7, 1.0) > 0  # key 7 stayed, still empty


# ------------------------------------------------------------------ allocation and admission


def test_allocation_refusals_say_why_when_to_retry_and_are_counted() -> None:
    few = World(Limits(outstanding_per_ip=2, wait_s=600))
    few.allocate()
    few.allocate()
    refusal = few.relay.allocate(IP, few.now)
    assert refusal == Refusal(429, "too many codes waiting from this address", 60.0)
    assert few.relay.stats()["rate_limited"]["outstanding"] == 1
    rated = World(Limits(outstanding_per_ip=100, allocations_per_minute=1))
    rated.allocate()
    refusal = rated.relay.allocate(IP, rated.now)
    assert isinstance(refusal, Refusal)
    assert (refusal.status, refusal.reason) == (429, "too many codes requested")
    assert 0 < refusal.retry_after <= 60
    assert rated.relay.stats()["rate_limited"]["allocation"] == 1
    assert rated.relay.stats()["allocated"] == 1


def test_a_full_relay_refuses_codes_and_connections_as_busy() -> None:
    # A pair holds one slot (not one per side); a code waiting for its sides holds one too.
    world = World(Limits(max_pairs=2, max_connections=4))
    world.pair()
    world.allocate("192.0.2.7")
    refusal = world.relay.allocate("192.0.2.8", world.now)
    assert refusal == Refusal(503, "the relay is busy", 30.0)
    for _ in range(3):  # connections 3 and 4 fit, the fifth does not
        world.ids += 1
        actions = world.relay.connect(world.ids, "192.0.2.9", world.now, None)
    assert close_of(actions, world.ids) == Close(world.ids, BUSY, "the relay is busy")
    assert error_of(actions, world.ids)["retry_after"] == 30


def test_too_many_transfers_or_connections_from_one_address_are_counted() -> None:
    world = World(Limits(pairs_per_ip=1))
    world.pair()
    nameplate = world.allocate()
    s = world.connect(nameplate)
    world.hello(s, "send")
    actions = world.relay.text(s, msg("wait"), world.now)
    assert close_of(actions, s) == Close(s, RATE_LIMITED, "too many transfers at once")
    assert error_of(actions, s)["retry_after"] == 60
    assert world.relay.stats()["rate_limited"]["pairs"] == 1
    crowd = World(Limits(connections_per_ip=1))
    crowd.connect(None)
    crowd.ids += 1
    actions = crowd.relay.connect(crowd.ids, IP, crowd.now, None)
    assert close_of(actions, crowd.ids) == Close(crowd.ids, RATE_LIMITED, "too many connections")
    assert error_of(actions, crowd.ids)["retry_after"] == 60
    assert crowd.relay.stats()["rate_limited"]["connections"] == 1


def test_a_freed_slot_is_taken_again() -> None:
    world = World(Limits(max_pairs=2))  # one pair's two sides
    s, r, _ = world.pair()
    world.relay.text(s, msg("bye", mood="happy"), world.now)
    world.relay.text(r, msg("bye", mood="happy"), world.now)
    world.relay.disconnected(s, world.now)
    world.relay.disconnected(r, world.now)
    world.pair("192.0.2.7", "198.51.100.9")  # the one slot is free again
