"""The relay's decisions, sans-I/O: connections, nameplates, pairs, timers and limits (TRP/1).

The adapter (:mod:`tube.relay.server`) owns sockets, tasks and the clock; this core owns every
decision. Inputs are method calls with the time passed in: :meth:`Relay.connect`,
:meth:`Relay.text` (a control message), :meth:`Relay.binary` (a peer frame's size: the core
never sees its bytes), :meth:`Relay.sent` (a forwarded frame left our hands),
:meth:`Relay.disconnected`, :meth:`Relay.allocate` (``POST /v1/nameplates``) and
:meth:`Relay.on_deadline`. Outputs are :data:`Action` values to carry out in order: a control
message to send, a connection to close with its code, a registry update.

Connection states (relay-design §5.3)::

    UPGRADED --hello--> HELLO_OK --wait--> WAITING ---+
                                 --claim-> CLAIMING --+--> PAIRED --(drop, resumable)--> gone
                                 --resume> RESUMING --+      ^                            |
                                                             +----- resume (new socket) --+

A pair is PAIRED while both sides are connected and DETACHED while a resumable pair waits
(``grace_s``) for a dropped side. Nameplates exist only from allocation until pairing or expiry:
pairing deletes them, so a nameplate is single use and a second claimant gets 4002. Nothing
lists nameplates, and the space is kept sparse (``space_factor`` times the nameplates in use).

Which message each state takes is the table :data:`ACCEPTS`; anything else closes with 4000.
"""

from __future__ import annotations

import base64
import binascii
import enum
import heapq
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .limits import Limits, RateLimiter

__all__ = [
    "ACCEPTS",
    "PROTOCOL_VERSION",
    "SUBPROTOCOL",
    "Action",
    "Allocation",
    "Close",
    "ConnState",
    "Forget",
    "PairState",
    "Refusal",
    "Relay",
    "Send",
    "TrackRid",
    "decode_id",
    "encode_id",
]

#: The WebSocket subprotocol of TRP/1.
SUBPROTOCOL = "tube.relay.v1"
#: The ``v`` of ``hello``.
PROTOCOL_VERSION = 1

# Close codes (relay-design §5.4).
NORMAL = 1000
GOING_AWAY = 1001
TOO_BIG = 1009
PROTOCOL_ERROR = 4000
UNSUPPORTED = 4001
NO_NAMEPLATE = 4002
CROWDED = 4003
RATE_LIMITED = 4004
NOBODY_CAME = 4005
PEER_GONE = 4006
LIMIT_EXCEEDED = 4007
STALLED = 4008
BUSY = 4009
RESUME_UNKNOWN = 4010

MOODS = frozenset({"happy", "lonely", "scary", "errory"})
ROLES = frozenset({"send", "recv"})

# The smallest and largest number of digits of a nameplate.
_MIN_DIGITS, _MAX_DIGITS = 4, 8


def encode_id(data: bytes) -> str:
    """A pair id or resume id as text: base64url without padding (22 characters)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_id(text: object) -> bytes | None:
    """The 16 bytes of a pair id or resume id, or None if ``text`` is not one."""
    if not isinstance(text, str) or len(text) != 22:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "==")
    except (binascii.Error, ValueError):
        return None
    # Only the canonical spelling: 22 characters carry 132 bits, so the last one has 4 unused.
    return data if len(data) == 16 and encode_id(data) == text else None


class ConnState(enum.Enum):
    """Where a relay connection is in TRP/1."""

    UPGRADED = "upgraded"  # the WebSocket is open; hello not yet received
    HELLO_OK = "hello_ok"  # hello received; waiting for wait / claim / resume
    WAITING = "waiting"  # a sender parked on its nameplate
    CLAIMING = "claiming"  # a receiver waiting for the nameplate's sender
    RESUMING = "resuming"  # back on a detached pair whose other side is away too
    PAIRED = "paired"  # binary frames flow to the peer
    CLOSED = "closed"  # the core closed it or it disconnected: no input is taken


class PairState(enum.Enum):
    """Where a pair is."""

    PAIRED = "paired"  # both sides connected
    DETACHED = "detached"  # a resumable pair missing one or both sides, within grace_s
    ENDING = "ending"  # a side said bye; the other gets bye_s for its own


#: The control messages each connection state takes (relay-design §5.2-5.3).
ACCEPTS: dict[ConnState, frozenset[str]] = {
    ConnState.UPGRADED: frozenset({"hello"}),
    ConnState.HELLO_OK: frozenset({"wait", "claim", "resume", "bye"}),
    ConnState.WAITING: frozenset({"bye"}),
    ConnState.CLAIMING: frozenset({"bye"}),
    ConnState.RESUMING: frozenset({"bye"}),
    ConnState.PAIRED: frozenset({"resumable", "bye"}),
    ConnState.CLOSED: frozenset(),
}


# ---------------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Send:
    """Send this control message (a JSON object) on connection ``cid``."""

    cid: int
    message: dict[str, Any]

    def text(self) -> str:
        """The message as the text frame to send."""
        return json.dumps(self.message, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Close:
    """Close connection ``cid`` with this code and reason (after the messages sent before)."""

    cid: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Forget:
    """A nameplate left the allocated state (paired, expired, abandoned): release it."""

    nameplate: str


@dataclass(frozen=True, slots=True)
class TrackRid:
    """A resume id became resumable (``grace`` set) or ended (``grace`` None)."""

    rid: bytes
    grace: float | None


Action = Send | Close | Forget | TrackRid


@dataclass(frozen=True, slots=True)
class Allocation:
    """A nameplate allocated by ``POST /v1/nameplates``."""

    nameplate: str
    expires_in: float


@dataclass(frozen=True, slots=True)
class Refusal:
    """An allocation refused: HTTP ``status`` (429, 503) with ``retry_after`` seconds."""

    status: int
    reason: str
    retry_after: float


# ---------------------------------------------------------------------------------- records


@dataclass(slots=True, eq=False)
class _Conn:
    cid: int
    ip: str
    nameplate: str | None  # from the URL: /v1/relay/<nameplate>
    state: ConnState = ConnState.UPGRADED
    role: str = ""
    pair: _Pair | None = None
    # Holds a transfer slot while it waits for its other side (one of pairs_per_ip of
    # its address); a pair holds its sides' slots once they are paired.
    counted: bool = False


@dataclass(slots=True, eq=False)
class _Nameplate:
    name: str
    ip: str
    expires: float
    sender: _Conn | None = None
    claimant: _Conn | None = None


@dataclass(slots=True, eq=False)
class _Pair:
    pair_id: bytes
    state: PairState = PairState.PAIRED
    sides: dict[str, _Conn | None] = field(default_factory=dict)
    ips: dict[str, str] = field(default_factory=dict)  # the address each role came from
    offered: dict[str, bytes] = field(default_factory=dict)  # resumable{rid} per role
    rid: bytes | None = None
    forwarded: int = 0
    # Per source role: when the frame now being forwarded was taken (None: nothing in flight).
    inflight: dict[str, float | None] = field(default_factory=dict)
    detached_at: float = 0.0
    # The addresses whose pairs_per_ip this pair counts against (each once: both sides from one
    # address are one transfer for it), from pairing to its end: a pair that drops and resumes
    # holds them throughout (and its place among max_pairs, as long as it is in Relay._pairs).
    slot_ips: list[str] = field(default_factory=list)
    stall_armed: bool = False


def _number(value: float) -> float | int:
    """Seconds as JSON shows them best: 60, not 60.0."""
    return int(value) if float(value).is_integer() else value


def _other(role: str) -> str:
    return "recv" if role == "send" else "send"


class _Timer(enum.Enum):
    HELLO = 1
    NAMEPLATE = 2
    STALL = 3
    LIFETIME = 4
    GRACE = 5
    BYE = 6


class Relay:
    """The relay's state machine for one instance.

    Args:
        limits: The limits and timeouts.
        rng: The randomness for nameplates and pair ids (tests pass a seeded
            ``random.Random``); by default ``random.SystemRandom()``.

    Concurrency contract: not thread-safe; one owner (the adapter's event loop) calls it.
    Every method that takes ``now`` expects the same monotonic clock, never decreasing.
    """

    def __init__(self, limits: Limits | None = None, *, rng: random.Random | None = None) -> None:
        self.limits = limits = limits or Limits()
        self._rng = rng or random.SystemRandom()
        self._conns: dict[int, _Conn] = {}
        self._nameplates: dict[str, _Nameplate] = {}
        self._pairs: dict[bytes, _Pair] = {}
        self._rids: dict[bytes, _Pair] = {}
        # Per client address: connections, and transfer slots (sides waiting for their other
        # side, and pairs: one per pair) in use.
        self._ip_conns: Counter[str] = Counter()
        self._ip_slots: Counter[str] = Counter()
        self._ip_outstanding: Counter[str] = Counter()
        keys = limits.tracked_addresses
        self._allocations = RateLimiter(limits.allocations_per_minute, 60.0, keys)
        self._claims = RateLimiter(limits.claims_per_minute, 60.0, keys)
        self._guesses = RateLimiter(limits.unknown_claims, limits.unknown_claims_window_s, keys)
        self._resumes = RateLimiter(limits.resumes_per_minute, 60.0, keys)
        self._blocked: dict[str, float] = {}
        self._timers: list[tuple[float, int, _Timer, Any]] = []
        self._seq = 0
        #: Counters for /metrics: closes by code, rate-limit hits by kind, bytes forwarded, ...
        self.closes: Counter[int] = Counter()
        self.rate_limited: Counter[str] = Counter()
        self.moods: Counter[str] = Counter()
        self.bytes_forwarded = 0
        self.allocated = 0
        self.paired = 0

    # ------------------------------------------------------------------ HTTP allocation

    def allocate(self, ip: str, now: float) -> Allocation | Refusal:
        """Allocate a fresh nameplate for a sender at ``ip`` (``POST /v1/nameplates``)."""
        limits = self.limits
        if self._ip_outstanding[ip] >= limits.outstanding_per_ip:
            self.rate_limited["outstanding"] += 1
            return Refusal(429, "too many codes waiting from this address", limits.wait_s / 10)
        wait = self._allocations.take(ip, now)
        if wait:
            self.rate_limited["allocation"] += 1
            return Refusal(429, "too many codes requested", wait)
        # Pairs, and nameplates (each becomes one pair; a side waiting for its other side sits
        # on one, so it is counted there).
        if len(self._pairs) + len(self._nameplates) >= limits.max_pairs:
            return Refusal(503, "the relay is busy", 30.0)
        name = self._draw_nameplate()
        if name is None:
            return Refusal(503, "the relay is busy", 30.0)
        self._nameplates[name] = _Nameplate(name, ip, now + limits.wait_s)
        self._ip_outstanding[ip] += 1
        self.allocated += 1
        self._arm(now + limits.wait_s, _Timer.NAMEPLATE, name)
        return Allocation(name, limits.wait_s)

    def _draw_nameplate(self) -> str | None:
        # The fewest digits whose space is space_factor times the nameplates in use (4 digits
        # while fewer than ~300 wait), so that a blind claim mostly misses.
        wanted = self.limits.space_factor * (len(self._nameplates) + 1)
        digits = _MIN_DIGITS
        while digits < _MAX_DIGITS and 9 * 10 ** (digits - 1) < wanted:
            digits += 1
        low, high = 10 ** (digits - 1), 10**digits - 1
        for _ in range(64):
            name = str(self._rng.randint(low, high))
            if name not in self._nameplates:
                return name
        return None

    def release_nameplate(self, name: str) -> None:
        """Drop an allocated nameplate that nobody uses (e.g. the registry refused it)."""
        nameplate = self._nameplates.get(name)
        if nameplate is not None and nameplate.sender is None and nameplate.claimant is None:
            self._drop_nameplate(nameplate)

    # ------------------------------------------------------------------ connections

    def connect(self, cid: int, ip: str, now: float, nameplate: str | None) -> list[Action]:
        """A WebSocket with subprotocol ``tube.relay.v1`` opened on ``/v1/relay[/nameplate]``."""
        limits = self.limits
        conn = self._conns[cid] = _Conn(cid, ip, nameplate)
        self._ip_conns[ip] += 1
        if len(self._conns) > limits.max_connections:
            return self._close(conn, BUSY, "the relay is busy", retry_after=30)
        if self._ip_conns[ip] > limits.connections_per_ip:
            self.rate_limited["connections"] += 1
            return self._close(conn, RATE_LIMITED, "too many connections", retry_after=60)
        self._arm(now + limits.hello_s, _Timer.HELLO, conn)
        return []

    def text(self, cid: int, text: str, now: float) -> list[Action]:
        """A control message arrived on connection ``cid``."""
        conn = self._conns.get(cid)
        if conn is None or conn.state is ConnState.CLOSED:
            return []
        if len(text) > self.limits.control or len(text.encode()) > self.limits.control:
            return self._close(conn, TOO_BIG, "control message too big")
        try:
            message = json.loads(text)
        except ValueError:
            return self._close(conn, PROTOCOL_ERROR, "control message is not JSON")
        kind = message.get("t") if isinstance(message, dict) else None
        if not isinstance(kind, str):
            return self._close(conn, PROTOCOL_ERROR, "control message without a type")
        if kind not in ACCEPTS[conn.state]:
            shown = kind[:32] if kind.isprintable() else "?"
            reason = f"unexpected {shown!r} in state {conn.state.value}"
            return self._close(conn, PROTOCOL_ERROR, reason)
        handler: Callable[[_Conn, dict[str, Any], float], list[Action]] = getattr(
            self, f"_on_{kind}"
        )
        return handler(conn, message, now)

    def binary(self, cid: int, size: int, now: float) -> tuple[int | None, list[Action]]:
        """A binary frame of ``size`` bytes arrived on ``cid``.

        Returns:
            The connection to forward it to (then call :meth:`sent` once it left our hands), or
            None to drop it (the pair is detached or ending); and the actions to carry out.
        """
        conn = self._conns.get(cid)
        if conn is None or conn.state is ConnState.CLOSED:
            return None, []
        pair = conn.pair
        if conn.state is not ConnState.PAIRED or pair is None:
            return None, self._close(conn, PROTOCOL_ERROR, "binary frame before pairing")
        if size > self.limits.frame:
            return None, self._close(conn, TOO_BIG, "frame too big")
        pair.forwarded += size
        if pair.forwarded > self.limits.max_bytes:
            return None, self._end_pair(pair, LIMIT_EXCEEDED, "transfer limit exceeded")
        peer = pair.sides.get(_other(conn.role))
        if pair.state is not PairState.PAIRED or peer is None:
            return None, []  # detached or ending: dropped both ways (relay-design §5.3)
        if pair.inflight.get(conn.role) is None:
            pair.inflight[conn.role] = now
            if not pair.stall_armed:
                pair.stall_armed = True
                self._arm(now + self.limits.idle_s, _Timer.STALL, pair)
        self.bytes_forwarded += size
        return peer.cid, []

    def sent(self, cid: int, now: float) -> None:
        """The frame that :meth:`binary` sent from ``cid`` left our hands (or was lost)."""
        conn = self._conns.get(cid)
        if conn is not None and conn.pair is not None:
            conn.pair.inflight[conn.role] = None

    def disconnected(self, cid: int, now: float) -> list[Action]:
        """Connection ``cid`` ended (whoever closed it); forget it."""
        conn = self._conns.pop(cid, None)
        if conn is None:
            return []
        self._ip_conns[conn.ip] -= 1
        if not self._ip_conns[conn.ip]:
            del self._ip_conns[conn.ip]
        actions: list[Action] = []
        if conn.state is not ConnState.CLOSED:
            actions = self._leave(conn, now, dropped=True)
        conn.state = ConnState.CLOSED
        return actions

    # ------------------------------------------------------------------ control messages

    def _on_hello(self, conn: _Conn, message: dict[str, Any], now: float) -> list[Action]:
        version = message.get("v")
        if version != PROTOCOL_VERSION or isinstance(version, bool):
            return self._close(conn, UNSUPPORTED, "unsupported version; this relay speaks v1")
        role = message.get("role")
        if role not in ROLES:
            return self._close(conn, PROTOCOL_ERROR, "hello needs role 'send' or 'recv'")
        conn.role = role
        conn.state = ConnState.HELLO_OK
        limits = self.limits
        welcome = {
            "t": "welcome",
            "v": PROTOCOL_VERSION,
            "limits": {
                "frame": limits.frame,
                "window_hint": limits.window_hint,
                "idle_s": _number(limits.idle_s),
                "wait_s": _number(limits.wait_s),
            },
            "pow": None,
        }
        return [Send(conn.cid, welcome)]

    def _on_wait(self, conn: _Conn, message: dict[str, Any], now: float) -> list[Action]:
        if conn.role != "send":
            return self._close(conn, PROTOCOL_ERROR, "only a sender waits")
        nameplate = self._nameplates.get(conn.nameplate or "")
        if nameplate is None:
            return self._close(conn, NO_NAMEPLATE, "no such nameplate (unknown, expired or used)")
        if nameplate.sender is not None:
            return self._close(conn, CROWDED, "this nameplate has a sender already")
        refused = self._take_slot(conn, nameplate.claimant)
        if refused:
            return refused
        nameplate.sender = conn
        conn.state = ConnState.WAITING
        if nameplate.claimant is not None:
            return self._pair(nameplate, now)
        return []

    def _on_claim(self, conn: _Conn, message: dict[str, Any], now: float) -> list[Action]:
        if conn.role != "recv":
            return self._close(conn, PROTOCOL_ERROR, "only a receiver claims")
        ip = conn.ip
        blocked_until = self._blocked.get(ip, 0.0)
        if blocked_until > now:
            self.rate_limited["blocked"] += 1
            return self._close(conn, RATE_LIMITED, "rate limited", retry_after=blocked_until - now)
        wait = self._claims.take(ip, now)
        if wait:
            self.rate_limited["claim"] += 1
            return self._close(conn, RATE_LIMITED, "rate limited", retry_after=wait)
        nameplate = self._nameplates.get(conn.nameplate or "")
        if nameplate is None:
            if self._guess(ip, now):
                retry = self.limits.block_s
                return self._close(conn, RATE_LIMITED, "rate limited", retry_after=retry)
            return self._close(conn, NO_NAMEPLATE, "no such nameplate (unknown, expired or used)")
        if nameplate.claimant is not None:
            return self._close(conn, CROWDED, "this nameplate is being claimed already")
        refused = self._take_slot(conn, nameplate.sender)
        if refused:
            return refused
        nameplate.claimant = conn
        conn.state = ConnState.CLAIMING
        if nameplate.sender is not None:
            return self._pair(nameplate, now)
        return []

    def _on_resume(self, conn: _Conn, message: dict[str, Any], now: float) -> list[Action]:
        rid = decode_id(message.get("rid"))
        role = message.get("role")
        if rid is None or role != conn.role:
            return self._close(conn, PROTOCOL_ERROR, "resume needs a rid and the hello's role")
        wait = self._resumes.take(rid, now)
        if wait:
            self.rate_limited["resume"] += 1
            return self._close(conn, RATE_LIMITED, "rate limited", retry_after=wait)
        pair = self._rids.get(rid)
        if pair is None or pair.state is PairState.ENDING:
            return self._close(conn, RESUME_UNKNOWN, "resume unknown or expired")
        if pair.sides.get(role) is not None:
            return self._close(conn, CROWDED, "that side of the pair is connected")
        pair.sides[role] = conn
        conn.pair = pair
        peer = pair.sides.get(_other(role))
        if peer is None:
            conn.state = ConnState.RESUMING
            return []
        conn.state = ConnState.PAIRED
        peer.state = ConnState.PAIRED
        pair.state = PairState.PAIRED
        pair.inflight.clear()
        return [
            Send(conn.cid, {"t": "paired", "pair_id": encode_id(pair.pair_id)}),
            Send(peer.cid, {"t": "peer", "state": "back"}),
        ]

    def _on_resumable(self, conn: _Conn, message: dict[str, Any], now: float) -> list[Action]:
        rid = decode_id(message.get("rid"))
        pair = conn.pair
        if rid is None or pair is None:
            return self._close(conn, PROTOCOL_ERROR, "resumable needs a rid")
        if pair.rid is not None:
            return []  # registered already: a repeat changes nothing
        pair.offered[conn.role] = rid
        if pair.offered.get(_other(conn.role)) == rid and rid not in self._rids:
            pair.rid = rid
            self._rids[rid] = pair
            return [TrackRid(rid, self.limits.grace_s)]
        return []

    def _on_bye(self, conn: _Conn, message: dict[str, Any], now: float) -> list[Action]:
        mood = message.get("mood")
        mood = mood if mood in MOODS else "errory"
        self.moods[mood] += 1
        pair = conn.pair
        if mood == "scary" and pair is not None:
            # A failed confirmation is a failed guess of the claimant's code (relay-design §5.5).
            claimant_ip = pair.ips.get("recv")
            if claimant_ip is not None and conn.role == "send":
                self._guess(claimant_ip, now)
        if pair is None or conn.state is not ConnState.PAIRED or pair.state is PairState.ENDING:
            return self._close(conn, NORMAL, "bye")  # not paired, or the second bye
        # The first bye: the pair ends; the other side gets bye_s for its own.
        actions: list[Action] = []
        pair.state = PairState.ENDING
        self._forget_rid(pair, actions)
        actions += self._close(conn, NORMAL, "bye")
        peer = pair.sides.get(_other(conn.role))
        if peer is not None and peer.state is not ConnState.CLOSED:
            actions.append(Send(peer.cid, {"t": "peer", "state": "gone"}))
            self._arm(now + self.limits.bye_s, _Timer.BYE, pair)
        return actions

    # ------------------------------------------------------------------ pairing and leaving

    def _take_slot(self, conn: _Conn, partner: _Conn | None) -> list[Action]:
        """A side arrives on a nameplate: a transfer slot, or its refusal.

        The first side takes one of its address's pairs_per_ip; ``partner``, the other side
        already there, makes this one complete the pair, which counts once against each address
        it comes from. max_pairs never refuses a side here: :meth:`allocate` gives a nameplate
        only while pairs and nameplates are fewer, so every nameplate has its place.
        """
        ip = conn.ip
        if partner is not None and partner.ip == ip:
            return []  # the partner's slot is the pair's, and this address counts it already
        if self._ip_slots[ip] >= self.limits.pairs_per_ip:
            self.rate_limited["pairs"] += 1
            return self._close(conn, RATE_LIMITED, "too many transfers at once", retry_after=60)
        self._ip_slots[ip] += 1
        conn.counted = partner is None  # a completing side's count is the pair's at once
        return []

    def _free_slot(self, conn: _Conn) -> None:
        """A side left before it was paired: free the slot it took."""
        if conn.counted:
            conn.counted = False
            self._release_ip(conn.ip)

    def _release_ip(self, ip: str) -> None:
        self._ip_slots[ip] -= 1
        if not self._ip_slots[ip]:
            del self._ip_slots[ip]

    def _remove_pair(self, pair: _Pair) -> None:
        """The pair is over: forget it, and free its slot (once, whoever calls again)."""
        if self._pairs.pop(pair.pair_id, None) is not None:
            for ip in pair.slot_ips:
                self._release_ip(ip)

    def _guess(self, ip: str, now: float) -> bool:
        """Count a failed guess by ``ip``; True if that blocks it now."""
        if self._guesses.take(ip, now):
            self.rate_limited["guessing"] += 1
            self._blocked[ip] = now + self.limits.block_s
            if len(self._blocked) > self.limits.tracked_addresses:
                for key in [k for k, until in self._blocked.items() if until <= now]:
                    del self._blocked[key]
            return True
        return False

    def _pair(self, nameplate: _Nameplate, now: float) -> list[Action]:
        sender, claimant = nameplate.sender, nameplate.claimant
        assert sender is not None and claimant is not None
        actions: list[Action] = []
        self._drop_nameplate(nameplate, actions)
        pair_id = self._rng.randbytes(16)
        while pair_id in self._pairs:
            pair_id = self._rng.randbytes(16)
        pair = _Pair(pair_id)
        pair.sides = {"send": sender, "recv": claimant}
        pair.ips = {"send": sender.ip, "recv": claimant.ip}
        # The sides' slots become the pair's (see _take_slot): one, counted per address.
        pair.slot_ips = [sender.ip] if sender.ip == claimant.ip else [sender.ip, claimant.ip]
        sender.counted = claimant.counted = False
        self._pairs[pair_id] = pair
        for conn in (sender, claimant):
            conn.pair = pair
            conn.state = ConnState.PAIRED
        self.paired += 1
        self._arm(now + self.limits.lifetime_s, _Timer.LIFETIME, pair)
        paired = {"t": "paired", "pair_id": encode_id(pair_id)}
        actions += [Send(sender.cid, paired), Send(claimant.cid, paired)]
        return actions

    def _drop_nameplate(self, nameplate: _Nameplate, actions: list[Action] | None = None) -> None:
        if self._nameplates.pop(nameplate.name, None) is None:
            return
        self._ip_outstanding[nameplate.ip] -= 1
        if not self._ip_outstanding[nameplate.ip]:
            del self._ip_outstanding[nameplate.ip]
        if actions is not None:
            actions.append(Forget(nameplate.name))

    def _leave(self, conn: _Conn, now: float, *, dropped: bool) -> list[Action]:
        """``conn`` is going (closed by us, or its socket ended): update what it was part of.

        ``dropped``: its socket ended without our deciding it (the pair may be resumed).
        """
        actions: list[Action] = []
        state = conn.state
        conn.state = ConnState.CLOSED
        pair = conn.pair
        # Its socket ended while paired: the pair waits for this side to resume.
        resumable = (
            dropped
            and pair is not None
            and pair.rid is not None
            and pair.state is not PairState.ENDING
            and state in (ConnState.PAIRED, ConnState.RESUMING)
        )
        self._free_slot(conn)  # a paired side holds none: its pair does, until it ends
        if state in (ConnState.WAITING, ConnState.CLAIMING):
            nameplate = self._nameplates.get(conn.nameplate or "")
            if nameplate is None:
                return actions
            if state is ConnState.CLAIMING:
                nameplate.claimant = None
                return actions
            # The sender left before anyone came: the code is dead (single use).
            nameplate.sender = None
            claimant = nameplate.claimant
            self._drop_nameplate(nameplate, actions)
            if claimant is not None:
                actions += self._close(claimant, PEER_GONE, "the sender left")
            return actions
        if pair is None or state not in (ConnState.PAIRED, ConnState.RESUMING):
            return actions
        role = conn.role
        if pair.sides.get(role) is conn:
            pair.sides[role] = None
        pair.inflight[role] = None
        peer = pair.sides.get(_other(role))
        if pair.state is PairState.ENDING:
            if peer is None:
                self._remove_pair(pair)
            return actions
        if resumable:
            if pair.state is PairState.PAIRED:
                pair.state = PairState.DETACHED
                pair.detached_at = now
                self._arm(now + self.limits.grace_s, _Timer.GRACE, pair)
            if peer is not None and peer.state is ConnState.PAIRED:
                actions.append(Send(peer.cid, {"t": "peer", "state": "lost"}))
            return actions
        # Not resumable (or closed for a fault): the survivor has lost its peer for good.
        self._remove_pair(pair)
        self._forget_rid(pair, actions)
        if peer is not None and peer.state is not ConnState.CLOSED:
            actions += self._close(peer, PEER_GONE, "the peer left")
        return actions

    def _forget_rid(self, pair: _Pair, actions: list[Action]) -> None:
        rid = pair.rid
        if rid is not None and self._rids.get(rid) is pair:
            del self._rids[rid]
            actions.append(TrackRid(rid, None))

    def _close(
        self, conn: _Conn, code: int, reason: str, *, retry_after: float | None = None
    ) -> list[Action]:
        """Close ``conn`` (an ``error`` message first for the relay's own codes)."""
        if conn.state is ConnState.CLOSED:
            return []
        actions: list[Action] = []
        if code >= 4000:
            error: dict[str, Any] = {"t": "error", "code": code, "reason": reason}
            if retry_after is not None:
                error["retry_after"] = max(1, round(retry_after))
            actions.append(Send(conn.cid, error))
        actions.append(Close(conn.cid, code, reason))
        self.closes[code] += 1
        actions += self._leave(conn, 0.0, dropped=False)
        return actions

    def _end_pair(self, pair: _Pair, code: int, reason: str) -> list[Action]:
        actions: list[Action] = []
        self._forget_rid(pair, actions)
        self._remove_pair(pair)
        pair.state = PairState.ENDING  # so that closing one side does not tell the other "gone"
        for conn in list(pair.sides.values()):
            if conn is not None:
                actions += self._close(conn, code, reason)
        return actions

    # ------------------------------------------------------------------ timers

    def _arm(self, when: float, kind: _Timer, key: Any) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, kind, key))

    def next_deadline(self) -> float | None:
        """When :meth:`on_deadline` should be called next, or None if no timer is set."""
        return self._timers[0][0] if self._timers else None

    def on_deadline(self, now: float) -> list[Action]:
        """Run every timer due at ``now``."""
        actions: list[Action] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, kind, key = heapq.heappop(timers)
            actions += self._fire(kind, key, now)
        return actions

    def _fire(self, kind: _Timer, key: Any, now: float) -> list[Action]:
        # Timers are never cancelled: each checks, when it fires, that it still applies.
        limits = self.limits
        if kind is _Timer.HELLO:
            conn: _Conn = key
            if conn.state in (ConnState.UPGRADED, ConnState.HELLO_OK):
                return self._close(
                    conn, PROTOCOL_ERROR, f"nothing to do after {_number(limits.hello_s)} s"
                )
            return []
        if kind is _Timer.NAMEPLATE:
            nameplate = self._nameplates.get(key)
            if nameplate is None or nameplate.expires > now:
                return []
            actions: list[Action] = []
            self._drop_nameplate(nameplate, actions)
            for side in (nameplate.sender, nameplate.claimant):
                if side is not None:
                    actions += self._close(side, NOBODY_CAME, "nobody came")
            return actions
        pair: _Pair = key
        if self._pairs.get(pair.pair_id) is not pair:
            return []
        if kind is _Timer.STALL:
            pair.stall_armed = False
            started = [t for t in pair.inflight.values() if t is not None]
            if not started or pair.state is not PairState.PAIRED:
                return []
            oldest = min(started)
            if oldest + limits.idle_s <= now:
                return self._end_pair(pair, STALLED, "stalled: the receiver is not reading")
            pair.stall_armed = True
            self._arm(oldest + limits.idle_s, _Timer.STALL, pair)
            return []
        if kind is _Timer.LIFETIME:
            return self._end_pair(pair, LIMIT_EXCEEDED, "transfer took too long")
        if kind is _Timer.GRACE:
            if pair.state is not PairState.DETACHED or pair.detached_at + limits.grace_s > now:
                return []
            return self._end_pair(pair, PEER_GONE, "the peer did not come back")
        # _Timer.BYE: the other side never said bye.
        if pair.state is PairState.ENDING:
            return self._end_pair(pair, PEER_GONE, "the peer left")
        return []

    # ------------------------------------------------------------------ inspection

    def knows_nameplate(self, name: str) -> bool:
        """True while ``name`` is allocated here (for a registry's redirect decision)."""
        return name in self._nameplates

    def knows_rid(self, rid: bytes) -> bool:
        """True while a pair resumable with ``rid`` lives here (for the redirect decision)."""
        return rid in self._rids

    def peer_of(self, cid: int) -> int | None:
        """The connection ``cid`` forwards to now, or None."""
        conn = self._conns.get(cid)
        pair = conn.pair if conn is not None else None
        if pair is None or pair.state is not PairState.PAIRED:
            return None
        peer = pair.sides.get(_other(conn.role)) if conn is not None else None
        return peer.cid if peer is not None else None

    def state_of(self, cid: int) -> ConnState | None:
        """The state of connection ``cid``, or None if unknown."""
        conn = self._conns.get(cid)
        return conn.state if conn is not None else None

    def stats(self) -> dict[str, Any]:
        """Aggregates for /metrics: never a nameplate, an address or an id."""
        pairs = Counter(pair.state.value for pair in self._pairs.values())
        connections = Counter(conn.state.value for conn in self._conns.values())
        return {
            "nameplates": len(self._nameplates),
            "pairs": {state.value: pairs.get(state.value, 0) for state in PairState},
            "connections": {state.value: connections.get(state.value, 0) for state in ConnState},
            "bytes_forwarded": self.bytes_forwarded,
            "closes": dict(self.closes),
            "rate_limited": dict(self.rate_limited),
            "moods": dict(self.moods),
            "allocated": self.allocated,
            "paired": self.paired,
        }
