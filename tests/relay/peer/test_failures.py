"""A peer that fails once the keys are confirmed tells the other side why (tube/relay/e2e/peer.py):
a sealed ``cancel`` with the kind of failure, ``"integrity"`` or ``"protocol"``, under its next
counter and before its ``bye``; the other side emits ``Cancelled(reason)``. Before the keys are
confirmed nothing is sealed: ``bye`` alone.

Some tests play the receiver by hand (:func:`confirmed_sender`): it knows the code, so its
sealed messages are authentic, and it can send what an honest :class:`Peer` never would.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tube.relay.e2e.cpace import CPace
from tube.relay.e2e.errors import IntegrityError, ProtocolViolation, WrongCode
from tube.relay.e2e.framing import (
    DATA,
    SEALED_CTRL,
    CtrlOpener,
    confirm_frame,
    cpace_frame,
    parse_cpace,
    seal_ctrl,
)
from tube.relay.e2e.keys import SessionKeys, confirm_tag, derive_keys
from tube.relay.e2e.peer import (
    CANCEL_INTEGRITY,
    CANCEL_PROTOCOL,
    Accepted,
    Cancelled,
    ChunkReceived,
    Failed,
    Peer,
    State,
)

from .harness import FILE_ID, PAIR_ID, Link, failed, random_bytes, run_transfer

CHUNK = 262144
PASSWORD = b"4821-ahead-zebra"
ERRORY_BYE = '{"t":"bye","mood":"errory"}'


def keys_exchanged() -> tuple[Peer, CPace, SessionKeys]:
    """A sender in WAIT_CONFIRM (keys derived, not confirmed), the hand-played receiver's CPace
    run and the session keys; the sender's output so far is drained."""
    sender = Peer("send", PASSWORD)
    sender.paired(PAIR_ID)
    sender.data_to_send()  # COMMIT
    receiver = CPace(PASSWORD, PAIR_ID, "recv")
    sender.receive(cpace_frame(receiver.message))
    s_cpace, _confirm = sender.data_to_send()
    assert isinstance(s_cpace, bytes)
    keys = derive_keys(receiver.finish(parse_cpace(s_cpace)), PAIR_ID)
    assert sender.state is State.WAIT_CONFIRM
    return sender, receiver, keys


def confirmed_sender() -> tuple[Peer, SessionKeys]:
    """A sender in TRANSFER of a 3-chunk file: keys confirmed, its offer (counter 0) accepted
    by the hand-played receiver (counter 0); output and events drained."""
    sender, receiver, keys = keys_exchanged()
    sender.receive(confirm_frame(confirm_tag(keys.confirm_r, receiver.transcript)))
    sender.offer(  # raises unless READY
        file_id=FILE_ID, name="a.bin", size=3 * CHUNK, type="", last_modified=1_700_000_000_000
    )
    sender.receive(seal_ctrl(keys.k_ctrl_r2s, 0, {"t": "accept", "resume_from": 0, "window": 16}))
    assert sender.state is State.TRANSFER
    sender.data_to_send()
    assert any(isinstance(event, Accepted) for event in sender.events())
    return sender, keys


def accept(counter: int) -> Callable[[SessionKeys], bytes]:
    """An authentic ``accept`` under ``counter``: a second one is out of place in TRANSFER."""
    message = {"t": "accept", "resume_from": 0, "window": 16}
    return lambda keys: seal_ctrl(keys.k_ctrl_r2s, counter, message)


@pytest.mark.parametrize(
    ("arriving", "error", "reason"),
    [
        # Authentic but out of place: a second accept, an ack past the last chunk sent.
        (accept(1), ProtocolViolation, CANCEL_PROTOCOL),
        (
            lambda keys: seal_ctrl(keys.k_ctrl_r2s, 1, {"t": "ack", "through": 2, "window": 16}),
            ProtocolViolation,
            CANCEL_PROTOCOL,
        ),
        # The sender never takes DATA.
        (lambda _keys: bytes([DATA]) + bytes(40), ProtocolViolation, CANCEL_PROTOCOL),
        # A counter that skips, or goes back; a message under the wrong key.
        (accept(5), IntegrityError, CANCEL_INTEGRITY),
        (accept(0), IntegrityError, CANCEL_INTEGRITY),
        (
            lambda keys: seal_ctrl(keys.k_ctrl_s2r, 1, {"t": "ack", "through": 0, "window": 16}),
            IntegrityError,
            CANCEL_INTEGRITY,
        ),
    ],
    ids=["second-accept", "ack-too-far", "data", "counter-skips", "counter-repeats", "wrong-key"],
)
def test_a_failure_after_confirmation_sends_a_sealed_cancel_then_bye(
    arriving: Callable[[SessionKeys], bytes], error: type[Exception], reason: str
) -> None:
    sender, keys = confirmed_sender()
    sender.receive(arriving(keys))
    (failure,) = sender.events()
    assert isinstance(failure, Failed) and type(failure.error) is error
    assert sender.state is State.FAILED
    cancel, bye = sender.data_to_send()
    assert bye == ERRORY_BYE
    assert isinstance(cancel, bytes) and cancel[0] == SEALED_CTRL
    # Sealed for the receiver under the sender's next counter (the offer had 0), saying only
    # the kind of failure, not its details.
    opener = CtrlOpener(keys.k_ctrl_s2r)
    assert opener.open(cancel) == {"t": "cancel", "reason": reason}
    assert opener.last == 1
    # Over: later frames change nothing, and nothing more is sent.
    sender.receive(accept(1)(keys))
    assert sender.data_to_send() == [] and sender.events() == []


@pytest.mark.parametrize(
    "arriving",
    [
        lambda _keys: bytes([SEALED_CTRL]) + bytes(40),  # no sealed channel yet
        lambda _keys: bytes([DATA]) + bytes(40),
        lambda keys: seal_ctrl(keys.k_ctrl_r2s, 0, {"t": "cancel", "reason": "x"}),
        lambda _keys: confirm_frame(bytes(32)),  # a wrong tag: WrongCode
    ],
    ids=["garbage-sealed", "data", "authentic-sealed", "bad-confirm"],
)
def test_no_sealed_cancel_before_the_keys_are_confirmed(
    arriving: Callable[[SessionKeys], bytes],
) -> None:
    # The keys exist in WAIT_CONFIRM, but the peer has not proved it holds them: nothing is
    # sealed for it (peer.py, step 5), whatever ended the exchange.
    sender, _receiver, keys = keys_exchanged()
    sender.receive(arriving(keys))
    (failure,) = sender.events()
    assert isinstance(failure, Failed)
    mood = "scary" if isinstance(failure.error, WrongCode) else "errory"
    assert sender.data_to_send() == [json.dumps({"t": "bye", "mood": mood}, separators=(",", ":"))]


def test_a_tampered_chunk_makes_the_receiver_tell_the_sender_integrity() -> None:
    link = Link()
    flipped = False

    def flip(to: object, frame: bytes) -> bytes:
        nonlocal flipped
        if to is link.r and frame[0] == DATA and not flipped:
            flipped = True
            return frame[:-1] + bytes([frame[-1] ^ 1])
        return frame

    link.filter = flip
    run_transfer(random_bytes(3 * CHUNK), link=link)
    (failure,) = failed(link.r)
    assert isinstance(failure.error, IntegrityError)
    assert not any(isinstance(e, ChunkReceived) for e in link.r.events)
    assert link.r.sent[-1][0] == SEALED_CTRL and link.r.texts[-1] == ERRORY_BYE
    # The sender opened it in sequence (no failure of its own) and knows why it ended.
    assert Cancelled(CANCEL_INTEGRITY) in link.s.events
    assert not failed(link.s)
    assert link.s.peer.state is State.CANCELLED
    assert link.s.texts[-1] == ERRORY_BYE


def test_a_frame_out_of_place_makes_the_receiver_tell_the_sender_protocol() -> None:
    link = Link()
    link.pair()  # both READY: R waits for the offer
    link.r.peer.receive(bytes([DATA]) + bytes(40))
    link.pump()
    (failure,) = failed(link.r)
    assert isinstance(failure.error, ProtocolViolation)
    assert Cancelled(CANCEL_PROTOCOL) in link.s.events
    assert not failed(link.s)
    assert link.s.peer.state is State.CANCELLED
