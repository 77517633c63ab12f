"""Leaner ``threading`` objects for what every connection holds while it lives.

CPython's ``Condition`` keeps its waiters in a ``collections.deque``, whose first block (760
bytes) is allocated even when empty. A connection holds two conditions (``status_changed`` and
its channel's), and the server's thread per connection one more (its ``Thread``'s start event),
which rarely have more than one waiter; on a server holding thousands of idle connections those
deques are a third of the ~6 KB of objects each connection keeps. :class:`Condition` keeps them
in a list (56 bytes): ``Condition`` only appends, removes, indexes, iterates and counts its
waiters (CPython 3.8 to 3.13), which a list does as well. Where the attributes are missing
(another implementation), the standard objects are used as they are.

It also skips ``Condition.__init__``, which stores five bound methods of the lock on each
instance (72 bytes each) and, for a plain ``Lock``, raises and catches three
``AttributeError`` while looking for the ``RLock``-only ones (2.3 us per condition, three
conditions per connection): the lock's methods are looked up when a wait needs them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Condition", "start_daemon_thread"]

# CPython's Condition: its state is the lock and the waiters, and it reaches the lock through
# these three hooks (threading.py, 3.8 to 3.13).
_STANDARD = threading.Condition(threading.Lock())
_LEAN = set(vars(_STANDARD)) >= {"_lock", "_waiters"} and all(
    hasattr(threading.Condition, hook)
    for hook in ("_release_save", "_acquire_restore", "_is_owned")
)


class Condition(threading.Condition):
    """``threading.Condition`` with its waiters in a list (see the module's docstring)."""

    def __init__(self, lock: Any = None) -> None:
        if not _LEAN:
            super().__init__(lock)
            instance = vars(self)
            instance.pop("acquire", None)
            instance.pop("release", None)
            return
        self._lock = threading.RLock() if lock is None else lock
        self._waiters: list[Any] = []

    # The hooks threading.Condition takes from an RLock, or its own for a plain Lock.

    def _release_save(self) -> Any:
        release_save = getattr(self._lock, "_release_save", None)
        if release_save is None:
            return super()._release_save()  # type: ignore[misc]
        return release_save()

    def _acquire_restore(self, state: Any) -> None:
        acquire_restore = getattr(self._lock, "_acquire_restore", None)
        if acquire_restore is None:
            super()._acquire_restore(state)  # type: ignore[misc]
        else:
            acquire_restore(state)

    def _is_owned(self) -> bool:
        is_owned = getattr(self._lock, "_is_owned", None)
        if is_owned is None:
            owned: bool = super()._is_owned()  # type: ignore[misc]
            return owned
        return bool(is_owned())

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Acquire the underlying lock (as ``threading.Condition.acquire``)."""
        acquired: bool = self._lock.acquire(blocking, timeout)
        return acquired

    def release(self) -> None:
        """Release the underlying lock (as ``threading.Condition.release``)."""
        self._lock.release()


def start_daemon_thread(
    target: Callable[..., object], args: tuple[Any, ...], name: str
) -> threading.Thread:
    """Start ``target(*args)`` in a daemon ``threading.Thread`` whose start event is lean.

    Raises:
        RuntimeError: The thread could not be started.
    """
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    started = vars(thread).get("_started")
    if _LEAN and isinstance(started, threading.Event) and "_cond" in vars(started):
        started._cond = Condition(threading.Lock())  # type: ignore[attr-defined]
    thread.start()
    return thread
