from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from tube.websocket.core.masking import MaskKeySource, apply_mask, unmask_in_place

from .wsframes import mask


@given(st.binary(max_size=3000), st.binary(min_size=4, max_size=4))
def test_apply_mask_matches_naive_masking(data: bytes, key: bytes) -> None:
    assert apply_mask(data, key) == mask(data, key)
    assert apply_mask(memoryview(data), key) == mask(data, key)
    assert apply_mask(apply_mask(data, key), key) == data


def test_every_size_class_around_the_threshold() -> None:
    key = b"\x01\x80\xff\x7f"
    for length in (0, 1, 3, 4, 5, 511, 512, 513, 1024, 65536, 1 << 20):
        data = os.urandom(length)
        assert apply_mask(data, key) == mask(data, key)


def test_unmask_in_place() -> None:
    data = os.urandom(1000)
    buffer = bytearray(data)
    unmask_in_place(buffer, b"abcd")
    assert bytes(buffer) == mask(data, b"abcd")


def test_key_source_gives_four_fresh_bytes() -> None:
    source = MaskKeySource()
    keys = [source() for _ in range(3000)]  # crosses many batch boundaries
    assert all(len(key) == 4 for key in keys)
    assert len(set(keys)) > 2990


def test_unmask_in_place_on_a_range_leaves_the_rest_alone() -> None:
    data = os.urandom(5000)
    buffer = bytearray(data)
    unmask_in_place(buffer, b"wxyz", 7, 4321)
    assert bytes(buffer) == data[:7] + mask(data[7:4321], b"wxyz") + data[4321:]
