"""The relay core's edges that the survivors of its mutation run still showed (issue 24,
docs/mutation.md): every refusal's reason word for word, the welcome a client reads, what a
leaving side releases (nameplates, slots, resume ids, the pair), the wake-ups the core asks
for with the clock as an input, retry_after values, and counters that count every refusal."""

from __future__ import annotations

import json
import random

import pytest

from tube.relay.core import (
    BUSY,
    NO_NAMEPLATE,
    PEER_GONE,
    PROTOCOL_ERROR,
    RATE_LIMITED,
    RESUME_UNKNOWN,
    STALLED,
    TOO_BIG,
    UNSUPPORTED,
    Allocation,
    Close,
    ConnState,
    Forget,
    Refusal,
    Relay,
    Send,
    TrackRid,
    encode_id,
)
from tube.relay.limits import CHUNK_FRAME, Limits, RateLimiter, TokenBucket

from .test_core import IP, OTHER_IP, World, closes, msg, sent
from .test_mutants_core import close_of, error_of, resuming


def refused(world: World, cid: int, message: str) -> tuple[Close, dict[str, object]]:
    """Send ``message`` on ``cid``; the close and the error message before it."""
    actions = world.relay.text(cid, message, world.now)
    return close_of(actions, cid), error_of(actions, cid)


def waiting_sender(world: World, ip: str = IP) -> int:
    cid = world.connect(world.allocate(ip), ip)
    world.hello(cid, "send")
    assert world.relay.text(cid, msg("wait"), world.now) == []
    return cid


# ------------------------------------------------------------------ what a client reads


def test_the_welcome_lists_the_limits_as_compact_json_with_whole_seconds_as_integers() -> None:
    world = World()
    cid = world.connect(None)
    (welcome,) = world.hello(cid, "send")
    assert isinstance(welcome, Send)
    assert welcome.text() == (
        '{"t":"welcome","v":1,"limits":{"frame":1048640,"window_hint":16,'
        '"idle_s":60,"wait_s":600},"pow":null}'
    )
    world = World(Limits(idle_s=2.5, wait_s=90.0))
    cid = world.connect(None)
    (welcome,) = world.hello(cid, "recv")
    assert isinstance(welcome, Send)
    assert json.loads(welcome.text())["limits"] == {
        "frame": 1048640,
        "window_hint": 16,
        "idle_s": 2.5,
        "wait_s": 90,
    }
    assert '"wait_s":90}' in welcome.text()  # 90.0 s is shown as 90


def test_hello_refusals_say_why() -> None:
    world = World()
    cid = world.connect(None)
    close, error = refused(world, cid, msg("hello", v=2, role="send"))
    reason = "unsupported version; this relay speaks v1"
    assert close == Close(cid, UNSUPPORTED, reason)
    assert error == {"t": "error", "code": UNSUPPORTED, "reason": reason}
    cid = world.connect(None)
    close, error = refused(world, cid, msg("hello", v=1, role="thief"))
    reason = "hello needs role 'send' or 'recv'"
    assert close == Close(cid, PROTOCOL_ERROR, reason)
    assert error == {"t": "error", "code": PROTOCOL_ERROR, "reason": reason}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "control message is not JSON"),
        ('{"v": 1}', "control message without a type"),
        ('{"t": 5}', "control message without a type"),
        (msg("claim"), "unexpected 'claim' in state upgraded"),
        (msg("x" * 40), f"unexpected {'x' * 32!r} in state upgraded"),  # cut at 32
        (msg("a\nb"), "unexpected '?' in state upgraded"),  # not printable: not shown
    ],
)
def test_a_bad_control_message_is_answered_with_its_reason(text: str, reason: str) -> None:
    world = World()
    cid = world.connect(None)
    close, error = refused(world, cid, text)
    assert close == Close(cid, PROTOCOL_ERROR, reason)
    assert error == {"t": "error", "code": PROTOCOL_ERROR, "reason": reason}


def test_a_control_message_of_exactly_control_bytes_is_taken_one_byte_more_is_not() -> None:
    world = World()
    base = msg("hello", v=1, role="send", pad="")
    exact = msg("hello", v=1, role="send", pad="x" * (4096 - len(base)))
    assert len(exact.encode()) == world.relay.limits.control
    cid = world.connect(None)
    assert sent(world.relay.text(cid, exact, world.now), cid)[0]["t"] == "welcome"
    # Under the limit in characters, over it in UTF-8 bytes.
    wide = "é" * 2100
    cid = world.connect(None)
    actions = world.relay.text(cid, wide, world.now)
    assert close_of(actions, cid) == Close(cid, TOO_BIG, "control message too big")
    assert sent(actions, cid) == []  # 1009 is not the relay's own code: no error message
    cid = world.connect(None)
    actions = world.relay.text(cid, exact + " ", world.now)
    assert close_of(actions, cid) == Close(cid, TOO_BIG, "control message too big")


def test_an_unknown_connection_is_ignored_by_every_input() -> None:
    world = World()
    assert world.relay.text(999, msg("hello", v=1, role="send"), world.now) == []
    assert world.relay.binary(999, 10, world.now) == (None, [])
    assert world.relay.disconnected(999, world.now) == []
    assert world.relay.state_of(999) is None


def test_wait_refusals_say_why() -> None:
    world = World()
    nameplate = world.allocate()
    receiver = world.connect(nameplate, OTHER_IP)
    world.hello(receiver, "recv")
    close, error = refused(world, receiver, msg("wait"))
    assert close == Close(receiver, PROTOCOL_ERROR, "only a sender waits")
    assert error["reason"] == "only a sender waits"
    lost = world.connect("1")
    world.hello(lost, "send")
    close, error = refused(world, lost, msg("wait"))
    reason = "no such nameplate (unknown, expired or used)"
    assert close == Close(lost, NO_NAMEPLATE, reason)
    assert error == {"t": "error", "code": NO_NAMEPLATE, "reason": reason}
    first = world.connect(nameplate)
    world.hello(first, "send")
    world.relay.text(first, msg("wait"), world.now)
    second = world.connect(nameplate)
    world.hello(second, "send")
    close, error = refused(world, second, msg("wait"))
    assert (close.reason, error["reason"]) == ("this nameplate has a sender already",) * 2


def test_the_eleventh_unknown_claim_is_rate_limited_and_the_block_ends_on_time() -> None:
    world = World(Limits(block_s=600))
    for _ in range(10):
        cid = world.connect("1234", "203.0.113.9")
        world.hello(cid, "recv")
        world.relay.text(cid, msg("claim"), world.now)
    cid = world.connect("1234", "203.0.113.9")
    world.hello(cid, "recv")
    close, error = refused(world, cid, msg("claim"))
    assert close == Close(cid, RATE_LIMITED, "rate limited")
    assert error == {
        "t": "error",
        "code": RATE_LIMITED,
        "reason": "rate limited",
        "retry_after": 600,
    }
    # 599.5 s later, half a second is left: shown as 1 s, never 0.
    world.now += 599.5
    cid = world.connect("1234", "203.0.113.9")
    world.hello(cid, "recv")
    assert refused(world, cid, msg("claim"))[1]["retry_after"] == 1
    # Exactly block_s after the block: the address is heard again.
    world.now += 0.5
    cid = world.connect("1234", "203.0.113.9")
    world.hello(cid, "recv")
    assert refused(world, cid, msg("claim"))[0].code == NO_NAMEPLATE


def test_a_relay_whose_clock_starts_at_zero_takes_a_claim_at_zero() -> None:
    world = World()
    world.now = 0.0
    nameplate = world.allocate()
    r = world.connect(nameplate, OTHER_IP)
    world.hello(r, "recv")
    assert world.relay.text(r, msg("claim"), world.now) == []
    assert world.relay.state_of(r) is ConnState.CLAIMING


def test_retry_after_is_the_time_until_the_next_token() -> None:
    claims = World(Limits(claims_per_minute=1))
    nameplate = claims.allocate()
    first = claims.connect(nameplate, OTHER_IP)
    claims.hello(first, "recv")
    claims.relay.text(first, msg("claim"), claims.now)
    again = claims.connect(nameplate, OTHER_IP)
    claims.hello(again, "recv")
    assert refused(claims, again, msg("claim"))[1]["retry_after"] == 60
    resumes = World(Limits(resumes_per_minute=1))
    rid = encode_id(bytes(range(16)))
    cid = resuming(resumes)
    assert refused(resumes, cid, msg("resume", rid=rid, role="send"))[0].code == RESUME_UNKNOWN
    cid = resuming(resumes)
    assert refused(resumes, cid, msg("resume", rid=rid, role="send"))[1]["retry_after"] == 60
    allocations = World(Limits(allocations_per_minute=2))
    allocations.allocate()
    allocations.allocate()
    refusal = allocations.relay.allocate(IP, allocations.now)
    assert isinstance(refusal, Refusal) and refusal.retry_after == pytest.approx(30.0)


def test_resumes_are_rate_limited_per_resume_id_not_in_total() -> None:
    world = World(Limits(resumes_per_minute=1))
    for n in range(3):
        cid = resuming(world)
        rid = encode_id(bytes([n]) * 16)
        assert refused(world, cid, msg("resume", rid=rid, role="send"))[0].code == RESUME_UNKNOWN


def test_the_relays_own_codes_come_with_an_error_message_from_4000() -> None:
    world = World()
    cid = world.connect(None)
    actions = world.relay.text(cid, msg("wait"), world.now)
    assert actions == [
        Send(cid, {"t": "error", "code": 4000, "reason": "unexpected 'wait' in state upgraded"}),
        Close(cid, 4000, "unexpected 'wait' in state upgraded"),
    ]


def test_every_refusal_is_counted_not_only_the_first() -> None:
    outstanding = World(Limits(outstanding_per_ip=1))
    outstanding.allocate()
    rated = World(Limits(allocations_per_minute=1))
    rated.allocate()
    for world in (outstanding, rated):
        for _ in range(2):
            assert isinstance(world.relay.allocate(IP, world.now), Refusal)
    assert outstanding.relay.stats()["rate_limited"] == {"outstanding": 2}
    assert rated.relay.stats()["rate_limited"] == {"allocation": 2}
    crowd = World(Limits(connections_per_ip=1))
    crowd.connect(None)
    for _ in range(2):
        crowd.ids += 1
        assert closes(crowd.relay.connect(crowd.ids, IP, crowd.now, None)) == {crowd.ids: 4004}
    assert crowd.relay.stats()["rate_limited"] == {"connections": 2}
    claims = World(Limits(claims_per_minute=1))
    for _ in range(3):  # one claim a minute: the second and third are refused
        cid = claims.connect("1", OTHER_IP)
        claims.hello(cid, "recv")
        claims.relay.text(cid, msg("claim"), claims.now)
    assert claims.relay.stats()["rate_limited"] == {"claim": 2}
    resumes = World(Limits(resumes_per_minute=1))
    for _ in range(3):
        cid = resuming(resumes)
        resumes.relay.text(cid, msg("resume", rid=encode_id(bytes(16)), role="send"), 0)
    assert resumes.relay.stats()["rate_limited"] == {"resume": 2}
    pairs = World(Limits(pairs_per_ip=1))
    pairs.pair()
    for _ in range(2):
        s = pairs.connect(pairs.allocate())
        pairs.hello(s, "send")
        assert closes(pairs.relay.text(s, msg("wait"), pairs.now)) == {s: 4004}
    assert pairs.relay.stats()["rate_limited"] == {"pairs": 2}
    guesses = World()
    for ip in ("203.0.113.20", "203.0.113.21"):  # two guessing addresses, each blocked
        for _ in range(11):
            cid = guesses.connect("1", ip)
            guesses.hello(cid, "recv")
            guesses.relay.text(cid, msg("claim"), guesses.now)
    for _ in range(2):
        cid = guesses.connect("1", "203.0.113.20")
        guesses.hello(cid, "recv")
        guesses.relay.text(cid, msg("claim"), guesses.now)
    assert guesses.relay.stats()["rate_limited"] == {"guessing": 2, "blocked": 2}


def test_closes_are_counted_by_code() -> None:
    world = World()
    for _ in range(3):
        cid = world.connect(None)
        world.relay.text(cid, "not json", world.now)
    cid = world.connect(None)
    world.relay.text(cid, msg("hello", v=9, role="send"), world.now)
    assert world.relay.stats()["closes"] == {PROTOCOL_ERROR: 3, UNSUPPORTED: 1}


# ------------------------------------------------------------------ nameplates


class Scripted(random.Random):
    """A random source whose ``randint`` answers from a script (then its low bound)."""

    def __init__(self, *answers: int) -> None:
        super().__init__(7)
        self.answers = list(answers)
        self.asked: list[tuple[int, int]] = []

    def randint(self, a: int, b: int) -> int:
        self.asked.append((a, b))
        return self.answers.pop(0) if self.answers else a


class Highest(random.Random):
    """A random source whose ``randint`` always answers its high bound."""

    def randint(self, a: int, b: int) -> int:
        return b


def test_nameplates_span_the_whole_range_of_their_digits_and_never_exceed_eight() -> None:
    lowest = Relay(Limits(), rng=Scripted()).allocate(IP, 0.0)
    highest = Relay(Limits(), rng=Highest(7)).allocate(IP, 0.0)
    assert isinstance(lowest, Allocation) and isinstance(highest, Allocation)
    assert (lowest.nameplate, highest.nameplate) == ("1000", "9999")
    # However large the space should be, a nameplate has at most 8 digits.
    huge = Relay(Limits(space_factor=10**9), rng=Highest(7)).allocate(IP, 0.0)
    assert isinstance(huge, Allocation) and huge.nameplate == "99999999"


def test_the_fifth_digit_comes_with_the_301st_waiting_nameplate() -> None:
    # 4 digits give 9,000 nameplates: 30 times 300. The 301st needs more room.
    world = World(Limits(allocations_per_minute=100_000, outstanding_per_ip=100_000))
    names = [world.allocate() for _ in range(301)]
    assert {len(n) for n in names[:300]} == {4}
    assert len(names[300]) == 5


def test_a_relay_that_cannot_draw_a_free_nameplate_is_busy() -> None:
    world = World()
    world.relay = Relay(Limits(), rng=Scripted())  # every draw: 1000
    assert world.allocate() == "1000"
    assert world.relay.allocate(OTHER_IP, world.now) == Refusal(503, "the relay is busy", 30.0)


def test_a_nameplate_drawn_again_lives_its_own_wait_s() -> None:
    world = World(Limits(wait_s=600))
    world.relay = Relay(world.relay.limits, rng=Scripted(4321, 4321))
    world.pair()  # pairs on 4321, which is then free again
    world.now += 100
    assert world.allocate() == "4321"
    # The first allocation's timer (at 600 s) must not expire the second one (at 700 s).
    assert world.advance(500) == []
    assert world.relay.knows_nameplate("4321")
    assert world.advance(100) == [Forget("4321")]


def test_each_address_gets_its_outstanding_codes_back_when_they_are_used_or_released() -> None:
    world = World(Limits(outstanding_per_ip=3))
    first, _, _ = (world.allocate(), world.allocate(), world.allocate())
    world.relay.release_nameplate(first)
    world.allocate()  # back to three
    refusal = world.relay.allocate(IP, world.now)
    assert isinstance(refusal, Refusal) and refusal.status == 429
    one = World(Limits(outstanding_per_ip=1))
    one.pair()  # the code is used: the address may ask for another
    one.allocate()
    assert (world.relay.stats()["allocated"], one.relay.stats()["allocated"]) == (4, 2)
    assert one.relay.stats()["paired"] == 1


# ------------------------------------------------------------------ connections and slots


def test_connections_count_exactly_as_they_open_and_close() -> None:
    full = World(Limits(max_connections=2))
    full.connect(None, IP)
    full.connect(None, OTHER_IP)  # the second fits
    full.ids += 1
    assert closes(full.relay.connect(full.ids, "192.0.2.9", full.now, None)) == {full.ids: BUSY}
    world = World(Limits(connections_per_ip=3))
    cids = [world.connect(None) for _ in range(3)]
    world.relay.disconnected(cids[0], world.now)
    world.connect(None)  # three again
    world.ids += 1
    actions = world.relay.connect(world.ids, IP, world.now, None)
    assert close_of(actions, world.ids) == Close(world.ids, RATE_LIMITED, "too many connections")


def test_a_full_relay_takes_pairs_again_after_one_ended_resumed_and_refuses_one_more() -> None:
    world = World(Limits(max_pairs=2))
    s, r, _ = world.pair()
    rid = world.resumable(s, r)
    world.relay.disconnected(r, world.now)
    back = resuming(world, "recv")
    world.relay.text(back, msg("resume", rid=encode_id(rid), role="recv"), world.now)
    world.relay.text(s, msg("bye", mood="happy"), world.now)
    world.relay.text(back, msg("bye", mood="happy"), world.now)
    # That pair is over, its slot freed once: two pairs fit again, and no third.
    world.pair("192.0.2.7", "192.0.2.9")
    world.pair("192.0.2.8", "192.0.2.10")
    assert world.relay.allocate("192.0.2.11", world.now) == Refusal(503, "the relay is busy", 30.0)


def test_an_address_gets_its_transfer_slots_back_one_by_one() -> None:
    world = World(Limits(pairs_per_ip=2))
    a, b = waiting_sender(world), waiting_sender(world)
    world.relay.disconnected(a, world.now)
    c = waiting_sender(world)  # b and c
    nameplate = world.allocate()
    d = world.connect(nameplate)
    world.hello(d, "send")
    assert closes(world.relay.text(d, msg("wait"), world.now)) == {d: RATE_LIMITED}
    world.relay.disconnected(b, world.now)
    world.relay.disconnected(c, world.now)
    waiting_sender(world)
    waiting_sender(world)  # two again after both left
    nameplate = world.allocate()
    g = world.connect(nameplate)
    world.hello(g, "send")
    assert closes(world.relay.text(g, msg("wait"), world.now)) == {g: RATE_LIMITED}


# ------------------------------------------------------------------ leaving


def test_a_waiting_sender_that_leaves_kills_its_code() -> None:
    world = World()
    nameplate = world.allocate()
    s = world.connect(nameplate)
    world.hello(s, "send")
    world.relay.text(s, msg("wait"), world.now)
    assert world.relay.disconnected(s, world.now) == [Forget(nameplate)]
    assert not world.relay.knows_nameplate(nameplate)
    r = world.connect(nameplate, OTHER_IP)
    world.hello(r, "recv")
    assert closes(world.relay.text(r, msg("claim"), world.now)) == {r: NO_NAMEPLATE}


def test_a_claimant_that_leaves_frees_the_nameplate_for_the_next_one() -> None:
    world = World()
    nameplate = world.allocate()
    gone = world.connect(nameplate, OTHER_IP)
    world.hello(gone, "recv")
    world.relay.text(gone, msg("claim"), world.now)
    assert world.relay.disconnected(gone, world.now) == []
    assert world.relay.knows_nameplate(nameplate)
    r = world.connect(nameplate, OTHER_IP)
    world.hello(r, "recv")
    assert world.relay.text(r, msg("claim"), world.now) == []
    s = world.connect(nameplate)
    world.hello(s, "send")
    actions = world.relay.text(s, msg("wait"), world.now)
    assert sent(actions, s)[0]["t"] == "paired" and sent(actions, r)[0]["t"] == "paired"


def test_a_resumable_pair_closed_for_a_fault_ends_for_good() -> None:
    world = World()
    s, r, _ = world.pair()
    rid = world.resumable(s, r)
    _, actions = world.relay.binary(s, world.relay.limits.frame + 1, world.now)
    assert close_of(actions, s) == Close(s, TOO_BIG, "frame too big")
    assert TrackRid(rid, None) in actions
    assert close_of(actions, r) == Close(r, PEER_GONE, "the peer left")
    assert error_of(actions, r)["reason"] == "the peer left"
    assert not world.relay.knows_rid(rid)
    assert world.relay.peer_of(r) is None  # closed, not yet disconnected: forwards nowhere
    world.relay.disconnected(s, world.now)
    world.relay.disconnected(r, world.now)
    assert set(world.relay.stats()["pairs"].values()) == {0}


def test_a_dropped_side_of_a_non_resumable_pair_leaves_no_pair_behind() -> None:
    world = World()
    s, r, _ = world.pair()
    actions = world.relay.disconnected(s, world.now)
    assert close_of(actions, r) == Close(r, PEER_GONE, "the peer left")
    assert world.relay.peer_of(r) is None
    assert set(world.relay.stats()["pairs"].values()) == {0}


def test_a_resuming_side_cannot_send_binary_frames() -> None:
    world = World()
    s, r, _ = world.pair()
    rid = world.resumable(s, r)
    world.relay.disconnected(s, world.now)
    world.relay.disconnected(r, world.now)
    back = resuming(world, "send")
    world.relay.text(back, msg("resume", rid=encode_id(rid), role="send"), world.now)
    target, actions = world.relay.binary(back, 10, world.now)
    assert target is None
    assert close_of(actions, back) == Close(back, PROTOCOL_ERROR, "binary frame before pairing")


def test_the_resumed_side_forwards_to_the_survivor() -> None:
    world = World()
    s, r, _ = world.pair()
    rid = world.resumable(s, r)
    world.relay.disconnected(r, world.now)
    back = resuming(world, "recv")
    world.relay.text(back, msg("resume", rid=encode_id(rid), role="recv"), world.now)
    assert world.relay.state_of(back) is ConnState.PAIRED
    assert world.relay.binary(back, 100, world.now) == (s, [])


def test_both_sides_gone_past_grace_leave_no_pair_behind() -> None:
    world = World(Limits(grace_s=120))
    s, r, _ = world.pair()
    rid = world.resumable(s, r)
    world.relay.disconnected(s, world.now)
    world.relay.disconnected(r, world.now)
    assert world.advance(120) == [TrackRid(rid, None)]
    assert set(world.relay.stats()["pairs"].values()) == {0}


# ------------------------------------------------------------------ bye


def test_a_bye_on_a_resumable_pair_forgets_its_resume_id_and_the_other_side_gets_bye_s() -> None:
    world = World(Limits(bye_s=5))
    s, r, _ = world.pair()
    rid = world.resumable(s, r)
    actions = world.relay.text(s, msg("bye", mood="happy"), world.now)
    assert TrackRid(rid, None) in actions
    assert close_of(actions, s) == Close(s, 1000, "bye")
    assert sent(actions, r) == [{"t": "peer", "state": "gone"}]
    assert not world.relay.knows_rid(rid)
    assert world.advance(4.5) == []
    actions = world.advance(0.5)
    assert close_of(actions, r) == Close(r, PEER_GONE, "the peer left")
    assert error_of(actions, r)["reason"] == "the peer left"


def test_the_survivor_of_a_detached_pair_may_say_bye() -> None:
    world = World()
    s, r, _ = world.pair()
    rid = world.resumable(s, r)
    world.relay.disconnected(r, world.now)
    actions = world.relay.text(s, msg("bye", mood="lonely"), world.now)
    assert TrackRid(rid, None) in actions and close_of(actions, s) == Close(s, 1000, "bye")
    assert set(world.relay.stats()["pairs"].values()) == {0}
    back = resuming(world, "recv")
    actions = world.relay.text(back, msg("resume", rid=encode_id(rid), role="recv"), world.now)
    assert close_of(actions, back).code == RESUME_UNKNOWN


@pytest.mark.parametrize(("who", "mood"), [("send", "happy"), ("recv", "scary")])
def test_only_a_scary_bye_from_the_sender_counts_against_the_claimant(who: str, mood: str) -> None:
    world = World()
    s, r, _ = world.pair(IP, "203.0.113.7")
    world.relay.text(s if who == "send" else r, msg("bye", mood=mood), world.now)
    for _ in range(10):  # the whole budget of unknown claims is still there
        cid = world.connect("1234", "203.0.113.7")
        world.hello(cid, "recv")
        assert closes(world.relay.text(cid, msg("claim"), world.now)) == {cid: NO_NAMEPLATE}


# ------------------------------------------------------------------ timers


def test_the_next_deadline_is_a_time_and_timers_due_together_fire_in_order() -> None:
    world = World(Limits(hello_s=10))
    cids = [world.connect(None) for _ in range(3)]
    assert world.relay.next_deadline() == world.now + 10
    actions = world.advance(10)
    assert [a.cid for a in actions if isinstance(a, Close)] == cids
    close = close_of(actions, cids[0])
    assert close.reason == "nothing to do after 10 s"


def quiet_pair(world: World) -> tuple[int, int, float]:
    """A pair whose hello and nameplate timers have fired: its sides, and the time now."""
    s, r, _ = world.pair()
    world.advance(1)
    return s, r, world.now


QUICK = Limits(hello_s=1, wait_s=1, idle_s=60, grace_s=100)
LIFETIME_END = 1000 + QUICK.lifetime_s  # the latest wake-up of a pair made at 1000


def test_a_stall_is_timed_from_the_oldest_frame_not_yet_sent() -> None:
    world = World(QUICK)
    s, r, t0 = quiet_pair(world)
    world.relay.binary(s, 1000, world.now)
    assert world.relay.next_deadline() == t0 + 60
    world.now += 30
    world.relay.binary(s, 1000, world.now)  # a second frame while the first still waits
    actions = world.advance(30)
    reason = "stalled: the receiver is not reading"
    assert close_of(actions, s) == Close(s, STALLED, reason)
    assert close_of(actions, r) == Close(r, STALLED, reason)


def test_frames_already_sent_cost_no_wake_up_and_a_later_stall_is_still_seen() -> None:
    world = World(QUICK)
    s, r, _ = quiet_pair(world)
    world.relay.binary(s, 10, world.now)
    world.relay.sent(s, world.now)
    world.now += 10
    world.relay.binary(s, 10, world.now)
    world.relay.sent(s, world.now)
    assert world.advance(50) == []  # the stall check at t0 + 60 finds nothing in flight
    assert world.relay.next_deadline() == LIFETIME_END  # nothing else to wake up for
    world.now += 40
    world.relay.binary(s, 10, world.now)  # in flight for good
    assert world.advance(59.5) == []
    assert closes(world.advance(0.5)) == {s: STALLED, r: STALLED}


def test_a_rearmed_stall_check_is_not_doubled_by_the_next_frame() -> None:
    world = World(QUICK)
    s, r, t0 = quiet_pair(world)
    world.relay.binary(s, 10, world.now)
    world.relay.sent(s, world.now)
    world.now += 10
    world.relay.binary(r, 10, world.now)  # in flight since t0 + 10
    assert world.advance(50) == []  # checked at t0 + 60, again at t0 + 70
    assert world.relay.next_deadline() == t0 + 70
    world.now += 1
    world.relay.binary(s, 10, world.now)
    world.now += 1
    world.relay.sent(s, world.now)
    world.relay.sent(r, world.now)
    assert world.advance(8) == []
    assert world.relay.next_deadline() == LIFETIME_END


def test_lifetime_ends_the_pair_with_its_reason() -> None:
    world = World(Limits(lifetime_s=100))
    s, r, _ = world.pair()
    actions = world.advance(100)
    for cid in (s, r):
        assert close_of(actions, cid) == Close(cid, 4007, "transfer took too long")
        assert error_of(actions, cid)["reason"] == "transfer took too long"


def test_a_second_drop_gets_a_full_grace_of_its_own() -> None:
    world = World(QUICK)
    s, r, t0 = quiet_pair(world)
    rid = world.resumable(s, r)
    world.relay.disconnected(r, world.now)
    assert world.relay.next_deadline() == t0 + 100
    world.now += 50
    back = resuming(world, "recv")
    world.relay.text(back, msg("resume", rid=encode_id(rid), role="recv"), world.now)
    world.now += 10
    world.relay.disconnected(back, world.now)  # grace until t0 + 160
    assert world.advance(40) == []  # the first drop's grace timer no longer applies
    actions = world.advance(60)
    assert close_of(actions, s) == Close(s, PEER_GONE, "the peer did not come back")
    assert error_of(actions, s)["reason"] == "the peer did not come back"


# ------------------------------------------------------------------ limits and buckets


def test_limits_refuse_booleans_and_non_numbers_and_take_their_exact_bounds() -> None:
    with pytest.raises(ValueError, match=r"^hello_s must be a positive number, got True$"):
        Limits(hello_s=True)
    with pytest.raises(ValueError, match=r"^wait_s must be a positive number, got '10'$"):
        Limits(wait_s="10")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^low_water must not exceed high_water$"):
        Limits(low_water=2 << 20)
    assert Limits(low_water=1 << 20, high_water=1 << 20).low_water == 1 << 20
    assert Limits(frame=CHUNK_FRAME).frame == CHUNK_FRAME


def test_a_bucket_says_exactly_how_long_until_its_next_token() -> None:
    bucket = TokenBucket(1, 2.0, 0.0)  # two tokens a second, one at most
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.125) == pytest.approx(0.375)  # a quarter token there, 3/4 missing


def test_a_rate_limiter_at_its_cap_forgets_the_oldest_key_before_adding_one() -> None:
    limiter = RateLimiter(1, 60.0, 2)
    assert limiter.take("a", 0.0) == 0.0
    assert limiter.take("b", 0.0) == 0.0
    assert limiter.take("c", 0.0) == 0.0
    assert len(limiter) == 2
    assert limiter.take("a", 0.0) == 0.0  # forgotten: a fresh bucket
