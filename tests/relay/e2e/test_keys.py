"""The key schedule: HKDF (RFC 5869 vectors), session keys, confirmation, commitment, file ids."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tube.relay.e2e import (
    CPace,
    WrongCode,
    check_confirm,
    commitment,
    confirm_tag,
    derive_keys,
    file_id,
    hkdf_expand,
    hkdf_extract,
    lv_cat,
)

SID = bytes(range(16))
ISK = bytes(range(64))


def test_hkdf_rfc5869_case_1() -> None:
    # RFC 5869 Appendix A.1 (SHA-256, basic).
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    prk = hkdf_extract(salt, ikm)
    assert prk.hex() == "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    okm = hkdf_expand(prk, info, 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_hkdf_rfc5869_case_3() -> None:
    # RFC 5869 Appendix A.3: empty salt and info.
    prk = hkdf_extract(b"", bytes.fromhex("0b" * 22))
    assert prk.hex() == "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04"
    assert hkdf_expand(prk, b"", 42).hex() == (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )


def test_hkdf_expand_limits() -> None:
    prk = bytes(32)
    assert len(hkdf_expand(prk, b"", 255 * 32)) == 255 * 32
    for length in (0, -1, 255 * 32 + 1):
        with pytest.raises(ValueError):
            hkdf_expand(prk, b"", length)
    with pytest.raises(ValueError):
        hkdf_expand(bytes(31), b"", 32)


def expand(label: str, length: int) -> bytes:
    prk = hmac.digest(SID, ISK, "sha256")
    return hkdf_expand(prk, b"tube/1 " + label.encode(), length)


def test_derive_keys_follows_the_design() -> None:
    keys = derive_keys(ISK, SID)
    assert keys.confirm_s == expand("confirm_s", 32)
    assert keys.confirm_r == expand("confirm_r", 32)
    assert keys.k_ctrl_s2r == expand("k_ctrl_s2r", 32)
    assert keys.k_ctrl_r2s == expand("k_ctrl_r2s", 32)
    assert keys.rid == hkdf_expand(expand("resume_secret", 32), b"tube/1 rid", 16)
    digits = int.from_bytes(expand("verifier", 8), "big") % 1_000_000
    assert keys.verifier == f"{digits:06d}"
    assert len(keys.verifier) == 6
    assert keys.verifier.isdigit()
    assert len({keys.confirm_s, keys.confirm_r, keys.k_ctrl_s2r, keys.k_ctrl_r2s}) == 4


def test_repr_hides_keys() -> None:
    keys = derive_keys(ISK, SID)
    text = repr(keys)
    for secret in (keys.confirm_s, keys.confirm_r, keys.k_ctrl_s2r, keys.k_ctrl_r2s):
        assert secret.hex() not in text
        assert repr(secret) not in text
    assert "prk" not in text


def test_keys_are_frozen() -> None:
    keys = derive_keys(ISK, SID)
    with pytest.raises(AttributeError):
        keys.rid = b""  # type: ignore[misc]


def test_data_key() -> None:
    keys = derive_keys(ISK, SID)
    fid, nonce = bytes(range(16)), bytes(range(16, 32))
    key = keys.data_key(fid, 3, nonce)
    info = b"tube/1 k_data_s2r" + fid + (3).to_bytes(4, "big") + nonce
    assert key == hkdf_expand(hmac.digest(SID, ISK, "sha256"), info, 32)
    # Every input changes the key: a fresh key for every stream.
    assert key != keys.data_key(fid, 4, nonce)
    assert key != keys.data_key(bytes(16), 3, nonce)
    assert key != keys.data_key(fid, 3, bytes(16))
    assert key != derive_keys(ISK, bytes(16)).data_key(fid, 3, nonce)


@pytest.mark.parametrize(
    ("fid", "epoch", "nonce"),
    [
        (bytes(15), 0, bytes(16)),
        (bytes(16), 0, bytes(17)),
        (bytes(16), -1, bytes(16)),
        (bytes(16), 2**32, bytes(16)),
    ],
)
def test_data_key_validates(fid: bytes, epoch: int, nonce: bytes) -> None:
    with pytest.raises(ValueError):
        derive_keys(ISK, SID).data_key(fid, epoch, nonce)


def test_derive_keys_needs_isk() -> None:
    with pytest.raises(ValueError):
        derive_keys(b"", SID)


def confirmation(code_s: bytes, code_r: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """Run CPace and the confirmation on both sides: transcripts, S's and R's tag keys."""
    sender = CPace(code_s, SID, "send")
    receiver = CPace(code_r, SID, "recv")
    keys_s = derive_keys(sender.finish(receiver.message), SID)
    keys_r = derive_keys(receiver.finish(sender.message), SID)
    assert sender.transcript == receiver.transcript
    tag_s = confirm_tag(keys_s.confirm_s, sender.transcript)
    tag_r = confirm_tag(keys_r.confirm_r, receiver.transcript)
    return sender.transcript, tag_s, tag_r, keys_s.confirm_r, keys_r.confirm_s


def test_right_code_confirms_both_ways() -> None:
    transcript, tag_s, tag_r, s_view_of_r, r_view_of_s = confirmation(b"4821-a-b", b"4821-a-b")
    check_confirm(r_view_of_s, transcript, tag_s)  # R checks S's tag
    check_confirm(s_view_of_r, transcript, tag_r)  # S checks R's tag
    assert tag_s != tag_r


def test_wrong_code_fails_confirmation_both_ways() -> None:
    transcript, tag_s, tag_r, s_view_of_r, r_view_of_s = confirmation(b"4821-a-b", b"4821-a-c")
    with pytest.raises(WrongCode, match="wrong code or interference"):
        check_confirm(r_view_of_s, transcript, tag_s)
    with pytest.raises(WrongCode):
        check_confirm(s_view_of_r, transcript, tag_r)


def test_a_tag_is_not_valid_for_the_other_role() -> None:
    keys = derive_keys(ISK, SID)
    tag_s = confirm_tag(keys.confirm_s, b"transcript")
    # Reflecting S's own tag back to it must fail.
    with pytest.raises(WrongCode):
        check_confirm(keys.confirm_r, b"transcript", tag_s)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=40))
def test_check_confirm_rejects_any_other_tag(tag: bytes) -> None:
    keys = derive_keys(ISK, SID)
    good = confirm_tag(keys.confirm_s, b"t")
    if tag == good:
        return
    with pytest.raises(WrongCode):
        check_confirm(keys.confirm_s, b"t", tag)


def test_commitment() -> None:
    message = CPace(b"code", SID, "send").message
    assert commitment(message) == hashlib.sha256(b"tube/1 commit" + message).digest()
    assert commitment(message) != commitment(CPace(b"code", SID, "send").message)


def test_file_id() -> None:
    salt = bytes(16)
    encoded = lv_cat(salt, b"a.txt", (5).to_bytes(8, "big"), (7).to_bytes(8, "big"))
    assert file_id(salt, "a.txt", 5, 7) == hashlib.sha256(encoded).digest()[:16]
    assert len(file_id(salt, "a.txt", 5, 7)) == 16
    # The length prefixes keep name and salt apart.
    assert file_id(b"ab", "c", 0, 0) != file_id(b"a", "bc", 0, 0)
    assert file_id(salt, "a.txt", 5, 7) != file_id(bytes(15) + b"\x01", "a.txt", 5, 7)


@pytest.mark.parametrize(("size", "modified"), [(-1, 0), (2**64, 0), (0, -1), (0, 2**64)])
def test_file_id_validates(size: int, modified: int) -> None:
    with pytest.raises(ValueError):
        file_id(b"salt", "name", size, modified)
