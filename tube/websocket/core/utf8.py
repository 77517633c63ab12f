"""Incremental UTF-8 validation for fragmented text messages (RFC 6455 §8.1).

An unfragmented text frame is simply decoded with ``bytes.decode`` (fastest). A fragmented one is
validated fragment by fragment, so an invalid message is rejected as soon as the bytes seen so
far cannot begin valid UTF-8, not when the last fragment arrives.

CPython's incremental decoder already rejects almost every impossible prefix at once, with one
exception measured on 3.11: after ``ED A0``..``ED BF`` (the start of a UTF-16 surrogate, which is
never valid UTF-8) it holds the bytes back waiting for more instead of failing. That case is
checked by hand.
"""

from __future__ import annotations

import codecs

__all__ = ["Utf8Validator"]

_DecoderFactory = codecs.getincrementaldecoder("utf-8")


class Utf8Validator:
    """Validate a byte stream as UTF-8, piece by piece."""

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        self._decoder = _DecoderFactory("strict")

    def feed(self, data: bytes | bytearray | memoryview) -> bool:
        """Add the next piece; return False as soon as the stream can no longer be valid UTF-8."""
        decoder = self._decoder
        try:
            decoder.decode(data)
        except UnicodeDecodeError:
            return False
        pending = decoder.getstate()[0]
        # A held-back surrogate prefix is already invalid; reject it now, not at the end.
        return not (len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0)

    def resume_from(self, other: Utf8Validator) -> None:
        """Continue from the point ``other`` has reached (``other`` is left unchanged)."""
        self._decoder.setstate(other._decoder.getstate())

    def finish(self) -> bool:
        """Tell whether the stream fed so far ends on a character boundary (is complete)."""
        try:
            self._decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
        return True
