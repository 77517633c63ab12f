"""keep_freed_memory(): large messages stop costing page faults (glibc), and nothing else
changes unless an application asks.

Each case runs in a fresh interpreter: the setting is process-wide and cannot be undone.
"""

from __future__ import annotations

import pathlib
import platform
import subprocess
import sys
import textwrap

import pytest

from tube.websocket import keep_freed_memory

# Eight 1 MiB payloads received the way the receiver makes them (a payload buffer filled, then
# taken as bytes), held together as a server's messages in flight would be, then freed; the
# minor page faults of 20 such rounds after a first one.
ROUNDS = textwrap.dedent(
    """
    import resource, sys
    from tube.websocket import keep_freed_memory
    from tube.websocket.core.payload import new_payload_buffer

    if sys.argv[1] == "keep":
        assert keep_freed_memory() is True
    source = b"x" * (1 << 20)

    def message():
        buffer = new_payload_buffer(len(source))
        with memoryview(buffer) as view:
            view[:] = source
        return buffer.take()

    def one_round():
        held = [message() for _ in range(8)]
        del held

    one_round()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        one_round()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 20)
    """
)


def faults_per_round(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True
    )
    return int(result.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_freed_memory_is_reused_instead_of_faulted_in_again() -> None:
    # 8 MiB a round is 2,048 pages: by default most of them are given back to the kernel and
    # faulted in again; kept, none is (a few pages of slack for the interpreter's own use).
    assert faults_per_round("default") > 1000
    assert faults_per_round("keep") < 50


def test_bad_limits_are_refused() -> None:
    with pytest.raises(TypeError, match="limit must be an int"):
        keep_freed_memory("64M")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="limit must be an int"):
        keep_freed_memory(True)
    for limit in (0, (1 << 20) - 1, 1 << 31):
        with pytest.raises(ValueError, match="between 1 MiB and 2 GiB"):
            keep_freed_memory(limit)


def test_the_library_never_calls_it_by_itself() -> None:
    # Only applications decide (the relay, the echo server): importing and using the library
    # leaves glibc's settings alone.
    package = pathlib.Path(__file__).resolve().parent.parent / "tube"
    tree = [
        path.relative_to(package.parent).as_posix()
        for path in package.rglob("*.py")
        if "keep_freed_memory(" in path.read_text()
    ]
    assert sorted(tree) == [
        "tube/relay/main.py",
        "tube/websocket/echo.py",
        "tube/websocket/memory.py",
    ]
