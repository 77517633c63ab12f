"""Soak: Tube's threaded echo server under steady mixed load with churn; its memory over time.

Issue 8 §6 saw the server's RSS climb under steady load while Python's own heap stayed flat.
This script keeps a constant mix of traffic going for ``--minutes`` (rounds of the C load
generator: small, medium and large messages, connections opened and closed every round),
samples the server's ``VmRSS`` after every round, and prints the curve and the growth after
warm-up. Not part of CI: it takes minutes and a quiet
machine.

    python3 bench/soak.py --minutes 30               # the issue's soak
    python3 bench/soak.py --minutes 3 --env MALLOC_ARENA_MAX=2

Each round is bounded in time and every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # bench/run.py: the server and load-generator helpers

# One round: (connections, in flight, size, seconds). Sizes as in bench/run.py's scenarios.
ROUND = [
    (50, 8, 64, 2.0),
    (20, 2, 16 * 1024, 2.0),
    (4, 1, 1024 * 1024, 2.0),
]


def rss_kib(pid: int) -> int:
    """The process's resident set size in KiB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def load(
    server: run.Server, prefix: list[str], conns: int, inflight: int, size: int, seconds: float
) -> dict[str, Any]:
    """One run of the load generator against ``server``; its JSON result."""
    cmd = [*prefix, str(run.LOADGEN), "--port", str(server.port), "--binary"]
    cmd += ["--conns", str(conns), "--inflight", str(inflight), "--size", str(size)]
    cmd += ["--duration", str(seconds), "--warmup", "0.2"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if result.returncode != 0:
        return {"error": result.stderr.strip()[-300:]}
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak")
    parser.add_argument("--warmup-rounds", type=int, default=10, help="rounds before the baseline")
    parser.add_argument(
        "--env", action="append", default=[], help="NAME=VALUE for the server's environment"
    )
    args = parser.parse_args(argv)
    run.build_loadgen()
    server_prefix, loadgen_prefix = run.pinning()
    for item in args.env:
        name, _, value = item.partition("=")
        os.environ[name] = value  # inherited by the server process
    logdir = run.BUILD / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    server = run.Server("tube", server_prefix, logdir)
    curve: list[tuple[float, int, int]] = []
    start = time.monotonic()
    end = start + args.minutes * 60
    messages = 0
    try:
        round_ = 0
        while time.monotonic() < end:
            for conns, inflight, size, seconds in ROUND:
                result = load(server, loadgen_prefix, conns, inflight, size, seconds)
                if "error" in result:
                    print(f"round {round_}: load generator failed: {result['error']}")
                    return 1
                messages += int(result.get("messages", 0))
            round_ += 1
            rss = rss_kib(server.proc.pid)
            elapsed = time.monotonic() - start
            curve.append((elapsed, rss, messages))
            print(
                f"{elapsed:7.0f} s  round {round_:4d}  RSS {rss / 1024:7.1f} MiB  "
                f"{messages:>10,} echoes",
                flush=True,
            )
    finally:
        server.stop()
    if len(curve) > args.warmup_rounds + 1:
        base = curve[args.warmup_rounds]
        last = curve[-1]
        minutes = (last[0] - base[0]) / 60
        growth = (last[1] - base[1]) / 1024
        print(
            f"after warm-up: {base[1] / 1024:.1f} -> {last[1] / 1024:.1f} MiB in "
            f"{minutes:.1f} min ({growth / max(minutes, 1e-9):+.2f} MiB/min)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
