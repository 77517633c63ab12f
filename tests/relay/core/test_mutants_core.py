"""The relay core's edges that its mutation run found untested (issue 24, docs/mutation.md):
what each refusal says (the close reason and the error message before it, not only the code),
the counters /metrics shows, who forwards to whom, and what is forgotten when."""

from __future__ import annotations

import random
from typing import Any

from tube.relay.core import (
    CROWDED,
    PROTOCOL_ERROR,
    RATE_LIMITED,
    RESUME_UNKNOWN,
    Action,
    Close,
    Relay,
    decode_id,
    encode_id,
)
from tube.relay.limits import Limits

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
