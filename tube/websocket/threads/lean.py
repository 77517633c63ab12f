"""Leaner ``threading`` objects for what every connection holds while it lives.

CPython's ``Condition`` keeps its waiters in a ``collections.deque``, whose first block (760
bytes) is allocated even when empty. A connection holds two conditions (``status_changed`` and
its channel's), and the server's thread per connection one more (its ``Thread``'s start event),
which rarely have more than one waiter; on a server holding thousands of idle connections those
deques are a third of the ~6 KB of objects each connection keeps. :class:`Condition` keeps them
in a list (56 bytes): ``Condition`` only appends, removes, indexes, iterates and counts its
waiters (CPython 3.8 to 3.13), which a list does as well. Where the attributes are missing
(another implementation), the standard objects are used as they are.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Condition", "start_daemon_thread"]

_HAS_WAITERS = hasattr(threading.Condition(), "_waiters")


class Condition(threading.Condition):
    """``threading.Condition`` with its waiters in a list (see the module's docstring)."""

    def __init__(self, lock: Any = None) -> None:
        super().__init__(lock)
        if _HAS_WAITERS:
            self._waiters: list[Any] = []
        # Condition stores the lock's bound acquire and release on each instance (72 bytes
        # each); the methods below delegate the same way.
        instance = vars(self)
        instance.pop("acquire", None)
        instance.pop("release", None)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Acquire the underlying lock (as ``threading.Condition.acquire``)."""
        acquired: bool = self._lock.acquire(blocking, timeout)  # type: ignore[attr-defined]
        return acquired

    def release(self) -> None:
        """Release the underlying lock (as ``threading.Condition.release``)."""
        self._lock.release()  # type: ignore[attr-defined]


def start_daemon_thread(
    target: Callable[..., object], args: tuple[Any, ...], name: str
) -> threading.Thread:
    """Start ``target(*args)`` in a daemon ``threading.Thread`` whose start event is lean.

    Raises:
        RuntimeError: The thread could not be started.
    """
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    started = vars(thread).get("_started")
    if _HAS_WAITERS and isinstance(started, threading.Event) and "_cond" in vars(started):
        started._cond = Condition(threading.Lock())  # type: ignore[attr-defined]
    thread.start()
    return thread
