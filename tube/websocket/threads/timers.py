"""One shared timer thread for every connection's deadlines (keepalive, close retry, give-up...).

A thread per timer would cost a thread stack per connection and per pending close; instead a
single daemon thread sleeps until the earliest deadline of a heap. The thread starts on the
first :func:`call_later` and exits once no timer has been pending for ``IDLE_EXIT`` seconds:
an idle process keeps no extra thread, and a server whose short connections each arm a close
timer does not pay a thread start per connection.

Callbacks run on the timer thread, one after the other: they must be quick and must never block
(the connection's callbacks only try non-blocking writes and shut sockets down).

Concurrency: every function here may be called from any thread.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable

__all__ = ["Timer", "call_at", "call_later"]

logger = logging.getLogger("tube.websocket")

# Rebuild the heap once this many cancelled entries pile up, so that a server whose connections
# come and go (each cancelling a keepalive timer far in the future) keeps a small heap.
_COMPACT_THRESHOLD = 256

# Seconds the timer thread waits without any pending timer before it exits.
IDLE_EXIT = 10.0


class Timer:
    """A pending call returned by :func:`call_later`; :meth:`cancel` it if no longer needed."""

    __slots__ = ("_active", "callback", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self._active = True

    def cancel(self) -> None:
        """Prevent the call if it has not started yet (does nothing otherwise)."""
        _scheduler.cancel(self)

    def __lt__(self, other: Timer) -> bool:
        return self.when < other.when


class _Scheduler:
    """The heap of pending timers and the thread that fires them."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[Timer] = []
        self._live = 0
        self._cancelled = 0
        self._thread: threading.Thread | None = None

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        timer = Timer(when, callback)
        with self._cond:
            heapq.heappush(self._heap, timer)
            self._live += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tube-timers", daemon=True)
                self._thread.start()
            elif self._heap[0] is timer:
                # The thread sleeps until a later deadline: wake it to sleep less.
                self._cond.notify()
        return timer

    def cancel(self, timer: Timer) -> None:
        with self._cond:
            if not timer._active:
                return
            timer._active = False
            timer.callback = _noop  # drop the reference to the connection at once
            self._live -= 1
            self._cancelled += 1
            if self._live == 0:
                # Nothing left to wait for: forget the cancelled entries, and wake the thread so
                # that it waits for IDLE_EXIT rather than until a far deadline.
                self._heap.clear()
                self._cancelled = 0
                self._cond.notify()
            elif self._cancelled > _COMPACT_THRESHOLD and self._cancelled > self._live:
                self._heap = [t for t in self._heap if t._active]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _run(self) -> None:
        cond = self._cond
        heap = self._heap
        while True:
            with cond:
                heap = self._heap
                while True:
                    while heap and not heap[0]._active:
                        heapq.heappop(heap)
                        self._cancelled -= 1
                    if not heap:
                        cond.wait(IDLE_EXIT)
                        heap = self._heap
                        if heap:
                            continue
                        self._thread = None
                        self._cancelled = 0
                        return
                    delay = heap[0].when - time.monotonic()
                    if delay <= 0:
                        break
                    cond.wait(delay)
                    heap = self._heap
                timer = heapq.heappop(heap)
                timer._active = False
                self._live -= 1
                callback = timer.callback
            try:
                callback()
            except Exception:
                logger.exception("error in a tube.websocket timer callback")


def _noop() -> None:
    return None


_scheduler = _Scheduler()


def call_later(delay: float, callback: Callable[[], object]) -> Timer:
    """Call ``callback()`` on the shared timer thread after ``delay`` seconds.

    Args:
        delay: Seconds from now (monotonic clock); zero or negative means as soon as possible.
        callback: A quick, non-blocking function; its exceptions are logged and swallowed.

    Returns:
        The :class:`Timer`, to cancel it.
    """
    return _scheduler.call_at(time.monotonic() + delay, callback)


def call_at(when: float, callback: Callable[[], object]) -> Timer:
    """Call ``callback()`` on the shared timer thread at ``when`` (``time.monotonic()``).

    A connection arms its one timer here, at its session's next deadline.
    """
    return _scheduler.call_at(when, callback)
