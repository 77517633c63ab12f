"""Micro-benchmarks of the core's hot paths, with the alternatives they were chosen against.

Usage::

    python3 bench/micro.py                 # every group, 16 B / 1 KiB / 64 KiB / 1 MiB
    python3 bench/micro.py --quick         # fewer repeats
    python3 bench/micro.py unmask utf8     # some groups only (speedups, unmask, utf8, parse, build)

Each line is the best of several ``timeit`` repeats: ns per operation and GB/s of payload
(10^9 B/s). A piece of the core that is missing or has another shape is reported as ``n/a``
with the reason, so the script runs against any state of the tree.

Groups:

* ``speedups``: the core's two paths side by side, the optional C accelerator
  (``tube.websocket.core._speedups``) and the pure-Python code (``python_apply_mask``,
  ``python_unmask_in_place``, ``PythonUtf8Validator``): unmask 64 B / 16 KiB / 1 MiB, UTF-8 check
  16 KiB / 1 MiB. ``IMPLEMENTATION`` is printed: the other groups measure the path in use.
* ``unmask``: ``tube.websocket.core.masking.apply_mask`` (returns new bytes) and
  ``unmask_in_place`` (bytearray), against the plain alternatives: XOR as big integers
  (``int.from_bytes``), four strided ``bytes.translate`` passes, and a byte loop (tiny sizes
  only); websockets' C ``apply_mask`` is shown for reference when installed.
* ``utf8``: ``bytes.decode`` (what an unfragmented text frame costs) and
  ``Utf8Validator.feed`` on the whole payload and in 4 KiB pieces, ASCII and 2/3-byte text.
* ``parse``: ``Protocol(Role.SERVER).receive_data`` on one masked binary / text frame
  (header parse + unmask + event; the text case includes UTF-8 decoding), and the same data
  in 1,400-byte pieces; wsproto's FrameProtocol for reference when installed.
* ``build``: ``Protocol(Role.SERVER).send_binary`` + ``data_to_send`` (server: unmasked), and the
  client role (masked).
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIZES = [16, 1024, 64 * 1024, 1024 * 1024]
KEY = b"\x37\xfa\x21\x3d"


def label(size: int) -> str:
    if size >= 1 << 20:
        return f"{size >> 20} MiB"
    if size >= 1024:
        return f"{size >> 10} KiB"
    return f"{size} B"


def measure(func: Callable[[], object], budget: float) -> float:
    """Best time per call in seconds: calibrate to ~budget/5 s per repeat, 5 repeats."""
    timer = timeit.Timer(func)
    number = 1
    while True:
        elapsed = timer.timeit(number)
        if elapsed >= budget / 25 or number >= 1 << 24:
            break
        number *= 4 if elapsed < budget / 200 else 2
    repeats = timer.repeat(repeat=5, number=number)
    return min(repeats) / number


def report(
    name: str, size: int, func: Callable[[], object] | None, budget: float, why: str = ""
) -> None:
    if func is None:
        print(f"  {name:44} {label(size):>7}  n/a ({why})")
        return
    try:
        func()  # also checks that it runs at all
        seconds = measure(func, budget)
    except Exception as exc:  # any missing piece or changed signature: say so and go on
        print(f"  {name:44} {label(size):>7}  n/a ({type(exc).__name__}: {exc})")
        return
    ns = seconds * 1e9
    gbps = size / seconds / 1e9
    print(f"  {name:44} {label(size):>7}  {ns:14,.0f} ns/op  {gbps:8.3f} GB/s")


def try_import(path: str, name: str) -> tuple[Any, str]:
    try:
        module = __import__(path, fromlist=[name])
        return getattr(module, name), ""
    except (ImportError, AttributeError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- alternatives


def xor_int(data: bytes, key: bytes) -> bytes:
    """Big-integer XOR: the whole payload as one int."""
    n = len(data)
    repeated = (key * ((n >> 2) + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        n, "little"
    )


_TABLES = [bytes(b ^ k for b in range(256)) for k in range(256)]


def xor_translate(data: bytes, key: bytes) -> bytes:
    """Four strided translate passes over a bytearray copy."""
    buffer = bytearray(data)
    for i in range(4):
        buffer[i::4] = buffer[i::4].translate(_TABLES[key[i]])
    return bytes(buffer)


def xor_loop(data: bytes, key: bytes) -> bytes:
    """Byte by byte, the obvious way (for scale)."""
    return bytes(b ^ key[i & 3] for i, b in enumerate(data))


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One client frame (fin, masked with KEY)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + KEY + xor_translate(payload, KEY)


def text_payload(size: int, kind: str) -> bytes:
    unit = {"ascii": "a", "2-byte": "é", "3-byte": "€"}[kind]
    width = len(unit.encode())
    return (unit * (size // width)).encode() + b"a" * (size % width)


# --------------------------------------------------------------------------- groups


def group_speedups(budget: float) -> None:
    print("speedups: the C accelerator against the pure-Python path")
    implementation, why = try_import("tube.websocket.core.masking", "IMPLEMENTATION")
    print(f"  in use: {implementation if why == '' else why}")
    c_module, why_c = try_import("tube.websocket.core.accelerator", "speedups")
    if c_module is None:
        why_c = why_c or "not built, or TUBE_NO_SPEEDUPS is set"
    py_mask, why_py = try_import("tube.websocket.core.masking", "python_apply_mask")
    py_in_place, why_py_ip = try_import("tube.websocket.core.masking", "python_unmask_in_place")
    for size in (64, 16 * 1024, 1024 * 1024):
        data = os.urandom(size)
        buffer = bytearray(data)
        for name, func, why in (
            ("C apply_mask(bytes) -> bytes", c_module and c_module.apply_mask, why_c),
            ("python apply_mask(bytes) -> bytes", py_mask, why_py),
            ("C unmask_in_place(bytearray)", c_module and c_module.unmask_in_place, why_c),
            ("python unmask_in_place(bytearray)", py_in_place, why_py_ip),
        ):
            target = buffer if "in_place" in name else data
            report(name, size, None if func is None else partial(func, target, KEY), budget, why)
    c_validator, why_cv = try_import("tube.websocket.core.utf8", "CUtf8Validator")
    py_validator, why_pv = try_import("tube.websocket.core.utf8", "PythonUtf8Validator")
    if c_module is None:
        c_validator, why_cv = None, why_c
    for kind in ("ascii", "2-byte", "3-byte"):
        for size in (16 * 1024, 1024 * 1024):
            data = text_payload(size, kind)
            for name, cls, why in (
                (f"C Utf8Validator.feed [{kind}]", c_validator, why_cv),
                (f"python Utf8Validator.feed [{kind}]", py_validator, why_pv),
            ):

                def feed(d: bytes = data, validator_cls: Any = cls) -> object:
                    validator = validator_cls()
                    ok = validator.feed(d) and validator.finish()
                    assert ok
                    return ok

                report(name, size, None if cls is None else feed, budget, why)


def group_unmask(budget: float) -> None:
    print("unmask (XOR with a 4-byte key)")
    apply_mask, why = try_import("tube.websocket.core.masking", "apply_mask")
    in_place, why_ip = try_import("tube.websocket.core.masking", "unmask_in_place")
    c_mask, why_c = try_import("websockets.speedups", "apply_mask")
    for size in SIZES:
        data = os.urandom(size)
        if apply_mask is not None:
            expected = xor_translate(data, KEY)
            if apply_mask(data, KEY) != expected:
                print("  tube apply_mask gives a WRONG result")
        report(
            "tube apply_mask(bytes) -> bytes",
            size,
            None if apply_mask is None else partial(apply_mask, data, KEY),
            budget,
            why,
        )
        buffer = bytearray(data)
        report(
            "tube unmask_in_place(bytearray)",
            size,
            None if in_place is None else partial(in_place, buffer, KEY),
            budget,
            why_ip,
        )
        report("alt: int.from_bytes XOR", size, partial(xor_int, data, KEY), budget)
        report(
            "alt: 4 strided translate (with copy)",
            size,
            partial(xor_translate, data, KEY),
            budget,
        )
        if size <= 1024:
            report("alt: byte loop", size, partial(xor_loop, data, KEY), budget)
        report(
            "ref: websockets C apply_mask",
            size,
            None if c_mask is None else partial(c_mask, data, KEY),
            budget,
            why_c,
        )


def group_utf8(budget: float) -> None:
    print("UTF-8 validation")
    validator_cls, why = try_import("tube.websocket.core.utf8", "Utf8Validator")
    for kind in ("ascii", "2-byte", "3-byte"):
        for size in SIZES:
            data = text_payload(size, kind)
            report(f"bytes.decode() [{kind}]", size, data.decode, budget)

            def feed_whole(d: bytes = data) -> object:
                v = validator_cls()
                ok = v.feed(d) and v.finish()
                assert ok
                return ok

            def feed_pieces(d: bytes = data) -> object:
                v = validator_cls()
                for i in range(0, len(d), 4096):
                    v.feed(d[i : i + 4096])
                return v.finish()

            report(
                f"tube Utf8Validator.feed whole [{kind}]",
                size,
                None if validator_cls is None else feed_whole,
                budget,
                why,
            )
            if size > 4096:
                report(
                    f"tube Utf8Validator.feed 4 KiB pieces [{kind}]",
                    size,
                    None if validator_cls is None else feed_pieces,
                    budget,
                    why,
                )


def group_parse(budget: float) -> None:
    print("frame parse (server receives one masked frame -> one event)")
    protocol_cls, why = try_import("tube.websocket.core.protocol", "Protocol")
    role_cls, _ = try_import("tube.websocket.core.protocol", "Role")
    frame_protocol, why_wsproto = try_import("wsproto.frame_protocol", "FrameProtocol")
    for size in SIZES:
        payload = os.urandom(size)
        binary = masked_frame(2, payload)
        text = masked_frame(1, text_payload(size, "ascii"))
        if protocol_cls is None or role_cls is None:
            report("tube receive_data(binary frame)", size, None, budget, why)
            continue
        protocol = protocol_cls(role_cls.SERVER, max_message_size=None)

        def parse(frame: bytes = binary, p: Any = protocol) -> object:
            events = p.receive_data(frame)
            assert len(events) == 1, events
            return events

        def parse_pieces(frame: bytes = binary, p: Any = protocol) -> object:
            events: list[object] = []
            for i in range(0, len(frame), 1400):
                events += p.receive_data(frame[i : i + 1400])
            assert len(events) == 1, events
            return events

        report("tube receive_data(binary frame)", size, parse, budget)
        report("tube receive_data(text frame, + decode)", size, partial(parse, text), budget)
        if size > 1400:
            report("tube receive_data(binary, 1,400 B pieces)", size, parse_pieces, budget)
        if frame_protocol is None:
            report("ref: wsproto FrameProtocol", size, None, budget, why_wsproto)
        else:
            fp = frame_protocol(client=False, extensions=[])

            def wsproto_parse(frame: bytes = binary, fp: Any = fp) -> object:
                fp.receive_bytes(frame)
                frames = list(fp.received_frames())
                assert len(frames) == 1
                return frames

            report("ref: wsproto FrameProtocol", size, wsproto_parse, budget)


def group_build(budget: float) -> None:
    print("frame build (send_binary + data_to_send)")
    protocol_cls, why = try_import("tube.websocket.core.protocol", "Protocol")
    role_cls, _ = try_import("tube.websocket.core.protocol", "Role")
    for size in SIZES:
        payload = os.urandom(size)
        if protocol_cls is None or role_cls is None:
            report("tube server send_binary", size, None, budget, why)
            continue
        server = protocol_cls(role_cls.SERVER, max_message_size=None)
        client = protocol_cls(role_cls.CLIENT, max_message_size=None)

        def build(p: Any, d: bytes = payload) -> object:
            p.send_binary(d)
            return p.data_to_send()

        report("tube server send_binary (unmasked)", size, partial(build, server), budget)
        report("tube client send_binary (masked)", size, partial(build, client), budget)
        text = text_payload(size, "ascii").decode()

        def build_text(p: Any = server, t: str = text) -> object:
            p.send_text(t)
            return p.data_to_send()

        report("tube server send_text (+ encode)", size, build_text, budget)


GROUPS = {
    "speedups": group_speedups,
    "unmask": group_unmask,
    "utf8": group_utf8,
    "parse": group_parse,
    "build": group_build,
}


def main() -> int:
    parser = argparse.ArgumentParser(description="Micro-benchmarks of Tube's core hot paths.")
    parser.add_argument("groups", nargs="*", choices=[*GROUPS, []], help="default: all")
    parser.add_argument("--quick", action="store_true", help="shorter measurements")
    args = parser.parse_args()
    budget = 0.1 if args.quick else 0.5
    print(f"Python {sys.version.split()[0]}; best of 5 timeit repeats")
    for name in args.groups or GROUPS:
        GROUPS[name](budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
