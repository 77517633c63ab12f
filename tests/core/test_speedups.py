"""The optional C accelerator (``core/_speedups.c``) against the pure-Python code it replaces.

* Equivalence: the C and Python paths give identical results for every length 0-70,000 (with
  the edges drawn often: 0-16, around multiples of 4/8/16/32/64, the 64 KiB GIL threshold),
  every key and every alignment, into new bytes and in place on ``bytearray`` and ``memoryview``
  slices; and the two UTF-8 validators accept and reject after exactly the same piece, however
  the bytes are split.
* Selection: ``TUBE_NO_SPEEDUPS=1`` forces pure Python at import; under ``CI=true`` with a C
  compiler present, the C path must be the one in use (a build that silently fell back fails).
* Installation (marked ``slow``): ``pip install`` into a fresh venv falls back to pure Python when
  the compiler is unusable, and builds the accelerator when it is there.

The C tests skip when the accelerator is not in use (not built, or ``TUBE_NO_SPEEDUPS`` set).
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tube.websocket.core import accelerator, masking, utf8
from tube.websocket.core.masking import python_apply_mask, python_unmask_in_place
from tube.websocket.core.utf8 import CUtf8Validator, PythonUtf8Validator

from ..conftest import under_ci
from .wsframes import mask as naive_mask

ROOT = Path(__file__).resolve().parents[2]
C = accelerator.speedups
requires_c = pytest.mark.skipif(C is None, reason="the C accelerator is not in use")

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GIL_THRESHOLD = 64 * 1024  # GIL_RELEASE_THRESHOLD in _speedups.c


def compiler_available() -> bool:
    """Whether the C compiler Python was built with and the Python headers are here."""
    compiler = (sysconfig.get_config_var("CC") or "").split()
    include = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return bool(compiler) and shutil.which(compiler[0]) is not None and include.exists()


def speedups_disabled() -> bool:
    return os.environ.get("TUBE_NO_SPEEDUPS", "") not in ("", "0")


# ---------------------------------------------------------------------- which path is in use


def test_c_path_is_in_use_in_ci_when_a_compiler_is_present() -> None:
    if speedups_disabled():
        pytest.skip("TUBE_NO_SPEEDUPS is set")
    if under_ci() and not compiler_available():
        pytest.fail("no C compiler under CI: the accelerator cannot be built or tested")
    if not under_ci() and masking.IMPLEMENTATION != "c":
        pytest.skip("accelerator not built (python setup.py build_ext --inplace builds it)")
    assert masking.IMPLEMENTATION == "c", (
        "a C compiler is present but the accelerator is not in use: its build failed "
        "(run python setup.py build_ext --inplace to see why)"
    )


def test_the_implementation_attribute_matches_the_functions_in_use() -> None:
    if masking.IMPLEMENTATION == "c":
        assert C is not None
        assert masking.apply_mask is C.apply_mask
        assert masking.unmask_in_place is C.unmask_in_place
        assert cast(object, utf8.Utf8Validator) is CUtf8Validator
        assert utf8.utf8_size is C.utf8_size
    else:
        assert masking.IMPLEMENTATION == "python"
        assert masking.apply_mask is python_apply_mask
        assert masking.unmask_in_place is python_unmask_in_place
        assert utf8.Utf8Validator is PythonUtf8Validator
        assert utf8.utf8_size is utf8._utf8_size_python


def implementation_in_subprocess(no_speedups: str | None) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TUBE_NO_SPEEDUPS", None)
    if no_speedups is not None:
        env["TUBE_NO_SPEEDUPS"] = no_speedups
    code = (
        "from tube.websocket.core import masking, utf8\n"
        "print(masking.IMPLEMENTATION, masking.apply_mask.__name__, utf8.Utf8Validator.__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.strip()


def test_tube_no_speedups_forces_pure_python_at_import() -> None:
    assert implementation_in_subprocess("1") == "python python_apply_mask PythonUtf8Validator"


@requires_c
def test_the_accelerator_is_used_by_default_and_with_tube_no_speedups_0() -> None:
    expected = "c apply_mask CUtf8Validator"
    assert implementation_in_subprocess(None) == expected
    assert implementation_in_subprocess("0") == expected


def test_c_validator_refuses_to_run_without_the_accelerator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(utf8, "_utf8_check", utf8._no_accelerator)
    with pytest.raises(RuntimeError, match="not in use"):
        CUtf8Validator().feed(b"a")


# ---------------------------------------------------------------------- masking: strategies

# Lengths 0-70,000, with the edges of the word loops (8 bytes, 32-byte steps, the byte-by-byte
# head and tail) and of the GIL threshold drawn often.
lengths = st.one_of(
    st.integers(0, 16),
    st.builds(
        lambda unit, count, delta: max(0, unit * count + delta),
        st.sampled_from([4, 8, 16, 32, 64]),
        st.integers(1, 64),
        st.integers(-3, 3),
    ),
    st.builds(lambda delta: GIL_THRESHOLD + delta, st.integers(-40, 40)),
    st.integers(0, 70_000),
)
keys = st.binary(min_size=4, max_size=4)
seeds = st.integers(0, 2**32)


def random_bytes(seed: int, length: int) -> bytes:
    # Hypothesis cannot draw 70,000 bytes directly; a seeded generator gives them.
    return random.Random(seed).randbytes(length)


# ---------------------------------------------------------------------- masking: equivalence


@requires_c
@SETTINGS
@given(lengths, keys, seeds, st.integers(0, 15))
@example(0, b"\0\0\0\0", 0, 0)
@example(70_000, b"\xff\x00\x80\x7f", 1, 7)
def test_apply_mask_same_on_both_paths(length: int, key: bytes, seed: int, offset: int) -> None:
    """Into new bytes, from bytes, bytearray and a memoryview starting at any alignment."""
    assert C is not None
    data = random_bytes(seed, offset + length)
    view = memoryview(data)[offset:]
    expected = python_apply_mask(view, key)
    assert C.apply_mask(view, key) == expected
    assert C.apply_mask(bytes(view), key) == expected
    assert C.apply_mask(bytearray(view), key) == expected
    assert type(C.apply_mask(view, key)) is bytes
    assert C.apply_mask(expected, key) == bytes(view)


# Offsets drawn over the whole range and folded onto the buffer drawn (see in_range).
offsets = st.integers(0, 70_100)


def in_range(length: int, raw_start: int, raw_stop: int | None) -> tuple[int, int | None]:
    """A start in [0, length] and a stop in [start, length + 8] (past the end: clamped) or None."""
    start = raw_start % (length + 1)
    stop = None if raw_stop is None else start + raw_stop % (length + 9 - start)
    return start, stop


@requires_c
@SETTINGS
@given(lengths, keys, seeds, offsets, st.none() | offsets)
@example(70_000, b"abcd", 3, 5, None)
@example(GIL_THRESHOLD + 9, b"abcd", 3, 5, GIL_THRESHOLD + 5)
def test_unmask_in_place_same_on_both_paths(
    length: int, key: bytes, seed: int, raw_start: int, raw_stop: int | None
) -> None:
    """On a bytearray, for any start (any alignment and key phase) and stop."""
    assert C is not None
    original = random_bytes(seed, length)
    start, stop = in_range(length, raw_start, raw_stop)
    expected = bytearray(original)
    python_unmask_in_place(expected, key, start, stop)
    actual = bytearray(original)
    C.unmask_in_place(actual, key, start, stop)
    assert actual == expected
    end = length if stop is None else min(stop, length)
    assert actual[:start] == original[:start]
    assert actual[end:] == original[end:]


@requires_c
@SETTINGS
@given(lengths, keys, seeds, st.integers(0, 16), offsets, offsets)
def test_unmask_in_place_on_memoryview_slices(
    length: int, key: bytes, seed: int, low: int, raw_start: int, raw_stop: int
) -> None:
    """On a memoryview slice of a bytearray; nothing outside the range changes."""
    assert C is not None
    original = random_bytes(seed, length + 16)
    high = low + length
    start, stop = in_range(length, raw_start, raw_stop)
    assert stop is not None
    stop = min(stop, length)
    expected = bytearray(original)
    python_unmask_in_place(memoryview(expected)[low:high], key, start, stop)
    actual = bytearray(original)
    C.unmask_in_place(memoryview(actual)[low:high], key, start, stop)
    assert actual == expected
    assert actual[low + start : low + stop] == naive_mask(original[low + start : low + stop], key)


@requires_c
def test_every_small_length_at_every_alignment() -> None:
    """Exhaustive over the head/word/tail boundaries: lengths 0-300, offsets 0-15, 4 keys."""
    assert C is not None
    data = random_bytes(1, 320)
    for key in (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x01\x02\x04\x08", b"\x37\xfa\x21\x3d"):
        for offset in range(16):
            for length in range(301):
                piece = memoryview(data)[offset : offset + length]
                expected = python_apply_mask(piece, key)
                assert C.apply_mask(piece, key) == expected, (key, offset, length)
                buffer = bytearray(data)
                C.unmask_in_place(buffer, key, offset, offset + length)
                assert buffer[offset : offset + length] == expected, (key, offset, length)


@requires_c
@pytest.mark.parametrize("length", [GIL_THRESHOLD, GIL_THRESHOLD + 1, 1 << 20, (1 << 20) + 13])
def test_large_buffers_with_the_gil_released(length: int) -> None:
    assert C is not None
    data = random_bytes(length, length + 3)
    key = b"\x9a\x01\xc3\x5e"
    expected = python_apply_mask(data[3:], key)
    assert C.apply_mask(memoryview(data)[3:], key) == expected
    buffer = bytearray(data)
    C.unmask_in_place(buffer, key, 3)
    assert buffer[3:] == expected
    assert buffer[:3] == data[:3]


@requires_c
def test_the_buffer_export_is_released_on_every_path() -> None:
    """A bytearray can be resized after each call, including the ones that raise."""
    assert C is not None
    for size in (10, GIL_THRESHOLD + 1):
        buffer = bytearray(size)
        C.unmask_in_place(buffer, b"abcd")
        C.unmask_in_place(buffer, b"abcd", 2, 5)
        with pytest.raises(ValueError):
            C.unmask_in_place(buffer, b"abcd", -1)
        with pytest.raises(TypeError):
            C.unmask_in_place(buffer, b"abcd", "2")
        C.apply_mask(buffer, b"abcd")
        buffer.extend(b"more")  # BufferError if an export leaked
        assert len(buffer) == size + 4


@pytest.mark.parametrize("function", ["c", "python"])
def test_errors(function: str) -> None:
    if function == "c":
        if C is None:
            pytest.skip("the C accelerator is not in use")
        apply, in_place = C.apply_mask, C.unmask_in_place
    else:
        apply, in_place = python_apply_mask, python_unmask_in_place
    with pytest.raises(ValueError, match="non-negative"):
        in_place(bytearray(8), b"abcd", -1)
    with pytest.raises(ValueError, match="non-negative"):
        in_place(bytearray(8), b"abcd", 0, -2)
    with pytest.raises((TypeError, BufferError)):
        in_place(b"immutable", b"abcd")
    buffer = bytearray(b"12345678")
    in_place(buffer, b"abcd", 6, 3)  # an empty range: nothing happens
    in_place(buffer, b"abcd", 20)
    assert buffer == b"12345678"
    assert apply(b"", b"abcd") == b""


@requires_c
def test_c_argument_checks() -> None:
    assert C is not None
    for key in (b"abc", b"abcde", b""):
        with pytest.raises(ValueError, match="4-byte masking key"):
            C.apply_mask(b"data", key)
        with pytest.raises(ValueError, match="4-byte masking key"):
            C.unmask_in_place(bytearray(4), key)
    with pytest.raises(TypeError):
        C.apply_mask("text", b"abcd")
    with pytest.raises(TypeError, match="exactly 2 arguments"):
        C.apply_mask(b"data")
    with pytest.raises(TypeError, match="from 2 to 4 arguments"):
        C.unmask_in_place(bytearray(4), b"abcd", 0, 1, 2)
    with pytest.raises(BufferError):
        C.unmask_in_place(memoryview(bytearray(8))[::2], b"abcd")  # not contiguous


# ---------------------------------------------------------------------- UTF-8: strategies

# Characters at the edges of each encoded length, and byte sequences that are never valid:
# overlong forms, surrogates (ED A0..BF), code points above U+10FFFF, stray continuation bytes,
# bytes that never appear in UTF-8, truncated sequences followed by something else.
VALID_PIECES = [
    b"a",
    b"\x7f",
    b"\xc2\x80",
    b"\xdf\xbf",
    b"\xe0\xa0\x80",
    b"\xed\x9f\xbf",
    b"\xee\x80\x80",
    b"\xef\xbf\xbf",
    b"\xf0\x90\x80\x80",
    b"\xf3\xbf\xbf\xbf",
    b"\xf4\x8f\xbf\xbf",
    "é€𝄞".encode(),
]
INVALID_PIECES = [
    b"\x80",
    b"\xbf",
    b"\xc0\x80",
    b"\xc1\xbf",
    b"\xe0\x80\x80",
    b"\xe0\x9f\xbf",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xf0\x80\x80\x80",
    b"\xf0\x8f\xbf\xbf",
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    b"\xfe",
    b"\xff",
    b"\xe2\x82",
    b"\xf0\x90\x80",
]
utf8_streams = st.one_of(
    st.text().map(str.encode),
    st.binary(),
    st.lists(
        st.sampled_from(VALID_PIECES)
        | st.sampled_from(INVALID_PIECES)
        | st.integers(0, 70).map(lambda n: b"x" * n),
        max_size=40,
    ).map(b"".join),
    st.lists(st.sampled_from(VALID_PIECES) | st.integers(0, 70).map(lambda n: b"x" * n)).map(
        b"".join
    ),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)] or [b""]


def verdicts(validator: PythonUtf8Validator | CUtf8Validator, pieces: list[bytes]) -> list[bool]:
    """feed() for each piece up to the first False, then finish() if all were accepted."""
    results = []
    for piece in pieces:
        results.append(validator.feed(piece))
        if not results[-1]:
            return results
    return [*results, validator.finish()]


def is_valid(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


# ---------------------------------------------------------------------- UTF-8: equivalence


@requires_c
@SETTINGS
@given(utf8_streams, st.lists(st.integers(0, 1 << 16), max_size=6))
@example(b"\xed\xa0\x80", [1])
@example(b"\xf4\x8f\xbf\xbf" * 3, [5, 9])
def test_both_validators_agree_on_every_split(data: bytes, cuts: list[int]) -> None:
    pieces = split(data, cuts)
    python = verdicts(PythonUtf8Validator(), pieces)
    assert verdicts(CUtf8Validator(), pieces) == python
    assert all(python) == is_valid(data)


@requires_c
@SETTINGS
@given(st.text() | st.text(alphabet=st.characters(max_codepoint=0xFF)), st.integers(0, 3))
@example("", 0)
@example("\x80\xff\u07ff\u0800\uffff\U00010000\U0010ffff", 0)
def test_utf8_size_is_the_length_of_the_encoding(text: str, repeat: int) -> None:
    # Every storage kind of str (ASCII, Latin-1, UCS-2, UCS-4) and every UTF-8 length.
    text = text * (1 + repeat * 1000)
    assert C is not None
    assert C.utf8_size(text) == len(text.encode()) == utf8.message_size(text)


@requires_c
@pytest.mark.parametrize("text", ["\ud800", "a\udfff", "\U0001f600\udc00"])
def test_utf8_size_of_a_lone_surrogate_raises_as_encode_does(text: str) -> None:
    assert C is not None
    with pytest.raises(UnicodeEncodeError):
        text.encode()
    with pytest.raises(UnicodeEncodeError):
        C.utf8_size(text)
    with pytest.raises(TypeError, match="takes a str"):
        C.utf8_size(b"bytes")


@requires_c
def test_every_two_byte_sequence_and_every_second_byte_after_a_lead() -> None:
    """Exhaustive: all 65,536 byte pairs, and each lead byte E0..F4 with any second byte."""
    assert C is not None
    for first in range(256):
        for second in range(256):
            data = bytes((first, second))
            python = verdicts(PythonUtf8Validator(), [data[:1], data[1:]])
            assert verdicts(CUtf8Validator(), [data[:1], data[1:]]) == python, data
            assert (C.utf8_check(data, 0) >= 0) == PythonUtf8Validator().feed(data), data
    for lead in range(0xE0, 0xF5):
        for second in range(256):
            for rest in (b"\x80", b"\xbf", b"\x80\x80", b"A", b"\xc0"):
                data = bytes((lead, second)) + rest
                python = verdicts(PythonUtf8Validator(), [data])
                assert verdicts(CUtf8Validator(), [data]) == python, data


@requires_c
def test_resume_from_carries_the_state_over() -> None:
    first = CUtf8Validator()
    assert first.feed(b"ab\xf0\x9f")
    second = CUtf8Validator()
    second.resume_from(first)
    assert second.feed(b"\x98\x80") and second.finish()
    assert not first.finish()  # left unchanged


@requires_c
def test_utf8_check_states() -> None:
    assert C is not None
    assert C.utf8_check(b"", 0) == 0
    assert C.utf8_check(b"abc", 0) == 0
    assert C.utf8_check(b"\xe2", 0) > 0
    assert C.utf8_check(b"\x82\xac", C.utf8_check(b"\xe2", 0)) == 0
    assert C.utf8_check(b"\xff", 0) == -1
    assert C.utf8_check(b"abc", -1) == -1  # rejected stays rejected
    assert C.utf8_check(memoryview(b"\xc3\xa9"), 0) == 0
    assert C.utf8_check(bytearray(b"\xc3"), 0) > 0
    for state in (-2, 8, 100):
        with pytest.raises(ValueError, match="expected a state"):
            C.utf8_check(b"a", state)
    with pytest.raises(TypeError):
        C.utf8_check("text", 0)


@requires_c
@pytest.mark.parametrize("size", [GIL_THRESHOLD + 1, 1 << 20])
def test_large_text_with_the_gil_released(size: int) -> None:
    assert C is not None
    text = ("aé€𝄞" * size)[:size].encode()
    assert C.utf8_check(text, 0) == 0
    assert C.utf8_check(text + b"\xed\xa0\x80", 0) == -1
    assert C.utf8_check(b"\xed" + text, 0) == -1


# ---------------------------------------------------------------------- installation

# Each pip call gets this long; the whole test stays well under a minute on this machine.
PIP_TIMEOUT = 50


def copy_project(destination: Path) -> Path:
    """The files pip needs, without build products (the tree under test stays untouched)."""
    destination.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, destination / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.pyd", "build")
    shutil.copytree(ROOT / "tube", destination / "tube", ignore=ignore)
    return destination


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "TUBE_NO_SPEEDUPS", "CC", "PIP_REQUIRE_VIRTUALENV"}
    }
    # Fail fast rather than wait on an unreachable index (the configured timeout may be long).
    env.update(
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        PIP_RETRIES="0",
        PIP_DEFAULT_TIMEOUT="10",
        **extra,
    )
    return env


def offline_build_backend(python: Path) -> bool:
    """Whether ``python``'s setuptools builds wheels by itself (>= 70.1, or with ``wheel``)."""
    code = (
        "try:\n import setuptools.command.bdist_wheel\n"
        "except ImportError:\n import wheel.bdist_wheel"
    )
    return subprocess.run([python, "-c", code], capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A fresh venv (with pip and setuptools) and a clean copy of the project."""
    base = tmp_path_factory.mktemp("install")
    subprocess.run(
        [sys.executable, "-m", "venv", base / "venv"], check=True, capture_output=True, timeout=60
    )
    yield base / "venv" / "bin" / "python", copy_project(base / "src")


def pip_install(python: Path, source: Path, *args: str, **env: str) -> None:
    """``pip install --no-deps`` ``source``; with ``--no-build-isolation`` when the venv's own
    setuptools can build a wheel (no download at all), else in pip's build environment (its
    setuptools comes from pip's cache or the configured index)."""
    isolation = ["--no-build-isolation"] if offline_build_backend(python) else []
    result = subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", *isolation, *args, str(source)],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
        env=clean_env(**env),
        cwd=source.parent,
    )
    if result.returncode != 0 and not isolation and "setuptools" in result.stdout + result.stderr:
        pytest.skip(f"no build backend available without the network:\n{result.stderr[-2000:]}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def installed(python: Path, cwd: Path) -> tuple[str, str]:
    """(IMPLEMENTATION, where masking.py was imported from) in ``python``."""
    code = (
        "from tube.websocket.core import masking\nprint(masking.IMPLEMENTATION, masking.__file__)"
    )
    result = subprocess.run(
        [python, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
        env=clean_env(),
        cwd=cwd,
    )
    implementation, path = result.stdout.split()
    return implementation, path


@pytest.mark.slow
def test_install_without_a_compiler_falls_back_to_pure_python(venv: tuple[Path, Path]) -> None:
    python, source = venv
    pip_install(python, source, "--force-reinstall", CC="false")
    implementation, path = installed(python, source.parent)
    assert implementation == "python"
    assert path.startswith(str(python.parent.parent))  # the venv's copy, not the checkout


@pytest.mark.slow
@pytest.mark.skipif(not compiler_available(), reason="no C compiler or Python headers")
def test_install_with_a_compiler_builds_the_accelerator(venv: tuple[Path, Path]) -> None:
    python, source = venv
    pip_install(python, source, "--force-reinstall")
    implementation, path = installed(python, source.parent)
    assert implementation == "c"
    assert path.startswith(str(python.parent.parent))
    version = subprocess.run(
        [python, "-m", "tube.websocket", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
        env=clean_env(),
        cwd=source.parent,
    )
    assert version.stdout.strip() == "tube 0.1.0 (implementation: c)"
