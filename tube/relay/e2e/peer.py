"""The end-to-end peer, sans-I/O: one side (sender S or receiver R) of a Tube transfer.

No sockets, no asyncio, no clock. The caller (the CLI, a test, later the page's port) feeds in
what arrives and what the user or the disk did, and drains what came out::

    peer = Peer("send", code.prs)
    peer.paired(pair_id)                 # the relay's {"t":"paired"}
    for item in peer.data_to_send():     # bytes: a binary frame; str: relay control JSON
        ...
    peer.receive(frame)                  # every binary frame from the relay, in order
    for event in peer.events():          # Verified, OfferReceived, Accepted, ChunkReceived, ...
        ...

Failures caused by the other side (or a relay in the middle) never raise out of
:meth:`Peer.receive`: the peer moves to ``FAILED``, queues a sealed ``cancel`` saying what kind
of failure it was (only once the keys are confirmed, see below) and ``bye``, and emits
``Failed(error)`` with an :class:`~.errors.E2EError` (``WrongCode``, ``IntegrityError``,
``ProtocolViolation``). Misuse by the caller (an input in a state that cannot take it) raises
:class:`PeerStateError` at once. Frames that arrive after the end (DONE, CANCELLED, FAILED)
are ignored.

Messages, in order (design §4.3, §5.7-§5.9; ``→`` is "S sends to R")
-----------------------------------------------------------------------

Key exchange (binary frames, first byte the type):

1. ``paired(pair_id)``: both build CPace with PRS = UTF-8 of the normalised code and sid =
   pair_id. **S → COMMIT** ``0x04 ‖ SHA-256("tube/1 commit" ‖ S's CPace message)``.
2. R, on COMMIT (in WAIT_COMMIT): **R → CPACE** ``0x01 ‖ lv_cat(Y_R, AD_R)``.
3. S, on CPACE (in WAIT_CPACE): finishes CPace, derives the keys, **S → CPACE** then
   **S → CONFIRM** ``0x02 ‖ HMAC(confirm_s, transcript)``.
4. R, on CPACE (in WAIT_CPACE): the body must hash to the COMMIT (else ``WrongCode``),
   finishes CPace, derives the keys, **R → CONFIRM** ``HMAC(confirm_r, transcript)``.
5. Each side, on the peer's CONFIRM (in WAIT_CONFIRM): checks the tag (``WrongCode`` if bad),
   emits ``Verified(verifier)`` and sends the relay text ``{"t":"resumable","rid":…}``.
   Nothing else is accepted before this point, and no sealed message is sent before it.

Sealed control messages (``0x03 ‖ u64 counter ‖ AES-GCM(JSON padded to 256 B)``, key
``k_ctrl_s2r`` for S → R and ``k_ctrl_r2s`` for R → S). Counters start at 0 in each direction
and go up by exactly 1, except that a ``resume_hello`` may skip ahead (messages the relay
dropped while the pair was detached); a counter that goes back or skips anywhere else fails.

6. S ``offer()`` (in READY): **S → offer** ``{"t":"offer","file_id":b64u(16),"name":str,
   "size":int,"type":str,"lastModified":int,"chunk":262144,"epoch":e,"nonce":b64u(16)}``;
   ``epoch`` and ``nonce`` are the current stream's (0 and a fresh nonce unless a resume
   happened first). R emits ``OfferReceived``.
7. R ``accept_offer(k)`` / ``decline()`` (in OFFERED): **R → accept** ``{"t":"accept",
   "resume_from":k,"window":16}`` (0 ≤ k ≤ chunk count; k = count means R already holds every
   chunk and only ``done`` follows) or **R → cancel** ``{"t":"cancel","reason":"declined"}``.
   S emits ``Accepted(k, window)``.
8. DATA ``0x10 ‖ u64 index ‖ AES-GCM`` under ``data_key(file_id, epoch, nonce)``: S sends chunk
   j only while ``j <= through + window`` (``through`` starts at k - 1); R opens with its own
   counter and emits ``ChunkReceived(index, plaintext, final)``; after the caller wrote it,
   ``chunk_written(index)`` sends **R → ack** ``{"t":"ack","through":i,"window":16}``; S emits
   ``Progress(through)``. ``through`` never goes back and never passes the last chunk sent;
   ``window`` is 1..64.
9. After the final chunk is written and the file renamed, R ``complete()``: **R → done**
   ``{"t":"done"}``; S (having sent every chunk) emits ``Done``. Both then send the relay text
   ``{"t":"bye","mood":"happy"}``.

Either side may send ``{"t":"cancel","reason":str}`` from READY to the end (``cancel()``); the
other emits ``Cancelled(reason)``. A side that *fails* from READY to the end (an
``IntegrityError``, or a ``ProtocolViolation``: a frame or message it cannot take) sends
``{"t":"cancel","reason":"integrity"}`` or ``{"t":"cancel","reason":"protocol"}``
(:data:`CANCEL_INTEGRITY`, :data:`CANCEL_PROTOCOL`) just before its ``bye``, under its next
counter like any control message, so the other side learns why rather than only that its peer
left; the reason names the kind of failure, never its details. Before the keys are confirmed
there is no sealed channel to say it on (a ``WrongCode`` has none): ``bye`` alone. Bye moods:
``happy`` after done or a decline, ``scary`` after ``WrongCode``, ``errory`` after any other
failure or cancel.

Resume within the relay's grace (§5.9):

10. ``peer_lost()`` when the relay says ``peer:lost`` or our own socket dropped: S stops sending
    DATA. ``resumed()`` on ``paired`` after our ``resume`` or on ``peer:back``: sends
    ``{"t":"resume_hello","epoch":e,"nonce":b64u(16),"rx":c}`` (``e`` our current epoch,
    ``nonce`` fresh random bytes, ``c`` the highest counter we *processed* from the peer, -1 if
    none) and then drops every binary frame (stale DATA or control from before the cut) until
    the peer's ``resume_hello``.
11. A ``resume_hello`` that arrives while we are not waiting for one (the peer resumed first)
    is answered at once with our own ``resume_hello`` (sent before anything else), so a
    ``resumed()`` call is idempotent: it does nothing once this peer has resynced since its
    last ``peer_lost()``.
12. On the peer's ``resume_hello``: new epoch = max(ours, its) + 1 on both sides; the new
    stream nonce is S's nonce (from S's own ``resume_hello``); each side sends again, with new
    counters, the ``offer``/``accept``/``done``/``cancel`` whose counter is above the peer's
    ``rx`` (a re-sent ``offer`` carries the new epoch and nonce); R then opens a new stream at
    ``received + 1`` (the last chunk it emitted + 1) and sends ``ack{through: received}``;
    S waits for that ack and restarts at ``through + 1`` under the new data key. Both emit
    ``Resynced(epoch)``.

Across a relay restart the caller starts a new Peer with a new code; R answers the same
``file_id`` with ``accept{resume_from: k}`` for the chunks it holds (§5.9, second part).
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import hmac
import json
import os
from collections.abc import Callable
from typing import Any

from .cpace import CPace
from .errors import E2EError, IntegrityError, ProtocolViolation, WrongCode
from .framing import (
    CHUNK_SIZE,
    COMMIT,
    CONFIRM,
    CPACE,
    DATA,
    MAX_SIZE,
    SEALED_CTRL,
    ChunkOpener,
    CtrlOpener,
    chunk_count,
    commit_frame,
    confirm_frame,
    cpace_frame,
    ctrl_plaintext,
    expected_length,
    frame_type,
    parse_commit,
    parse_confirm,
    parse_cpace,
    seal_chunk,
    seal_ctrl,
)
from .keys import SessionKeys, check_confirm, commitment, confirm_tag, derive_keys

__all__ = [
    "CANCEL_INTEGRITY",
    "CANCEL_PROTOCOL",
    "DEFAULT_WINDOW",
    "MAX_WINDOW",
    "Accepted",
    "Cancelled",
    "ChunkReceived",
    "Done",
    "Event",
    "Failed",
    "Offer",
    "OfferReceived",
    "Peer",
    "PeerStateError",
    "Progress",
    "Resynced",
    "State",
    "Verified",
]

#: Chunks R lets S send beyond the last acknowledged one (4 MiB).
DEFAULT_WINDOW = 16
#: The largest window either side accepts (design §5.6: up to 64 chunks).
MAX_WINDOW = 64
#: The ``reason`` of the ``cancel`` a side sends when it fails with an ``IntegrityError``
#: after the keys are confirmed (a chunk or control message failed authentication or order).
CANCEL_INTEGRITY = "integrity"
#: The same for a ``ProtocolViolation`` (a frame or message of the wrong shape or state).
CANCEL_PROTOCOL = "protocol"
_NONCE_LENGTH = 16
_FILE_ID_LENGTH = 16
_MAX_NAME_CHARS = 1024
_MAX_TYPE_CHARS = 255
_MAX_REASON_CHARS = 200
_U64 = 1 << 64
_U32_MAX = 0xFFFFFFFF
# Control messages the peer must not miss: re-sent after a resume if its rx is below them.
_IMPORTANT = frozenset({"offer", "accept", "done", "cancel"})


class PeerStateError(RuntimeError):
    """Local misuse: an input the peer's current state cannot take (a bug in the caller)."""


class State(enum.Enum):
    """Where a :class:`Peer` is; the roles share names (the docstring says who is where)."""

    NEW = "new"  # before paired()
    WAIT_COMMIT = "wait_commit"  # R: waits for S's COMMIT
    WAIT_CPACE = "wait_cpace"  # S: COMMIT sent; R: own CPACE sent. Waits for the peer's CPACE
    WAIT_CONFIRM = "wait_confirm"  # own CONFIRM sent; waits for the peer's
    READY = "ready"  # keys confirmed. S: may offer; R: waits for the offer
    OFFERED = "offered"  # S: offer sent, waits for accept; R: the user decides
    TRANSFER = "transfer"  # S: sends DATA; R: receives DATA
    FINISHING = "finishing"  # R: final chunk received; waits for the writes and complete()
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


_TERMINAL = frozenset({State.DONE, State.CANCELLED, State.FAILED})
_SESSION = frozenset({State.READY, State.OFFERED, State.TRANSFER, State.FINISHING})

# What each (role, state) accepts from the peer: frame names for the key exchange and DATA,
# the "t" of sealed control messages. Anything else is a ProtocolViolation. This table and
# _LOCAL below are the whole state machine; the handlers only do the work.
_ACCEPTS: dict[tuple[str, State], frozenset[str]] = {
    ("send", State.WAIT_CPACE): frozenset({"CPACE"}),
    ("send", State.WAIT_CONFIRM): frozenset({"CONFIRM"}),
    ("send", State.READY): frozenset({"cancel", "resume_hello"}),
    ("send", State.OFFERED): frozenset({"accept", "cancel", "resume_hello"}),
    ("send", State.TRANSFER): frozenset({"ack", "done", "cancel", "resume_hello"}),
    ("recv", State.WAIT_COMMIT): frozenset({"COMMIT"}),
    ("recv", State.WAIT_CPACE): frozenset({"CPACE"}),
    ("recv", State.WAIT_CONFIRM): frozenset({"CONFIRM"}),
    ("recv", State.READY): frozenset({"offer", "cancel", "resume_hello"}),
    ("recv", State.OFFERED): frozenset({"cancel", "resume_hello"}),
    ("recv", State.TRANSFER): frozenset({"DATA", "cancel", "resume_hello"}),
    ("recv", State.FINISHING): frozenset({"cancel", "resume_hello"}),
}

# What the caller may do in which (role, state).
_LOCAL: dict[str, frozenset[tuple[str, State]]] = {
    "paired": frozenset({("send", State.NEW), ("recv", State.NEW)}),
    "offer": frozenset({("send", State.READY)}),
    "send_chunk": frozenset({("send", State.TRANSFER)}),
    "accept_offer": frozenset({("recv", State.OFFERED)}),
    "decline": frozenset({("recv", State.OFFERED)}),
    "chunk_written": frozenset({("recv", State.TRANSFER), ("recv", State.FINISHING)}),
    "complete": frozenset({("recv", State.FINISHING)}),
    "cancel": frozenset((role, state) for role in ("send", "recv") for state in _SESSION),
    # After the end these two are harmless news and are ignored.
    "peer_lost": frozenset(
        (role, state) for role in ("send", "recv") for state in _SESSION | _TERMINAL
    ),
    "resumed": frozenset(
        (role, state) for role in ("send", "recv") for state in _SESSION | _TERMINAL
    ),
}

_FRAME_NAMES = {COMMIT: "COMMIT", CPACE: "CPACE", CONFIRM: "CONFIRM", DATA: "DATA"}


# --- Events ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Offer:
    """What S offers: the file's metadata as S states it (R must sanitise ``name``)."""

    file_id: bytes
    name: str
    size: int
    type: str
    last_modified: int

    @property
    def chunks(self) -> int:
        """Number of DATA chunks of the stream (at least 1)."""
        return chunk_count(self.size)


@dataclasses.dataclass(frozen=True)
class Verified:
    """Both confirmation tags verified: the peer knows the code. ``verifier``: 6 digits."""

    verifier: str


@dataclasses.dataclass(frozen=True)
class OfferReceived:
    """R: S offers a file; answer with accept_offer() or decline()."""

    offer: Offer


@dataclasses.dataclass(frozen=True)
class Accepted:
    """S: R accepted; DATA starts at chunk ``resume_from``."""

    resume_from: int
    window: int


@dataclasses.dataclass(frozen=True)
class ChunkReceived:
    """R: chunk ``index`` authenticated; write it, then call chunk_written(index)."""

    index: int
    plaintext: bytes
    final: bool


@dataclasses.dataclass(frozen=True)
class Progress:
    """S: R acknowledged every chunk up to ``through`` (-1: none yet)."""

    through: int


@dataclasses.dataclass(frozen=True)
class Resynced:
    """Both sides exchanged resume_hello; the stream goes on under ``epoch``."""

    epoch: int


@dataclasses.dataclass(frozen=True)
class Done:
    """The transfer is complete (S: R said done; R: done sent)."""


@dataclasses.dataclass(frozen=True)
class Cancelled:
    """The peer cancelled (``reason`` as it said, e.g. "declined")."""

    reason: str


@dataclasses.dataclass(frozen=True)
class Failed:
    """The session failed because of the peer or the relay; it is over."""

    error: E2EError


Event = (
    Verified
    | OfferReceived
    | Accepted
    | ChunkReceived
    | Progress
    | Resynced
    | Done
    | Cancelled
    | Failed
)


# --- Helpers --------------------------------------------------------------------------------


def b64u(data: bytes) -> str:
    """Unpadded base64url, as every binary field of the protocol is written."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: object, length: int, field: str) -> bytes:
    """Decode an unpadded, canonical base64url field of exactly ``length`` bytes.

    Raises:
        ProtocolViolation: not a string, not canonical base64url, or the wrong length.
    """
    expected_chars = -(-length * 4 // 3)
    if not isinstance(text, str) or len(text) != expected_chars:
        raise ProtocolViolation(f"{field} must be {length} bytes in base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise ProtocolViolation(f"{field} is not base64url") from None
    if len(raw) != length or b64u(raw) != text:
        raise ProtocolViolation(f"{field} is not canonical base64url of {length} bytes")
    return raw


def _int(obj: dict[str, Any], field: str, low: int, high: int) -> int:
    value = obj.get(field)
    # bool is an int in Python and a different type in JSON: refuse it.
    if type(value) is not int or not low <= value <= high:
        raise ProtocolViolation(f"{obj['t']}.{field} must be an integer {low}..{high}")
    return value


def _str(obj: dict[str, Any], field: str, limit: int) -> str:
    value = obj.get(field)
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolViolation(f"{obj['t']}.{field} must be a string of at most {limit} chars")
    return value


def _relay_text(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _offer_message(offer: Offer, epoch: int, nonce: bytes) -> dict[str, Any]:
    return {
        "t": "offer",
        "file_id": b64u(offer.file_id),
        "name": offer.name,
        "size": offer.size,
        "type": offer.type,
        "lastModified": offer.last_modified,
        "chunk": CHUNK_SIZE,
        "epoch": epoch,
        "nonce": b64u(nonce),
    }


# --- The peer -------------------------------------------------------------------------------


class Peer:
    """One side of a transfer, as a state machine; see the module docstring for the messages.

    Args:
        role: ``"send"`` or ``"recv"``.
        password: CPace's PRS, UTF-8 of the normalised full code (``ParsedCode.prs``).
        rng: source of random bytes (stream nonces; tests make it deterministic).
        cpace_factory: builds the CPace run (tests inject fixed scalars).

    Not thread-safe: one caller drives it, one input at a time.
    """

    def __init__(
        self,
        role: str,
        password: bytes,
        *,
        rng: Callable[[int], bytes] = os.urandom,
        cpace_factory: Callable[[bytes, bytes, str], CPace] | None = None,
    ) -> None:
        if role not in ("send", "recv"):
            raise ValueError(f"role must be 'send' or 'recv', got {role!r}")
        if not password:
            raise ValueError("the password must not be empty")
        self.role = role
        self.state = State.NEW
        self._password = password
        self._rng = rng
        self._cpace_factory = cpace_factory or (lambda prs, sid, r: CPace(prs, sid, r))
        self._out: list[bytes | str] = []
        self._events: list[Event] = []
        # Key exchange.
        self._cpace: CPace | None = None
        self._sid = b""
        self._commit = b""  # R: S's commitment
        self._keys: SessionKeys | None = None
        self._transcript = b""
        self._own_ctrl_key = b""  # k_ctrl_s2r at S, k_ctrl_r2s at R
        self._peer_ctrl_key = b""
        # Sealed control messages.
        self._tx_counter = 0
        self._opener: CtrlOpener | None = None
        self._rx_processed = -1  # the highest counter of a message we acted on
        self._sent_important: list[tuple[int, dict[str, Any]]] = []
        # The stream.
        self.offer_info: Offer | None = None
        self._epoch = 0
        self._stream_nonce = b""  # S: ours; R: S's
        self._data_key = b""
        self._window = DEFAULT_WINDOW
        # S: next chunk to send and R's last acknowledgement.
        self._next_index = 0
        self.through = -1
        # R: the chunk opener, last chunk emitted, last written, last acknowledged.
        self._chunks: ChunkOpener | None = None
        self._received = -1
        self._written = -1
        self._acked = -1
        # Resume: waiting for the peer's resume_hello; a resync owed since peer_lost().
        self._awaiting_hello = False
        self._resync_owed = False
        self._link_down = False
        self._await_ack = False  # S: after a resync, wait for R's ack before sending

    # ------------------------------------------------------------------ outputs

    def data_to_send(self) -> list[bytes | str]:
        """Return and clear what to send, in order: ``bytes`` binary frames, ``str`` relay
        control JSON (``resumable``, ``bye``)."""
        out, self._out = self._out, []
        return out

    def events(self) -> list[Event]:
        """Return and clear the events produced since the last call, in order."""
        events, self._events = self._events, []
        return events

    @property
    def verifier(self) -> str | None:
        """The six verification digits, once the keys are confirmed."""
        return self._keys.verifier if self._opener is not None and self._keys else None

    @property
    def epoch(self) -> int:
        """The current stream epoch (0 until a resume)."""
        return self._epoch

    @property
    def is_finished(self) -> bool:
        """True once the peer reached an end state (DONE, CANCELLED or FAILED)."""
        return self.state in _TERMINAL

    # ------------------------------------------------------------------ inputs: relay

    def paired(self, pair_id: bytes) -> None:
        """The relay paired us; ``pair_id`` (16 bytes) is CPace's sid. S sends COMMIT."""
        self._check_local("paired")
        if len(pair_id) != 16:
            raise ValueError("pair_id must be 16 bytes")
        self._sid = bytes(pair_id)
        self._cpace = self._cpace_factory(self._password, self._sid, self.role)
        if self.role == "send":
            self._out.append(commit_frame(commitment(self._cpace.message)))
            self.state = State.WAIT_CPACE
        else:
            self.state = State.WAIT_COMMIT

    def receive(self, frame: bytes) -> None:
        """Feed one binary frame from the relay. Failures become a :class:`Failed` event."""
        if self.state in _TERMINAL:
            return
        try:
            self._receive(bytes(frame))
        except E2EError as error:
            self._fail(error)

    def peer_lost(self) -> None:
        """The relay said ``peer:lost``, or our own connection dropped: stop sending DATA."""
        self._check_local("peer_lost")
        if self.state in _TERMINAL:
            return
        self._link_down = True
        self._resync_owed = True

    def resumed(self) -> None:
        """The pair is whole again (``paired`` after our resume, or ``peer:back``).

        Sends ``resume_hello`` and drops binary frames until the peer's. Does nothing if this
        peer already resynced since its last :meth:`peer_lost` (the peer's hello came first).
        """
        self._check_local("resumed")
        if self.state in _TERMINAL:
            return
        self._link_down = False
        if not self._resync_owed or self._awaiting_hello:
            return
        self._send_resume_hello()

    # ------------------------------------------------------------------ inputs: the user

    def offer(self, *, file_id: bytes, name: str, size: int, type: str, last_modified: int) -> None:
        """S: offer a file (only once the keys are confirmed, and the verifier if asked).

        Raises:
            ValueError: ``file_id`` not 16 bytes, ``size`` beyond 64 GiB, a negative
                ``last_modified`` or an over-long name or type.
        """
        self._check_local("offer")
        if len(file_id) != _FILE_ID_LENGTH:
            raise ValueError("file_id must be 16 bytes")
        if not 0 <= size <= MAX_SIZE:
            raise ValueError(f"size must be 0..{MAX_SIZE}")
        if not 0 <= last_modified < _U64:
            raise ValueError("last_modified must be a u64 (milliseconds since 1970)")
        if len(name) > _MAX_NAME_CHARS or len(type) > _MAX_TYPE_CHARS:
            raise ValueError("name or type too long")
        offer = Offer(bytes(file_id), name, size, type, last_modified)
        # A resume re-sends the offer with a larger epoch: check that the largest one fits.
        ctrl_plaintext(_offer_message(offer, _U32_MAX, bytes(_NONCE_LENGTH)))
        if not self._stream_nonce:
            self._stream_nonce = self._rng(_NONCE_LENGTH)
        self.offer_info = offer
        self._send_ctrl(self._offer_message())
        self.state = State.OFFERED

    def can_send_chunk(self) -> bool:
        """S: True if chunk :meth:`next_chunk_wanted` may be sent now (credit window)."""
        if self.role != "send" or self.state is not State.TRANSFER or self.offer_info is None:
            return False
        if self._link_down or self._awaiting_hello or self._await_ack:
            return False
        index = self._next_index
        return index < self.offer_info.chunks and index <= self.through + self._window

    def next_chunk_wanted(self) -> int:
        """S: the index of the next chunk to send (check :meth:`can_send_chunk` first)."""
        return self._next_index

    def send_chunk(self, index: int, plaintext: bytes) -> None:
        """S: seal chunk ``index`` (its plaintext, 256 KiB except the last) into a DATA frame.

        Raises:
            PeerStateError: not the chunk wanted, or no credit for it.
            ValueError: the plaintext has the wrong length for that chunk.
        """
        self._check_local("send_chunk")
        if index != self._next_index or not self.can_send_chunk():
            raise PeerStateError(f"chunk {index} may not be sent now")
        assert self.offer_info is not None
        offer = self.offer_info
        if len(plaintext) != expected_length(offer.size, index):
            raise ValueError(f"chunk {index} must be {expected_length(offer.size, index)} bytes")
        frame = seal_chunk(self._data_key, offer.file_id, self._epoch, index, offer.size, plaintext)
        self._out.append(frame)
        self._next_index = index + 1

    def accept_offer(self, resume_from: int = 0, window: int = DEFAULT_WINDOW) -> None:
        """R: accept the offer; ``resume_from`` = chunks already verified on disk.

        Raises:
            ValueError: ``resume_from`` beyond the chunk count or ``window`` outside 1..64.
        """
        self._check_local("accept_offer")
        assert self.offer_info is not None
        chunks = self.offer_info.chunks
        if not 0 <= resume_from <= chunks:
            raise ValueError(f"resume_from must be 0..{chunks}")
        if not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be 1..{MAX_WINDOW}")
        self._window = window
        self._send_ctrl({"t": "accept", "resume_from": resume_from, "window": window})
        self._received = self._written = self._acked = resume_from - 1
        self._start_stream_at(resume_from)

    def decline(self) -> None:
        """R: refuse the offer (sends ``cancel{"reason":"declined"}``)."""
        self._check_local("decline")
        self._send_ctrl({"t": "cancel", "reason": "declined"})
        self._end(State.CANCELLED, "happy")

    def chunk_written(self, index: int) -> None:
        """R: chunk ``index`` (the oldest not yet reported) is durably written: ack it.

        Raises:
            PeerStateError: not the next chunk in order, or not received yet.
        """
        self._check_local("chunk_written")
        if index != self._written + 1 or index > self._received:
            raise PeerStateError(f"chunk {index} is not the next chunk received")
        self._written = index
        if index > self._acked:
            self._acked = index
            self._send_ctrl({"t": "ack", "through": index, "window": self._window})

    def complete(self) -> None:
        """R: every chunk is written and the file is in place: send ``done``."""
        self._check_local("complete")
        assert self.offer_info is not None
        if self._written != self.offer_info.chunks - 1:
            raise PeerStateError("complete() before every chunk was written")
        self._send_ctrl({"t": "done"})
        self._events.append(Done())
        self._end(State.DONE, "happy")

    def cancel(self, reason: str = "cancelled") -> None:
        """Either side: abandon the transfer and tell the peer."""
        self._check_local("cancel")
        self._send_ctrl({"t": "cancel", "reason": reason[:_MAX_REASON_CHARS]})
        self._end(State.CANCELLED, "errory")

    # ------------------------------------------------------------------ dispatch

    def _check_local(self, action: str) -> None:
        if (self.role, self.state) not in _LOCAL[action]:
            raise PeerStateError(f"{action}() is not allowed in state {self.state.value}")

    def _receive(self, frame: bytes) -> None:
        kind = frame_type(frame)
        if kind == SEALED_CTRL:
            self._receive_ctrl(frame)
            return
        name = _FRAME_NAMES.get(kind)
        if name is None:
            raise ProtocolViolation(f"unknown frame type 0x{kind:02x}")
        if self._awaiting_hello and name == "DATA":
            return  # stale DATA from before the cut (§5.9)
        self._expect(name)
        if name == "COMMIT":
            self._on_commit(frame)
        elif name == "CPACE":
            self._on_cpace(frame)
        elif name == "CONFIRM":
            self._on_confirm(frame)
        else:
            self._on_data(frame)

    def _expect(self, name: str) -> None:
        if name not in _ACCEPTS.get((self.role, self.state), frozenset()):
            raise ProtocolViolation(f"unexpected {name} in state {self.state.value}")

    def _receive_ctrl(self, frame: bytes) -> None:
        if self._opener is None:
            raise ProtocolViolation(f"unexpected SEALED_CTRL in state {self.state.value}")
        previous = self._opener.last
        message = self._opener.open(frame)
        name = message["t"]
        if name == "resume_hello":
            self._expect(name)
            self._on_resume_hello(message)
            return
        if self._awaiting_hello:
            return  # stale control message from before the cut; the peer re-sends if needed
        if self._opener.last != previous + 1:
            raise IntegrityError(f"control counter {self._opener.last} after {previous}")
        self._expect(name)
        self._rx_processed = self._opener.last
        handler = {
            "offer": self._on_offer,
            "accept": self._on_accept,
            "ack": self._on_ack,
            "done": self._on_done,
            "cancel": self._on_cancel,
        }[name]
        handler(message)

    # ------------------------------------------------------------------ key exchange

    def _on_commit(self, frame: bytes) -> None:  # R
        self._commit = parse_commit(frame)
        assert self._cpace is not None
        self._out.append(cpace_frame(self._cpace.message))
        self.state = State.WAIT_CPACE

    def _on_cpace(self, frame: bytes) -> None:
        body = parse_cpace(frame)
        assert self._cpace is not None
        if self.role == "recv" and not hmac.compare_digest(commitment(body), self._commit):
            raise WrongCode()  # S's message is not the one it committed to
        isk = self._cpace.finish(body)
        self._keys = derive_keys(isk, self._sid)
        self._transcript = self._cpace.transcript
        del isk
        if self.role == "send":
            self._out.append(cpace_frame(self._cpace.message))
            own, peer = self._keys.k_ctrl_s2r, self._keys.k_ctrl_r2s
            tag = confirm_tag(self._keys.confirm_s, self._transcript)
        else:
            own, peer = self._keys.k_ctrl_r2s, self._keys.k_ctrl_s2r
            tag = confirm_tag(self._keys.confirm_r, self._transcript)
        self._own_ctrl_key = own
        self._peer_ctrl_key = peer
        self._out.append(confirm_frame(tag))
        self.state = State.WAIT_CONFIRM

    def _on_confirm(self, frame: bytes) -> None:
        tag = parse_confirm(frame)
        assert self._keys is not None
        key = self._keys.confirm_r if self.role == "send" else self._keys.confirm_s
        check_confirm(key, self._transcript, tag)
        self._cpace = None
        self._opener = CtrlOpener(self._peer_ctrl_key)
        self.state = State.READY
        self._events.append(Verified(self._keys.verifier))
        self._out.append(_relay_text({"t": "resumable", "rid": b64u(self._keys.rid)}))

    # ------------------------------------------------------------------ control messages

    def _send_ctrl(self, message: dict[str, Any]) -> None:
        counter = self._tx_counter
        self._out.append(seal_ctrl(self._own_ctrl_key, counter, message))
        self._tx_counter += 1
        if message["t"] in _IMPORTANT:
            self._sent_important.append((counter, message))

    def _offer_message(self) -> dict[str, Any]:
        assert self.offer_info is not None
        return _offer_message(self.offer_info, self._epoch, self._stream_nonce)

    def _on_offer(self, message: dict[str, Any]) -> None:  # R, READY
        file_id = b64u_decode(message.get("file_id"), _FILE_ID_LENGTH, "offer.file_id")
        name = _str(message, "name", _MAX_NAME_CHARS)
        size = _int(message, "size", 0, MAX_SIZE)
        mime = _str(message, "type", _MAX_TYPE_CHARS)
        last_modified = _int(message, "lastModified", 0, _U64 - 1)
        _int(message, "chunk", CHUNK_SIZE, CHUNK_SIZE)
        _int(message, "epoch", self._epoch, self._epoch)
        self._stream_nonce = b64u_decode(message.get("nonce"), _NONCE_LENGTH, "offer.nonce")
        self.offer_info = Offer(file_id, name, size, mime, last_modified)
        self.state = State.OFFERED
        self._events.append(OfferReceived(self.offer_info))

    def _on_accept(self, message: dict[str, Any]) -> None:  # S, OFFERED
        assert self.offer_info is not None
        resume_from = _int(message, "resume_from", 0, self.offer_info.chunks)
        self._window = _int(message, "window", 1, MAX_WINDOW)
        self.through = resume_from - 1
        self._start_stream_at(resume_from)
        self._events.append(Accepted(resume_from, self._window))

    def _on_ack(self, message: dict[str, Any]) -> None:  # S, TRANSFER
        through = _int(message, "through", self.through, self._next_index - 1)
        self._window = _int(message, "window", 1, MAX_WINDOW)
        self.through = through
        if self._await_ack:
            # The first ack after a resync says where R's new stream starts.
            self._await_ack = False
            self._next_index = through + 1
        self._events.append(Progress(through))

    def _on_done(self, message: dict[str, Any]) -> None:  # S, TRANSFER
        assert self.offer_info is not None
        if self._next_index < self.offer_info.chunks or self._await_ack:
            raise ProtocolViolation("done before every chunk was sent")
        self.through = self.offer_info.chunks - 1
        self._events.append(Done())
        self._end(State.DONE, "happy")

    def _on_cancel(self, message: dict[str, Any]) -> None:
        reason = _str(message, "reason", _MAX_REASON_CHARS)
        self._events.append(Cancelled(reason))
        self._end(State.CANCELLED, "happy" if reason == "declined" else "errory")

    # ------------------------------------------------------------------ the stream

    def _start_stream_at(self, index: int) -> None:
        """Enter TRANSFER (or FINISHING for R when nothing is left) at chunk ``index``."""
        offer = self.offer_info
        assert offer is not None and self._keys is not None
        self._data_key = self._keys.data_key(offer.file_id, self._epoch, self._stream_nonce)
        if self.role == "send":
            self._next_index = index
            self.state = State.TRANSFER
        elif index >= offer.chunks:
            self._chunks = None
            self.state = State.FINISHING
        else:
            self._chunks = ChunkOpener(
                self._data_key, offer.file_id, self._epoch, offer.size, next_index=index
            )
            self.state = State.TRANSFER

    def _on_data(self, frame: bytes) -> None:  # R, TRANSFER
        assert self._chunks is not None
        index = self._chunks.next_index
        plaintext = self._chunks.open(frame)
        self._received = index
        if self._chunks.done:
            self.state = State.FINISHING
        self._events.append(ChunkReceived(index, plaintext, self._chunks.done))

    # ------------------------------------------------------------------ resume

    def _send_resume_hello(self) -> None:
        nonce = self._rng(_NONCE_LENGTH)
        if self.role == "send":
            self._stream_nonce = nonce
        self._send_ctrl(
            {
                "t": "resume_hello",
                "epoch": self._epoch,
                "nonce": b64u(nonce),
                "rx": self._rx_processed,
            }
        )
        self._awaiting_hello = True

    def _on_resume_hello(self, message: dict[str, Any]) -> None:
        peer_epoch = _int(message, "epoch", 0, _U32_MAX - 1)
        nonce = b64u_decode(message.get("nonce"), _NONCE_LENGTH, "resume_hello.nonce")
        rx = _int(message, "rx", -1, self._tx_counter - 1)
        if not self._awaiting_hello:
            # The peer resumed first: answer before anything else (module docstring, 11).
            self._send_resume_hello()
        self._awaiting_hello = False
        self._resync_owed = False
        self._rx_processed = self._opener.last if self._opener else -1
        self._epoch = max(self._epoch, peer_epoch) + 1
        if self.role == "recv":
            self._stream_nonce = nonce
        # Re-send what the peer may have missed, with new counters.
        missed = [message for counter, message in self._sent_important if counter > rx]
        self._sent_important = [(c, m) for c, m in self._sent_important if c <= rx]
        for lost in missed:
            self._send_ctrl(self._offer_message() if lost["t"] == "offer" else lost)
        offer = self.offer_info
        if offer is not None and self.state in (State.TRANSFER, State.FINISHING):
            self._data_key = self._keys.data_key(  # type: ignore[union-attr]
                offer.file_id, self._epoch, self._stream_nonce
            )
            if self.role == "send":
                self._await_ack = True
            else:
                self._restart_receiving()
        self._events.append(Resynced(self._epoch))

    def _restart_receiving(self) -> None:  # R after a resync
        offer = self.offer_info
        assert offer is not None
        start = self._received + 1
        if start < offer.chunks:
            self._chunks = ChunkOpener(
                self._data_key, offer.file_id, self._epoch, offer.size, next_index=start
            )
        self._acked = max(self._acked, self._received)
        self._send_ctrl({"t": "ack", "through": self._received, "window": self._window})

    # ------------------------------------------------------------------ endings

    def _end(self, state: State, mood: str) -> None:
        self.state = state
        self._out.append(_relay_text({"t": "bye", "mood": mood}))

    def _fail(self, error: E2EError) -> None:
        self._events.append(Failed(error))
        if self.state in _SESSION:
            # The keys are confirmed, so the sealed channel is ours to speak on: say why before
            # the bye (module docstring), or the peer only learns that we left. Only the kind
            # of failure: the details are for this side's user.
            integrity = isinstance(error, IntegrityError)
            reason = CANCEL_INTEGRITY if integrity else CANCEL_PROTOCOL
            self._send_ctrl({"t": "cancel", "reason": reason})
        self._end(State.FAILED, "scary" if isinstance(error, WrongCode) else "errory")
