"""Profile one echo server under one benchmark scenario, and summarise where the time goes.

Usage::

    python3 bench/profile_server.py --scenario small            # Tube's server, 50 x 8 x 64 B
    python3 bench/profile_server.py --scenario large --server websockets-sync --duration 8
    python3 bench/profile_server.py --scenario small --profiler py-spy

The server runs pinned to core 0 as in ``bench/run.py``; the load generator (and py-spy) run
on core 1.

``--profiler cprofile`` (default) runs the server under ``bench/cprofile_wrap.py``: cProfile in
every thread, merged when the server stops. It prints the functions by own time and by
cumulative time with their call counts per echoed message, which shows the per-message
overhead exactly (deterministic profiling inflates the cost of small calls, so read the shares,
not the absolute times). The stats are kept in ``bench/build/profile-SERVER-SCENARIO.pstats``.

``--profiler py-spy`` samples without pausing the process (``--nonblocking``: pausing a server with
hundreds of threads changes its scheduling, and its throughput, a lot) and records only
threads that are running (on a CPU, in Python or in a system call), not those blocked waiting.
In containers without the thread-state information it needs, py-spy also samples blocked
threads (they show up in ``Condition.wait``, ``recv_into``, lock acquisition): subtract those.
The raw stacks are kept in ``bench/build/profile-SERVER-SCENARIO.txt`` (collapsed format: render
with flamegraph.pl or speedscope); the summary lists functions by self time (the sample's
innermost frame) and by inclusive time (anywhere on the stack), as a share of all samples.
"""

from __future__ import annotations

import argparse
import collections
import pstats
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def short_file(path: str) -> str:
    for marker in ("site-packages/", "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "lib/python3.":
                path = "stdlib/" + path.split("/", 1)[-1]
    return path.replace(str(run.ROOT) + "/", "")


def function_of(frame: str) -> str:
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{match.group('func')} ({short_file(match.group('file'))})"


def summarise(raw: Path, top: int) -> str:
    self_counts: collections.Counter[str] = collections.Counter()
    self_lines: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        raw_frames = [f.strip() for f in stack.split(";") if "(" in f]
        frames = [function_of(f) for f in raw_frames]
        if not frames:
            continue
        total += count
        match = FRAME.match(raw_frames[-1])
        where = (
            raw_frames[-1]
            if not match
            else (
                f"{match.group('func')} ({short_file(match.group('file'))}:{match.group('line')})"
            )
        )
        self_lines[where] += count
        self_counts[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    lines = [f"{total} samples"]
    if total == 0:
        return lines[0]
    lines += ["", f"Top {top} by self time (innermost frame):"]
    for name, count in self_counts.most_common(top):
        lines.append(f"  {count / total:6.1%}  {name}")
    lines += ["", f"Top {top} lines by self time:"]
    for name, count in self_lines.most_common(top):
        lines.append(f"  {count / total:6.1%}  {name}")
    lines += ["", f"Top {top} by inclusive time (anywhere on the stack):"]
    for name, count in inclusive.most_common(top):
        lines.append(f"  {count / total:6.1%}  {name}")
    return "\n".join(lines)


def summarise_pstats(path: Path, messages: int, top: int) -> str:
    """Own and cumulative time per function, with calls per echoed message."""
    stats = pstats.Stats(str(path))
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values()) or 1e-9
    lines = [f"{total:.2f} s of CPU time profiled in all threads, {messages:,} messages echoed"]

    def name(key: tuple[str, int, str]) -> str:
        file, line, func = key
        return f"{func} ({short_file(file)}:{line})" if line else func

    def table(title: str, index: int) -> None:
        lines.extend(["", title, "     share   calls/msg  us/msg   function"])
        ranked = sorted(raw.items(), key=lambda item: item[1][index], reverse=True)[:top]
        for key, (_, calls, tottime, cumtime, _) in ranked:
            spent = tottime if index == 2 else cumtime
            per_msg = calls / messages if messages else 0
            us = spent * 1e6 / messages if messages else 0
            lines.append(f"  {spent / total:7.1%}  {per_msg:9.2f}  {us:7.2f}   {name(key)}")

    table(f"Top {top} by own time (tottime):", 2)
    table(f"Top {top} by cumulative time (cumtime; threads' roots add up to more than 100%):", 3)
    return "\n".join(lines)


def thread_count(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_for_threads_to_end(pid: int, timeout: float = 20.0) -> None:
    """Let the connections' threads finish (their profiles only count once they end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and thread_count(pid) > 2:  # main (+ timers)
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="tube", choices=list(run.SERVERS))
    parser.add_argument("--scenario", default="small", choices=list(run.SCENARIOS))
    parser.add_argument(
        "--idle-connections",
        type=int,
        default=1000,
        help="for --scenario idle (per-message = per connection: one handshake and one echo)",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds profiled")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--gil", action="store_true", help="sample only the thread holding the GIL (py-spy --gil)"
    )
    parser.add_argument("--profiler", choices=["cprofile", "py-spy"], default="cprofile")
    args = parser.parse_args()
    if args.profiler == "py-spy" and shutil.which("py-spy") is None:
        subprocess.run([run.PY, "-m", "pip", "install", "--quiet", "py-spy==0.4.3"], check=True)
    run.ensure_peers(install=True)
    run.build_loadgen()
    server_prefix, loadgen_prefix = run.pinning()
    logdir = run.BUILD / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    stem = run.BUILD / f"profile-{args.server}-{args.scenario}"
    warmup = 1.0
    loadgen_args = argparse.Namespace(
        duration=args.duration, warmup=warmup, idle_connections=args.idle_connections
    )
    spy = None
    spy_err = ""
    if args.profiler == "cprofile":
        out = stem.with_suffix(".pstats")
        out.unlink(missing_ok=True)
        wrap = [str(run.BENCH / "cprofile_wrap.py"), str(out)]
        server = run.Server(args.server, server_prefix, logdir, wrap=wrap)
    else:
        out = stem.with_suffix(".txt")
        server = run.Server(args.server, server_prefix, logdir)
    try:
        if args.profiler == "py-spy":
            spy = subprocess.Popen(
                [
                    *loadgen_prefix,
                    "py-spy",
                    "record",
                    "--pid",
                    str(server.proc.pid),
                    "--nonblocking",
                    "--rate",
                    str(args.rate),
                    "--duration",
                    str(int(args.duration + warmup + 1)),
                    *(["--gil"] if args.gil else []),
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(0.5)  # let py-spy attach before the load starts
        result = run.run_loadgen(loadgen_prefix, server, args.scenario, loadgen_args)
        if spy is not None:
            _, spy_err = spy.communicate(timeout=args.duration + 60)
    finally:
        if args.profiler == "cprofile":
            wait_for_threads_to_end(server.proc.pid)
        server.stop(timeout=60.0)  # the cProfile wrapper dumps its stats on SIGTERM
    metric = run.SCENARIOS[args.scenario]["metric"]
    print(f"{args.server} / {args.scenario} under {args.profiler}: ", end="")
    if "error" in result:
        print(f"load generator failed: {result['error']}")
        return 1
    if args.scenario == "idle":
        result["total_messages"] = args.idle_connections + 20  # warm-up connections included
        print(
            f"{result['handshakes_per_s']:,.0f} handshakes/s, "
            f"{result['rss_per_conn_kb']:.1f} KiB/conn, "
            f"server {result['server_cpu_us_per_handshake']:.0f} us CPU/connection"
        )
    else:
        print(
            f"{result[metric]:,.1f} {run.SCENARIOS[args.scenario]['unit']}, "
            f"server {result['server_cpu_us_per_msg']:.1f} us CPU/msg "
            f"({result.get('server_sys_fraction', 0):.0%} of it in the kernel), "
            f"CPU share server {result.get('server_cpu_share', 0):.0%} "
            f"loadgen {result.get('loadgen_cpu_share', 0):.0%}"
        )
    if not out.exists() or (spy is not None and spy.returncode != 0):
        print(f"profiler failed: {spy_err.strip()[-500:]} (server log: {server.log_path})")
        return 1
    print(f"profile data: {out}")
    if args.profiler == "cprofile":
        print(summarise_pstats(out, int(result.get("total_messages", 0)), args.top))
    else:
        print(summarise(out, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
