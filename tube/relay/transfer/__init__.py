"""Send and receive one file through a Tube relay, on asyncio: the I/O around the sans-I/O peer.

:func:`send_file` and :func:`receive_file` are what ``python -m tube send`` / ``receive`` run
(:mod:`tube.relay.cli`), and what tests use as the reference peer::

    result = await send_file("http://127.0.0.1:8080", "report.pdf", on_code=print_code)
    received = await receive_file("http://127.0.0.1:8080", "4821-ahead-zebra", Path("."))

What they do (relay-design §5.8-§5.9):

- **Pairing.** The sender allocates a nameplate (``POST /v1/nameplates`` on the relay's HTTP
  URL), makes the code from it and fresh words, connects to ``/v1/relay/<nameplate>``
  (``http`` → ``ws``, subprotocol ``tube.relay.v1``) and sends ``hello``/``wait``; the receiver
  parses the code *before* connecting (a typo must not burn the single-use nameplate), then
  ``hello``/``claim``. Both then drive a :class:`~tube.relay.e2e.peer.Peer`.
- **Streaming with flat memory.** The sender reads the file one 256 KiB chunk at a time, only
  while the receiver's credit window allows, and each send waits while the socket's buffer is
  full; it never holds more than a chunk. The receiver writes each chunk to
  ``.<name>.tube-part`` in the output folder and acknowledges it once written; a ``.json``
  sidecar (file_id, size, chunk size, chunks kept) is rewritten after each ``fsync`` (every
  16 MiB and whenever the session ends), so it never counts bytes the disk may not have.
- **Completion.** The receiver ``fsync``s, links the partial file to a free final name (never
  over an existing file: ``name (1).ext``...), removes the partial names, and only then sends
  ``done``. The sender reports success only on ``done``.
- **Resume within the relay's grace.** If the WebSocket drops (TCP lost, relay draining with
  1001), the side that dropped reconnects to ``/v1/relay`` with ``resume{rid}`` (at once, then
  after 1 s, each pause 1.5 times the last up to 30 s, for ``resume_timeout`` seconds) and the
  peers resync; the other side waits for ``peer:back``. At most a credit window of chunks is
  sent again.
- **Resume across a relay restart.** A resume answered 4010 (or a relay that never comes back)
  fails with :class:`ResumeFailed`; the receiver keeps its partial file. Sending the same file
  again (same ``salt``, hence the same ``file_id``) with a new code and receiving into the same
  folder continues from the chunks on disk (``accept{resume_from: k}``).
- **Failures** raise a :class:`TransferError` whose message is for people ("wrong code or
  interference", "no such code (already used or expired)", "integrity error ..."). An integrity
  failure deletes the partial output. Local errors and cancellation (Ctrl-C) send ``cancel`` to
  the peer before the exception propagates; so does the peer's own failure once the keys are
  confirmed (``cancel{"reason":"integrity"}``), so the other side reads "the receiver stopped:
  integrity error" rather than "the other side gave up".

Concurrency: each call runs in the calling task, on its event loop; callbacks run in that task
(they may be coroutines, e.g. a prompt in a thread). Nothing is shared between calls.

The package, lower modules first (each imports only from those above it):

- :mod:`.errors`: :class:`TransferError` and its family; the words for each close code.
- :mod:`.results`: :class:`TransferProgress`, :class:`IncomingOffer` and the two results.
- :mod:`.http`: the relay's URLs and ``POST /v1/nameplates`` (:func:`allocate_nameplate`).
- :mod:`.disk`: safe names, the partial file and its sidecar, the file-id salt.
- :mod:`.channel`: the WebSocket to the relay (pairing, redirects, resume, stall timeout).
- :mod:`.session`: the loop that drives the peer, and the polite end of every failure.
- :mod:`.sending` and :mod:`.receiving`: :func:`send_file` and :func:`receive_file`.
"""

from __future__ import annotations

from .channel import STALL_TIMEOUT as STALL_TIMEOUT  # public, not in __all__ (as before)
from .disk import load_salt, partial_paths, safe_name
from .errors import (
    IntegrityFailure,
    RelayError,
    RelayUnavailable,
    ResumeFailed,
    TransferCancelled,
    TransferError,
    WrongCodeError,
)
from .http import DEFAULT_RELAY, allocate_nameplate, relay_urls
from .receiving import receive_file
from .results import IncomingOffer, ReceiveResult, SendResult, TransferProgress
from .sending import send_file

__all__ = [
    "DEFAULT_RELAY",
    "IncomingOffer",
    "IntegrityFailure",
    "ReceiveResult",
    "RelayError",
    "RelayUnavailable",
    "ResumeFailed",
    "SendResult",
    "TransferCancelled",
    "TransferError",
    "TransferProgress",
    "WrongCodeError",
    "allocate_nameplate",
    "load_salt",
    "partial_paths",
    "receive_file",
    "relay_urls",
    "safe_name",
    "send_file",
]
