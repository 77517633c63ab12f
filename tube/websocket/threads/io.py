"""Socket I/O for a connection: a blocking reader, non-blocking writes with a deadline, and TLS.

Two implementations share one small interface:

* :class:`PlainIO` (TCP): the socket stays in blocking mode and the reading thread blocks in
  ``recv_into`` (one system call per read); ``SO_RCVTIMEO`` ends a read that waited longer than
  the idle timeout, so that the reader can park the connection. Writers never block in the
  kernel: they send with ``MSG_DONTWAIT`` and, when the send buffer is full, wait for
  writability with ``poll`` until their deadline. The kernel allows one thread to read while
  another writes on a TCP socket.
* :class:`TLSIO`: OpenSSL forbids using one ``SSL`` object from two threads at once, so the
  socket is non-blocking, every SSL call is made under an I/O lock, and the waits for
  readability or writability happen outside that lock. Each lock hold is a single non-blocking
  SSL call, so a reader never waits long for a writer or the reverse.

Shutting the socket down (:meth:`BaseIO.shutdown`) goes through ``socket.socket.shutdown``
directly: ``ssl.SSLSocket.shutdown`` would drop the SSL object under a concurrent reader.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import sys
import threading
import time

__all__ = ["TLSIO", "BaseIO", "PlainIO", "make_io"]

_MSG_DONTWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)
# One TLS record holds at most 16 KiB of plaintext; writing record-sized chunks keeps each SSL
# call short and lets a retried write (after SSLWantWriteError) use exactly the same arguments.
_TLS_CHUNK = 16 * 1024
# When a TLS write needs the peer's data (renegotiation), the reader thread may consume it
# first: poll in short slices so the writer notices.
_TLS_WANT_READ_SLICE = 0.05

# struct timeval for SO_RCVTIMEO: two C longs on Linux and macOS; elsewhere (Windows takes
# milliseconds) reads are never timed out and connections never park.
_TIMEVAL = struct.Struct("@ll") if sys.platform.startswith(("linux", "darwin")) else None

_POLLIN = getattr(select, "POLLIN", 1)
_POLLOUT = getattr(select, "POLLOUT", 4)
_POLL_DONE = _POLLIN | getattr(select, "POLLHUP", 16) | getattr(select, "POLLERR", 8)


def _wait(sock: socket.socket, events: int, timeout: float | None) -> bool:
    """Wait until ``sock`` is ready for ``events``; return False on timeout."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, events)
        return bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000) + 1)))
    # Platforms without poll (Windows): select is limited to FD_SETSIZE sockets but works.
    readable = [sock] if events & _POLLIN else []
    writable = [sock] if events & _POLLOUT else []
    r, w, _ = select.select(readable, writable, [], timeout)
    return bool(r or w)


class BaseIO:
    """Reads and writes of one socket, shared by the reading thread and writer threads.

    Concurrency: :meth:`recv_into` and :meth:`wait_readable` are called by the thread holding
    the connection's read turn only; :meth:`send_nowait` and
    :meth:`wait_writable` by whoever holds the connection's write lock (or tries a write without
    blocking from the timer thread); :meth:`shutdown` from any thread.
    """

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def recv_into(self, buffer: bytearray | memoryview, deadline: float | None = None) -> int:
        """Block until bytes arrive; return how many were stored.

        Args:
            buffer: Where to store them.
            deadline: A consumer's deadline (monotonic), for a socket already reported
                readable: a read that would wait longer for the rest of a TLS record gives up
                there. A plain TCP read of a readable socket never waits.

        Returns:
            The byte count; 0 at EOF (or after a shutdown, a reset, a TLS error); -1 when
            nothing arrived within the ``idle_timeout`` given to the constructor, or by
            ``deadline``.
        """
        raise NotImplementedError

    def wait_readable(self, timeout: float | None) -> bool:
        """Wait until a read would not block (data, EOF or an error); False on timeout."""
        return _wait(self.sock, _POLL_DONE, timeout)

    def send_nowait(self, data: memoryview) -> int:
        """Write a prefix of ``data`` without blocking; return its length (0: buffer full)."""
        raise NotImplementedError

    def wait_writable(self, deadline: float | None) -> bool:
        """Wait until a write may progress, until ``deadline`` (monotonic); False on timeout."""
        timeout = None if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            return False
        return _wait(self.sock, _POLLOUT, timeout)

    def shutdown(self, how: int) -> None:
        """Shut the TCP connection down in one or both directions; never raises.

        Shutting down the read side wakes the reader thread (its read returns EOF), which then
        closes the socket: only the reader ever closes it, so no thread is left using a closed
        (and maybe reused) file descriptor.
        """
        # OSError: already shut down, or reset by the peer: nothing left to do.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, how)

    def close(self) -> None:
        """Close the socket (reader thread only, once it is done with it)."""
        with contextlib.suppress(OSError):
            self.sock.close()


class PlainIO(BaseIO):
    """TCP without TLS: blocking reads in the reader thread, ``MSG_DONTWAIT`` writes elsewhere."""

    __slots__ = ()

    def __init__(self, sock: socket.socket, idle_timeout: float | None = None) -> None:
        super().__init__(sock)
        # A timeout left by the HTTP server (handler.timeout) would make recv_into poll first
        # and time out: the reader wants plain blocking reads, one system call each.
        sock.settimeout(None)
        if idle_timeout is not None and _TIMEVAL is not None:
            # The kernel ends a blocking read after this long with EAGAIN, which tells the
            # reader that the connection is idle, at no cost per read.
            seconds = int(idle_timeout)
            micros = int((idle_timeout - seconds) * 1_000_000)
            with contextlib.suppress(OSError):
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.pack(seconds, micros)
                )

    def recv_into(self, buffer: bytearray | memoryview, deadline: float | None = None) -> int:
        try:
            return self.sock.recv_into(buffer)
        except (BlockingIOError, InterruptedError):
            return -1  # SO_RCVTIMEO expired: idle
        except OSError:
            return 0  # reset by the peer, or shut down under us: both end the connection

    def send_nowait(self, data: memoryview) -> int:
        # Without MSG_DONTWAIT (Windows), poll first: the send then writes what fits.
        if not _MSG_DONTWAIT and not _wait(self.sock, _POLLOUT, 0):
            return 0
        try:
            return self.sock.send(data, _MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return 0


class TLSIO(BaseIO):
    """TLS: a non-blocking ``ssl.SSLSocket`` with every SSL call serialised by an I/O lock."""

    __slots__ = ("_idle_timeout", "_io_lock", "_write_wants_read")

    def __init__(self, sock: ssl.SSLSocket, idle_timeout: float | None = None) -> None:
        super().__init__(sock)
        sock.setblocking(False)
        self._idle_timeout = idle_timeout
        self._io_lock = threading.Lock()
        self._write_wants_read = False

    def recv_into(self, buffer: bytearray | memoryview, deadline: float | None = None) -> int:
        sock = self.sock
        lock = self._io_lock
        while True:
            with lock:
                try:
                    return sock.recv_into(buffer)
                except ssl.SSLWantReadError:
                    events = _POLLIN
                except ssl.SSLWantWriteError:
                    events = _POLLOUT
                except OSError:
                    return 0  # TLS or TCP error, or a ragged EOF: the connection is over
            # SSLWantReadError means OpenSSL holds no more decrypted bytes (pending() == 0), so
            # waiting on the socket is safe: nothing is stranded inside the SSL object.
            if events == _POLLOUT:
                _wait(sock, _POLLOUT, None)
                continue
            timeout = self._idle_timeout
            if deadline is not None:
                # A peer trickling a record must not hold a consumer past its get() timeout.
                left = deadline - time.monotonic()
                if left <= 0:
                    return -1
                timeout = left if timeout is None else min(timeout, left)
            if not _wait(sock, _POLL_DONE, timeout):
                return -1

    def wait_readable(self, timeout: float | None) -> bool:
        # Decrypted bytes may wait inside the SSL object, where poll cannot see them. Under the
        # I/O lock: a writer may be using the SSL object.
        with self._io_lock:
            pending = self.sock.pending()  # type: ignore[attr-defined]
        if pending:
            return True
        return super().wait_readable(timeout)

    def send_nowait(self, data: memoryview) -> int:
        # Always the same chunk for the same remaining data, as OpenSSL requires for a retry.
        chunk = data[:_TLS_CHUNK]
        with self._io_lock:
            try:
                sent = self.sock.send(chunk)
            except ssl.SSLWantWriteError:
                self._write_wants_read = False
                return 0
            except ssl.SSLWantReadError:
                self._write_wants_read = True
                return 0
        self._write_wants_read = False
        return sent

    def shutdown(self, how: int) -> None:
        if how == socket.SHUT_WR:
            # Send TLS close_notify first (RFC 8446 §6.1), so that the peer sees the TLS stream
            # end cleanly rather than truncated. Non-blocking: one attempt, never a wait; if the
            # send buffer is full the peer is not reading and a truncation is all it can get.
            with self._io_lock, contextlib.suppress(OSError, ValueError):
                self.sock.unwrap()  # type: ignore[attr-defined]
        super().shutdown(how)

    def wait_writable(self, deadline: float | None) -> bool:
        if not self._write_wants_read:
            return super().wait_writable(deadline)
        timeout = _TLS_WANT_READ_SLICE
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            timeout = min(timeout, remaining)
        _wait(self.sock, _POLLIN, timeout)
        return True  # retry the write; the deadline is checked again on the next failure


def make_io(sock: socket.socket, idle_timeout: float | None = None) -> BaseIO:
    """Pick the I/O implementation for ``sock`` (TLS when it is an ``ssl.SSLSocket``).

    Args:
        sock: The connected socket.
        idle_timeout: Seconds without a received byte after which ``recv_into`` returns -1
            (None: never). Ignored where the platform cannot time out a blocking read.
    """
    if isinstance(sock, ssl.SSLSocket):
        return TLSIO(sock, idle_timeout)
    return PlainIO(sock, idle_timeout)
