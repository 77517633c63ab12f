from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tube.websocket.core.utf8 import Utf8Validator


@pytest.mark.parametrize(
    "prefix",
    [
        b"\xed\xa0",
        b"\xed\xbf",
        b"\xc0",
        b"\xc1",
        b"\xf5",
        b"\xff",
        b"\xe0\x80",
        b"\xf0\x80",
        b"\xf4\x90",
    ],
)
def test_impossible_prefixes_fail_at_once(prefix: bytes) -> None:
    assert not Utf8Validator().feed(prefix)


@pytest.mark.parametrize("prefix", [b"\xed\x9f", b"\xe2\x82", b"\xf0\x90\x80", b"\xf4\x8f"])
def test_incomplete_but_possible_prefixes_wait(prefix: bytes) -> None:
    validator = Utf8Validator()
    assert validator.feed(prefix)
    assert not validator.finish()


@given(st.text(), st.integers(min_value=0))
def test_valid_text_split_anywhere_is_valid(text: str, cut: int) -> None:
    data = text.encode()
    cut %= len(data) + 1
    validator = Utf8Validator()
    assert validator.feed(data[:cut])
    assert validator.feed(data[cut:])
    assert validator.finish()
