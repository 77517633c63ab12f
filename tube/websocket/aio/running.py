"""Stopping an asyncio server on SIGTERM and Ctrl-C: :func:`stop_on_signals`.

:meth:`Server.serve_forever <tube.websocket.aio.Server.serve_forever>` runs inside it, so that
``asyncio.run(main())`` around ``await server.serve_forever()`` stops the way the threaded
``serve()`` does: the server closes (every WebSocket gets 1001, going away), ``serve_forever``
returns, and the process exits with status 0, without the ``CancelledError`` +
``KeyboardInterrupt`` traceback of an interrupted ``asyncio.run`` (SIGINT) or the silent death
of SIGTERM's default action, which leaves clients with 1006.

Only in the main thread (where Python runs signal handlers) and only on a loop that supports
``add_signal_handler`` (not Windows). A signal whose handler the application set itself, or
that is ignored (``SIG_IGN``, as for a background job), is left alone; asyncio's own SIGINT
handler (``asyncio.run``'s, which cancels the main task) is replaced for the time being and
restored afterwards.

Concurrency: called on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

__all__ = ["stop_on_signals"]

logger = logging.getLogger("tube.websocket.aio")

#: The signals that stop a server: what ``kill``, systemd and container runtimes send, and
#: Ctrl-C.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _replaceable(handler: Any) -> bool:
    """Whether a signal's current handler is a default we may take over for a while."""
    if handler in (signal.SIG_DFL, signal.default_int_handler):
        return True
    # asyncio.run()'s SIGINT handler (a partial of a bound method of asyncio.Runner): it
    # would cancel the main task, which is the traceback this module exists to avoid.
    if isinstance(handler, functools.partial):
        handler = handler.func
    owner = getattr(handler, "__self__", None)
    return isinstance(owner, asyncio.Runner)


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], Coroutine[Any, Any, None]]) -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT run ``stop()`` in a task on the running loop.

    In the main thread of a loop that supports signal handlers, for each signal whose handler
    is a default (``SIG_DFL``, Python's ``KeyboardInterrupt``, ``asyncio.run``'s); the previous
    handlers are restored on exit. Elsewhere it does nothing.

    Args:
        stop: A coroutine function (``Server.close``), run in a task of its own at each of
            those signals (on the loop, not inside the signal handler); it must tolerate
            being run again while it runs.
    """
    loop = asyncio.get_running_loop()
    installed: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if not _replaceable(previous):
                continue
            try:
                loop.add_signal_handler(signum, _received, signum, stop)
            except (NotImplementedError, RuntimeError, ValueError):
                break  # no signal handling on this loop (Windows) or platform
            installed[signum] = previous
    try:
        yield
    finally:
        for signum, previous in installed.items():
            loop.remove_signal_handler(signum)
            # remove_signal_handler() sets the defaults; put back what was there (asyncio.run's
            # SIGINT handler, say).
            signal.signal(signum, previous)


# The stopping tasks, referenced until done (the loop keeps only weak references to tasks).
_stopping: set[asyncio.Task[None]] = set()


def _received(signum: signal.Signals, stop: Callable[[], Coroutine[Any, Any, None]]) -> None:
    logger.info("received %s, shutting down", signum.name)
    task = asyncio.get_running_loop().create_task(stop())
    _stopping.add(task)
    task.add_done_callback(_stopping.discard)
