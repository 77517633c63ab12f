"""The E2E peer state machine, two peers wired in memory (tests/relay/peer/harness.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tube.relay.e2e.cpace import CPace
from tube.relay.e2e.errors import E2EError, IntegrityError, ProtocolViolation, WrongCode
from tube.relay.e2e.framing import (
    COMMIT,
    CONFIRM,
    CPACE,
    DATA,
    SEALED_CTRL,
    cpace_frame,
)
from tube.relay.e2e.peer import (
    Accepted,
    Cancelled,
    ChunkReceived,
    Done,
    Failed,
    OfferReceived,
    Peer,
    PeerStateError,
    Progress,
    Resynced,
    State,
    Verified,
    b64u_decode,
)

from .harness import (
    FILE_ID,
    PAIR_ID,
    App,
    Link,
    failed,
    offer,
    random_bytes,
    run_transfer,
    sha,
)

CHUNK = 262144


def kinds(frames: list[bytes]) -> set[int]:
    return {frame[0] for frame in frames}


# --- Whole transfers ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, (1 << 20) + 12345])
def test_transfer_of_every_size_arrives_whole(size: int) -> None:
    data = random_bytes(size)
    link, app = run_transfer(data)
    assert link.s.peer.state is State.DONE
    assert link.r.peer.state is State.DONE
    assert sha(app.output) == sha(data)
    chunks = max(1, -(-size // CHUNK))
    assert app.sent_indexes == list(range(chunks))
    # Each side saw the same verifier, the offer, and ends with a happy bye.
    s_verified = [e for e in link.s.events if isinstance(e, Verified)]
    r_verified = [e for e in link.r.events if isinstance(e, Verified)]
    assert s_verified == r_verified and len(s_verified[0].verifier) == 6
    assert any(isinstance(e, Accepted) and e.resume_from == 0 for e in link.s.events)
    assert isinstance(link.s.events[-1], Done) and isinstance(link.r.events[-1], Done)
    progress = [e.through for e in link.s.events if isinstance(e, Progress)]
    assert progress == sorted(progress) and progress[-1] == chunks - 1
    for side in (link.s, link.r):
        assert json.loads(side.texts[0])["t"] == "resumable"
        assert json.loads(side.texts[-1]) == {"t": "bye", "mood": "happy"}
    assert link.s.texts[0] == link.r.texts[0]  # the same rid


def test_offer_reaches_the_receiver_with_its_metadata() -> None:
    link = Link()
    link.pair()
    link.s.peer.offer(file_id=FILE_ID, name="café.txt", size=5, type="text/plain", last_modified=42)
    link.pump()
    (event,) = [e for e in link.r.events if isinstance(e, OfferReceived)]
    assert event.offer.name == "café.txt"
    assert (event.offer.size, event.offer.type, event.offer.last_modified) == (5, "text/plain", 42)
    assert event.offer.file_id == FILE_ID


def test_decline_cancels_both_sides() -> None:
    link = Link()
    link.pair()
    offer(link, b"x")
    link.pump()
    link.r.peer.decline()
    link.pump()
    assert link.r.peer.state is State.CANCELLED
    assert link.s.peer.state is State.CANCELLED
    assert Cancelled("declined") in link.s.events
    assert json.loads(link.s.texts[-1]) == {"t": "bye", "mood": "happy"}
    assert DATA not in kinds(link.s.sent)


def test_sender_cancel_mid_transfer_reaches_the_receiver() -> None:
    link = Link()
    link.pair()
    offer(link, random_bytes(3 * CHUNK))
    link.pump()
    link.r.peer.accept_offer(0)
    link.pump()
    link.s.peer.cancel("user interrupted")
    link.pump()
    assert Cancelled("user interrupted") in link.r.events
    assert json.loads(link.s.texts[-1]) == {"t": "bye", "mood": "errory"}


# --- Key exchange failures ------------------------------------------------------------------


@pytest.mark.parametrize("wrong_side", ["send", "recv"])
def test_wrong_code_fails_both_sides_before_any_offer(wrong_side: str) -> None:
    right, wrong = b"4821-ahead-zebra", b"4821-ahead-zebu"
    link = Link(right, wrong) if wrong_side == "recv" else Link(wrong, right)
    link.pair()
    for side in (link.s, link.r):
        (failure,) = failed(side)
        assert isinstance(failure.error, WrongCode)
        assert str(failure.error) == "wrong code or interference"
        assert side.peer.state is State.FAILED
        assert json.loads(side.texts[-1]) == {"t": "bye", "mood": "scary"}
        assert not any(json.loads(t)["t"] == "resumable" for t in side.texts)
        assert side.peer.verifier is None
    assert kinds(link.s.sent) == {COMMIT, CPACE, CONFIRM}
    assert len(link.s.sent) == 3
    with pytest.raises(PeerStateError):
        offer(link, b"secret")


def test_commitment_mismatch_is_a_wrong_code() -> None:
    link = Link()
    impostor = CPace(b"4821-ahead-zebra", PAIR_ID, "send")

    def swap_cpace(to: object, frame: bytes) -> bytes:
        # A relay that guessed the code replaces S's CPACE after S committed to it.
        if to is link.r and frame[0] == CPACE:
            return cpace_frame(impostor.message)
        return frame

    link.filter = swap_cpace
    link.pair()
    (failure,) = failed(link.r)
    assert isinstance(failure.error, WrongCode)
    assert CONFIRM not in kinds(link.r.sent)  # R confirms nothing it cannot trust


def test_reflected_cpace_is_refused() -> None:
    sender = Peer("send", b"4821-ahead-zebra")
    sender.paired(PAIR_ID)
    sender.data_to_send()
    own = CPace(b"4821-ahead-zebra", PAIR_ID, "send")  # a message carrying S's own role
    sender.receive(cpace_frame(own.message))
    (failure,) = [e for e in sender.events() if isinstance(e, Failed)]
    assert isinstance(failure.error, ProtocolViolation)


def test_reflected_commit_is_refused() -> None:
    sender = Peer("send", b"4821-ahead-zebra")
    sender.paired(PAIR_ID)
    (commit,) = sender.data_to_send()
    assert isinstance(commit, bytes)
    sender.receive(commit)
    (failure,) = [e for e in sender.events() if isinstance(e, Failed)]
    assert isinstance(failure.error, ProtocolViolation)


@pytest.mark.parametrize("kind", [SEALED_CTRL, DATA, CONFIRM, 0x7F])
def test_anything_but_the_expected_frame_aborts_the_key_exchange(kind: int) -> None:
    receiver = Peer("recv", b"4821-ahead-zebra")
    receiver.paired(PAIR_ID)
    receiver.receive(bytes([kind]) + bytes(40))
    (failure,) = receiver.events()
    assert isinstance(failure, Failed) and isinstance(failure.error, ProtocolViolation)
    assert receiver.data_to_send() == ['{"t":"bye","mood":"errory"}']


def test_frames_before_pairing_are_refused() -> None:
    peer = Peer("send", b"4821-ahead-zebra")
    peer.receive(bytes([COMMIT]) + bytes(32))
    assert peer.state is State.FAILED


# --- Local misuse ---------------------------------------------------------------------------


def test_local_calls_in_the_wrong_state_raise() -> None:
    sender, receiver = Peer("send", b"p"), Peer("recv", b"p")
    with pytest.raises(PeerStateError):
        sender.offer(file_id=FILE_ID, name="a", size=1, type="", last_modified=0)
    with pytest.raises(PeerStateError):
        receiver.accept_offer(0)
    with pytest.raises(PeerStateError):
        sender.resumed()
    with pytest.raises(PeerStateError):
        receiver.complete()
    with pytest.raises(ValueError):
        Peer("relay", b"p")


# --- Credit window --------------------------------------------------------------------------


def test_sender_stops_at_the_credit_window() -> None:
    data = random_bytes(40 * CHUNK)
    link = Link()
    link.pair()
    offer(link, data)
    link.pump()
    link.r.peer.accept_offer(0, window=4)
    link.pump()
    s = link.s.peer
    sent = 0
    while s.can_send_chunk():
        index = s.next_chunk_wanted()
        s.send_chunk(index, data[index * CHUNK : (index + 1) * CHUNK])
        sent += 1
    assert sent == 4  # through = -1: chunks 0..3 only
    with pytest.raises(PeerStateError):
        s.send_chunk(4, data[4 * CHUNK : 5 * CHUNK])
    with pytest.raises(PeerStateError):
        s.send_chunk(2, data[2 * CHUNK : 3 * CHUNK])
    # One ack through chunk 0 opens exactly one more credit.
    link.collect(link.s)
    link.step()  # chunk 0 to R
    link.r.peer.chunk_written(0)
    link.collect(link.r)
    while link.s.inbox or not any(isinstance(e, Progress) for e in link.s.events):
        link.step()
    assert s.can_send_chunk() and s.next_chunk_wanted() == 4
    s.send_chunk(4, data[4 * CHUNK : 5 * CHUNK])
    assert not s.can_send_chunk()


def test_wrong_chunk_length_is_refused() -> None:
    link = Link()
    link.pair()
    offer(link, random_bytes(CHUNK + 1))
    link.pump()
    link.r.peer.accept_offer(0)
    link.pump()
    with pytest.raises(ValueError):
        link.s.peer.send_chunk(0, b"short")


# --- Resume ---------------------------------------------------------------------------------


def cut_and_resume(
    data: bytes,
    *,
    cut_after_sent: int,
    window: int = 16,
    survivor_first: bool = False,
    late_peer_back: bool = False,
) -> tuple[Link, App]:
    """Transfer ``data``; once S sent ``cut_after_sent`` chunks, S's socket drops: what R had
    not received yet arrives (stale) after the resume, S's inbox is lost."""
    link = Link()
    link.pair()
    offer(link, data)
    app = App(link, data)
    cut = False

    def driver() -> None:
        nonlocal cut
        app.drive()
        if not cut and len(app.sent_indexes) >= cut_after_sent:
            cut = True
            link.collect(link.s)
            link.collect(link.r)
            stale = list(link.r.inbox)
            link.s.inbox.clear()  # acks on their way to S are lost with its socket
            link.r.inbox.clear()
            link.s.peer.peer_lost()
            link.r.peer.peer_lost()
            assert not link.s.peer.can_send_chunk()
            if survivor_first:
                link.r.peer.resumed()
                link.collect(link.r)
                link.s.peer.resumed()
            else:
                link.s.peer.resumed()  # the resumer: paired again
                link.collect(link.s)
                if not late_peer_back:
                    link.r.peer.resumed()  # the survivor: peer:back
            link.collect(link.s)
            link.collect(link.r)
            # Stale DATA (sent before the cut) reaches R ahead of S's resume_hello.
            link.r.inbox.extendleft(reversed(stale))

    link.pump(driver)
    if late_peer_back:
        link.r.peer.resumed()  # already resynced by S's hello: does nothing
        link.pump(app.drive)
    return link, app


@pytest.mark.parametrize("survivor_first", [False, True])
def test_resume_within_grace_resends_at_most_a_window(survivor_first: bool) -> None:
    data = random_bytes(40 * CHUNK + 777)
    link, app = cut_and_resume(data, cut_after_sent=20, survivor_first=survivor_first)
    assert link.s.peer.state is State.DONE and link.r.peer.state is State.DONE
    assert sha(app.output) == sha(data)
    resent = len(app.sent_indexes) - 41
    assert 0 < resent <= 16
    assert app.sent_indexes[-1] == 40
    assert [e.epoch for e in link.s.events if isinstance(e, Resynced)] == [1]
    assert [e.epoch for e in link.r.events if isinstance(e, Resynced)] == [1]


def test_resume_answered_by_a_peer_that_has_not_seen_peer_back_yet() -> None:
    data = random_bytes(30 * CHUNK)
    link, app = cut_and_resume(data, cut_after_sent=18, late_peer_back=True)
    assert sha(app.output) == sha(data)
    assert link.r.peer.state is State.DONE
    assert len([e for e in link.r.events if isinstance(e, Resynced)]) == 1


def test_resumed_after_an_answered_resume_hello_does_nothing() -> None:
    link = Link()
    link.pair()
    offer(link, random_bytes(CHUNK))
    link.pump()
    for side in (link.s, link.r):
        side.peer.peer_lost()
    link.s.peer.resumed()
    link.collect(link.s)
    link.step()  # S's resume_hello reaches R, which answers it at once
    assert any(isinstance(e, Resynced) for e in link.r.events)
    link.r.peer.resumed()  # the relay's peer:back, late
    assert link.r.peer.data_to_send() == []
    link.pump()
    assert [e.epoch for e in link.s.events if isinstance(e, Resynced)] == [1]
    assert link.r.peer.state is State.OFFERED


def test_resume_before_the_offer_arrived_resends_the_offer() -> None:
    link = Link()
    link.pair()
    data = random_bytes(3 * CHUNK)
    offer(link, data)
    link.collect(link.s)
    link.r.inbox.clear()  # the offer is lost in the cut
    for side in (link.s, link.r):
        side.peer.peer_lost()
    link.s.peer.resumed()
    link.r.peer.resumed()
    app = App(link, data)
    link.pump(app.drive)
    assert sha(app.output) == sha(data)
    offers = [e for e in link.r.events if isinstance(e, OfferReceived)]
    assert len(offers) == 1


def test_resume_after_a_lost_accept_resends_it() -> None:
    link = Link()
    link.pair()
    data = random_bytes(2 * CHUNK + 5)
    offer(link, data)
    link.pump()
    link.r.peer.accept_offer(0)
    link.collect(link.r)
    link.s.inbox.clear()  # the accept is lost
    for side in (link.s, link.r):
        side.peer.peer_lost()
    link.r.peer.resumed()
    link.s.peer.resumed()
    app = App(link, data)
    app.seen_events = len(link.r.events)
    link.pump(app.drive)
    assert sha(app.output) == sha(data)
    assert link.s.peer.state is State.DONE


def test_resume_with_a_new_pairing_sends_only_the_missing_chunks() -> None:
    data = random_bytes(10 * CHUNK + 3)
    link, app = run_transfer(data, resume_from=6)
    assert app.sent_indexes == [6, 7, 8, 9, 10]
    assert sha(app.output) == sha(data)
    assert Accepted(6, 16) in link.s.events


def test_resume_with_every_chunk_already_on_disk_sends_no_data() -> None:
    data = random_bytes(2 * CHUNK)
    link, app = run_transfer(data, resume_from=2)
    assert app.sent_indexes == []
    assert link.s.peer.state is State.DONE and link.r.peer.state is State.DONE
    assert DATA not in kinds(link.s.sent)


# --- Tampering and sequence -----------------------------------------------------------------


def test_a_flipped_bit_in_data_is_an_integrity_error() -> None:
    link = Link()
    flipped = False

    def flip(to: object, frame: bytes) -> bytes:
        nonlocal flipped
        if to is link.r and frame[0] == DATA and not flipped:
            flipped = True
            return frame[:-1] + bytes([frame[-1] ^ 1])
        return frame

    link.filter = flip
    data = random_bytes(3 * CHUNK)
    link, _app = run_transfer(data, link=link)
    (failure,) = failed(link.r)
    assert isinstance(failure.error, IntegrityError)
    assert link.s.peer.state is not State.DONE
    assert not any(isinstance(e, ChunkReceived) for e in link.r.events)


def test_a_replayed_control_message_fails() -> None:
    link = Link()
    link.pair()
    offer(link, b"abc")
    link.collect(link.s)
    (sealed,) = list(link.r.inbox)
    link.pump()
    link.r.peer.receive(sealed)
    (failure,) = failed(link.r) or [e for e in link.r.peer.events() if isinstance(e, Failed)]
    assert isinstance(failure.error, IntegrityError)


def test_b64u_fields_must_be_canonical() -> None:
    assert b64u_decode("AAAAAAAAAAAAAAAAAAAAAA", 16, "f") == bytes(16)
    for bad in ["AAAAAAAAAAAAAAAAAAAAAB", "AAAAAAAAAAAAAAAAAAAAA", 5, "AAAAAAAAAAAAAAAAAAAA=="]:
        with pytest.raises(ProtocolViolation):
            b64u_decode(bad, 16, "f")


# --- Hypothesis: hostile input ends only in Failed ------------------------------------------

SMALL = 2 * CHUNK + 100


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from([COMMIT, CPACE, CONFIRM, SEALED_CTRL, DATA, 0, 0xFF]))
    return bytes([kind]) + draw(st.binary(max_size=80))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stage=st.integers(min_value=0, max_value=4),
    role=st.sampled_from(["s", "r"]),
    junk=st.lists(frames(), min_size=1, max_size=5),
)
def test_random_frames_end_only_in_failed(stage: int, role: str, junk: list[bytes]) -> None:
    link = Link()
    data = random_bytes(SMALL)
    link.s.peer.paired(PAIR_ID)
    link.r.peer.paired(PAIR_ID)
    if stage >= 1:
        link.pump()
    if stage >= 2:
        offer(link, data)
        link.pump()
    if stage >= 3:
        link.r.peer.accept_offer(0)
        link.pump()
    if stage >= 4:
        link.s.peer.send_chunk(0, data[:CHUNK])
        link.pump()
    side = link.s if role == "s" else link.r
    for frame in junk:
        side.peer.receive(frame)  # never raises
    events = side.peer.events()
    assert all(isinstance(e, Failed | ChunkReceived) for e in events)
    assert (
        side.peer.state in (State.FAILED, State.DONE)
        or not events
        or all(isinstance(e, ChunkReceived) for e in events)
    )
    for event in events:
        if isinstance(event, Failed):
            assert isinstance(event.error, E2EError)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    actions=st.lists(
        st.tuples(
            st.sampled_from(["swap", "dup", "drop", "flip"]),
            st.integers(0, 30),
            st.integers(0, 10_000),
        ),
        max_size=4,
    )
)
def test_reordered_duplicated_dropped_or_flipped_frames_never_give_a_wrong_file(
    actions: list[tuple[str, int, int]],
) -> None:
    data = random_bytes(3 * CHUNK + 17)
    link = Link()
    delivered = 0
    plan = {at: (what, where) for what, at, where in actions}

    def hostile(to: object, frame: bytes) -> bytes | None:
        nonlocal delivered
        delivered += 1
        what, where = plan.get(delivered, ("", 0))
        inbox = link.r.inbox if to is link.r else link.s.inbox
        if what == "drop":
            return None
        if what == "flip":
            position = where % len(frame)
            return frame[:position] + bytes([frame[position] ^ 0x40]) + frame[position + 1 :]
        if what == "dup":
            inbox.appendleft(frame)
        if what == "swap" and inbox:
            later = inbox.popleft()
            inbox.appendleft(frame)
            return later
        return frame

    link.filter = hostile
    link.s.peer.paired(PAIR_ID)
    link.r.peer.paired(PAIR_ID)
    link.pump()
    if link.s.peer.state is State.READY:
        offer(link, data)
    app = App(link, data)
    link.pump(app.drive)
    for side in (link.s, link.r):
        for event in side.events:
            if isinstance(event, Failed):
                assert isinstance(event.error, E2EError)
    if link.r.peer.state is State.DONE:
        assert sha(app.output) == sha(data)
    if link.s.peer.state is State.DONE:
        assert link.r.peer.state is State.DONE
