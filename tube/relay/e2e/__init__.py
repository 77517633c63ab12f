"""End-to-end crypto of the Tube relay, sans-I/O: CPace, the key schedule and the framing.

The relay never sees a key: the peers run CPace-X25519-SHA512 over the short code
(:mod:`.cpace`), derive their keys and confirm them (:mod:`.keys`), and exchange sealed control
messages and AES-256-GCM chunks (:mod:`.framing`). The protocol state machine is in
:mod:`.peer`. Needs the ``cryptography`` package (the ``relay-cli`` extra); the relay server
never imports this package.
"""

from __future__ import annotations

from .cpace import (
    AD_RECV,
    AD_SEND,
    CI,
    DSI,
    CPace,
    calculate_generator,
    elligator2,
    generator_string,
    lv_cat,
    prepend_len,
    scalar_mult_vfy,
)
from .errors import E2EError, IntegrityError, ProtocolViolation, WrongCode
from .framing import (
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
from .keys import (
    SessionKeys,
    check_confirm,
    commitment,
    confirm_tag,
    derive_keys,
    file_id,
    hkdf_expand,
    hkdf_extract,
)

__all__ = [
    "AD_RECV",
    "AD_SEND",
    "CHUNK_SIZE",
    "CI",
    "COMMIT",
    "CONFIRM",
    "CPACE",
    "DATA",
    "DSI",
    "MAX_CHUNKS",
    "MAX_SIZE",
    "SEALED_CTRL",
    "CPace",
    "ChunkOpener",
    "CtrlOpener",
    "E2EError",
    "IntegrityError",
    "ProtocolViolation",
    "SessionKeys",
    "WrongCode",
    "calculate_generator",
    "check_confirm",
    "chunk_count",
    "commit_frame",
    "commitment",
    "confirm_frame",
    "confirm_tag",
    "cpace_frame",
    "data_aad",
    "derive_keys",
    "elligator2",
    "expected_length",
    "file_id",
    "frame_type",
    "generator_string",
    "hkdf_expand",
    "hkdf_extract",
    "lv_cat",
    "parse_commit",
    "parse_confirm",
    "parse_cpace",
    "prepend_len",
    "scalar_mult_vfy",
    "seal_chunk",
    "seal_ctrl",
]
