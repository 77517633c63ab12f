"""``python -m tube send FILE`` and ``python -m tube receive CODE``: the command-line peer.

::

    $ python -m tube send report.pdf            # stdout, first line: the code
    4821-ahead-zebra
    $ python -m tube receive 4821-ahead-zebra   # shows name, size and type; asks y/N

Output contract, for scripts: ``send`` prints the code as the first line of stdout (with
``--link``, the link as the second line) and nothing else there; ``receive`` prints the saved
file's path as its only stdout line, once the file is complete. Everything else (questions,
progress, errors) goes to stderr: a progress line rewritten in place on a terminal, a line every
10 % otherwise.

Exit status: 0 only once the transfer is complete (``send``: the receiver confirmed the whole
file; ``receive``: the file is verified, durable and under its final name); 1 the transfer
failed (stderr says why); 2 bad usage (a code with a typo, a missing file) or the
``relay-cli`` extra missing; 130 interrupted (Ctrl-C), after telling the other side.

The relay is ``--relay URL``, else the host of a pasted link, else ``$TUBE_RELAY``, else
``http://127.0.0.1:8080``. Needs ``cryptography`` (``pip install 'tube-websocket[relay-cli]'``),
imported only here, inside :func:`main`, so that its absence is a one-line message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .transfer import IncomingOffer, TransferError, TransferProgress

__all__ = ["main"]

_DEFAULT_RELAY = "http://127.0.0.1:8080"  # as transfer.DEFAULT_RELAY, without importing it
_MISSING_EXTRA = "needs the cryptography package: pip install 'tube-websocket[relay-cli]'"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tube",
        description="Send a file end-to-end encrypted through a Tube relay, or receive one.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    relay_help = f"the relay (default: $TUBE_RELAY, else {_DEFAULT_RELAY})"
    send = commands.add_parser("send", help="send a file; prints the code to give the receiver")
    send.add_argument("file", help="the file to send")
    send.add_argument("--relay", metavar="URL", help=relay_help)
    send.add_argument(
        "--words",
        type=int,
        default=2,
        choices=range(2, 9),
        metavar="N",
        help="words in the code, 2 to 8 (default 2: one chance in 1,679,616 per guess)",
    )
    send.add_argument(
        "--link", action="store_true", help="also print a link (its 128-bit secret is the code)"
    )
    send.add_argument(
        "--verify",
        action="store_true",
        help="show six verification digits and ask to compare them with the receiver's",
    )
    receive = commands.add_parser("receive", help="receive the file sent under CODE")
    receive.add_argument("code", help="the code (4821-ahead-zebra) or the link")
    receive.add_argument("--relay", metavar="URL", help=relay_help)
    receive.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        default=".",
        help="folder to save into, made if missing (default: .)",
    )
    receive.add_argument("--yes", "-y", action="store_true", help="accept without asking")
    receive.add_argument(
        "--verify", action="store_true", help="show the verification digits before accepting"
    )
    return parser


def main(argv: Sequence[str]) -> int:
    """Run ``send`` or ``receive`` (``argv[0]``) with its arguments; return the exit status."""
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as stop:  # --help, or a usage error (already printed)
        return stop.code if isinstance(stop.code, int) else 2
    ui = _Ui(sys.stderr, f"python -m tube {args.command}")
    try:
        import cryptography  # noqa: F401  # the optional extra: checked before anything else

        from . import transfer
    except ImportError:
        ui.line(f"{ui.prog}: {_MISSING_EXTRA}")
        return 2
    try:
        if args.command == "send":
            return asyncio.run(_send(args, ui))
        return asyncio.run(_receive(args, ui))
    except (KeyboardInterrupt, asyncio.CancelledError):
        ui.end_progress()
        ui.line(f"{ui.prog}: interrupted")
        return 130
    except transfer.TransferError as error:
        ui.end_progress()
        ui.line(f"{ui.prog}: {error}")
        advice = _advice(args.command, error)
        if advice:
            ui.line(advice)
        return 1
    except _UsageError as error:
        ui.line(f"{ui.prog}: {error}")
        return 2
    except OSError as error:
        ui.end_progress()
        ui.line(f"{ui.prog}: {error}")
        return 1


class _UsageError(Exception):
    """Bad arguments found before connecting (exit status 2)."""


def _relay(args: argparse.Namespace, link_origin: str | None = None) -> str:
    return args.relay or link_origin or os.environ.get("TUBE_RELAY") or _DEFAULT_RELAY


def _advice(command: str, error: TransferError) -> str:
    from .transfer import ResumeFailed, WrongCodeError

    if isinstance(error, ResumeFailed):
        if command == "send":
            return (
                "Run the same send again for a new code: the receiver continues where it stopped."
            )
        return (
            "Ask the sender to send again, then receive the new code into the same folder: "
            "the download continues where it stopped."
        )
    if isinstance(error, WrongCodeError) and command == "send":
        return "That code is used up: run send again for a new one."
    return ""


async def _send(args: argparse.Namespace, ui: _Ui) -> int:
    from .transfer import relay_urls, send_file

    path = Path(args.file)
    if not path.is_file():
        raise _UsageError(f"not a file: {path}")
    relay = _relay(args)
    try:
        relay_urls(relay)
    except ValueError as error:
        raise _UsageError(str(error)) from None
    size = path.stat().st_size
    started = time.monotonic()

    def on_code(code: str, link: str | None) -> None:
        # stdout carries the code alone, first, for scripts.
        print(code, flush=True)  # noqa: T201
        if link is not None:
            print(link, flush=True)  # noqa: T201
        ui.line(f"Sending {_printable(path.name)} ({_size(size)}). On the other machine, run:")
        ui.line(f"  python -m tube receive {code}")

    async def on_verified(verifier: str) -> bool:
        ui.line(f"Verification digits: {verifier[:3]} {verifier[3:]}")
        return await ui.ask("Does the receiver show the same digits?")

    def on_progress(progress: TransferProgress) -> None:
        ui.progress(progress, "delivered")

    result = await send_file(
        relay,
        path,
        words=args.words,
        link=args.link,
        on_code=on_code,
        on_verified=on_verified if args.verify else None,
        on_progress=on_progress,
        on_notice=ui.notice,
    )
    ui.end_progress()
    elapsed = time.monotonic() - started
    ui.line(f"Delivered {_printable(result.name)} ({_size(result.size)}) in {elapsed:.1f} s.")
    return 0


async def _receive(args: argparse.Namespace, ui: _Ui) -> int:
    from .codes import BadCode, parse_code
    from .transfer import receive_file, relay_urls

    try:
        code = parse_code(args.code)
    except BadCode as error:
        raise _UsageError(str(error)) from None
    directory = Path(args.output)
    if directory.exists() and not directory.is_dir():
        raise _UsageError(f"not a folder: {directory}")
    try:  # like a browser's download folder: made when it is missing
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _UsageError(f"cannot make the folder {directory}: {error.strerror}") from None
    relay = _relay(args, _link_origin(args.code))
    try:
        relay_urls(relay)
    except ValueError as error:
        raise _UsageError(str(error)) from None
    verifier = ""

    def on_verified(digits: str) -> None:
        nonlocal verifier
        verifier = digits
        if args.verify:
            # Shown at once: the sender compares before it even makes its offer.
            ui.line(f"Verification digits: {digits[:3]} {digits[3:]}")

    async def accept(offer: IncomingOffer) -> bool:
        ui.line(f"Incoming file: {offer.name} ({_size(offer.size)}, {_printable(offer.type)})")
        if offer.offered_name != offer.name:
            ui.line(f"  sent as {_printable(offer.offered_name)!r}; saved under a safe name")
        if offer.resume_bytes:
            ui.line(
                f"  continues a partial download: {_size(offer.resume_bytes)} "
                f"of {_size(offer.size)} already here"
            )
        if args.yes:
            return True
        if args.verify:
            digits = f"{verifier[:3]} {verifier[3:]}"
            return await ui.ask(f"Does the sender show {digits} too, and do you accept the file?")
        return await ui.ask("Accept?")

    def on_progress(progress: TransferProgress) -> None:
        ui.progress(progress, "received")

    try:
        result = await receive_file(
            relay,
            code,
            directory,
            accept=accept,
            on_verified=on_verified,
            on_progress=on_progress,
            on_notice=ui.notice,
        )
    except OSError as error:
        raise OSError(f"cannot write to {directory}: {error}") from error
    ui.end_progress()
    print(result.path, flush=True)  # noqa: T201
    ui.line(f"Saved {_printable(str(result.path))} ({_size(result.offer.size)}).")
    return 0


def _link_origin(code: str) -> str | None:
    """The relay a pasted link points at (``https://host/#4821.<secret>``), if it is one."""
    text = code.strip()
    if "://" not in text:
        return None
    parts = urllib.parse.urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc}{parts.path.rstrip('/')}"


def _printable(text: str) -> str:
    """``text`` with anything that could drive the terminal (escapes, controls) made visible:
    names and types come from the sender."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


class _Ui:
    """stderr: messages, questions and the progress display."""

    def __init__(self, stream: TextIO, prog: str) -> None:
        self.stream = stream
        self.prog = prog
        self.tty = stream.isatty()
        self._drawn = False  # a progress line without its newline is on the terminal
        self._last_draw = 0.0
        self._last_step = -1
        self._rate_base: tuple[float, int] | None = None

    def line(self, text: str) -> None:
        self.end_progress()
        self.stream.write(text + "\n")
        self.stream.flush()

    def notice(self, text: str) -> None:
        self.line(f"{text[:1].upper()}{text[1:]}.")

    def progress(self, progress: TransferProgress, verb: str) -> None:
        now = time.monotonic()
        if self._rate_base is None:
            self._rate_base = (now, progress.done)
        total = progress.total
        finished = progress.done >= total
        percent = 100.0 if total == 0 else 100.0 * progress.done / total
        base_time, base_done = self._rate_base
        rate = (progress.done - base_done) / (now - base_time) if now > base_time else 0.0
        text = f"{percent:5.1f}%  {_size(progress.done)} of {_size(total)} {verb}"
        if rate > 0:
            text += f"  {_size(rate)}/s"
            if not finished:
                left = (total - progress.done) / rate
                text += f"  {int(left) // 60}:{int(left) % 60:02d} left"
        if self.tty:
            if finished or now - self._last_draw >= 0.1:
                self.stream.write("\r" + text + "\x1b[K")
                self.stream.flush()
                self._drawn = True
                self._last_draw = now
            return
        # Not a terminal (a log, a CI job): a line per 10 %, at most one a second.
        step = int(percent // 10)
        if step > self._last_step and (finished or now - self._last_draw >= 1.0):
            self.stream.write(text + "\n")
            self.stream.flush()
            self._last_step = step
            self._last_draw = now

    def end_progress(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    async def ask(self, question: str) -> bool:
        """Ask a yes/no question on stderr, read the answer from stdin; no by default."""
        self.end_progress()
        self.stream.write(f"{question} [y/N] ")
        self.stream.flush()
        answer = await _read_line()
        return answer.strip().lower() in ("y", "yes")


async def _read_line() -> str:
    """One line from stdin without blocking the event loop.

    A daemon thread reads file descriptor 0 directly: ``asyncio.to_thread`` would make Ctrl-C
    wait for the user to press Enter (the executor joins its threads on exit), and the raw
    descriptor keeps ``sys.stdin``'s buffer lock free at interpreter shutdown.
    """
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()

    def deliver(text: str) -> None:
        if not answer.done():
            answer.set_result(text)

    def read() -> None:
        data = b""
        try:
            while not data.endswith(b"\n"):
                more = os.read(0, 1)
                if not more:
                    break
                data += more
        except OSError:
            pass
        # After Ctrl-C the loop may be closed already: nobody waits for the answer then.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver, data.decode(errors="replace"))

    threading.Thread(target=read, name="tube-prompt", daemon=True).start()
    return await answer
