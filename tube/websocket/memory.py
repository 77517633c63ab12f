"""Keep freed memory for reuse: large messages without page faults (glibc only, opt-in).

Each large message is a new ``bytes`` object of its size. With glibc's default allocator
settings, a process whose connections receive large messages (hundreds of KiB and more)
gives the memory of each one back to the kernel when it is freed (blocks that large are
``mmap``-ed, and a heap whose top grows past a small threshold is trimmed), then takes it back
for the next message, page by page: page faults and the zeroing of fresh pages cost the asyncio
echo of 1 MiB messages half of its CPU time (``bench/run.py``, ``large``).

:func:`keep_freed_memory` is the application's decision, not the library's: it changes how the
whole process allocates (blocks up to a size come from the heap, and freed memory up to
``limit`` stays in the process for reuse instead of going back to the kernel), which costs
resident memory after a peak. Tube's own applications call it (``python -m tube``, the relay;
``python -m tube.websocket.echo``); the library never calls it by itself. The same effect
without code: the environment variables ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` (glibc's ``mallopt(3)``).
"""

from __future__ import annotations

import ctypes
import platform

__all__ = ["keep_freed_memory"]

# glibc's <malloc.h> parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc refuses an mmap threshold above this (HEAP_MAX_SIZE / 2 on 64-bit platforms).
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024


def keep_freed_memory(limit: int = 64 * 1024 * 1024) -> bool:
    """Keep up to ``limit`` bytes of freed memory in this process for reuse (glibc).

    Blocks up to ``limit // 2`` bytes (at most 32 MiB) are then taken from the heap rather than
    mapped afresh, and the heap is given back to the kernel only when more than ``limit`` bytes
    at its top are free. Returns ``True`` when the allocator took both settings, ``False`` on a
    C library other than glibc (macOS, musl, Windows: nothing is changed). Raises
    :class:`ValueError` for a ``limit`` below 1 MiB or above 2 GiB (the settings are C ints).
    """
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int (bytes), not {type(limit).__name__}")
    if not 1 << 20 <= limit <= (1 << 31) - 1:
        raise ValueError(f"limit must be between 1 MiB and 2 GiB - 1, not {limit}")
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mapped = min(limit // 2, _MMAP_THRESHOLD_MAX)
    # mallopt returns 1 on success, 0 on error.
    return bool(mallopt(_M_MMAP_THRESHOLD, mapped)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))
