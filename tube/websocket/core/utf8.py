"""Incremental UTF-8 validation for fragmented text messages (RFC 6455 §8.1).

An unfragmented text frame is simply decoded with ``bytes.decode`` (fastest). A fragmented one is
validated fragment by fragment, so an invalid message is rejected as soon as the bytes seen so
far cannot begin valid UTF-8, not when the last fragment arrives.

Two implementations with one interface; :data:`Utf8Validator` is the one in use (see
:mod:`.accelerator`):

* :class:`CUtf8Validator` runs the C accelerator's ``utf8_check``, a strict RFC 3629 automaton
  (no overlong forms, no surrogates, nothing above U+10FFFF) whose state is one small integer
  carried from one piece to the next. It builds no ``str``.
* :class:`PythonUtf8Validator` uses CPython's incremental decoder, which already rejects almost
  every impossible prefix at once, with one exception measured on 3.11: after ``ED A0``..``ED BF``
  (the start of a UTF-16 surrogate, which is never valid UTF-8) it holds the bytes back waiting
  for more instead of failing. That case is checked by hand.

Both say False after exactly the same piece (tests/core/test_speedups.py checks it).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from typing import TYPE_CHECKING

from .accelerator import speedups

__all__ = ["CUtf8Validator", "PythonUtf8Validator", "Utf8Validator", "message_size", "utf8_size"]

_DecoderFactory = codecs.getincrementaldecoder("utf-8")


def _no_accelerator(data: bytes | bytearray | memoryview, state: int) -> int:
    raise RuntimeError("the C accelerator is not in use (not built, or TUBE_NO_SPEEDUPS is set)")


# utf8_check(data, state) -> state: see _speedups.c.
_utf8_check: Callable[[bytes | bytearray | memoryview, int], int] = (
    _no_accelerator if speedups is None else speedups.utf8_check
)


def _utf8_size_python(text: str) -> int:
    return len(text.encode())


#: ``len(text.encode())``; with the C accelerator, counted without building the bytes (the
#: transports size each non-ASCII text message this way for their buffer limits).
utf8_size: Callable[[str], int] = _utf8_size_python if speedups is None else speedups.utf8_size


def message_size(message: str | bytes) -> int:
    """The size a message counts for in the transports' byte bounds: UTF-8 bytes for text."""
    if type(message) is bytes or message.isascii():  # isascii() is O(1) on str
        return len(message)
    return utf8_size(message)  # type: ignore[arg-type]  # a str


class PythonUtf8Validator:
    """Validate a byte stream as UTF-8, piece by piece (pure Python)."""

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

    def resume_from(self, other: PythonUtf8Validator) -> None:
        """Continue from the point ``other`` has reached (``other`` is left unchanged)."""
        self._decoder.setstate(other._decoder.getstate())

    def finish(self) -> bool:
        """Tell whether the stream fed so far ends on a character boundary (is complete)."""
        try:
            self._decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
        return True


class CUtf8Validator:
    """Validate a byte stream as UTF-8, piece by piece (the C accelerator must be in use)."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        # utf8_check's state: 0 at a character boundary, 1-7 inside one, -1 once invalid.
        self._state = 0

    def feed(self, data: bytes | bytearray | memoryview) -> bool:
        """Add the next piece; return False as soon as the stream can no longer be valid UTF-8."""
        state = _utf8_check(data, self._state)
        self._state = state
        return state >= 0

    def resume_from(self, other: CUtf8Validator) -> None:
        """Continue from the point ``other`` has reached (``other`` is left unchanged)."""
        self._state = other._state

    def finish(self) -> bool:
        """Tell whether the stream fed so far ends on a character boundary (is complete)."""
        return self._state == 0


# The class the protocol instantiates. The type checker is shown the pure-Python class: both
# have the same methods, and one process only ever mixes validators of one class.
if TYPE_CHECKING:
    Utf8Validator = PythonUtf8Validator
else:
    Utf8Validator = PythonUtf8Validator if speedups is None else CUtf8Validator
