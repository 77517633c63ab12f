"""E2E framing: DATA chunks opened in order with the receiver's counter, sealed control."""

from __future__ import annotations

import contextlib
import json
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from tube.relay.e2e import (
    CHUNK_SIZE,
    COMMIT,
    CONFIRM,
    CPACE,
    DATA,
    MAX_CHUNKS,
    MAX_SIZE,
    SEALED_CTRL,
    ChunkOpener,
    CtrlOpener,
    E2EError,
    IntegrityError,
    ProtocolViolation,
    chunk_count,
    commit_frame,
    confirm_frame,
    cpace_frame,
    data_aad,
    expected_length,
    frame_type,
    parse_commit,
    parse_confirm,
    parse_cpace,
    seal_chunk,
    seal_ctrl,
)
from tube.relay.e2e.framing import ctrl_plaintext

KEY = bytes(range(32))
FID = bytes(range(100, 116))
# Small files keep the tests fast; the chunk size itself is fixed by the protocol.
SMALL_SIZES = st.integers(min_value=0, max_value=3 * CHUNK_SIZE + 1)


def content(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def seal_all(size: int, *, key: bytes = KEY, fid: bytes = FID, epoch: int = 0) -> list[bytes]:
    data = content(size)
    return [
        seal_chunk(key, fid, epoch, i, size, data[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE])
        for i in range(chunk_count(size))
    ]


# --- Sizes and AAD -----------------------------------------------------------------------------


def test_chunk_count() -> None:
    assert chunk_count(0) == 1
    assert chunk_count(1) == 1
    assert chunk_count(CHUNK_SIZE) == 1
    assert chunk_count(CHUNK_SIZE + 1) == 2
    assert chunk_count(MAX_SIZE) == MAX_CHUNKS
    assert MAX_SIZE == 64 * 1024**3
    for bad in (-1, MAX_SIZE + 1):
        with pytest.raises(ValueError):
            chunk_count(bad)


def test_expected_length() -> None:
    assert expected_length(0, 0) == 0
    assert expected_length(CHUNK_SIZE, 0) == CHUNK_SIZE
    assert expected_length(CHUNK_SIZE + 5, 0) == CHUNK_SIZE
    assert expected_length(CHUNK_SIZE + 5, 1) == 5
    for index in (-1, 2):
        with pytest.raises(ValueError):
            expected_length(CHUNK_SIZE + 5, index)


def test_data_aad_layout() -> None:
    aad = data_aad(FID, 7, 9, True, 12345)
    assert len(aad) == 48
    assert aad == b"tube/1 data" + FID + struct.pack(">IQBQ", 7, 9, 1, 12345)
    assert data_aad(FID, 7, 9, False, 12345)[-9] == 0
    with pytest.raises(ValueError):
        data_aad(bytes(15), 0, 0, True, 0)
    with pytest.raises(ValueError):
        data_aad(FID, 2**32, 0, True, 0)


def test_seal_chunk_layout_and_nonce() -> None:
    plaintext = content(100)
    frame = seal_chunk(KEY, FID, 2, 0, 100, plaintext)
    assert frame[0] == DATA
    assert frame[1:9] == bytes(8)
    assert len(frame) == 1 + 8 + 100 + 16
    # Independent decryption: nonce 0^4 ‖ u64 index, the AAD with final = 1.
    aad = data_aad(FID, 2, 0, True, 100)
    assert AESGCM(KEY).decrypt(bytes(12), frame[9:], aad) == plaintext


def test_full_data_frame_size() -> None:
    frame = seal_chunk(KEY, FID, 0, 0, CHUNK_SIZE + 1, content(CHUNK_SIZE))
    assert len(frame) == 262_169  # design §5.7


def test_seal_chunk_checks_the_length() -> None:
    with pytest.raises(ValueError):
        seal_chunk(KEY, FID, 0, 0, 10, content(9))
    with pytest.raises(ValueError):
        seal_chunk(KEY, FID, 0, 1, 10, content(10))
    with pytest.raises(ValueError):
        seal_chunk(bytes(16), FID, 0, 0, 10, content(10))


# --- Opening DATA ------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(SMALL_SIZES)
def test_round_trip(size: int) -> None:
    opener = ChunkOpener(KEY, FID, 0, size)
    out = b""
    for frame in seal_all(size):
        assert not opener.done
        out += opener.open(frame)
    assert opener.done
    assert out == content(size)
    assert opener.next_index == chunk_count(size)


def test_empty_file_is_one_empty_final_chunk() -> None:
    frames = seal_all(0)
    assert len(frames) == 1
    opener = ChunkOpener(KEY, FID, 0, 0)
    assert opener.open(frames[0]) == b""
    assert opener.done


def test_resume_from_a_later_index() -> None:
    size = 2 * CHUNK_SIZE + 3
    frames = seal_all(size, epoch=1)
    opener = ChunkOpener(KEY, FID, 1, size, next_index=2)
    assert opener.open(frames[2]) == content(size)[2 * CHUNK_SIZE :]
    assert opener.done
    with pytest.raises(ValueError):
        ChunkOpener(KEY, FID, 1, size, next_index=3)


SIZE3 = 2 * CHUNK_SIZE + 10
FRAMES3 = seal_all(SIZE3)


def test_reorder_is_rejected() -> None:
    opener = ChunkOpener(KEY, FID, 0, SIZE3)
    with pytest.raises(IntegrityError, match="expected chunk 0, got 1"):
        opener.open(FRAMES3[1])


def test_replay_and_duplicate_are_rejected() -> None:
    opener = ChunkOpener(KEY, FID, 0, SIZE3)
    opener.open(FRAMES3[0])
    with pytest.raises(IntegrityError, match="expected chunk 1, got 0"):
        opener.open(FRAMES3[0])
    opener.open(FRAMES3[1])
    opener.open(FRAMES3[2])
    with pytest.raises(IntegrityError, match="after the final"):
        opener.open(FRAMES3[2])


def test_rewritten_wire_index_does_not_help() -> None:
    # Chunk 1's ciphertext relabelled as chunk 0: the index matches, the nonce does not.
    opener = ChunkOpener(KEY, FID, 0, SIZE3)
    forged = bytes([DATA]) + (0).to_bytes(8, "big") + FRAMES3[1][9:]
    with pytest.raises(IntegrityError, match="authentication"):
        opener.open(forged)
    assert opener.next_index == 0


def test_truncation_never_completes() -> None:
    opener = ChunkOpener(KEY, FID, 0, SIZE3)
    for frame in FRAMES3[:-1]:
        opener.open(frame)
    assert not opener.done  # the final chunk never came: incomplete, never done


@pytest.mark.parametrize(
    ("key", "fid", "epoch"),
    [(bytes(32), FID, 0), (KEY, bytes(16), 0), (KEY, FID, 1)],
    ids=["key", "file_id", "epoch"],
)
def test_wrong_key_file_or_epoch(key: bytes, fid: bytes, epoch: int) -> None:
    opener = ChunkOpener(key, fid, epoch, SIZE3)
    with pytest.raises(IntegrityError):
        opener.open(FRAMES3[0])


@pytest.mark.parametrize("size", [SIZE3 + 1, SIZE3 - 1, 3 * CHUNK_SIZE])
def test_wrong_total_size(size: int) -> None:
    # The total size is in every chunk's AAD: a different offer fails at the first chunk.
    opener = ChunkOpener(KEY, FID, 0, size)
    with pytest.raises(IntegrityError):
        opener.open(FRAMES3[0])


def test_a_non_final_index_sealed_as_final_is_rejected() -> None:
    # An attacker-sealer (who has the key, e.g. a buggy sender) marks chunk 0 of 3 final to
    # end the stream early: the receiver derives the flag itself and rejects it.
    plaintext = content(CHUNK_SIZE)
    aad = data_aad(FID, 0, 0, True, SIZE3)
    forged = bytes([DATA]) + bytes(8) + AESGCM(KEY).encrypt(bytes(12), plaintext, aad)
    opener = ChunkOpener(KEY, FID, 0, SIZE3)
    with pytest.raises(IntegrityError):
        opener.open(forged)
    assert not opener.done


def test_the_final_chunk_sealed_as_non_final_is_rejected() -> None:
    plaintext = content(SIZE3)[2 * CHUNK_SIZE :]
    aad = data_aad(FID, 0, 2, False, SIZE3)
    nonce = bytes(4) + (2).to_bytes(8, "big")
    forged = bytes([DATA]) + (2).to_bytes(8, "big") + AESGCM(KEY).encrypt(nonce, plaintext, aad)
    opener = ChunkOpener(KEY, FID, 0, SIZE3, next_index=2)
    with pytest.raises(IntegrityError):
        opener.open(forged)


def test_short_and_wrong_type_frames() -> None:
    opener = ChunkOpener(KEY, FID, 0, 10)
    for frame in (b"", bytes([DATA]), bytes([DATA]) + bytes(23)):
        with pytest.raises(IntegrityError):
            opener.open(frame)
    frame = seal_all(10)[0]
    with pytest.raises(IntegrityError, match="expected a DATA frame"):
        opener.open(bytes([SEALED_CTRL]) + frame[1:])
    assert opener.open(frame) == content(10)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_bit_flip_in_a_data_frame_is_caught(data: st.DataObject) -> None:
    frame = seal_all(300)[0]
    bit = data.draw(st.integers(min_value=0, max_value=len(frame) * 8 - 1))
    flipped = bytearray(frame)
    flipped[bit // 8] ^= 1 << (bit % 8)
    opener = ChunkOpener(KEY, FID, 0, 300)
    with pytest.raises(IntegrityError):
        opener.open(bytes(flipped))
    assert not opener.done
    assert opener.open(frame) == content(300)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=2))
def test_any_bytes_to_chunk_opener_end_in_e2e_errors(data: bytes, start: int) -> None:
    opener = ChunkOpener(KEY, FID, 0, SIZE3, next_index=start)
    with pytest.raises(E2EError):
        opener.open(data)


# --- Sealed control ----------------------------------------------------------------------------


def test_ctrl_padding() -> None:
    small = ctrl_plaintext({"t": "done"})
    assert len(small) == 256
    assert small == b'{"t":"done"}'.ljust(256, b" ")
    exactly = {"t": "x", "p": "a" * (256 - len('{"t":"x","p":""}'))}
    assert len(ctrl_plaintext(exactly)) == 256
    over = {"t": "x", "p": "a" * (257 - len('{"t":"x","p":""}'))}
    assert len(ctrl_plaintext(over)) == 512
    assert ctrl_plaintext({"t": "é"}).startswith('{"t":"é"}'.encode())


def test_ctrl_padding_hides_name_lengths() -> None:
    lengths = {len(seal_ctrl(KEY, 0, {"t": "offer", "name": "x" * n})) for n in range(200)}
    assert lengths == {1 + 8 + 256 + 16}


def test_seal_ctrl_refuses() -> None:
    for bad in ({}, {"t": 1}, {"t": "x", "v": float("nan")}, {"t": "x", "b": b"bytes"}):
        with pytest.raises(ValueError):
            seal_ctrl(KEY, 0, bad)
    with pytest.raises(ValueError):
        seal_ctrl(KEY, 0, {"t": "x", "p": "a" * 4096})
    with pytest.raises(ValueError):
        seal_ctrl(KEY, -1, {"t": "x"})
    with pytest.raises(ValueError):
        seal_ctrl(KEY, 2**64, {"t": "x"})


def test_ctrl_layout() -> None:
    frame = seal_ctrl(KEY, 5, {"t": "ack", "through": 3, "window": 16})
    assert frame[0] == SEALED_CTRL
    assert frame[1:9] == (5).to_bytes(8, "big")
    nonce = bytes(4) + (5).to_bytes(8, "big")
    plaintext = AESGCM(KEY).decrypt(nonce, frame[9:], b"tube/1 ctrl")
    assert json.loads(plaintext) == {"t": "ack", "through": 3, "window": 16}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=5), st.text(max_size=10))
def test_ctrl_round_trip(extra: dict[str, Any], kind: str) -> None:
    message = {**extra, "t": kind}
    opener = CtrlOpener(KEY)
    assert opener.open(seal_ctrl(KEY, 0, message)) == message
    assert opener.last == 0


def test_ctrl_counters_may_skip_but_never_go_back() -> None:
    opener = CtrlOpener(KEY)
    assert opener.last == -1
    opener.open(seal_ctrl(KEY, 3, {"t": "a"}))  # the first may be any value
    opener.open(seal_ctrl(KEY, 4, {"t": "b"}))
    opener.open(seal_ctrl(KEY, 10, {"t": "resume_hello"}))  # skip ahead after a resume
    assert opener.last == 10
    for counter in (10, 9, 0):
        with pytest.raises(IntegrityError, match="replay"):
            opener.open(seal_ctrl(KEY, counter, {"t": "c"}))
    assert opener.last == 10


def test_ctrl_relabelled_counter_fails() -> None:
    frame = seal_ctrl(KEY, 1, {"t": "a"})
    forged = bytes([SEALED_CTRL]) + (2).to_bytes(8, "big") + frame[9:]
    opener = CtrlOpener(KEY)
    with pytest.raises(IntegrityError, match="authentication"):
        opener.open(forged)
    assert opener.last == -1  # a failed message spends no counter


def test_ctrl_wrong_direction_key() -> None:
    with pytest.raises(IntegrityError):
        CtrlOpener(bytes(32)).open(seal_ctrl(KEY, 0, {"t": "a"}))


def seal_raw(plaintext: bytes, counter: int = 0) -> bytes:
    nonce = bytes(4) + counter.to_bytes(8, "big")
    sealed = AESGCM(KEY).encrypt(nonce, plaintext, b"tube/1 ctrl")
    return bytes([SEALED_CTRL]) + counter.to_bytes(8, "big") + sealed


@pytest.mark.parametrize(
    "plaintext",
    [
        b'{"t":"a"}',  # not padded
        b'{"t":"a"}'.ljust(300, b" "),  # not a multiple of 256
        b"[1,2]".ljust(256, b" "),  # not an object
        b'{"u":"a"}'.ljust(256, b" "),  # no "t"
        b'{"t":1}'.ljust(256, b" "),  # "t" not a string
        b'{"t":"a","t":"b"}'.ljust(256, b" "),  # duplicate key
        b'{"t":"a","n":NaN}'.ljust(256, b" "),  # not JSON
        b'{"t":"\xff"}'.ljust(256, b" "),  # not UTF-8
        '{"t":"a"}'.encode("utf-16-le").ljust(256, b" "),  # not UTF-8 either
        (b"[" * 2000 + b"]" * 2000).ljust(4096, b" "),  # deep nesting
        b"",
    ],
)
def test_authentic_but_malformed_ctrl(plaintext: bytes) -> None:
    opener = CtrlOpener(KEY)
    with pytest.raises(ProtocolViolation):
        opener.open(seal_raw(plaintext, 4))
    assert opener.last == 4


def test_ctrl_size_limit_before_decrypting() -> None:
    opener = CtrlOpener(KEY)
    assert opener.open(seal_raw(b'{"t":"a"}'.ljust(4096, b" ")))["t"] == "a"
    with pytest.raises(IntegrityError, match="4096"):
        opener.open(seal_raw(b'{"t":"a"}'.ljust(4096 + 256, b" "), 1))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_bit_flip_in_a_ctrl_frame_is_caught(data: st.DataObject) -> None:
    frame = seal_ctrl(KEY, 6, {"t": "offer", "name": "a.txt"})
    bit = data.draw(st.integers(min_value=0, max_value=len(frame) * 8 - 1))
    flipped = bytearray(frame)
    flipped[bit // 8] ^= 1 << (bit % 8)
    opener = CtrlOpener(KEY)
    opener.last = 5
    with pytest.raises(IntegrityError):
        opener.open(bytes(flipped))
    assert opener.open(frame)["t"] == "offer"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_to_ctrl_opener_end_in_e2e_errors(data: bytes) -> None:
    with pytest.raises(E2EError):
        CtrlOpener(KEY).open(data)


# --- Small frames ------------------------------------------------------------------------------


def test_handshake_frames_round_trip() -> None:
    assert parse_cpace(cpace_frame(b"body")) == b"body"
    assert parse_confirm(confirm_frame(bytes(range(32)))) == bytes(range(32))
    assert parse_commit(commit_frame(bytes(32))) == bytes(32)
    assert frame_type(cpace_frame(b"")) == CPACE
    assert frame_type(confirm_frame(bytes(32))) == CONFIRM
    assert frame_type(commit_frame(bytes(32))) == COMMIT


def test_handshake_frames_reject() -> None:
    with pytest.raises(ProtocolViolation):
        frame_type(b"")
    with pytest.raises(ProtocolViolation, match="expected a CONFIRM frame"):
        parse_confirm(commit_frame(bytes(32)))
    with pytest.raises(ProtocolViolation):
        parse_confirm(bytes([CONFIRM]) + bytes(31))
    with pytest.raises(ProtocolViolation):
        parse_commit(bytes([COMMIT]) + bytes(33))
    with pytest.raises(ProtocolViolation):
        parse_cpace(bytes([DATA]))
    with pytest.raises(ValueError):
        confirm_frame(bytes(31))
    with pytest.raises(ValueError):
        commit_frame(bytes(33))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_any_bytes_to_handshake_parsers_end_in_e2e_errors(data: bytes) -> None:
    for parse in (parse_cpace, parse_confirm, parse_commit):
        with contextlib.suppress(E2EError):
            parse(data)
