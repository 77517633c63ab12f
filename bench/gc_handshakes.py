"""Where the handshakes' CPU goes to the cyclic garbage collector (issue 25).

Usage::

    python3 bench/gc_handshakes.py                  # tube-asyncio and picows, 3 runs each
    python3 bench/gc_handshakes.py -r 5 --connections 2000 --servers tube-asyncio

Each run starts one echo server (pinned to core 0), opens ``--connections`` connections with
the C load generator (``--idle``, pinned to core 1: 8 handshakes in flight, one echo each,
then 3 s idle) and reports the server's CPU per handshake as ``bench/run.py``'s ``idle``
scenario does, beside what the garbage collector did in the server meanwhile (collections
and their time per generation, measured with ``gc.callbacks``). Each server also runs once
more per repetition with the collector switched off (``gc.disable()``): the difference is
what the collections cost the handshakes. Runs of the servers are interleaved.

The CPU per handshake comes in steps of 5 us (the kernel's 10 ms clock ticks over 2,000
handshakes) and moves by +-15 % run to run on a 2-core machine; the collectors' times are
exact.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LOADGEN = BENCH / "build" / "loadgen"

# Run in the server's process before the server's own code: count the collections.
_PRELUDE = """
import atexit, gc, json, runpy, signal, sys, time
sys.path.insert(0, {servers!r})
sys.path.insert(0, {root!r})
if {disable!r}:
    gc.disable()
_stats = {{0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}}
_started = [0.0]
def _count(phase, info):
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        entry = _stats[info["generation"]]
        entry[0] += 1
        entry[1] += time.perf_counter() - _started[0]
gc.callbacks.append(_count)
def _write():
    with open({out!r}, "w") as file:
        json.dump(_stats, file)
atexit.register(_write)  # whoever handles SIGTERM, the process exits
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
sys.argv = {argv!r}
{run}
"""

SERVERS = {
    "tube-asyncio": (
        ["echo", "--transport", "asyncio"],
        "runpy.run_module('tube.websocket.echo', run_name='__main__')",
    ),
    "picows": (
        ["picows"],
        f"runpy.run_path({str(BENCH / 'servers' / 'picows_server.py')!r}, run_name='__main__')",
    ),
}


def one_run(name: str, connections: int, disable: bool, port: int) -> dict[str, object]:
    """One server, one idle load: CPU per handshake and the collector's counts and times."""
    argv, run = SERVERS[name]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "gc.json")
        code = _PRELUDE.format(
            servers=str(BENCH / "servers"),
            root=str(ROOT),
            disable=disable,
            out=out,
            argv=[*argv, "--host", "127.0.0.1", "--port", str(port)],
            run=run,
        )
        server = subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert server.stdout is not None
            line = server.stdout.readline()  # the servers print one line once listening
            if not line:
                raise RuntimeError(f"{name} did not start")
            command = [str(LOADGEN), "--port", str(port), "--server-pid", str(server.pid)]
            command += ["--mode", "ws", "--idle", str(connections), "--text", "--size", "16"]
            load = subprocess.run(
                ["taskset", "-c", "1", *command],
                capture_output=True,
                text=True,
                timeout=240,
                check=True,
            )
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        result = json.loads(load.stdout.strip().splitlines()[-1])
        with open(out) as file:
            collected = json.load(file)
    return {
        "cpu_us_per_handshake": result["server_cpu_us_per_handshake"],
        "handshakes_per_s": result["handshakes_per_s"],
        "gc": {int(generation): value for generation, value in collected.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="tube-asyncio,picows")
    parser.add_argument("-r", "--repetitions", type=int, default=3)
    parser.add_argument("--connections", type=int, default=2000)
    args = parser.parse_args()
    if not LOADGEN.exists():
        print("build the load generator first: python3 bench/run.py --quick", file=sys.stderr)
        return 2
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.connections + 200), hard))
    names = args.servers.split(",")
    runs: dict[tuple[str, bool], list[dict[str, object]]] = {}
    port = 9960
    for repetition in range(args.repetitions):
        for name in names:
            for disable in (False, True):
                port += 1
                runs.setdefault((name, disable), []).append(
                    one_run(name, args.connections, disable, port)
                )
                time.sleep(0.5)  # the port's sockets close
        print(f"repetition {repetition + 1}/{args.repetitions} done", file=sys.stderr)
    print(
        f"{args.connections} connections per run, medians of {args.repetitions}: the CPU per "
        "handshake while they open; the collections (and their time) over the whole run "
        "(opening, idle, closing)\n"
    )
    print(
        "| server | collector | CPU us/handshake | handshakes/s | gen 0 | gen 1 | gen 2 "
        "| collections' time per connection |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (name, disable), results in runs.items():
        cpu = statistics.median(float(r["cpu_us_per_handshake"]) for r in results)  # type: ignore[arg-type]
        rate = statistics.median(float(r["handshakes_per_s"]) for r in results)  # type: ignore[arg-type]
        cells = []
        total = []
        for generation in (0, 1, 2):
            counts = [r["gc"][generation][0] for r in results]  # type: ignore[index]
            times = [r["gc"][generation][1] for r in results]  # type: ignore[index]
            cells.append(
                f"{statistics.median(counts):.0f} ({statistics.median(times) * 1e3:.1f} ms)"
            )
        for r in results:
            total.append(sum(r["gc"][g][1] for g in (0, 1, 2)))  # type: ignore[index]
        per = statistics.median(total) / args.connections * 1e6
        state = "off" if disable else "on"
        print(
            f"| {name} | {state} | {cpu:.0f} | {rate:,.0f} | "
            + " | ".join(cells)
            + f" | {per:.1f} us |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
