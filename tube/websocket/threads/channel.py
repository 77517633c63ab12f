"""The bounded channel of received messages: the Go package's ``incoming chan []byte``.

Whoever reads the socket puts messages in (a batch per socket read), the application takes them
out one at a time, in order. A consumer that finds the channel empty reads the socket itself
when nobody else does (its :class:`MessageSource`, see :mod:`.reader`), and otherwise waits.

The channel is bounded both by a message count and by bytes, with high and low water marks:
once a bound is reached, :meth:`Incoming._put` blocks the reader thread until the application
has taken enough out (down to the low water marks). The reader then stops reading the socket,
the kernel's receive buffer fills, and TCP flow control slows the peer down: memory stays
bounded whatever the peer sends. A consumer reads only while the channel is empty.

A batch is always accepted whole before the reader waits (a message is never dropped), so the
count may exceed its bound by the messages of one socket read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol as Interface

from ..core.errors import ConnectionClosed
from ..core.utf8 import message_size, utf8_size
from .lean import Condition

__all__ = ["Incoming", "Message", "MessageSource"]

Message = str | bytes
"""A received message: ``str`` for a text message, ``bytes`` for a binary one."""


class MessageSource(Interface):
    """The connection's socket, as a consumer on an empty channel may read it."""

    def can_consume(self) -> bool:
        """True if a consumer may read the socket now (channel lock held)."""

    def read_for_consumer(self, deadline: float | None) -> None:
        """Read once and put what arrived (no lock held); returns at ``deadline`` at the latest."""


class Incoming:
    """The messages received on a connection, in order; iterate over it or call :meth:`get`.

    ``for message in connection.incoming:`` yields every message (``bytes`` for binary, ``str``
    for text) and ends once the connection is closed and every message received before the
    close has been delivered. :meth:`get` returns the next message and raises
    :class:`~tube.websocket.ConnectionClosed` once the channel is closed and drained.

    Args:
        max_messages: The count bound (high water mark); the reader resumes at half of it.
        max_bytes: The byte bound (high water mark); the reader resumes at a quarter of it.
            Text messages count their size in UTF-8 bytes, as they arrived.

    Concurrency: any number of threads may call :meth:`get` or iterate at once (each message is
    delivered to exactly one of them). Only the thread reading the socket puts messages in.
    """

    __slots__ = (
        "_changed",
        "_closed",
        "_commit",
        "_error",
        "_getters",
        "_head",
        "_high_bytes",
        "_high_count",
        "_lock",
        "_low_bytes",
        "_low_count",
        "_messages",
        "_nbytes",
        "_producer_waiting",
        "_released",
        "_source",
    )

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self._lock = threading.Lock()
        # One condition for both sides: consumers wait only while the channel is empty and the
        # producer only while it is over a bound, so they never wait at the same time.
        self._changed = Condition(self._lock)
        # A FIFO as a list read from index _head on (an empty deque costs 760 bytes, a list 56);
        # taken slots are cleared, and the list is compacted once mostly taken.
        self._messages: list[Message | None] = []
        self._head = 0
        self._nbytes = 0
        self._high_count = max_messages
        self._low_count = max_messages // 2
        self._high_bytes = max_bytes
        self._low_bytes = max_bytes // 4
        self._getters = 0
        self._producer_waiting = False
        self._released = False
        self._closed = False
        self._error: Callable[[], ConnectionClosed] | None = None
        # A peer's protocol violation that ends the channel once the messages before it are
        # taken: the first consumer to find the channel drained calls it (see _end_when_drained).
        self._commit: Callable[[], None] | None = None
        # The socket, once attached: consumers read it themselves when nobody else does.
        self._source: MessageSource | None = None

    # ------------------------------------------------------------------ consumer side

    def get(self, timeout: float | None = None) -> Message:
        """Return the next message, waiting for one if needed.

        Args:
            timeout: Seconds to wait at most; ``None`` waits as long as the connection lives.

        Returns:
            The message: ``str`` (text) or ``bytes`` (binary).

        Raises:
            ConnectionClosed: The connection is closed and every message has been taken; the
                exception carries the connection's close code and reason.
            TimeoutError: No message arrived within ``timeout``.
        """
        with self._lock:
            messages = self._messages
            head = self._head
            count = len(messages)
            if head == count:
                self._wait_for_message(timeout)
                head = self._head
                count = len(messages)
            message = messages[head]
            assert message is not None
            if head + 1 == count:
                messages.clear()
                self._head = 0
            else:
                messages[head] = None  # taken: release it
                self._head = head = head + 1
                if head >= 64:  # _compact_locked() decides; the call is rare
                    self._compact_locked()
            # message_size() inlined: this runs once per message.
            if type(message) is bytes or message.isascii():
                self._nbytes -= len(message)
            else:
                self._nbytes -= utf8_size(message)  # type: ignore[arg-type]  # a str
            if self._producer_waiting:
                self._taken_locked()
            return message

    def get_many(self, max_count: int | None = None, timeout: float | None = None) -> list[Message]:
        """Return every message waiting (at least one), waiting for the first if needed.

        An application that relays or echoes messages can answer a whole batch with one
        :meth:`Connection.send_many`, one system call instead of one per message.

        Args:
            max_count: Return at most this many messages; ``None`` takes all that wait.
            timeout: Seconds to wait for the first message; ``None`` waits as long as the
                connection lives.

        Returns:
            The messages in the order they arrived: ``str`` (text) or ``bytes`` (binary).

        Raises:
            ConnectionClosed: As for :meth:`get`.
            TimeoutError: No message arrived within ``timeout``.
            ValueError: ``max_count`` is not positive.
        """
        if max_count is not None and max_count < 1:
            raise ValueError(f"max_count must be positive, got {max_count}")
        with self._lock:
            messages = self._messages
            if self._head == len(messages):
                self._wait_for_message(timeout)
            head = self._head
            if max_count is None or head + max_count >= len(messages):
                batch: list[Message] = messages[head:]  # type: ignore[assignment]
                messages.clear()
                self._head = 0
                self._nbytes = 0
            else:
                stop = head + max_count
                batch = messages[head:stop]  # type: ignore[assignment]
                messages[head:stop] = [None] * max_count  # taken: release them
                self._head = stop
                self._compact_locked()
                self._nbytes -= sum(map(message_size, batch))
            self._taken_locked()
            return batch

    def _compact_locked(self) -> None:
        """Drop the taken slots once they are most of the list (amortised O(1) per message)."""
        head = self._head
        if head >= 64 and head * 2 >= len(self._messages):
            del self._messages[:head]
            self._head = 0

    def _taken_locked(self) -> None:
        # Wake the reader once the application has taken the channel below its low marks.
        if (
            self._producer_waiting
            and len(self._messages) - self._head <= self._low_count
            and self._nbytes <= self._low_bytes
        ):
            self._changed.notify_all()

    def _wait_for_message(self, timeout: float | None) -> None:
        # Called with the lock held and the deque empty.
        deadline = None if timeout is None else time.monotonic() + timeout
        self._getters += 1
        try:
            while self._head == len(self._messages):
                commit = self._commit
                if commit is not None:
                    # Every message before the peer's violation has been taken: the violation
                    # is the next item. Commit it (send the close frame) without our lock, as
                    # the connection takes its own locks and then closes this channel.
                    self._commit = None
                    self._lock.release()
                    try:
                        commit()
                    finally:
                        self._lock.acquire()
                    continue
                if self._closed:
                    assert self._error is not None
                    # A fresh exception each time: re-raising one instance would grow its
                    # traceback on every call.
                    raise self._error()
                if deadline is not None and deadline <= time.monotonic():
                    raise TimeoutError(f"no message within {timeout} s")
                source = self._source
                if source is not None and source.can_consume():
                    self._lock.release()
                    try:
                        source.read_for_consumer(deadline)
                    finally:
                        self._lock.acquire()
                    if self._getters > 1 and self._head == len(self._messages):
                        # The socket is free again (nothing arrived but control frames, or our
                        # deadline passed): let the other consumers take their turn.
                        self._changed.notify_all()
                    continue
                # Someone else reads: the reader thread (or another consumer) puts messages in,
                # or hands the socket over to us, and notifies either way.
                if deadline is None:
                    self._changed.wait()
                else:
                    self._changed.wait(deadline - time.monotonic())
        finally:
            self._getters -= 1

    def __iter__(self) -> Incoming:
        return self

    def __next__(self) -> Message:
        try:
            return self.get()
        except ConnectionClosed:
            raise StopIteration from None

    def __len__(self) -> int:
        """The number of messages waiting to be taken."""
        return len(self._messages) - self._head

    @property
    def buffered_bytes(self) -> int:
        """The size of the messages waiting to be taken, in bytes (UTF-8 for text)."""
        return self._nbytes

    @property
    def closed(self) -> bool:
        """True once the connection has ended (messages may still be waiting)."""
        return self._closed

    @property
    def ended(self) -> bool:
        """The same as :attr:`closed` (the asyncio channel's name; both work on both)."""
        return self._closed

    # ------------------------------------------------------------------ producer side

    def _put(self, batch: Iterable[Message], wait: bool = True) -> None:
        """Append messages; with ``wait`` (a reader thread) block while over a bound.

        A consumer that read the socket itself (one of the getters) puts without waiting: it
        takes the messages next, and it only reads when the channel is empty, so the channel
        holds at most one read's worth beyond its bounds.
        """
        with self._lock:
            messages = self._messages
            before = len(messages)
            nbytes = self._nbytes
            for message in batch:
                messages.append(message)
                # message_size() inlined: this runs once per message.
                if type(message) is bytes or message.isascii():
                    nbytes += len(message)
                else:
                    nbytes += utf8_size(message)  # type: ignore[arg-type]  # a str
            self._nbytes = nbytes
            # A consumer putting (not wait) is a getter itself: wake only the others.
            if self._getters > (0 if wait else 1):
                self._changed.notify(len(messages) - before)
            if wait and (
                len(messages) - self._head >= self._high_count or self._nbytes >= self._high_bytes
            ):
                self._producer_waiting = True
                try:
                    while not self._released and not (
                        len(messages) - self._head <= self._low_count
                        and self._nbytes <= self._low_bytes
                    ):
                        self._changed.wait()
                finally:
                    self._producer_waiting = False

    @property
    def _paused(self) -> bool:
        """True while the reader thread waits for the application to take messages."""
        return self._producer_waiting

    def _wake_consumers(self) -> None:
        """The socket is free to read: waiting consumers look again."""
        with self._lock:
            if self._getters:
                self._changed.notify_all()

    def _release(self) -> None:
        """Stop making the reader wait, for good (the connection is being torn down)."""
        with self._lock:
            self._released = True
            self._changed.notify_all()

    def _end_when_drained(self, commit: Callable[[], None]) -> None:
        """After a peer's violation: call ``commit()`` once a consumer has taken every message.

        ``commit`` must end the channel (:meth:`_close`). A consumer already waiting on an empty
        channel calls it at once. The reader never puts messages after this.
        """
        with self._lock:
            self._commit = commit
            self._changed.notify_all()

    def _close(self, error: Callable[[], ConnectionClosed]) -> None:
        """Mark the end: once drained, :meth:`get` raises ``error()`` (once)."""
        with self._lock:
            self._closed = True
            self._released = True
            self._commit = None
            self._error = error
            self._changed.notify_all()
