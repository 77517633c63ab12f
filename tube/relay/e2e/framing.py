"""The E2E messages inside the relay's binary frames: types, DATA chunks, sealed control.

Design §4.4 (stream encryption) and §5.7 (messages). Every E2E message is one binary WebSocket
frame whose first byte is its type:

=====  ===========  ==========================================================================
0x01   CPACE        ``lv_cat(Y, AD)``
0x02   CONFIRM      32-byte HMAC-SHA-256 tag over the CPace transcript
0x03   SEALED_CTRL  u64 counter ‖ AES-256-GCM(k_ctrl_<dir>, 0^4 ‖ u64 counter, padded JSON,
                    AAD ``"tube/1 ctrl"``)
0x04   COMMIT       32-byte SHA-256 commitment of S's CPACE body
0x10   DATA         u64 index ‖ AES-256-GCM(k_data_s2r, 0^4 ‖ u64 index, chunk, AAD 48 bytes)
=====  ===========  ==========================================================================

**Refinement of the design:** a SEALED_CTRL frame carries its u64 counter in clear after the
type byte (the design's table has the ciphertext only). Counters never reset in a session, and
the first message after a resume (``resume_hello``) may skip ahead; with the counter on the
wire the receiver knows which nonce to try instead of guessing. The receiver still accepts only
a counter above the last one it accepted, and the counter is authenticated through the nonce.

DATA frames are opened with the receiver's *own* counter (:class:`ChunkOpener`): the index on
the wire is only compared with it, never used to build the nonce or AAD, so a reordered chunk
cannot decrypt into the wrong place of a streaming download.

Sans-I/O; AES-256-GCM comes from ``cryptography``.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import IntegrityError, ProtocolViolation

__all__ = [
    "CHUNK_SIZE",
    "COMMIT",
    "CONFIRM",
    "CPACE",
    "CTRL_BUCKET",
    "DATA",
    "MAX_CHUNKS",
    "MAX_CTRL_PLAINTEXT",
    "MAX_SIZE",
    "SEALED_CTRL",
    "ChunkOpener",
    "CtrlOpener",
    "chunk_count",
    "commit_frame",
    "confirm_frame",
    "cpace_frame",
    "ctrl_plaintext",
    "data_aad",
    "expected_length",
    "frame_type",
    "parse_commit",
    "parse_confirm",
    "parse_cpace",
    "seal_chunk",
    "seal_ctrl",
]

CPACE = 0x01
CONFIRM = 0x02
SEALED_CTRL = 0x03
COMMIT = 0x04
DATA = 0x10

#: Plaintext bytes per DATA chunk: 256 KiB, the fastest size measured in Chromium (§4.4).
CHUNK_SIZE = 262144
#: Chunks per transfer: 64 GiB, well inside AES-GCM's per-key volume bound (RFC 8446 §5.5).
MAX_CHUNKS = 262144
#: Largest file size in bytes a v1 transfer may offer.
MAX_SIZE = CHUNK_SIZE * MAX_CHUNKS
#: Sealed control JSON is padded with spaces to a multiple of this (§4.5: hides name lengths).
CTRL_BUCKET = 256
#: Largest control plaintext in bytes, padding included.
MAX_CTRL_PLAINTEXT = 4096

_TAG_LENGTH = 16
_HEADER = struct.Struct(">BQ")  # type byte, u64 index or counter
_U64_MAX = (1 << 64) - 1
_DATA_LABEL = b"tube/1 data"
_DATA_AAD = struct.Struct(">11s16sIQBQ")  # label, file_id, epoch, index, final, total
_CTRL_AAD = b"tube/1 ctrl"
_NONCE_PREFIX = bytes(4)
_DIGEST_LENGTH = 32
_FILE_ID_LENGTH = 16


# --- Frame types and the small handshake frames --------------------------------------------


def frame_type(frame: bytes) -> int:
    """Return the type byte of an E2E frame.

    Raises:
        ProtocolViolation: the frame is empty.
    """
    if not frame:
        raise ProtocolViolation("empty E2E frame")
    return frame[0]


def cpace_frame(message: bytes) -> bytes:
    """Return the CPACE frame carrying :attr:`CPace.message`."""
    return bytes([CPACE]) + message


def parse_cpace(frame: bytes) -> bytes:
    """Return the body of a CPACE frame (:meth:`CPace.finish` checks its shape).

    Raises:
        ProtocolViolation: not a CPACE frame.
    """
    _expect_type(frame, CPACE, "CPACE")
    return bytes(frame[1:])


def confirm_frame(tag: bytes) -> bytes:
    """Return the CONFIRM frame carrying a 32-byte tag.

    Raises:
        ValueError: the tag is not 32 bytes.
    """
    if len(tag) != _DIGEST_LENGTH:
        raise ValueError("a CONFIRM tag is 32 bytes")
    return bytes([CONFIRM]) + tag


def parse_confirm(frame: bytes) -> bytes:
    """Return the 32-byte tag of a CONFIRM frame.

    Raises:
        ProtocolViolation: not a CONFIRM frame, or a body other than 32 bytes.
    """
    _expect_type(frame, CONFIRM, "CONFIRM")
    if len(frame) != 1 + _DIGEST_LENGTH:
        raise ProtocolViolation(f"a CONFIRM body is 32 bytes, got {len(frame) - 1}")
    return bytes(frame[1:])


def commit_frame(digest: bytes) -> bytes:
    """Return the COMMIT frame carrying S's 32-byte commitment.

    Raises:
        ValueError: the digest is not 32 bytes.
    """
    if len(digest) != _DIGEST_LENGTH:
        raise ValueError("a COMMIT digest is 32 bytes")
    return bytes([COMMIT]) + digest


def parse_commit(frame: bytes) -> bytes:
    """Return the 32-byte commitment of a COMMIT frame.

    Raises:
        ProtocolViolation: not a COMMIT frame, or a body other than 32 bytes.
    """
    _expect_type(frame, COMMIT, "COMMIT")
    if len(frame) != 1 + _DIGEST_LENGTH:
        raise ProtocolViolation(f"a COMMIT body is 32 bytes, got {len(frame) - 1}")
    return bytes(frame[1:])


def _expect_type(frame: bytes, expected: int, name: str) -> None:
    kind = frame_type(frame)
    if kind != expected:
        raise ProtocolViolation(f"expected a {name} frame, got type 0x{kind:02x}")


# --- DATA chunks ---------------------------------------------------------------------------


def chunk_count(size: int) -> int:
    """Return the number of chunks of a file of ``size`` bytes: ``max(1, ceil(size / 256 KiB))``.

    An empty file is one empty final chunk, so that even it ends with an authenticated "final".

    Raises:
        ValueError: ``size`` is negative or above :data:`MAX_SIZE`.
    """
    if not 0 <= size <= MAX_SIZE:
        raise ValueError(f"size must be 0..{MAX_SIZE} bytes, got {size}")
    return max(1, -(-size // CHUNK_SIZE))


def expected_length(size: int, index: int) -> int:
    """Return the plaintext length in bytes of chunk ``index`` of a ``size``-byte file.

    Raises:
        ValueError: ``size`` out of range, or ``index`` not in ``0..chunk_count(size) - 1``.
    """
    count = chunk_count(size)
    if not 0 <= index < count:
        raise ValueError(f"chunk index must be 0..{count - 1}, got {index}")
    if index < count - 1:
        return CHUNK_SIZE
    return size - (count - 1) * CHUNK_SIZE


def data_aad(file_id: bytes, epoch: int, index: int, final: bool, total_size: int) -> bytes:
    """Return the 48-byte AAD of a DATA chunk (design §4.4), all integers big-endian.

    ``b"tube/1 data"`` ‖ file_id (16) ‖ u32 epoch ‖ u64 index ‖ u8 final ‖ u64 total size.

    Raises:
        ValueError: ``file_id`` not 16 bytes, or an integer out of its field's range.
    """
    if len(file_id) != _FILE_ID_LENGTH:
        raise ValueError("file_id must be 16 bytes")
    if not 0 <= epoch <= 0xFFFFFFFF:
        raise ValueError(f"epoch must be a u32, got {epoch}")
    if not 0 <= index <= _U64_MAX or not 0 <= total_size <= _U64_MAX:
        raise ValueError("index and total size must be u64")
    return _DATA_AAD.pack(_DATA_LABEL, file_id, epoch, index, 1 if final else 0, total_size)


def _nonce(counter: int) -> bytes:
    # §4.4: 4 zero bytes ‖ u64 big-endian index or counter (96-bit GCM nonce).
    return _NONCE_PREFIX + counter.to_bytes(8, "big")


def _aesgcm(key: bytes) -> AESGCM:
    if len(key) != 32:
        raise ValueError("AES-256-GCM keys are 32 bytes")
    return AESGCM(key)


def seal_chunk(
    key: bytes, file_id: bytes, epoch: int, index: int, total_size: int, plaintext: bytes
) -> bytes:
    """Return the whole DATA frame of chunk ``index``: ``0x10 ‖ u64 index ‖ ciphertext ‖ tag``.

    The final flag is derived from ``index`` and ``total_size``, never chosen by the caller.

    Raises:
        ValueError: a bad key, file_id, epoch, size or index, or a plaintext whose length is not
            :func:`expected_length` for this chunk.
    """
    length = expected_length(total_size, index)
    if len(plaintext) != length:
        raise ValueError(f"chunk {index} must hold {length} bytes, got {len(plaintext)}")
    final = index == chunk_count(total_size) - 1
    aad = data_aad(file_id, epoch, index, final, total_size)
    sealed = _aesgcm(key).encrypt(_nonce(index), plaintext, aad)
    return _HEADER.pack(DATA, index) + sealed


class ChunkOpener:
    """Opens the DATA frames of one stream, strictly in order, with the receiver's own counter.

    Args:
        key: the stream's data key (:meth:`SessionKeys.data_key`).
        file_id: the offered file's 16-byte id.
        epoch: the stream's epoch.
        total_size: the offered size in bytes.
        next_index: the first chunk expected (0, or ``through + 1`` after a resume).

    Raises:
        ValueError: a bad key, file_id, epoch or size, or ``next_index`` beyond the last chunk.

    Not thread-safe: one stream, one reader.
    """

    def __init__(
        self, key: bytes, file_id: bytes, epoch: int, total_size: int, next_index: int = 0
    ) -> None:
        self._count = chunk_count(total_size)
        if not 0 <= next_index < self._count:
            raise ValueError(f"next_index must be 0..{self._count - 1}, got {next_index}")
        # Validates file_id and epoch now rather than at the first chunk.
        data_aad(file_id, epoch, 0, False, total_size)
        self._aead = _aesgcm(key)
        self._file_id = file_id
        self._epoch = epoch
        self._total_size = total_size
        #: Index of the next chunk this opener accepts.
        self.next_index = next_index
        #: True once the final chunk was authenticated: only then is the stream complete.
        self.done = False

    def open(self, frame: bytes) -> bytes:
        """Authenticate and decrypt the next DATA frame; return its plaintext.

        Raises:
            IntegrityError: wrong type, truncated frame, an index other than :attr:`next_index`,
                a frame after the final chunk, a wrong length, or a failed tag. The stream must
                then be abandoned.
        """
        if self.done:
            raise IntegrityError("DATA after the final chunk")
        if len(frame) < _HEADER.size + _TAG_LENGTH:
            raise IntegrityError("truncated DATA frame")
        kind, wire_index = _HEADER.unpack_from(frame)
        if kind != DATA:
            raise IntegrityError(f"expected a DATA frame, got type 0x{kind:02x}")
        index = self.next_index
        # The wire index is only compared: nonce and AAD come from our own counter (§4.4).
        if wire_index != index:
            raise IntegrityError(f"expected chunk {index}, got {wire_index}")
        length = expected_length(self._total_size, index)
        if len(frame) != _HEADER.size + length + _TAG_LENGTH:
            raise IntegrityError(
                f"chunk {index} must hold {length} bytes, got {len(frame) - _HEADER.size - 16}"
            )
        final = index == self._count - 1
        aad = data_aad(self._file_id, self._epoch, index, final, self._total_size)
        try:
            plaintext = self._aead.decrypt(_nonce(index), memoryview(frame)[_HEADER.size :], aad)
        except InvalidTag:
            raise IntegrityError(f"chunk {index} failed authentication") from None
        self.next_index = index + 1
        self.done = final
        return plaintext


# --- Sealed control messages ---------------------------------------------------------------


def ctrl_plaintext(obj: dict[str, Any]) -> bytes:
    """Return the padded plaintext of a control message (what :func:`seal_ctrl` encrypts).

    Compact UTF-8 JSON (``separators=(",", ":")``, non-ASCII kept as is), padded with ASCII
    spaces to the next multiple of 256 bytes (at least 256), so the size of an ``offer`` does
    not leak the length of the file name (§4.5).

    Raises:
        ValueError: no string ``"t"``, not serialisable, or longer than 4096 bytes.
    """
    if not isinstance(obj.get("t"), str):
        raise ValueError('a control message needs a string "t"')
    try:
        encoded = json.dumps(
            obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"control message is not JSON: {exc}") from None
    padded_length = max(CTRL_BUCKET, -(-len(encoded) // CTRL_BUCKET) * CTRL_BUCKET)
    if padded_length > MAX_CTRL_PLAINTEXT:
        raise ValueError(f"control message is {len(encoded)} bytes, the limit is 4096")
    return encoded.ljust(padded_length, b" ")


def seal_ctrl(key: bytes, counter: int, obj: dict[str, Any]) -> bytes:
    """Return the SEALED_CTRL frame ``0x03 ‖ u64 counter ‖ AES-256-GCM(padded JSON)``.

    ``key`` is ``k_ctrl_s2r`` or ``k_ctrl_r2s`` for the direction; ``counter`` must never repeat
    under one key (the caller's sequence, never reset in a session).

    Raises:
        ValueError: a bad key, a counter outside u64, or a message :func:`ctrl_plaintext`
            refuses.
    """
    if not 0 <= counter <= _U64_MAX:
        raise ValueError(f"counter must be a u64, got {counter}")
    sealed = _aesgcm(key).encrypt(_nonce(counter), ctrl_plaintext(obj), _CTRL_AAD)
    return _HEADER.pack(SEALED_CTRL, counter) + sealed


class CtrlOpener:
    """Opens the sealed control messages of one direction, each counter above the last.

    The first message may carry any counter and later ones may skip ahead (a resume), but never
    back: a replayed or reordered message fails.

    Args:
        key: ``k_ctrl_s2r`` (at R) or ``k_ctrl_r2s`` (at S).

    Raises:
        ValueError: the key is not 32 bytes.

    Not thread-safe: one direction, one reader.
    """

    def __init__(self, key: bytes) -> None:
        self._aead = _aesgcm(key)
        #: The highest counter accepted so far, -1 before the first message.
        self.last = -1

    def open(self, frame: bytes) -> dict[str, Any]:
        """Authenticate, decrypt and parse the next SEALED_CTRL frame; return the JSON object.

        Raises:
            IntegrityError: wrong type, truncated frame, a counter not above :attr:`last`, a
                plaintext over 4096 bytes, or a failed tag.
            ProtocolViolation: authentic, but not padded JSON text of an object with a string
                ``"t"``.
        """
        if len(frame) < _HEADER.size + _TAG_LENGTH:
            raise IntegrityError("truncated SEALED_CTRL frame")
        kind, counter = _HEADER.unpack_from(frame)
        if kind != SEALED_CTRL:
            raise IntegrityError(f"expected a SEALED_CTRL frame, got type 0x{kind:02x}")
        if counter <= self.last:
            raise IntegrityError(f"control counter {counter} after {self.last}: replay")
        # Bound the work before decrypting: a peer cannot make us decrypt or parse much.
        if len(frame) > _HEADER.size + MAX_CTRL_PLAINTEXT + _TAG_LENGTH:
            raise IntegrityError("sealed control message over 4096 bytes")
        try:
            plaintext = self._aead.decrypt(
                _nonce(counter), memoryview(frame)[_HEADER.size :], _CTRL_AAD
            )
        except InvalidTag:
            raise IntegrityError(f"control message {counter} failed authentication") from None
        # Authentic: the counter is spent even if the content turns out malformed.
        self.last = counter
        return _parse_ctrl(plaintext)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two "t" keys could be read differently by the page and by us: refuse duplicates.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _parse_ctrl(plaintext: bytes) -> dict[str, Any]:
    """Parse an authentic control plaintext, checking the padding rule and the shape."""
    if len(plaintext) < CTRL_BUCKET or len(plaintext) % CTRL_BUCKET:
        raise ProtocolViolation("control plaintext not padded to a multiple of 256 bytes")
    try:
        # Explicit UTF-8: json.loads(bytes) would also guess UTF-16 and UTF-32.
        text = plaintext.decode("utf-8")
        obj = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and UnicodeDecodeError; deep nesting recurses.
        raise ProtocolViolation(f"control message is not JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("t"), str):
        raise ProtocolViolation('a control message is a JSON object with a string "t"')
    return obj
