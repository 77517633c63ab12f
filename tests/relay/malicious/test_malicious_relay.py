"""Design §9 item 4, "Malicious relay": honest peers over real sockets against a hostile relay.

Each test starts a :class:`~.hostile.HostileRelay` on 127.0.0.1 (the real adapter and core,
subclassed), runs honest peers with :mod:`.driver` over real WebSockets, lets the relay attack,
and checks what each honest side concluded: never a success it should not report, always the
failure the design names, no plaintext, name or code in anything the relay saw.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tube.relay.codes import generate_words, make_code
from tube.relay.e2e.errors import IntegrityError, WrongCode
from tube.relay.e2e.framing import COMMIT, CONFIRM, CPACE, DATA, SEALED_CTRL
from tube.relay.e2e.peer import CANCEL_INTEGRITY, Cancelled
from tube.relay.limits import Limits

from .driver import Outcome, PeerRun, allocate, claim_close_code, password, run_pair
from .hostile import Endpoint, Hop, HostileRelay, Splice, Tamper, on_sender_data

CHUNK = 262_144
# A DATA frame: type byte and u64 index in clear, then the chunk and its 16-byte GCM tag.
DATA_OVERHEAD = 1 + 8 + 16
# What a sender may send before its peer's confirmation verified: no offer, no DATA.
KEY_EXCHANGE = {COMMIT, CPACE, CONFIRM}
# After one side's bye the relay gives the other this long for its own, then closes it with
# 4006. A side left waiting by an attack ends that way, so keep it short.
LIMITS = Limits(bye_s=0.5)
# Six chunks, the last one short: enough to tamper in the middle and at the end.
SIX_CHUNKS = os.urandom(5 * CHUNK + 1000)


def run(main: Callable[[], Coroutine[Any, Any, None]], seconds: float = 15.0) -> None:
    """Run ``main`` on a fresh event loop, failing the test if it takes over ``seconds``."""

    async def bounded() -> None:
        async with asyncio.timeout(seconds):
            await main()

    asyncio.run(bounded())


@asynccontextmanager
async def hostile_relay() -> AsyncIterator[HostileRelay]:
    """A started :class:`HostileRelay` (honest until told otherwise), drained at the end."""
    relay = HostileRelay(LIMITS)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()


def other_words(words: list[str]) -> list[str]:
    """A wrong guess at the code's words: two words that are not ``words``."""
    while (guess := generate_words()) == words:
        pass
    return guess


def directory(parent: Path, name: str) -> Path:
    """A fresh, empty output directory for one receiver."""
    path = parent / name
    path.mkdir()
    return path


def sent_by(relay: HostileRelay, endpoint: Endpoint) -> list[Hop]:
    """The frames the relay received from ``endpoint``."""
    return [hop for hop in relay.received if hop.source == endpoint]


def assert_no_success(outcome: Outcome) -> None:
    """``outcome`` reports no completed transfer and left no file, whole or partial."""
    assert not outcome.succeeded, outcome.events[-3:]
    if outcome.role == "recv":
        assert outcome.output is None
        assert outcome.leftovers == []


async def transfer(
    relay: HostileRelay, data: bytes, tmp_path: Path, *, name: str = "file.bin"
) -> tuple[Outcome, Outcome, str, list[str]]:
    """An honest transfer of ``data`` through ``relay``: (S, R, nameplate, code words)."""
    nameplate = await allocate(relay.port)
    words = generate_words()
    out_dir = directory(tmp_path, "received")
    sender, receiver = await run_pair(
        relay.port, nameplate, password(nameplate, words), data, out_dir, name=name
    )
    return sender, receiver, nameplate, words


# ------------------------------------------------------------------ (a) eavesdrop


def test_eavesdrop_the_relay_sees_no_plaintext_name_or_code(tmp_path: Path) -> None:
    size = 12 * CHUNK + 12_345  # 3 MiB and a bit: 13 chunks, the last one short
    marker = b"TUBE-SECRET-MARKER-" + os.urandom(8).hex().encode()
    data = bytearray(os.urandom(size))
    # One marker inside a chunk, one across a chunk boundary (a window no chunk holds whole).
    for at in (CHUNK // 2, 2 * CHUNK - len(marker) // 2):
        data[at : at + len(marker)] = marker
    plaintext = bytes(data)
    name = f"merger-plan-{os.urandom(4).hex()}.xlsx"

    async def main() -> None:
        async with hostile_relay() as relay:
            sender, receiver, nameplate, words = await transfer(
                relay, plaintext, tmp_path, name=name
            )
        assert sender.succeeded and receiver.succeeded
        assert receiver.output == plaintext

        # Everything the relay could log: every binary frame both ways, every control message
        # both ways. Joined end to end, so a match across two frames counts too (stricter).
        frames = b"".join(hop.frame for hop in relay.received)
        controls = "\n".join(
            [text for _, text in relay.spy.texts]
            + [json.dumps(message) for _, message in relay.sent_controls]
        ).encode()
        code = make_code(nameplate, words)
        # The code's words alone are 3 to 5 letters, which random ciphertext of this size
        # holds by chance; the code and its word part are long enough to mean something.
        secrets = [marker, name.encode(), code.encode(), "-".join(words).encode()]
        for secret in secrets:
            assert secret not in frames, secret
            assert secret not in controls, secret
        rng = random.Random(size)
        starts = [0, size - 32] + [rng.randrange(size - 32) for _ in range(300)]
        for start in starts:
            window = plaintext[start : start + 32]
            assert window not in frames, start
            assert window not in controls, start

        # Size is the one thing it learns: plaintext + 25 bytes per chunk, nothing more.
        chunks = -(-size // CHUNK)
        from_sender = sent_by(relay, Endpoint(nameplate, "send"))
        stream = [hop.frame for hop in from_sender if hop.kind == DATA]
        assert len(stream) == chunks
        assert sum(map(len, stream)) == size + chunks * DATA_OVERHEAD
        # Besides DATA, S sends its key exchange and one sealed offer (padded to 256 bytes).
        assert sum(len(hop.frame) for hop in from_sender if hop.kind != DATA) < 1024
        # R sends its key exchange and sealed acks and done: no data of any size.
        from_receiver = sent_by(relay, Endpoint(nameplate, "recv"))
        assert {hop.kind for hop in from_receiver} <= {CPACE, CONFIRM, SEALED_CTRL}
        assert sum(len(hop.frame) for hop in from_receiver) < 400 * chunks

    run(main)


# ------------------------------------------------------------------ (b, c) a relay in the middle


async def relay_in_the_middle(
    relay: HostileRelay, tmp_path: Path, data: bytes, substitute: bytes, *, lucky: bool
) -> tuple[Outcome, Outcome, Outcome, Outcome, str]:
    """S and R each paired with the relay's own peer; returns (S, R, M_R, M_S, nameplate).

    The relay's receiver M_R claims S's nameplate before R does, so S is paired with M_R.
    R's connection to the (now used) nameplate is then diverted to a nameplate of the relay's
    own, where its sender M_S waits with ``substitute``. The relay's peers guess the code
    (``lucky``: the guess is right) and are otherwise honest drivers.
    """
    port = relay.port
    nameplate = await allocate(port)
    own = await allocate(port)
    words = generate_words()
    guess = words if lucky else other_words(words)
    honest_prs, guess_prs = password(nameplate, words), password(nameplate, guess)

    sender = PeerRun(port, nameplate, "send", honest_prs, data=data, name="holiday.jpg")
    mallory_r = PeerRun(port, nameplate, "recv", guess_prs, out_dir=directory(tmp_path, "m_r"))
    runs = [asyncio.create_task(sender.run()), asyncio.create_task(mallory_r.run())]
    await relay.wait_paired(nameplate)
    relay.spy.divert[nameplate] = own
    mallory_s = PeerRun(port, own, "send", guess_prs, data=substitute, name="holiday.jpg")
    receiver = PeerRun(port, nameplate, "recv", honest_prs, out_dir=directory(tmp_path, "r"))
    runs += [asyncio.create_task(mallory_s.run()), asyncio.create_task(receiver.run())]
    s, m_r, m_s, r = await asyncio.gather(*runs)
    # The relay really split them: what reached it for S's nameplate came from M_R alone,
    # and R, diverted, spoke on the relay's own nameplate.
    assert len(sent_by(relay, Endpoint(nameplate, "recv"))) == len(m_r.sent)
    assert len(sent_by(relay, Endpoint(own, "recv"))) == len(r.sent) > 0
    return s, r, m_r, m_s, nameplate


def test_mitm_with_a_wrong_code_fails_on_both_sides_before_any_offer(tmp_path: Path) -> None:
    async def main() -> None:
        async with hostile_relay() as relay:
            s, r, m_r, m_s, nameplate = await relay_in_the_middle(
                relay, tmp_path, SIX_CHUNKS, b"not the file", lucky=False
            )
            burned = await claim_close_code(relay.port, nameplate)
            moods = relay.spy.moods

        for honest_side in (s, r):
            assert isinstance(honest_side.failure, WrongCode)
            assert str(honest_side.failure) == "wrong code or interference"
            assert honest_side.verifier is None
            assert honest_side.byes == ["scary"]
            assert_no_success(honest_side)
        # S sent nothing but its key exchange: no offer (sealed control), no DATA, and the
        # relay received nothing else from it.
        assert s.sent_types <= KEY_EXCHANGE
        assert {hop.kind for hop in sent_by(relay, Endpoint(nameplate, "send"))} <= KEY_EXCHANGE
        # The relay's own peers learnt nothing either.
        assert isinstance(m_r.failure, WrongCode) and isinstance(m_s.failure, WrongCode)
        assert m_r.leftovers == [] and r.leftovers == []
        # Single use: the nameplate is gone for any later claimant, and scary was reported.
        assert burned == 4002
        assert moods["scary"] >= 2

    run(main)


def test_lucky_guess_a_relay_with_the_right_code_completes_each_side_apart(
    tmp_path: Path,
) -> None:
    """The 1-in-N bound (design §1): a right online guess reads the file and substitutes
    another; only the verifier digits, if the users compare them, show it."""
    substitute = os.urandom(CHUNK + 7)

    async def main() -> None:
        async with hostile_relay() as relay:
            s, r, m_r, m_s, _ = await relay_in_the_middle(
                relay, tmp_path, SIX_CHUNKS, substitute, lucky=True
            )

        # The attack works against each side apart: M_R reads S's file, R takes M_S's.
        assert s.succeeded and m_r.succeeded and m_r.output == SIX_CHUNKS
        assert r.succeeded and m_s.succeeded and r.output == substitute
        # Two separate sessions, two separate key sets: the verifiers S and R show differ
        # (S committed to its CPace message first, so the relay cannot grind them equal; they
        # agree by chance once in a million runs).
        assert s.verifier == m_r.verifier and r.verifier == m_s.verifier
        assert s.verifier is not None and r.verifier is not None
        assert s.verifier != r.verifier

    run(main)


# ------------------------------------------------------------------ (d, e, f) the stream


def flip_bit(frame: bytes, at: int) -> bytes:
    """``frame`` with the lowest bit of byte ``at`` flipped."""
    changed = bytearray(frame)
    changed[at] ^= 0x01
    return bytes(changed)


@pytest.mark.parametrize(
    ("k", "where"),
    [(0, "body"), (2, "tag"), (5, "index")],  # chunk 5 is the final one
)
def test_tamper_one_flipped_bit_fails_integrity_and_the_partial_file_goes(
    tmp_path: Path, k: int, where: str
) -> None:
    # Byte 8 is the low byte of the index in clear; the tag is the last 16 bytes.
    offsets = {"body": 9 + 1000, "tag": -1, "index": 8}

    def tamper(hop: Hop) -> list[bytes]:
        if hop.index != k:
            return [hop.frame]
        return [flip_bit(hop.frame, offsets[where] % len(hop.frame))]

    async def main() -> None:
        async with hostile_relay() as relay:
            relay.tamper = on_sender_data(tamper)
            s, r, _, _ = await transfer(relay, SIX_CHUNKS, tmp_path)

        assert isinstance(r.failure, IntegrityError), r.events[-1:]
        assert r.byes == ["errory"]
        # The chunks before k were authenticated and written to the partial file; chunk k
        # never was, nothing after it was accepted, and the partial file was deleted.
        assert r.chunks_received == list(range(k))
        assert_no_success(r)
        assert_no_success(s)
        # R told S why before its bye, sealed: the relay could not read or forge the reason.
        assert Cancelled(CANCEL_INTEGRITY) in s.events

    run(main)


def test_truncate_the_final_chunk_dropped_then_a_clean_close_is_no_success(
    tmp_path: Path,
) -> None:
    final = len(SIX_CHUNKS) // CHUNK  # 5

    def truncate(hop: Hop) -> list[bytes]:
        if hop.index == final:
            hop.hang_up = True  # close R's connection (1000) instead of delivering it
            return []
        return [hop.frame]

    async def main() -> None:
        async with hostile_relay() as relay:
            relay.tamper = on_sender_data(truncate)
            s, r, _, _ = await transfer(relay, SIX_CHUNKS, tmp_path)

        # Every chunk but the final one arrived intact, and the relay closed normally: still
        # not a file (a stream without its final chunk is incomplete, design §4.4).
        assert r.chunks_received == list(range(final))
        assert r.close_code == 1000
        assert r.failure is None
        assert_no_success(r)
        assert_no_success(s)

    run(main)


def reorder(k: int) -> Tamper:
    """Chunks k and k+1 delivered in swapped order, headers intact."""
    held: list[bytes] = []

    def rewrite(hop: Hop) -> list[bytes]:
        if hop.index == k:
            held.append(hop.frame)
            return []
        if hop.index == k + 1:
            return [hop.frame, *held]
        return [hop.frame]

    return rewrite


def reorder_relabelled(k: int) -> Tamper:
    """Chunks k and k+1 swapped, each under the other's header (indexes look in order)."""
    held: list[bytes] = []

    def rewrite(hop: Hop) -> list[bytes]:
        if hop.index == k:
            held.append(hop.frame)
            return []
        if hop.index == k + 1:
            first, second = held[0], hop.frame
            return [first[:9] + second[9:], second[:9] + first[9:]]
        return [hop.frame]

    return rewrite


def replay(k: int) -> Tamper:
    """Chunk k delivered again after chunk k+2."""
    kept: list[bytes] = []

    def rewrite(hop: Hop) -> list[bytes]:
        if hop.index == k:
            kept.append(hop.frame)
        if hop.index == k + 2:
            return [hop.frame, *kept]
        return [hop.frame]

    return rewrite


def replay_relabelled(k: int) -> Tamper:
    """Chunk k's ciphertext delivered as chunk k+1 (its header rewritten), k+1 dropped."""
    kept: list[bytes] = []

    def rewrite(hop: Hop) -> list[bytes]:
        if hop.index == k:
            kept.append(hop.frame)
        if hop.index == k + 1:
            return [hop.frame[:9] + kept[0][9:]]
        return [hop.frame]

    return rewrite


def duplicate(k: int) -> Tamper:
    """Chunk k delivered twice in a row."""

    def rewrite(hop: Hop) -> list[bytes]:
        return [hop.frame, hop.frame] if hop.index == k else [hop.frame]

    return rewrite


@pytest.mark.parametrize(
    ("attack", "accepted"),
    [
        (reorder, 1),
        (reorder_relabelled, 1),
        (replay, 4),
        (replay_relabelled, 2),
        (duplicate, 2),
    ],
    ids=["reorder", "reorder-relabelled", "replay", "replay-relabelled", "duplicate"],
)
def test_reordered_replayed_or_duplicated_data_is_rejected(
    tmp_path: Path, attack: Callable[[int], Tamper], accepted: int
) -> None:
    async def main() -> None:
        async with hostile_relay() as relay:
            # Built here: the attacks hold state (frames kept back), one per run.
            relay.tamper = on_sender_data(attack(1))
            s, r, _, _ = await transfer(relay, SIX_CHUNKS, tmp_path)

        assert isinstance(r.failure, IntegrityError), r.events[-1:]
        # R took the chunks in order up to the attack and not one more.
        assert r.chunks_received == list(range(accepted))
        assert_no_success(r)
        assert_no_success(s)
        assert Cancelled(CANCEL_INTEGRITY) in s.events

    run(main)


def control_attack(role: str, nth: int, copies: int) -> Tamper:
    """The ``nth`` sealed control message from ``role`` delivered ``copies`` times (0: dropped)."""
    seen = 0

    def tamper(hop: Hop) -> list[bytes]:
        nonlocal seen
        if hop.source.role != role or hop.kind != SEALED_CTRL:
            return [hop.frame]
        seen += 1
        return [hop.frame] * copies if seen == nth else [hop.frame]

    return tamper


@pytest.mark.parametrize(
    ("role", "nth", "copies"),
    [("recv", 2, 0), ("recv", 2, 2), ("send", 1, 2)],
    ids=["ack-dropped", "ack-replayed", "offer-replayed"],
)
def test_dropped_or_replayed_sealed_control_is_rejected(
    tmp_path: Path, role: str, nth: int, copies: int
) -> None:
    """Beyond DATA: the control messages count up by one in each direction, so a gap or a
    repeat in what the relay delivers fails the side that receives it.

    (A gap is seen only when a later message arrives: a relay that swallows R's ``accept``
    leaves both sides waiting, S for the accept and R for DATA. That is denial of service,
    which the relay can always do; the peer has no timer, so the CLI needs its own.)"""

    async def main() -> None:
        async with hostile_relay() as relay:
            relay.tamper = control_attack(role, nth, copies)
            s, r, _, _ = await transfer(relay, SIX_CHUNKS, tmp_path)

        attacked = r if role == "send" else s  # the side receiving the attacked messages
        assert isinstance(attacked.failure, IntegrityError), attacked.events[-1:]
        assert_no_success(attacked)
        # R may have finished before S noticed (every chunk fits in the window): then what it
        # holds is the true file, authenticated chunk by chunk up to the final one.
        if r.succeeded:
            assert r.output == SIX_CHUNKS
        else:
            assert_no_success(r)
            # The attacked side told the other why; R, when it is the other, had not finished.
            other = s if attacked is r else r
            assert Cancelled(CANCEL_INTEGRITY) in other.events

    run(main)


# ------------------------------------------------------------------ (g) cross-session splice


@pytest.mark.parametrize("after_confirmation", [False, True], ids=["from-pairing", "confirmed"])
def test_cross_session_splice_fails_both_pairs(tmp_path: Path, after_confirmation: bool) -> None:
    async def main() -> None:
        async with hostile_relay() as relay:
            port = relay.port
            nameplates = (await allocate(port), await allocate(port))
            relay.splice = Splice(nameplates, after_confirmation=after_confirmation)
            runs = []
            for nameplate in nameplates:
                prs = password(nameplate, generate_words())
                out_dir = directory(tmp_path, nameplate)
                runs.append(PeerRun(port, nameplate, "send", prs, data=SIX_CHUNKS))
                runs.append(PeerRun(port, nameplate, "recv", prs, out_dir=out_dir))
            outcomes = await asyncio.gather(*(peer_run.run() for peer_run in runs))

        senders = [o for o in outcomes if o.role == "send"]
        receivers = [o for o in outcomes if o.role == "recv"]
        for outcome in outcomes:
            assert_no_success(outcome)
        for sender in senders:
            assert DATA not in sender.sent_types  # no receiver ever accepted
        if after_confirmation:
            # Each pair's keys were confirmed, then each receiver got the other pair's
            # sealed offer: it fails authentication under this session's keys.
            for receiver in receivers:
                assert receiver.verifier is not None
                assert isinstance(receiver.failure, IntegrityError)
        else:
            # Crossed from the start, the key exchanges ran between strangers (other code,
            # other sid): nobody confirmed, no sender got past its key exchange. Which side
            # notices first is a race; the others are closed when their pair ends.
            for outcome in outcomes:
                assert outcome.verifier is None
                assert outcome.failure is None or isinstance(outcome.failure, WrongCode)
            assert any(isinstance(o.failure, WrongCode) for o in outcomes)
            for sender in senders:
                assert sender.sent_types <= KEY_EXCHANGE

    run(main)


# ------------------------------------------------------------------ (h) pair_id games


def random_pair_id() -> str:
    """A pair id as ``paired`` spells it: 16 random bytes, unpadded base64url."""
    return base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()


def test_different_pair_ids_to_each_side_fail_confirmation_before_any_offer(
    tmp_path: Path,
) -> None:
    ids = {"send": random_pair_id(), "recv": random_pair_id()}

    async def main() -> None:
        async with hostile_relay() as relay:
            relay.pair_id_for = lambda endpoint, _pair_id: ids[str(endpoint.role)]
            s, r, nameplate, _ = await transfer(relay, SIX_CHUNKS, tmp_path)

        assert s.pair_id != r.pair_id
        for side in (s, r):
            assert isinstance(side.failure, WrongCode)
            assert side.byes == ["scary"]
            assert_no_success(side)
        assert s.sent_types <= KEY_EXCHANGE
        assert {hop.kind for hop in sent_by(relay, Endpoint(nameplate, "send"))} <= KEY_EXCHANGE

    run(main)


def test_a_relay_chosen_pair_id_given_to_both_sides_changes_nothing(tmp_path: Path) -> None:
    """The sid is the relay's to choose (design §4.2): any value both sides share works, so
    choosing it gives the relay nothing but the denial of service above."""
    chosen = random_pair_id()

    async def main() -> None:
        async with hostile_relay() as relay:
            relay.pair_id_for = lambda _endpoint, _pair_id: chosen
            s, r, _, _ = await transfer(relay, SIX_CHUNKS, tmp_path)

        assert s.pair_id == r.pair_id == base64.urlsafe_b64decode(chosen + "==")
        assert s.succeeded and r.succeeded and r.output == SIX_CHUNKS
        assert s.verifier == r.verifier

    run(main)
