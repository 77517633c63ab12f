"""Frame layout (RFC 6455 §5.2) and frame serialisation.

The parser lives in :mod:`tube.websocket.core.protocol`, inlined into the receive loop because a
function call per frame is measurable for small messages; it reads the header bits with
commented literals and shares the length structs (``UINT16``, ``UINT64``) defined here.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from .masking import apply_mask

__all__ = [
    "MAX_CONTROL_PAYLOAD",
    "Buffer",
    "byte_payload",
    "serialize_frame",
]

Buffer = bytes | bytearray | memoryview

FIN = 0x80
MASK_BIT = 0x80

# RFC 6455 §5.5: control frames carry at most 125 bytes of payload.
MAX_CONTROL_PAYLOAD = 125

HEADER_16 = struct.Struct("!BBH")
HEADER_64 = struct.Struct("!BBQ")
UINT16 = struct.Struct("!H")
UINT64 = struct.Struct("!Q")

# Up to this size a frame is handed to the transport as one buffer (header + payload), so that
# it is written with one send call; above it, the header and the payload are two buffers, which
# saves copying a large payload just to prepend a few bytes.
SINGLE_BUFFER_LIMIT = 64 * 1024


def byte_payload(data: object, what: str) -> Buffer:
    """Check that ``data`` is bytes-like and make ``len()`` count its bytes, without copying.

    A ``memoryview`` of a wider format (``array('i')``) would count items, not bytes, and a
    non-contiguous one (``view[::2]``) cannot be written by ``socket.send``: the first is cast
    to bytes, the second copied, before any frame is built.

    Raises:
        TypeError: ``data`` is not ``bytes``, ``bytearray`` or ``memoryview``.
    """
    if type(data) is bytes or type(data) is bytearray:
        return data
    if isinstance(data, memoryview):
        if data.c_contiguous:
            return data if data.itemsize == 1 and data.ndim == 1 else data.cast("B")
        return data.tobytes()
    if isinstance(data, bytes | bytearray):
        return data
    raise TypeError(f"{what} takes bytes-like data, got {type(data).__name__}")


def serialize_frame(
    out: list[Buffer],
    opcode: int,
    payload: Buffer,
    *,
    fin: bool = True,
    mask_key: Callable[[], bytes] | None = None,
) -> None:
    """Append the bytes of one frame to ``out``.

    Args:
        out: The list of buffers to write, in order.
        opcode: The frame opcode.
        payload: The (unmasked) payload.
        fin: Whether this is the final fragment of its message.
        mask_key: In the client role, the source of a fresh masking key for this frame
            (RFC 6455 §5.3); ``None`` in the server role, whose frames are never masked.
    """
    length = len(payload)
    first = opcode | FIN if fin else opcode
    mask_bit = MASK_BIT if mask_key is not None else 0
    if length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 0x10000:
        header = HEADER_16.pack(first, mask_bit | 126, length)
    else:
        header = HEADER_64.pack(first, mask_bit | 127, length)
    if mask_key is not None:
        key = mask_key()
        header += key
        payload = apply_mask(payload, key)
    if length <= SINGLE_BUFFER_LIMIT:
        out.append(header + payload)
    else:
        out.append(header)
        out.append(payload)
