"""A relay that attacks its own users (test-only): :class:`HostileRelay` and :class:`SpyCore`.

The relay operator of design §1's threat model reads and logs every byte; drops, reorders,
replays, injects or truncates frames; runs its own clients; pairs anyone with anyone; chooses
nameplates and pair ids. Production code has no test branch for any of it: these classes
subclass the real core and the real adapter and change only their public seams.

* :class:`SpyCore`, a :class:`~tube.relay.core.Relay`, learns who is who (the nameplate from
  the URL, the role from ``hello``, a confirmed key exchange from ``resumable``), keeps every
  control message it receives, and can **divert** the next connection to a used nameplate onto
  another one: the way to pair an honest receiver with the relay's own sender while the honest
  sender is paired with the relay's own receiver.
* :class:`HostileRelay`, a :class:`~tube.relay.server.RelayServer`, keeps every binary frame
  it receives (:attr:`HostileRelay.received`) and every control message it sends; rewrites the
  ``pair_id`` of ``paired`` per side (:attr:`HostileRelay.pair_id_for`); crosses the streams
  of two pairs (:attr:`HostileRelay.splice`); and hands every frame to a :data:`Tamper` function
  that decides what is delivered instead (nothing, a changed frame, several, held frames) and
  may hang up on the destination.

Frames keep their real path: client socket, the adapter's reading task, the core's decision,
:meth:`HostileRelay.forward`, and the adapter's own :meth:`RelayServer.forward` to the peer.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from tube.relay.core import Action, Relay
from tube.relay.e2e.framing import DATA
from tube.relay.limits import Limits
from tube.relay.server import RelayConfig, RelayServer
from tube.websocket import aio

__all__ = [
    "Endpoint",
    "Hop",
    "HostileRelay",
    "Splice",
    "SpyCore",
    "Tamper",
    "honest",
    "on_sender_data",
]


class Endpoint(NamedTuple):
    """One side of a pair as the relay sees it: the nameplate it came for and its role."""

    nameplate: str | None
    role: str | None


@dataclass
class Hop:
    """One binary frame the relay received and is about to forward.

    Attributes:
        source: Who sent it.
        frame: Its bytes, as received.
        hang_up: Set by a :data:`Tamper` function: close the destination (1000, a clean close
            that looks like a normal end) once what it returned is delivered.
    """

    source: Endpoint
    frame: bytes
    hang_up: bool = False

    @property
    def kind(self) -> int | None:
        """The E2E message type (the first byte), None for an empty frame."""
        return self.frame[0] if self.frame else None

    @property
    def index(self) -> int | None:
        """For a DATA frame, the chunk index its header states in clear; else None."""
        if self.kind != DATA or len(self.frame) < 9:
            return None
        return int.from_bytes(self.frame[1:9], "big")


#: What the relay delivers in place of a :class:`Hop`'s frame, in order (empty: dropped).
Tamper = Callable[[Hop], list[bytes]]


def honest(hop: Hop) -> list[bytes]:
    """The frame as received, and nothing else."""
    return [hop.frame]


def on_sender_data(rewrite: Tamper) -> Tamper:
    """A :data:`Tamper` that applies ``rewrite`` to the sender's DATA frames only.

    Everything else (key exchange, sealed control both ways) is forwarded untouched, so a
    failure can only come from what ``rewrite`` did to the stream.
    """

    def tamper(hop: Hop) -> list[bytes]:
        if hop.source.role == "send" and hop.index is not None:
            return rewrite(hop)
        return [hop.frame]

    return tamper


@dataclass(frozen=True)
class Splice:
    """Two pairs whose streams the relay crosses.

    Frames from the sender of one pair go to the receiver of the other, and back.

    Attributes:
        nameplates: The two pairs' nameplates.
        after_confirmation: Cross only the frames each side sends after its key exchange was
            confirmed (its ``resumable``), and hold the first of them until all four sides are
            confirmed; else cross every frame from pairing on.
    """

    nameplates: tuple[str, str]
    after_confirmation: bool = False

    def crossed(self, endpoint: Endpoint) -> Endpoint:
        """Where the relay sends what ``endpoint`` sends."""
        first, second = self.nameplates
        nameplate = second if endpoint.nameplate == first else first
        return Endpoint(nameplate, "recv" if endpoint.role == "send" else "send")

    def endpoints(self) -> Iterator[Endpoint]:
        """The four sides."""
        for nameplate in self.nameplates:
            yield Endpoint(nameplate, "send")
            yield Endpoint(nameplate, "recv")


class SpyCore(Relay):
    """The real sans-I/O core, watched, and with one hostile decision: :attr:`divert`.

    Attributes:
        endpoints: Connection id -> who it is (filled at connect and hello).
        texts: Every control message received, with its sender.
        confirmed: Per endpoint, set once it sent ``resumable`` (its keys are confirmed).
        divert: One-shot: the next connection to nameplate ``key`` *after* it was paired (used)
            is treated as coming for nameplate ``value``.

    Concurrency contract: as the core's, on the relay's event loop.
    """

    def __init__(self, limits: Limits) -> None:
        super().__init__(limits)
        self.endpoints: dict[int, Endpoint] = {}
        self.texts: list[tuple[Endpoint, str]] = []
        self.confirmed: defaultdict[Endpoint, asyncio.Event] = defaultdict(asyncio.Event)
        self.divert: dict[str, str] = {}

    def endpoint(self, cid: int) -> Endpoint:
        """Who connection ``cid`` is (both fields None if unknown)."""
        return self.endpoints.get(cid, Endpoint(None, None))

    def connect(self, cid: int, ip: str, now: float, nameplate: str | None) -> list[Action]:
        """Record the connection; divert it if its nameplate is used and a divert is set."""
        # Only once the nameplate is used: before that, the relay's own client claims it.
        if nameplate in self.divert and not self.knows_nameplate(nameplate):
            nameplate = self.divert.pop(nameplate)
        self.endpoints[cid] = Endpoint(nameplate, None)
        return super().connect(cid, ip, now, nameplate)

    def text(self, cid: int, text: str, now: float) -> list[Action]:
        """Record the control message and what it tells about its sender; then decide."""
        endpoint = self.endpoint(cid)
        self.texts.append((endpoint, text))
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if isinstance(message, dict):
            kind, role = message.get("t"), message.get("role")
            if kind == "hello" and isinstance(role, str):
                self.endpoints[cid] = Endpoint(endpoint.nameplate, role)
            elif kind == "resumable":
                self.confirmed[endpoint].set()
        return super().text(cid, text, now)


class HostileRelay(RelayServer):
    """A real relay on 127.0.0.1 (port 0) whose operator attacks; see the module docstring.

    Args:
        limits: The relay's limits (tests shorten ``bye_s``).

    Attributes:
        spy: The :class:`SpyCore`.
        received: Every binary frame received from any client, both ways, in arrival order.
        sent_controls: Every control message sent (after rewriting), with its addressee.
        tamper: Decides what is delivered for each frame (default :func:`honest`).
        pair_id_for: Maps (addressee, pair_id) to the pair_id ``paired`` carries.
        splice: Two pairs whose streams are crossed, or None.

    Concurrency contract: asyncio only, on the loop that started it; set the attributes
    before the connections they concern arrive.
    """

    def __init__(self, limits: Limits | None = None) -> None:
        limits = limits or Limits()
        self.spy = SpyCore(limits)
        super().__init__(RelayConfig(host="127.0.0.1", port=0, limits=limits), core=self.spy)
        self.received: list[Hop] = []
        self.sent_controls: list[tuple[Endpoint, dict[str, Any]]] = []
        self.tamper: Tamper = honest
        self.pair_id_for: Callable[[Endpoint, str], str] = lambda _endpoint, pair_id: pair_id
        self.splice: Splice | None = None
        self._paired: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        # The connection of each endpoint, learnt from the destinations the adapter passes to
        # forward(): the hooks give no other way to reach a connection by who it is.
        self._connections: dict[Endpoint, asyncio.Future[aio.Connection]] = {}
        # Reading tasks held in forward() (a splice waiting for its other pair): cancelled on
        # close, so a test that fails half-way does not wait for the server's give-up time.
        self._holding: set[asyncio.Task[Any]] = set()

    async def wait_paired(self, nameplate: str) -> None:
        """Return once the relay sent ``paired`` for a pair on ``nameplate``."""
        await self._paired[nameplate].wait()

    async def close(self) -> None:
        """Release the reading tasks held in :meth:`forward`, then drain as the relay does."""
        for task in self._holding:
            task.cancel()
        await super().close()

    # ------------------------------------------------------------------ the hooks

    def outgoing(self, cid: int, message: dict[str, Any]) -> dict[str, Any]:
        """Record every control message sent; rewrite ``paired`` with :attr:`pair_id_for`."""
        endpoint = self.spy.endpoint(cid)
        if message.get("t") == "paired":
            message = {**message, "pair_id": self.pair_id_for(endpoint, message["pair_id"])}
            if endpoint.nameplate is not None:
                self._paired[endpoint.nameplate].set()
        self.sent_controls.append((endpoint, message))
        return super().outgoing(cid, message)

    async def forward(self, source: int, destination: aio.Connection, frame: bytes) -> None:
        """Record the frame, route it (:attr:`splice`), deliver what :attr:`tamper` says."""
        hop = Hop(self.spy.endpoint(source), frame)
        self.received.append(hop)
        target = self.spy.peer_of(source)
        if target is not None:
            known = self._connection(self.spy.endpoint(target))
            if not known.done():
                known.set_result(destination)
        destination = await self._route(hop, destination)
        for item in self.tamper(hop):
            await super().forward(source, destination, item)
        if hop.hang_up:
            await destination.close(1000)

    # ------------------------------------------------------------------ routing

    def _connection(self, endpoint: Endpoint) -> asyncio.Future[aio.Connection]:
        future = self._connections.get(endpoint)
        if future is None:
            future = self._connections[endpoint] = asyncio.get_running_loop().create_future()
        return future

    async def _route(self, hop: Hop, destination: aio.Connection) -> aio.Connection:
        """The connection ``hop`` goes to: its pair's peer, or the crossed pair's."""
        splice = self.splice
        if splice is None or hop.source.nameplate not in splice.nameplates:
            return destination
        task = asyncio.current_task()
        assert task is not None
        self._holding.add(task)
        try:
            if splice.after_confirmation:
                if not self.spy.confirmed[hop.source].is_set():
                    return destination  # the key exchange passes untouched
                for endpoint in splice.endpoints():
                    await self.spy.confirmed[endpoint].wait()
            # Known as soon as the crossed side's own peer sent it anything: every side sends
            # from pairing on (S its COMMIT, R its CPACE once it has a COMMIT), so no deadlock.
            return await self._connection(splice.crossed(hop.source))
        finally:
            self._holding.discard(task)
