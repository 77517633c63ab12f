"""Two :class:`~tube.relay.e2e.peer.Peer` objects wired to each other in memory (no relay).

:class:`Link` carries what each side queues to the other, one frame at a time, and lets a test
drop, tamper with or hold frames; :func:`run_transfer` drives a whole transfer as the CLI does
(send while the credit window allows, write each chunk and acknowledge it, complete at the end).
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tube.relay.e2e.peer import (
    ChunkReceived,
    Event,
    Failed,
    OfferReceived,
    Peer,
)

PAIR_ID = bytes(range(16))
FILE_ID = bytes(range(100, 116))


@dataclass
class Side:
    """One peer, with everything it emitted so far."""

    peer: Peer
    events: list[Event] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)  # every binary frame it produced
    inbox: deque[bytes] = field(default_factory=deque)  # frames on their way to it


class Link:
    """S and R with the frames in flight between them."""

    def __init__(self, s_password: bytes = b"4821-ahead-zebra", r_password: bytes | None = None):
        self.s = Side(Peer("send", s_password))
        self.r = Side(Peer("recv", r_password if r_password is not None else s_password))
        #: Called on each frame before delivery; returns the frame to deliver or None to drop.
        self.filter: Callable[[Side, bytes], bytes | None] = lambda _to, frame: frame

    def other(self, side: Side) -> Side:
        return self.r if side is self.s else self.s

    def collect(self, side: Side) -> None:
        """Move what ``side`` queued into the other's inbox; keep its events and texts."""
        for item in side.peer.data_to_send():
            if isinstance(item, str):
                side.texts.append(item)
            else:
                side.sent.append(item)
                self.other(side).inbox.append(item)
        side.events.extend(side.peer.events())

    def step(self) -> bool:
        """Deliver one frame (S's inbox first); False when nothing was in flight."""
        self.collect(self.s)
        self.collect(self.r)
        for side in (self.s, self.r):
            if side.inbox:
                frame = self.filter(side, side.inbox.popleft())
                if frame is not None:
                    side.peer.receive(frame)
                self.collect(side)
                return True
        return False

    def pair(self) -> None:
        self.s.peer.paired(PAIR_ID)
        self.r.peer.paired(PAIR_ID)
        self.pump()

    def pump(self, driver: Callable[[], None] | None = None) -> None:
        """Deliver until quiet, calling ``driver`` (the application) between frames."""
        while True:
            if driver is not None:
                driver()
            if not self.step():
                if driver is None:
                    return
                driver()
                self.collect(self.s)
                self.collect(self.r)
                if not self.s.inbox and not self.r.inbox:
                    return


class App:
    """What the CLI does around the peers: read/send chunks, write/ack, complete."""

    def __init__(self, link: Link, data: bytes, *, resume_from: int = 0) -> None:
        self.link = link
        self.data = data
        self.resume_from = resume_from
        self.output = bytearray(data[: resume_from * 262144]) if resume_from else bytearray()
        self.seen_events = 0
        self.sent_indexes: list[int] = []

    def drive(self) -> None:
        s, r = self.link.s.peer, self.link.r.peer
        self.link.collect(self.link.r)
        for event in self.link.r.events[self.seen_events :]:
            self.seen_events += 1
            if r.is_finished:
                continue
            if isinstance(event, OfferReceived):
                r.accept_offer(self.resume_from)
                if r.state.value == "finishing":
                    r.complete()
            elif isinstance(event, ChunkReceived):
                self.output += event.plaintext
                r.chunk_written(event.index)
                if event.final:
                    r.complete()
        while s.can_send_chunk():
            index = s.next_chunk_wanted()
            s.send_chunk(index, self.data[index * 262144 : (index + 1) * 262144])
            self.sent_indexes.append(index)


def offer(link: Link, data: bytes, name: str = "file.bin") -> None:
    link.s.peer.offer(
        file_id=FILE_ID,
        name=name,
        size=len(data),
        type="application/octet-stream",
        last_modified=1_700_000_000_000,
    )


def run_transfer(
    data: bytes, *, resume_from: int = 0, link: Link | None = None
) -> tuple[Link, App]:
    link = link or Link()
    link.pair()
    offer(link, data)
    app = App(link, data, resume_from=resume_from)
    link.pump(app.drive)
    return link, app


def sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def random_bytes(size: int, seed: int = 1) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "big")).digest(size) if size else b""


def failed(side: Side) -> list[Failed]:
    return [event for event in side.events if isinstance(event, Failed)]


__all__ = [
    "FILE_ID",
    "PAIR_ID",
    "App",
    "Link",
    "Side",
    "failed",
    "offer",
    "os",
    "random_bytes",
    "run_transfer",
    "sha",
]
