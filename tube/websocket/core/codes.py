"""Opcodes and close codes of RFC 6455, and the rules on which close codes may travel."""

from __future__ import annotations

import enum

__all__ = ["CloseCode", "Opcode", "is_valid_received_close_code"]


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 §5.2)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(enum.IntEnum):
    """Close codes registered by RFC 6455 §7.4.1 and the IANA registry."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    # 1004 is reserved.
    NO_STATUS_RCVD = 1005  # never on the wire: "the close frame carried no code"
    ABNORMAL_CLOSURE = 1006  # never on the wire: "no close frame at all"
    INVALID_FRAME_PAYLOAD_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # never on the wire


# RFC 6455 §7.4: codes that may appear in a close frame. 1005, 1006 and 1015 are reserved for
# reporting and MUST NOT be sent; 1004 is reserved; 1016-2999 belong to future RFCs and are not
# yet defined; 3000-3999 are registered with IANA and 4000-4999 are private, both usable.
_VALID_PROTOCOL_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


def is_valid_received_close_code(code: int) -> bool:
    """Tell whether ``code`` may appear in a close frame (sent or received).

    Args:
        code: The 16-bit close code.

    Returns:
        True for 1000-1003, 1007-1014 and 3000-4999; False for everything else.
    """
    return code in _VALID_PROTOCOL_CODES or 3000 <= code <= 4999
