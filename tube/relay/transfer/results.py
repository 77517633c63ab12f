"""What a transfer reports: its progress, the offer a receiver is asked to accept, and the
results :func:`~tube.relay.transfer.send_file` and :func:`~tube.relay.transfer.receive_file`
return."""

from __future__ import annotations

import dataclasses
from pathlib import Path

__all__ = ["IncomingOffer", "ReceiveResult", "SendResult", "TransferProgress"]


@dataclasses.dataclass(frozen=True)
class TransferProgress:
    """How far a transfer is, in bytes.

    Attributes:
        done: Bytes the receiver holds: acknowledged (sender) or written (receiver).
        total: The file's size.
        resumed_from: Bytes the receiver already had when this session started.
    """

    done: int
    total: int
    resumed_from: int


@dataclasses.dataclass(frozen=True)
class IncomingOffer:
    """What the receiver is asked to accept.

    Attributes:
        name: The sanitised name the file will be saved under (before " (1)" if it exists).
        offered_name: The name exactly as the sender stated it.
        size: Bytes.
        type: The media type the sender stated (informative only: never trusted).
        last_modified: The sender's modification time, milliseconds since 1970.
        resume_bytes: Bytes of this file already in the output folder from an earlier try.
    """

    name: str
    offered_name: str
    size: int
    type: str
    last_modified: int
    resume_bytes: int


@dataclasses.dataclass(frozen=True)
class SendResult:
    """A file delivered: the receiver wrote all of it and said ``done``.

    Attributes:
        code: The code the receiver used (``4821-ahead-zebra`` or ``4821.<secret>``).
        link: The link form (``--link``), else None.
        name: The file name offered.
        size: Bytes.
        chunks_sent: DATA frames sent in this session, resends after a resume included.
        resumed_from: Chunks the receiver already had (not sent).
        verifier: The six verification digits.
    """

    code: str
    link: str | None
    name: str
    size: int
    chunks_sent: int
    resumed_from: int
    verifier: str


@dataclasses.dataclass(frozen=True)
class ReceiveResult:
    """A file received whole, under its final name.

    Attributes:
        path: Where it was saved.
        offer: What the sender offered.
        chunks_received: DATA chunks received and written in this session.
        resumed_from: Chunks that were already on disk from an earlier session.
        verifier: The six verification digits.
    """

    path: Path
    offer: IncomingOffer
    chunks_received: int
    resumed_from: int
    verifier: str
