"""The key schedule after CPace: HKDF keys, confirmation tags, the commitment (design §4.3).

``PRK = HKDF-Extract(salt = sid, IKM = ISK)`` with SHA-256 (RFC 5869); every key is
``HKDF-Expand(PRK, b"tube/1 " ‖ label, L)``. HKDF is written here on :mod:`hmac` (RFC 5869 §2)
so the whole schedule is stdlib and easy to mirror in the browser's WebCrypto.

Sans-I/O and stateless apart from :class:`SessionKeys`, which keeps PRK for the per-stream data
keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import struct

from .cpace import lv_cat
from .errors import WrongCode

__all__ = [
    "SessionKeys",
    "check_confirm",
    "commitment",
    "confirm_tag",
    "derive_keys",
    "file_id",
    "hkdf_expand",
    "hkdf_extract",
]

_HASH_LENGTH = 32  # SHA-256
_PREFIX = b"tube/1 "
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_FILE_ID_LENGTH = 16
_STREAM_NONCE_LENGTH = 16


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract with SHA-256 (RFC 5869 §2.2): ``HMAC-SHA-256(salt, IKM)``, 32 bytes.

    An empty salt stands for 32 zero bytes, as RFC 5869 says (HMAC pads the key anyway).
    """
    return hmac.digest(salt or bytes(_HASH_LENGTH), ikm, "sha256")


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand with SHA-256 (RFC 5869 §2.3): ``length`` bytes of keying material.

    Raises:
        ValueError: ``length`` is not in 1..8160 (255 blocks, RFC 5869 §2.3) or PRK is shorter
            than a hash output.
    """
    if not 0 < length <= 255 * _HASH_LENGTH:
        raise ValueError(f"HKDF-Expand length must be 1..{255 * _HASH_LENGTH}, got {length}")
    if len(prk) < _HASH_LENGTH:
        raise ValueError("PRK must be at least 32 bytes (RFC 5869 §2.3)")
    output = bytearray()
    block = b""
    counter = 1
    while len(output) < length:
        # T(i) = HMAC(PRK, T(i-1) ‖ info ‖ i), the counter a single octet.
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        output += block
        counter += 1
    return bytes(output[:length])


@dataclasses.dataclass(frozen=True)
class SessionKeys:
    """Every key of one session, derived once from ISK by :func:`derive_keys`.

    Attributes:
        confirm_s: HMAC key of the sender's CONFIRM tag (32 bytes).
        confirm_r: HMAC key of the receiver's CONFIRM tag (32 bytes).
        k_ctrl_s2r: AES-256-GCM key of sealed control messages from S to R.
        k_ctrl_r2s: AES-256-GCM key of sealed control messages from R to S.
        rid: the 16-byte resume id told to the relay (``HKDF-Expand(resume_secret, "tube/1 rid",
            16)``): it reveals nothing about the other keys.
        verifier: six decimal digits both users may compare; equal digits rule out a relay
            that guessed the code (S committed to its CPace message first).

    Immutable, so safe to share between threads. Key fields are left out of ``repr``.
    """

    confirm_s: bytes = dataclasses.field(repr=False)
    confirm_r: bytes = dataclasses.field(repr=False)
    k_ctrl_s2r: bytes = dataclasses.field(repr=False)
    k_ctrl_r2s: bytes = dataclasses.field(repr=False)
    rid: bytes
    verifier: str
    # Kept only to derive a fresh data key for each (file, epoch, stream nonce).
    _prk: bytes = dataclasses.field(repr=False)

    def data_key(self, file_id: bytes, epoch: int, stream_nonce: bytes) -> bytes:
        """Return the 32-byte AES-256-GCM key of one stream of DATA from S to R.

        ``HKDF-Expand(PRK, b"tube/1 k_data_s2r" ‖ file_id ‖ u32 epoch ‖ stream_nonce, 32)``: a
        new key for every stream, even for a re-offered file, so AES-GCM never sees a key and
        nonce twice (SP 800-38D §8).

        Raises:
            ValueError: ``file_id`` or ``stream_nonce`` is not 16 bytes, or ``epoch`` is not a
                u32.
        """
        if len(file_id) != _FILE_ID_LENGTH:
            raise ValueError("file_id must be 16 bytes")
        if len(stream_nonce) != _STREAM_NONCE_LENGTH:
            raise ValueError("stream_nonce must be 16 bytes")
        if not 0 <= epoch <= 0xFFFFFFFF:
            raise ValueError(f"epoch must be a u32, got {epoch}")
        info = _PREFIX + b"k_data_s2r" + file_id + _U32.pack(epoch) + stream_nonce
        return hkdf_expand(self._prk, info, 32)


def derive_keys(isk: bytes, sid: bytes) -> SessionKeys:
    """Derive the session's keys from CPace's ISK and the session id (design §4.3).

    Raises:
        ValueError: ``isk`` is empty.
    """
    if not isk:
        raise ValueError("ISK must not be empty")
    prk = hkdf_extract(sid, isk)

    def expand(label: bytes, length: int) -> bytes:
        return hkdf_expand(prk, _PREFIX + label, length)

    resume_secret = expand(b"resume_secret", 32)
    digits = int.from_bytes(expand(b"verifier", 8), "big") % 10**6
    return SessionKeys(
        confirm_s=expand(b"confirm_s", 32),
        confirm_r=expand(b"confirm_r", 32),
        k_ctrl_s2r=expand(b"k_ctrl_s2r", 32),
        k_ctrl_r2s=expand(b"k_ctrl_r2s", 32),
        rid=hkdf_expand(resume_secret, _PREFIX + b"rid", 16),
        verifier=f"{digits:06d}",
        _prk=prk,
    )


def confirm_tag(key: bytes, transcript: bytes) -> bytes:
    """Return the 32-byte CONFIRM tag ``HMAC-SHA-256(key, transcript)``.

    ``key`` is ``confirm_s`` for the sender's tag and ``confirm_r`` for the receiver's; the
    transcript is :attr:`CPace.transcript` (the same bytes on both sides).
    """
    return hmac.digest(key, transcript, "sha256")


def check_confirm(key: bytes, transcript: bytes, tag: bytes) -> None:
    """Verify the peer's CONFIRM tag in constant time.

    Raises:
        WrongCode: the tag does not match (wrong code, or someone in the middle).
    """
    if not hmac.compare_digest(confirm_tag(key, transcript), tag):
        raise WrongCode()


def commitment(cpace_message: bytes) -> bytes:
    """Return S's commitment ``SHA-256(b"tube/1 commit" ‖ lv_cat(Y_S, AD_S))`` (design §4.3).

    S sends it before anything else; R answers with its own CPACE only then, and aborts if S's
    CPACE does not match. Without it a relay that guessed the code could grind its scalar
    until both sides show the same verifier digits.
    """
    return hashlib.sha256(_PREFIX + b"commit" + cpace_message).digest()


def file_id(salt: bytes, name: str, size: int, last_modified_ms: int) -> bytes:
    """Return a file's 16-byte id, stable across sessions for the same file (design §5.9).

    ``SHA-256(lv_cat(salt, UTF-8 name, u64 size, u64 lastModified))[0:16]``; length prefixes
    because plain concatenation would be ambiguous. ``salt`` is random and kept by S, so the
    id tells the relay nothing about the file.

    Raises:
        ValueError: ``size`` or ``last_modified_ms`` is not a u64 (a date before 1970 must be
            clamped to 0 by the caller), or ``name`` does not encode to UTF-8.
    """
    if not 0 <= size < 1 << 64:
        raise ValueError(f"size must be a u64, got {size}")
    if not 0 <= last_modified_ms < 1 << 64:
        raise ValueError(f"last_modified_ms must be a u64, got {last_modified_ms}")
    encoded = lv_cat(salt, name.encode(), _U64.pack(size), _U64.pack(last_modified_ms))
    return hashlib.sha256(encoded).digest()[:_FILE_ID_LENGTH]
