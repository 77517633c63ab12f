"""The relay's sans-I/O core: pairing, single use, limits, timers and every close code."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tube.relay.core import (
    ACCEPTS,
    Action,
    Allocation,
    Close,
    ConnState,
    Forget,
    Refusal,
    Relay,
    Send,
    TrackRid,
    decode_id,
    encode_id,
)
from tube.relay.limits import Limits, RateLimiter, TokenBucket

IP = "192.0.2.1"
OTHER_IP = "198.51.100.2"


def msg(kind: str, **fields: Any) -> str:
    return json.dumps({"t": kind, **fields})


def closes(actions: list[Action]) -> dict[int, int]:
    return {a.cid: a.code for a in actions if isinstance(a, Close)}


def sent(actions: list[Action], cid: int) -> list[dict[str, Any]]:
    return [a.message for a in actions if isinstance(a, Send) and a.cid == cid]


class World:
    """A core and a clock, with helpers to drive a sender and a receiver."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.relay = Relay(limits or Limits(), rng=random.Random(7))
        self.now = 1000.0
        self.ids = 0

    def allocate(self, ip: str = IP) -> str:
        result = self.relay.allocate(ip, self.now)
        assert isinstance(result, Allocation), result
        return result.nameplate

    def connect(self, nameplate: str | None, ip: str = IP) -> int:
        self.ids += 1
        assert self.relay.connect(self.ids, ip, self.now, nameplate) == []
        return self.ids

    def hello(self, cid: int, role: str) -> list[Action]:
        return self.relay.text(cid, msg("hello", v=1, role=role), self.now)

    def pair(self, ip_s: str = IP, ip_r: str = OTHER_IP) -> tuple[int, int, str]:
        nameplate = self.allocate(ip_s)
        s = self.connect(nameplate, ip_s)
        r = self.connect(nameplate, ip_r)
        assert sent(self.hello(s, "send"), s)[0]["t"] == "welcome"
        assert sent(self.hello(r, "recv"), r)[0]["t"] == "welcome"
        assert self.relay.text(s, msg("wait"), self.now) == []
        actions = self.relay.text(r, msg("claim"), self.now)
        paired_s, paired_r = sent(actions, s), sent(actions, r)
        assert paired_s[0]["t"] == "paired" and paired_s == paired_r
        assert Forget(nameplate) in actions
        return s, r, paired_s[0]["pair_id"]

    def resumable(self, s: int, r: int) -> bytes:
        rid = bytes(range(16))
        assert self.relay.text(s, msg("resumable", rid=encode_id(rid)), self.now) == []
        actions = self.relay.text(r, msg("resumable", rid=encode_id(rid)), self.now)
        assert actions == [TrackRid(rid, self.relay.limits.grace_s)]
        return rid

    def advance(self, seconds: float) -> list[Action]:
        self.now += seconds
        return self.relay.on_deadline(self.now)


def test_pairing_forwards_both_ways_and_the_nameplate_is_single_use() -> None:
    world = World()
    s, r, pair_id = world.pair()
    assert decode_id(pair_id) is not None
    assert world.relay.binary(s, 262169, world.now) == (r, [])
    world.relay.sent(s, world.now)
    assert world.relay.binary(r, 300, world.now) == (s, [])
    # The nameplate was deleted at pairing: a second claimant (or sender) finds nothing.
    late = world.connect(None)  # on /v1/relay, without a nameplate
    world.hello(late, "recv")
    assert closes(world.relay.text(late, msg("claim"), world.now)) == {late: 4002}


def test_a_used_nameplate_gives_4002_to_a_second_claimant() -> None:
    world = World()
    nameplate = world.allocate()
    s, r = world.connect(nameplate), world.connect(nameplate, OTHER_IP)
    world.hello(s, "send"), world.hello(r, "recv")
    world.relay.text(s, msg("wait"), world.now)
    world.relay.text(r, msg("claim"), world.now)
    third = world.connect(nameplate, "203.0.113.3")
    world.hello(third, "recv")
    actions = world.relay.text(third, msg("claim"), world.now)
    assert closes(actions) == {third: 4002}
    assert sent(actions, third) == [
        {"t": "error", "code": 4002, "reason": "no such nameplate (unknown, expired or used)"}
    ]


def test_claim_before_the_sender_waits_until_it_comes() -> None:
    world = World()
    nameplate = world.allocate()
    r = world.connect(nameplate, OTHER_IP)
    world.hello(r, "recv")
    assert world.relay.text(r, msg("claim"), world.now) == []
    assert world.relay.state_of(r) is ConnState.CLAIMING
    s = world.connect(nameplate)
    world.hello(s, "send")
    actions = world.relay.text(s, msg("wait"), world.now)
    assert sent(actions, s)[0]["t"] == "paired" and sent(actions, r)[0]["t"] == "paired"


def test_crowded_nameplate_and_role_checks() -> None:
    world = World()
    nameplate = world.allocate()
    s1, s2 = world.connect(nameplate), world.connect(nameplate)
    world.hello(s1, "send"), world.hello(s2, "send")
    world.relay.text(s1, msg("wait"), world.now)
    assert closes(world.relay.text(s2, msg("wait"), world.now)) == {s2: 4003}
    r = world.connect(nameplate)
    world.hello(r, "recv")
    assert closes(world.relay.text(r, msg("wait"), world.now)) == {r: 4000}


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", 4000),
        ('{"v": 1}', 4000),
        ('["hello"]', 4000),
        (msg("hello", v=2, role="send"), 4001),
        (msg("hello", v=True, role="send"), 4001),
        (msg("hello", v=1, role="thief"), 4000),
        (msg("claim"), 4000),  # before hello
        ("x" * 5000, 1009),
    ],
)
def test_bad_control_messages_close_with_their_code(text: str, code: int) -> None:
    world = World()
    cid = world.connect(None)
    assert closes(world.relay.text(cid, text, world.now)) == {cid: code}
    # Once closed, nothing more is taken.
    assert world.relay.text(cid, msg("hello", v=1, role="send"), world.now) == []


def test_binary_before_pairing_is_a_protocol_error() -> None:
    world = World()
    cid = world.connect(world.allocate())
    world.hello(cid, "send")
    target, actions = world.relay.binary(cid, 10, world.now)
    assert target is None and closes(actions) == {cid: 4000}


def test_every_state_refuses_what_its_table_does_not_list() -> None:
    kinds = {"hello", "wait", "claim", "resume", "resumable", "bye", "list", "paired"}
    assert ACCEPTS[ConnState.PAIRED] == {"resumable", "bye"}
    world = World()
    _s, _r, _ = world.pair()
    for kind in sorted(kinds - ACCEPTS[ConnState.PAIRED]):
        world2 = World()
        s2, _, _ = world2.pair()
        assert closes(world2.relay.text(s2, msg(kind), world2.now)).get(s2) == 4000, kind


def test_hello_timeout_closes_with_4000() -> None:
    world = World(Limits(hello_s=10))
    quiet = world.connect(None)
    hello_only = world.connect(None)
    world.hello(hello_only, "send")
    assert world.advance(9.9) == []
    assert closes(world.advance(0.2)) == {quiet: 4000, hello_only: 4000}
    default = World()  # hello_s=10.0: said as "10 s", as the welcome says its limits
    cid = default.connect(None)
    reasons = [a.reason for a in default.advance(10) if isinstance(a, Close) and a.cid == cid]
    assert reasons == ["nothing to do after 10 s"]


def test_nobody_came_closes_the_waiting_sender_with_4005() -> None:
    world = World(Limits(wait_s=600))
    nameplate = world.allocate()
    s = world.connect(nameplate)
    world.hello(s, "send")
    world.relay.text(s, msg("wait"), world.now)
    actions = world.advance(600.0)
    assert closes(actions) == {s: 4005}
    assert Forget(nameplate) in actions
    assert not world.relay.knows_nameplate(nameplate)


def test_stalled_receiver_gets_4008_after_idle_s_and_progress_restarts_the_clock() -> None:
    world = World(Limits(idle_s=60))
    s, r, _ = world.pair()
    world.relay.binary(s, 1000, world.now)
    world.advance(30)
    world.relay.sent(s, world.now)  # progress
    world.relay.binary(s, 1000, world.now)
    assert world.advance(59) == []
    assert closes(world.advance(1.0)) == {s: 4008, r: 4008}


def test_an_idle_pair_with_nothing_in_flight_is_not_stalled() -> None:
    world = World(Limits(idle_s=60))
    world.pair()
    assert closes(world.advance(3600)) == {}


def test_max_bytes_closes_both_sides_with_4007() -> None:
    world = World(Limits(max_bytes=2_000_000))
    s, r, _ = world.pair()
    assert world.relay.binary(s, 1_000_000, world.now)[0] == r
    world.relay.sent(s, world.now)
    assert world.relay.binary(s, 1_000_000, world.now)[0] == r
    world.relay.sent(s, world.now)
    target, actions = world.relay.binary(r, 10, world.now)
    assert target is None and closes(actions) == {s: 4007, r: 4007}


def test_lifetime_closes_with_4007() -> None:
    world = World(Limits(lifetime_s=100))
    s, r, _ = world.pair()
    assert closes(world.advance(100)) == {s: 4007, r: 4007}


def test_oversize_frame_is_1009() -> None:
    world = World()
    s, _, _ = world.pair()
    _, actions = world.relay.binary(s, world.relay.limits.frame + 1, world.now)
    assert closes(actions)[s] == 1009


def test_bye_closes_with_1000_and_the_peer_gets_gone_then_4006_without_its_own_bye() -> None:
    world = World(Limits(bye_s=5))
    s, r, _ = world.pair()
    actions = world.relay.text(s, msg("bye", mood="happy"), world.now)
    assert closes(actions) == {s: 1000}
    assert sent(actions, r) == [{"t": "peer", "state": "gone"}]
    assert closes(world.advance(5)) == {r: 4006}


def test_bye_from_both_sides_ends_quietly() -> None:
    world = World(Limits(bye_s=5))
    s, r, _ = world.pair()
    world.relay.text(s, msg("bye", mood="happy"), world.now)
    assert closes(world.relay.text(r, msg("bye", mood="happy"), world.now)) == {r: 1000}
    assert world.advance(10) == []
    assert world.relay.moods["happy"] == 2


def test_a_dropped_side_of_a_non_resumable_pair_ends_the_survivor_with_4006() -> None:
    world = World()
    s, r, _ = world.pair()
    assert closes(world.relay.disconnected(r, world.now)) == {s: 4006}


def test_resume_within_grace_rejoins_the_pair_with_the_same_pair_id() -> None:
    world = World(Limits(grace_s=120))
    s, r, pair_id = world.pair()
    rid = world.resumable(s, r)
    actions = world.relay.disconnected(r, world.now)
    assert sent(actions, s) == [{"t": "peer", "state": "lost"}]
    # While detached, frames are dropped both ways and the survivor stays.
    assert world.relay.binary(s, 100, world.now) == (None, [])
    world.advance(60)
    back = world.connect(None, OTHER_IP)
    world.hello(back, "recv")
    actions = world.relay.text(back, msg("resume", rid=encode_id(rid), role="recv"), world.now)
    assert sent(actions, back) == [{"t": "paired", "pair_id": pair_id}]
    assert sent(actions, s) == [{"t": "peer", "state": "back"}]
    assert world.relay.binary(s, 100, world.now) == (back, [])
    world.relay.sent(s, world.now)
    # The old grace timer no longer applies.
    assert closes(world.advance(120)) == {}


def test_grace_expiry_gives_4006_then_the_rid_is_unknown_4010() -> None:
    world = World(Limits(grace_s=120))
    s, r, _ = world.pair()
    rid = world.resumable(s, r)
    world.relay.disconnected(r, world.now)
    actions = world.advance(120)
    assert closes(actions) == {s: 4006}
    assert TrackRid(rid, None) in actions
    late = world.connect(None, OTHER_IP)
    world.hello(late, "recv")
    assert closes(world.relay.text(late, msg("resume", rid=encode_id(rid), role="recv"), 0)) == {
        late: 4010
    }


def test_resume_for_a_role_present_is_crowded_4003_and_a_wrong_rid_4010() -> None:
    world = World()
    s, r, _ = world.pair()
    rid = world.resumable(s, r)
    intruder = world.connect(None)
    world.hello(intruder, "send")
    resume = msg("resume", rid=encode_id(rid), role="send")
    assert closes(world.relay.text(intruder, resume, world.now)) == {intruder: 4003}
    other = world.connect(None)
    world.hello(other, "send")
    wrong = msg("resume", rid=encode_id(bytes(16)), role="send")
    assert closes(world.relay.text(other, wrong, world.now)) == {other: 4010}


def test_different_resumable_rids_register_nothing() -> None:
    world = World()
    s, r, _ = world.pair()
    assert world.relay.text(s, msg("resumable", rid=encode_id(bytes(16))), world.now) == []
    assert world.relay.text(r, msg("resumable", rid=encode_id(b"\1" * 16)), world.now) == []
    assert closes(world.relay.disconnected(r, world.now)) == {s: 4006}


def test_both_sides_dropped_can_both_come_back() -> None:
    world = World()
    s, r, pair_id = world.pair()
    rid = world.resumable(s, r)
    world.relay.disconnected(s, world.now)
    world.relay.disconnected(r, world.now)
    s2 = world.connect(None)
    world.hello(s2, "send")
    assert world.relay.text(s2, msg("resume", rid=encode_id(rid), role="send"), world.now) == []
    assert world.relay.state_of(s2) is ConnState.RESUMING
    r2 = world.connect(None)
    world.hello(r2, "recv")
    actions = world.relay.text(r2, msg("resume", rid=encode_id(rid), role="recv"), world.now)
    assert sent(actions, r2) == [{"t": "paired", "pair_id": pair_id}]
    assert sent(actions, s2) == [{"t": "peer", "state": "back"}]


def test_a_pair_that_drops_and_resumes_keeps_its_transfer_slots() -> None:
    """A resumable pair keeps its transfer slot (one of max_pairs, one of pairs_per_ip of each
    address it was paired from) while its sides are away and after they come back (from any
    address): dropping and resuming frees none, so it cannot be used to run more transfers
    than pairs_per_ip and max_pairs allow. The pair's end frees it."""
    world = World(Limits(pairs_per_ip=1, grace_s=120))
    s, r, _ = world.pair(IP, OTHER_IP)
    rid = world.resumable(s, r)

    def new_sender(ip: str) -> int | None:
        """A new transfer's sender from ``ip``: the close code it gets when it waits."""
        cid = world.connect(world.allocate(ip), ip)
        world.hello(cid, "send")
        return closes(world.relay.text(cid, msg("wait"), world.now)).get(cid)

    def back(role: str) -> int:
        cid = world.connect(None, "203.0.113.77")
        world.hello(cid, role)
        world.relay.text(cid, msg("resume", rid=encode_id(rid), role=role), world.now)
        return cid

    world.relay.disconnected(s, world.now)
    world.relay.disconnected(r, world.now)
    assert new_sender(IP) == 4004, "the sender's slot is kept while it is away"
    assert new_sender(OTHER_IP) == 4004, "and the receiver's"
    s2, r2 = back("send"), back("recv")
    assert world.relay.state_of(s2) is ConnState.PAIRED
    assert new_sender(IP) == 4004, "a resumed side holds the slot it had"
    assert new_sender(OTHER_IP) == 4004
    assert new_sender("203.0.113.77") is None, "counted against the first addresses, not the new"
    world.relay.disconnected(r2, world.now)  # away again, then the pair ends at the grace's end
    assert closes(world.advance(120)) == {s2: 4006}
    assert new_sender(IP) is None
    assert new_sender(OTHER_IP) is None

    full = World(Limits(max_pairs=1, grace_s=120))  # one pair, away, is all it holds
    s, r, _ = full.pair()
    full.resumable(s, r)
    full.relay.disconnected(s, full.now)
    full.relay.disconnected(r, full.now)
    assert full.relay.allocate("203.0.113.9", full.now) == Refusal(503, "the relay is busy", 30.0)


def test_max_pairs_counts_a_pair_once_and_every_code_given_gets_its_slot() -> None:
    """max_pairs is the number of transfers: a pair is one (not one per side), a code waiting
    for its sides is one; a code is given only while one more fits, so none is refused later."""
    world = World(Limits(max_pairs=3))
    world.pair("192.0.2.10", "198.51.100.10")
    first, second = world.allocate("192.0.2.11"), world.allocate("192.0.2.12")
    assert world.relay.allocate("192.0.2.13", world.now) == Refusal(503, "the relay is busy", 30.0)
    # The codes given fill up: a claimant first on one, a sender first on the other.
    r = world.connect(first, "198.51.100.11")
    world.hello(r, "recv")
    assert world.relay.text(r, msg("claim"), world.now) == []
    s = world.connect(second, "192.0.2.12")
    world.hello(s, "send")
    assert world.relay.text(s, msg("wait"), world.now) == []
    s2 = world.connect(first, "192.0.2.11")
    world.hello(s2, "send")
    assert sent(world.relay.text(s2, msg("wait"), world.now), s2)[0]["t"] == "paired"
    r2 = world.connect(second, "198.51.100.12")
    world.hello(r2, "recv")
    assert sent(world.relay.text(r2, msg("claim"), world.now), r2)[0]["t"] == "paired"
    assert world.relay.stats()["pairs"]["paired"] == 3
    assert world.relay.allocate("192.0.2.13", world.now) == Refusal(503, "the relay is busy", 30.0)


def test_pairs_per_ip_counts_a_pair_from_one_address_once() -> None:
    """Both sides behind one address (an office's NAT) are one transfer for it; a pair between
    two addresses is one for each."""
    world = World(Limits(pairs_per_ip=2))
    world.pair(IP, IP)
    world.pair(IP, OTHER_IP)

    def new_sender(ip: str) -> int | None:
        cid = world.connect(world.allocate(ip), ip)
        world.hello(cid, "send")
        return closes(world.relay.text(cid, msg("wait"), world.now)).get(cid)

    assert new_sender(IP) == 4004
    assert new_sender(OTHER_IP) is None, "the pair between the two counts once for OTHER_IP"
    World(Limits(pairs_per_ip=1)).pair(IP, IP)  # one transfer: fits (pair() checks "paired")


def test_unknown_claims_block_the_address_after_ten_with_retry_after() -> None:
    world = World()
    codes = []
    for _ in range(11):
        cid = world.connect("1234", "203.0.113.9")
        world.hello(cid, "recv")
        actions = world.relay.text(cid, msg("claim"), world.now)
        codes.append(closes(actions)[cid])
        world.relay.disconnected(cid, world.now)
    assert codes == [4002] * 10 + [4004]
    error = sent(actions, cid)[0]
    assert error["code"] == 4004 and error["retry_after"] == 600
    # Blocked for the real nameplate too, while another address is not.
    nameplate = world.allocate()
    blocked = world.connect(nameplate, "203.0.113.9")
    world.hello(blocked, "recv")
    assert closes(world.relay.text(blocked, msg("claim"), world.now)) == {blocked: 4004}
    fine = world.connect(nameplate, OTHER_IP)
    world.hello(fine, "recv")
    assert world.relay.text(fine, msg("claim"), world.now) == []
    # The block ends after block_s.
    world.now += 601
    again = world.connect("1234", "203.0.113.9")
    world.hello(again, "recv")
    assert closes(world.relay.text(again, msg("claim"), world.now)) == {again: 4002}


def test_a_scary_bye_counts_as_a_failed_guess_of_the_claimant() -> None:
    world = World()
    s, _r, _ = world.pair(IP, "203.0.113.7")
    world.relay.text(s, msg("bye", mood="scary"), world.now)
    for _ in range(9):
        cid = world.connect("1234", "203.0.113.7")
        world.hello(cid, "recv")
        assert closes(world.relay.text(cid, msg("claim"), world.now)) == {cid: 4002}
    cid = world.connect("1234", "203.0.113.7")
    world.hello(cid, "recv")
    assert closes(world.relay.text(cid, msg("claim"), world.now)) == {cid: 4004}


def test_allocation_rate_and_outstanding_limits() -> None:
    world = World(Limits(outstanding_per_ip=100))
    results = [world.relay.allocate(IP, world.now) for _ in range(31)]
    assert all(isinstance(r, Allocation) for r in results[:30])
    refusal = results[30]
    assert isinstance(refusal, Refusal) and refusal.status == 429 and refusal.retry_after > 0
    assert isinstance(world.relay.allocate(OTHER_IP, world.now), Allocation)
    few = World(Limits(outstanding_per_ip=2))
    assert isinstance(few.relay.allocate(IP, 0), Allocation)
    assert isinstance(few.relay.allocate(IP, 0), Allocation)
    third = few.relay.allocate(IP, 0)
    assert isinstance(third, Refusal) and third.status == 429


def test_pairs_per_ip_and_connections_per_ip() -> None:
    world = World(Limits(pairs_per_ip=2, connections_per_ip=3))
    for _ in range(2):
        world.pair(IP, OTHER_IP)
    world2 = World(Limits(pairs_per_ip=2))
    world2.pair()
    world2.pair()
    nameplate = world2.allocate("203.0.113.50")
    s = world2.connect(nameplate)
    world2.hello(s, "send")
    assert closes(world2.relay.text(s, msg("wait"), world2.now)) == {s: 4004}
    crowd = World(Limits(connections_per_ip=2))
    crowd.connect(None)
    crowd.connect(None)
    crowd.ids += 1
    actions = crowd.relay.connect(crowd.ids, IP, crowd.now, None)
    assert closes(actions) == {crowd.ids: 4004}


def test_nameplates_grow_with_the_waiting_population() -> None:
    world = World(Limits(allocations_per_minute=100_000, outstanding_per_ip=100_000))
    names = [world.allocate() for _ in range(400)]
    assert len(set(names)) == 400
    assert all(len(n) == 4 for n in names[:250])
    assert len(names[-1]) == 5  # past ~300 waiting, the space grows to keep 30x margin
    assert all(n[0] != "0" and n.isdigit() for n in names)


def test_ids_round_trip_and_reject_non_canonical_spellings() -> None:
    data = bytes(range(16))
    assert decode_id(encode_id(data)) == data
    for bad in (None, 5, "", "A" * 21, "A" * 23, encode_id(data)[:-1] + "B", "!" * 22):
        assert decode_id(bad) is None


def test_token_bucket_and_rate_limiter_bound_their_memory() -> None:
    bucket = TokenBucket(2, 1.0, 0.0)
    assert bucket.take(0.0) == 0.0 and bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(1.0)
    assert bucket.take(1.0) == 0.0
    limiter = RateLimiter(1, 60.0, max_keys=100)
    for i in range(1000):
        limiter.take(f"10.0.{i // 256}.{i % 256}", float(i))
    assert len(limiter) <= 100


def test_stats_never_name_a_nameplate_or_address() -> None:
    world = World()
    nameplate = world.allocate()
    world.pair()
    text = json.dumps(world.relay.stats())
    assert nameplate not in text and IP not in text and OTHER_IP not in text


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="idle_s"):
        Limits(idle_s=0)
    with pytest.raises(ValueError, match="low_water"):
        Limits(low_water=2 << 20)
    with pytest.raises(ValueError, match="frame"):
        Limits(frame=1000)


# ------------------------------------------------------------------ properties

MESSAGES = st.one_of(
    st.sampled_from(
        [
            msg("hello", v=1, role="send"),
            msg("hello", v=1, role="recv"),
            msg("wait"),
            msg("claim"),
            msg("resumable", rid=encode_id(bytes(16))),
            msg("resume", rid=encode_id(bytes(16)), role="send"),
            msg("resume", rid=encode_id(bytes(16)), role="recv"),
            msg("bye", mood="happy"),
            msg("bye", mood="scary"),
            msg("list"),
            "{}",
            "[]",
            "null",
        ]
    ),
    st.text(max_size=50),
)


class RelayMachine(RuleBasedStateMachine):
    """Any sequence of clients, messages, frames, drops and time keeps the core's promises."""

    def __init__(self) -> None:
        super().__init__()
        self.world = World(Limits(hello_s=10, wait_s=50, idle_s=20, grace_s=30, bye_s=5))
        self.nameplates: list[str] = []
        self.live: set[int] = set()
        self.closed: set[int] = set()

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send | Close):
                # The core never speaks to a connection it closed or that went.
                assert action.cid in self.live, action
            if isinstance(action, Close):
                assert action.cid not in self.closed, "closed twice"
                self.closed.add(action.cid)
                assert action.code in {1000, 1009} or 4000 <= action.code <= 4013

    @rule()
    def allocate(self) -> None:
        result = self.world.relay.allocate(IP, self.world.now)
        if isinstance(result, Allocation):
            assert result.nameplate not in self.nameplates or not self.world.relay.knows_nameplate(
                result.nameplate
            )
            self.nameplates.append(result.nameplate)

    @rule(same_address=st.booleans(), first=st.sampled_from(["send", "recv"]))
    def pair_up(self, same_address: bool, first: str) -> None:
        """A new code's two sides, in either order, from one address or two (random messages
        alone seldom pair anything)."""
        result = self.world.relay.allocate(IP, self.world.now)
        if not isinstance(result, Allocation):
            return
        self.nameplates.append(result.nameplate)
        ips = {"send": IP, "recv": IP if same_address else OTHER_IP}
        for role in (first, "recv" if first == "send" else "send"):
            self.world.ids += 1
            cid = self.world.ids
            self.live.add(cid)
            relay, now = self.world.relay, self.world.now
            self._apply(relay.connect(cid, ips[role], now, result.nameplate))
            self._apply(self.world.hello(cid, role))
            self._apply(relay.text(cid, msg("wait" if role == "send" else "claim"), now))

    @rule(index=st.integers(0, 20), ip=st.sampled_from([IP, OTHER_IP]))
    def connect(self, index: int, ip: str) -> None:
        nameplate = self.nameplates[index % len(self.nameplates)] if self.nameplates else None
        self.world.ids += 1
        cid = self.world.ids
        self.live.add(cid)
        self._apply(self.world.relay.connect(cid, ip, self.world.now, nameplate))

    @precondition(lambda self: self.live)
    @rule(pick=st.integers(0, 100), text=MESSAGES)
    def text(self, pick: int, text: str) -> None:
        cid = sorted(self.live)[pick % len(self.live)]
        state = self.world.relay.state_of(cid)
        actions = self.world.relay.text(cid, text, self.world.now)
        self._apply(actions)
        if state is ConnState.CLOSED or (cid in self.closed and not actions):
            return
        try:
            kind = json.loads(text).get("t")
        except (ValueError, AttributeError):
            kind = None
        if state is not None and kind not in ACCEPTS[state]:
            # No state accepts a message its table does not list.
            assert any(isinstance(a, Close) and a.cid == cid for a in actions) or cid in self.closed

    @precondition(lambda self: self.live)
    @rule(pick=st.integers(0, 100), size=st.integers(0, 2_000_000))
    def binary(self, pick: int, size: int) -> None:
        cid = sorted(self.live)[pick % len(self.live)]
        state = self.world.relay.state_of(cid)
        target, actions = self.world.relay.binary(cid, size, self.world.now)
        self._apply(actions)
        if target is not None:
            # Frames go only from a paired connection to its live peer.
            assert state is ConnState.PAIRED and target in self.live and target != cid
            if pick % 2:
                self.world.relay.sent(cid, self.world.now)

    @precondition(lambda self: self.live)
    @rule(pick=st.integers(0, 100))
    def drop(self, pick: int) -> None:
        cid = sorted(self.live)[pick % len(self.live)]
        self.live.discard(cid)
        self._apply(self.world.relay.disconnected(cid, self.world.now))

    @rule(seconds=st.floats(0, 100))
    def wait(self, seconds: float) -> None:
        self._apply(self.world.advance(seconds))

    @invariant()
    def no_enumeration(self) -> None:
        assert not hasattr(self.world.relay, "list_nameplates")

    @invariant()
    def transfer_slots_add_up(self) -> None:
        # White-box: the counters the limits read agree with the sides waiting and the pairs.
        relay = self.world.relay
        waiting = [conn for conn in relay._conns.values() if conn.counted]
        assert len(relay._pairs) + len(relay._nameplates) <= relay.limits.max_pairs
        per_ip = Counter(conn.ip for conn in waiting)
        per_ip.update(ip for pair in relay._pairs.values() for ip in pair.slot_ips)
        assert relay._ip_slots == per_ip

    @invariant()
    def deadlines_are_in_order(self) -> None:
        deadline = self.world.relay.next_deadline()
        assert deadline is None or deadline >= 0


TestRelayMachine = RelayMachine.TestCase
TestRelayMachine.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@given(st.lists(MESSAGES, max_size=20))
@settings(max_examples=200, deadline=None)
def test_any_control_text_ends_in_actions_never_an_exception(texts: list[str]) -> None:
    world = World()
    cid = world.connect(world.allocate())
    for text in texts:
        for action in world.relay.text(cid, text, world.now):
            assert isinstance(action, Send | Close | Forget | TrackRid)


def test_every_timer_path_ends_in_its_close_code() -> None:
    expected = {
        "hello": 4000,
        "wait": 4005,
        "stall": 4008,
        "lifetime": 4007,
        "grace": 4006,
        "bye": 4006,
    }
    seen: dict[str, int] = {}
    world = World(Limits(hello_s=1))
    cid = world.connect(None)
    seen["hello"] = closes(world.advance(1))[cid]
    world = World(Limits(wait_s=1))
    cid = world.connect(world.allocate())
    world.hello(cid, "send")
    world.relay.text(cid, msg("wait"), world.now)
    seen["wait"] = closes(world.advance(1))[cid]
    world = World(Limits(idle_s=1))
    s, _, _ = world.pair()
    world.relay.binary(s, 10, world.now)
    seen["stall"] = closes(world.advance(1))[s]
    world = World(Limits(lifetime_s=1))
    s, _, _ = world.pair()
    seen["lifetime"] = closes(world.advance(1))[s]
    world = World(Limits(grace_s=1))
    s, r, _ = world.pair()
    world.resumable(s, r)
    world.relay.disconnected(r, world.now)
    seen["grace"] = closes(world.advance(1))[s]
    world = World(Limits(bye_s=1))
    s, r, _ = world.pair()
    world.relay.text(s, msg("bye", mood="happy"), world.now)
    seen["bye"] = closes(world.advance(1))[r]
    assert seen == expected
