"""CPace-X25519-SHA512: the draft's vectors, the low-order table, our message rules."""

from __future__ import annotations

import contextlib
import hashlib
import json
import pathlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tube.relay.e2e import E2EError, ProtocolViolation, WrongCode
from tube.relay.e2e.cpace import (
    AD_RECV,
    AD_SEND,
    CPace,
    calculate_generator,
    decode_u_coordinate,
    elligator2,
    generator_string,
    lv_cat,
    prepend_len,
    scalar_mult_vfy,
)

VECTORS = pathlib.Path(__file__).resolve().parents[2] / "vectors" / "cpace"
DRAFT: dict[str, Any] = json.loads((VECTORS / "testvectors.json").read_text())
G = {key: bytes.fromhex(value) for key, value in DRAFT["G_25519"].items()}
LOW_ORDER: dict[str, Any] = json.loads((VECTORS / "low_order.json").read_text())
P = 2**255 - 19
SID = bytes(range(16))


def o_cat(first: bytes, second: bytes) -> bytes:
    """The draft's ordered concatenation: b"oc", then the lexicographically larger first."""
    if first > second:
        return b"oc" + first + second
    return b"oc" + second + first


# --- The draft's string utilities --------------------------------------------------------------


def test_prepend_len_draft_vectors() -> None:
    assert prepend_len(b"") == bytes.fromhex("00")
    assert prepend_len(b"1234") == bytes.fromhex("0431323334")
    assert prepend_len(bytes(range(127))) == b"\x7f" + bytes(range(127))
    assert prepend_len(bytes(range(128))) == b"\x80\x01" + bytes(range(128))
    assert prepend_len(bytes(300))[:2] == bytes([300 & 0x7F | 0x80, 300 >> 7])


def test_lv_cat_and_transcripts_draft_vectors() -> None:
    transcript = lv_cat(b"123", b"PartyA") + lv_cat(b"234", b"PartyB")
    assert transcript == bytes.fromhex("03313233065061727479410332333406506172747942")
    assert o_cat(b"ABCD", b"BCD") == bytes.fromhex("6f6342434441424344")
    assert o_cat(lv_cat(b"123", b"PartyA"), lv_cat(b"234", b"PartyB")) == bytes.fromhex(
        "6f6303323334065061727479420331323306506172747941"
    )


def test_generator_string_draft_vector() -> None:
    gen_str = generator_string(G["PRS"], G["CI"], G["sid"])
    # Draft: "ZPAD length: 109", 170 bytes in all, hashing to the decoded field element.
    assert len(gen_str) == 170
    assert gen_str[: 1 + 8 + 1 + 8 + 1] == b"\x08CPace255\x08Password\x6d"
    assert gen_str[19 : 19 + 109] == bytes(109)
    digest = hashlib.sha512(gen_str).digest()[:32]
    assert digest.hex() == "03998087bdb1a2617bbe25ef5a7c18cd4f84f902328701790958755ee4aed1d3"
    assert decode_u_coordinate(digest).to_bytes(32, "little").hex() == (
        "03998087bdb1a2617bbe25ef5a7c18cd4f84f902328701790958755ee4aed153"
    )


def test_zero_padding_vanishes_for_long_prs() -> None:
    prs = bytes(200)
    assert generator_string(prs, b"", b"") == lv_cat(b"CPace255", prs, b"", b"", b"")


# --- The G_X25519 vectors ----------------------------------------------------------------------


def test_draft_g_x25519_vectors() -> None:
    g = calculate_generator(G["PRS"], G["CI"], G["sid"])
    assert g == G["g"]
    ya = scalar_mult_vfy(G["ya"], g)
    yb = scalar_mult_vfy(G["yb"], g)
    assert ya == G["Ya"]
    assert yb == G["Yb"]
    k = scalar_mult_vfy(G["ya"], yb)
    assert k == G["K"] == scalar_mult_vfy(G["yb"], ya)
    prefix = lv_cat(b"CPace255_ISK", G["sid"], k)
    transcript_ir = lv_cat(ya, G["ADa"]) + lv_cat(yb, G["ADb"])
    assert hashlib.sha512(prefix + transcript_ir).digest() == G["ISK_IR"]
    transcript_oc = o_cat(lv_cat(ya, G["ADa"]), lv_cat(yb, G["ADb"]))
    assert hashlib.sha512(prefix + transcript_oc).digest() == G["ISK_SY"]
    assert hashlib.sha512(b"CPaceSidOutput" + transcript_ir).digest() == G["sid_output_ir"]


def test_cpace_class_reproduces_the_draft_messages() -> None:
    # The class with the draft's CI and scalars gives the draft's Y; only AD is ours.
    party_a = CPace(G["PRS"], G["sid"], "send", ci=G["CI"], scalar=G["ya"])
    party_b = CPace(G["PRS"], G["sid"], "recv", ci=G["CI"], scalar=G["yb"])
    assert party_a.message == lv_cat(G["Ya"], AD_SEND)
    assert party_b.message == lv_cat(G["Yb"], AD_RECV)
    isk = party_a.finish(party_b.message)
    k = G["K"]
    transcript = lv_cat(G["Ya"], AD_SEND) + lv_cat(G["Yb"], AD_RECV)
    assert isk == hashlib.sha512(lv_cat(b"CPace255_ISK", G["sid"], k) + transcript).digest()
    assert party_a.transcript == transcript


@pytest.mark.parametrize("n", list("0123456789ab"))
def test_low_order_table(n: str) -> None:
    scalar = bytes.fromhex(LOW_ORDER["s"])
    point = bytes.fromhex(LOW_ORDER["points"][f"u{n}"])
    expected = bytes.fromhex(LOW_ORDER["results"][f"q{n}"])
    # The table's points are the same as testvectors.json's "Invalid Y0".."Invalid Y11".
    assert point == bytes.fromhex(DRAFT["X25519_points"][f"Invalid Y{int(n, 16)}"])
    if f"u{n}" in LOW_ORDER["must_abort"]:
        assert expected == bytes(32)
        with pytest.raises(WrongCode):
            scalar_mult_vfy(scalar, point)
    else:
        assert scalar_mult_vfy(scalar, point) == expected


@pytest.mark.parametrize("n", LOW_ORDER["must_abort"])
def test_low_order_point_in_a_cpace_message_aborts(n: str) -> None:
    receiver = CPace(b"4821-ahead-zebra", SID, "recv")
    point = bytes.fromhex(LOW_ORDER["points"][n])
    with pytest.raises(WrongCode, match="wrong code or interference"):
        receiver.finish(lv_cat(point, AD_SEND))


def test_scalar_mult_vfy_rejects_wrong_lengths() -> None:
    with pytest.raises(ValueError):
        scalar_mult_vfy(bytes(31), bytes(32))
    with pytest.raises(ValueError):
        scalar_mult_vfy(bytes(32), bytes(33))


# --- Elligator2 --------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**256 - 1))
def test_elligator2_lands_on_the_curve(r: int) -> None:
    u = elligator2(r)
    assert 0 <= u < P
    # u is on Curve25519 (not the twist): u^3 + A u^2 + u is a square.
    rhs = (u * u * u + 486662 * u * u + u) % P
    assert pow(rhs, (P - 1) // 2, P) in (0, 1)
    # Elligator2 is invariant under r -> -r (it depends on r^2 only).
    assert elligator2(-r % P) == u


def test_elligator2_reduces_its_input() -> None:
    assert elligator2(5) == elligator2(5 + P)


# --- Our CPace runs ----------------------------------------------------------------------------


def run(prs_s: bytes, prs_r: bytes, sid: bytes = SID) -> tuple[bytes, bytes, CPace, CPace]:
    sender = CPace(prs_s, sid, "send")
    receiver = CPace(prs_r, sid, "recv")
    # The receiver finishes first here: the transcript must not depend on arrival order.
    isk_r = receiver.finish(sender.message)
    isk_s = sender.finish(receiver.message)
    return isk_s, isk_r, sender, receiver


def test_same_code_same_key() -> None:
    isk_s, isk_r, sender, receiver = run(b"4821-ahead-zebra", b"4821-ahead-zebra")
    assert isk_s == isk_r
    assert len(isk_s) == 64
    assert sender.transcript == receiver.transcript == sender.message + receiver.message


def test_wrong_code_different_key() -> None:
    isk_s, isk_r, _, _ = run(b"4821-ahead-zebra", b"4821-ahead-zebrb")
    assert isk_s != isk_r


def test_different_sid_different_key() -> None:
    sender = CPace(b"code", SID, "send")
    receiver = CPace(b"code", bytes(16), "recv")
    assert sender.finish(receiver.message) != receiver.finish(sender.message)


def test_fresh_scalar_each_run() -> None:
    assert CPace(b"code", SID, "send").message != CPace(b"code", SID, "send").message


def test_message_shape() -> None:
    message = CPace(b"code", SID, "recv").message
    assert len(message) == 36
    assert message[0] == 32
    assert message[33:] == b"\x02R\x01"


def test_reflection_is_a_protocol_violation() -> None:
    sender = CPace(b"code", SID, "send")
    with pytest.raises(ProtocolViolation, match="our own role"):
        sender.finish(sender.message)
    other_sender = CPace(b"code", SID, "send")
    with pytest.raises(ProtocolViolation, match="our own role"):
        sender.finish(other_sender.message)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_other_version_is_a_downgrade(version: int) -> None:
    sender = CPace(b"code", SID, "send")
    receiver = CPace(b"code", SID, "recv")
    forged = receiver.message[:-1] + bytes([version])
    with pytest.raises(ProtocolViolation, match="version"):
        sender.finish(forged)


def test_unknown_role_byte() -> None:
    sender = CPace(b"code", SID, "send")
    forged = CPace(b"code", SID, "recv").message[:-2] + b"X\x01"
    with pytest.raises(ProtocolViolation, match="unknown role"):
        sender.finish(forged)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda m: m + b"\x00",  # trailing byte
        lambda m: m[:-1],  # truncated
        lambda m: b"\x21" + m[1:],  # wrong Y length prefix
        lambda m: m[:33] + b"\x03" + m[34:],  # wrong AD length prefix
        lambda m: b"",
    ],
)
def test_malformed_messages(mangle: Any) -> None:
    sender = CPace(b"code", SID, "send")
    message = CPace(b"code", SID, "recv").message
    with pytest.raises(ProtocolViolation):
        sender.finish(mangle(message))


def test_failed_finish_leaves_the_run_usable_but_success_is_final() -> None:
    sender = CPace(b"code", SID, "send")
    receiver = CPace(b"code", SID, "recv")
    with pytest.raises(RuntimeError):
        _ = sender.transcript
    with pytest.raises(ProtocolViolation):
        sender.finish(b"junk")
    sender.finish(receiver.message)
    with pytest.raises(RuntimeError):
        sender.finish(receiver.message)
    # K and the scalar are gone: nothing on the object but the public transcript.
    assert not any(
        isinstance(value, bytes) and len(value) == 32 and value not in sender.message
        for value in vars(sender).values()
    )


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        CPace(b"code", SID, "sender")
    with pytest.raises(ValueError):
        CPace(b"code", SID, "send", scalar=bytes(16))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.sampled_from(["send", "recv"]))
def test_any_bytes_end_in_e2e_errors_only(data: bytes, role: str) -> None:
    party = CPace(b"code", SID, role, scalar=bytes(range(32)))
    try:
        isk = party.finish(data)
    except E2EError:
        return
    assert len(isk) == 64


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.sampled_from(["send", "recv"]))
def test_any_point_ends_in_a_key_or_wrong_code(y: bytes, role: str) -> None:
    party = CPace(b"code", SID, role, scalar=bytes(range(32)))
    peer_ad = AD_RECV if role == "send" else AD_SEND
    with contextlib.suppress(WrongCode):
        party.finish(lv_cat(y, peer_ad))
