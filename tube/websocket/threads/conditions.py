"""A ``threading.Condition`` that costs 56 bytes of waiters' list instead of a 760-byte deque.

Every connection holds two conditions (``status_changed`` and its channel's), which rarely have
more than one waiter. CPython's ``Condition`` keeps its waiters in a ``collections.deque``, whose
first block is allocated even when empty; on a server holding thousands of idle connections
that is 1.5 KB of the ~10 KB each connection's objects take. ``Condition`` only appends,
removes, indexes, iterates and counts its waiters (CPython 3.8 to 3.13), which a list does as
well; where the attribute is missing (another implementation), the standard one is used as is.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["Condition"]

_HAS_WAITERS = hasattr(threading.Condition(), "_waiters")


class Condition(threading.Condition):
    """``threading.Condition`` with its waiters in a list (see the module's docstring)."""

    def __init__(self, lock: Any = None) -> None:
        super().__init__(lock)
        if _HAS_WAITERS:
            self._waiters: list[Any] = []
