"""Tube's benchmark suite: echo servers side by side, driven by a C load generator.

Usage (from anywhere; see bench/README.md)::

    python3 bench/run.py              # full run: every server and scenario, 3 repetitions
    python3 bench/run.py --quick      # a fast smoke run for development
    python3 bench/run.py --servers tube,websockets-sync --scenarios small,large -r 5

The script installs the pinned peers if they are missing (the ``bench`` extra of pyproject.toml),
builds ``bench/loadgen.c`` with gcc into ``bench/build/``, then for each repetition starts every
server in turn (order rotated between repetitions), pinned to core 0, and runs the load generator
pinned to core 1. It prints one table per scenario with the medians, the ratio to the
``websockets`` threading server measured in the same run, and the server's CPU time per echoed
message, and writes ``bench/results/latest.md`` and ``latest.json`` (``--quick`` writes to
``bench/build/`` instead, unless ``--output`` says otherwise).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import queue
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BUILD = BENCH / "build"
LOADGEN = BUILD / "loadgen"
PY = sys.executable
MAX_MESSAGE_SIZE = 4 * 1024 * 1024
BASELINE = "websockets-sync"
UVLOOP_RUN = str(BENCH / "servers" / "uvloop_run.py")

# name -> command (without --host/--port/--max-message-size), load generator mode, description
SERVERS: dict[str, dict[str, Any]] = {
    "tube": {
        "cmd": [PY, "-m", "tube.websocket.echo"],
        "mode": "ws",
        "about": "Tube, threaded (http.server + upgrade_connection)",
    },
    "tube-message": {
        "cmd": [PY, "-m", "tube.websocket.echo", "--api", "message"],
        "mode": "ws",
        "about": "Tube, threaded, the seed's per-message API (for message in incoming: send)",
    },
    "tube-asyncio": {
        "cmd": [PY, "-m", "tube.websocket.echo", "--transport", "asyncio"],
        "mode": "ws",
        "about": "Tube, asyncio (tube.websocket.aio.serve)",
    },
    "tube-asyncio-message": {
        "cmd": [PY, "-m", "tube.websocket.echo", "--transport", "asyncio", "--api", "message"],
        "mode": "ws",
        "about": "Tube, asyncio, message by message (async for message in incoming: await send)",
    },
    "tube-asyncio-callback": {
        "cmd": [PY, "-m", "tube.websocket.echo", "--transport", "asyncio", "--api", "callback"],
        "mode": "ws",
        "about": "Tube, asyncio, inside the read callback (on_message with send_nowait; opt-in)",
    },
    "websockets-sync": {
        "cmd": [PY, str(BENCH / "servers" / "websockets_sync.py")],
        "mode": "ws",
        "about": "websockets, threading server",
    },
    "websockets-asyncio": {
        "cmd": [PY, str(BENCH / "servers" / "websockets_asyncio.py")],
        "mode": "ws",
        "about": "websockets, asyncio server",
    },
    "simple-websocket": {
        "cmd": [PY, str(BENCH / "servers" / "simple_websocket_werkzeug.py")],
        "mode": "ws",
        "about": "simple-websocket on werkzeug's threaded server (as Flask-Sock)",
    },
    "wsproto": {
        "cmd": [PY, str(BENCH / "servers" / "wsproto_asyncio.py")],
        "mode": "ws",
        "about": "wsproto driven by an asyncio Protocol",
    },
    "aiohttp": {
        "cmd": [PY, str(BENCH / "servers" / "aiohttp_server.py")],
        "mode": "ws",
        "about": "aiohttp WebSocketResponse",
    },
    "picows": {
        "cmd": [PY, str(BENCH / "servers" / "picows_server.py")],
        "mode": "ws",
        "about": "picows (Cython) on asyncio",
    },
    # The same server with glibc's allocator left as it is (the echo server, like the relay,
    # calls tube.websocket.keep_freed_memory(): without it, every large message is faulted
    # into fresh pages). Reported beside, so both figures come from one run.
    "tube-asyncio-malloc-default": {
        "cmd": [
            PY,
            "-m",
            "tube.websocket.echo",
            "--transport",
            "asyncio",
            "--allocator",
            "default",
        ],
        "mode": "ws",
        "about": "Tube, asyncio, glibc's allocator settings untouched (--allocator default)",
    },
    # The same servers on uvloop's event loop (issue 25: reported beside the standard loop).
    "tube-asyncio-uvloop": {
        "cmd": [PY, UVLOOP_RUN, "-m", "tube.websocket.echo", "--transport", "asyncio"],
        "mode": "ws",
        "about": "Tube, asyncio, on uvloop's event loop",
    },
    "picows-uvloop": {
        "cmd": [PY, UVLOOP_RUN, str(BENCH / "servers" / "picows_server.py")],
        "mode": "ws",
        "about": "picows (Cython) on uvloop's event loop",
    },
    "raw-asyncio": {
        "cmd": [PY, str(BENCH / "servers" / "raw_asyncio.py")],
        "mode": "raw",
        "about": "raw asyncio TCP echo, no WebSocket (ceiling for pure-Python asyncio)",
    },
    # ASGI (issue 13 part 2): a raw ASGI echo on uvicorn, Tube's protocol class against
    # uvicorn's own (websockets-sansio, uvicorn's default, and wsproto).
    "uvicorn-tube": {
        "cmd": [PY, str(BENCH / "servers" / "uvicorn_asgi.py"), "--ws", "tube"],
        "mode": "ws",
        "about": "ASGI echo on uvicorn, Tube's protocol class (tube.websocket.asgi)",
    },
    "uvicorn-websockets": {
        "cmd": [PY, str(BENCH / "servers" / "uvicorn_asgi.py"), "--ws", "websockets"],
        "mode": "ws",
        "about": "ASGI echo on uvicorn, uvicorn's websockets-sansio class (its default)",
    },
    "uvicorn-wsproto": {
        "cmd": [PY, str(BENCH / "servers" / "uvicorn_asgi.py"), "--ws", "wsproto"],
        "mode": "ws",
        "about": "ASGI echo on uvicorn, uvicorn's wsproto class",
    },
    # Opt-in (not in the default list): an experiment on Tube's core, not Tube's API.
    "tube-1thread": {
        "cmd": [PY, str(BENCH / "servers" / "tube_core_1thread.py")],
        "mode": "ws",
        "about": "experiment: Tube's core, one thread per connection, no channel",
        "optional": True,
    },
    "tube-1thread-message": {
        "cmd": [PY, str(BENCH / "servers" / "tube_core_1thread.py"), "--message"],
        "mode": "ws",
        "about": "experiment: Tube's core, one thread per connection, one write per message",
        "optional": True,
    },
    "tube-2thread": {
        "cmd": [PY, str(BENCH / "servers" / "tube_core_2thread.py")],
        "mode": "ws",
        "about": "experiment: Tube's core, reader thread + app thread, one write per message",
        "optional": True,
    },
    "tube-2thread-batch": {
        "cmd": [PY, str(BENCH / "servers" / "tube_core_2thread.py"), "--batch"],
        "mode": "ws",
        "about": "experiment: Tube's core, reader thread + app thread, one write per batch",
        "optional": True,
    },
}

# name -> load generator arguments, headline metric, unit, and whether higher is better
SCENARIOS: dict[str, dict[str, Any]] = {
    "latency": {
        "args": ["--conns", "1", "--inflight", "1", "--size", "16", "--text"],
        "metric": "messages_per_s",
        "unit": "round trips/s",
        "about": "1 connection, 1 message in flight, 16 B text",
    },
    "small": {
        "args": ["--conns", "50", "--inflight", "8", "--size", "64", "--binary"],
        "metric": "messages_per_s",
        "unit": "messages/s",
        "about": "50 connections x 8 in flight, 64 B binary",
    },
    "medium": {
        "args": ["--conns", "20", "--inflight", "2", "--size", "16384", "--binary"],
        "metric": "mb_per_s",
        "unit": "MB/s",
        "about": "20 connections x 2 in flight, 16 KiB binary",
    },
    "large": {
        "args": ["--conns", "4", "--inflight", "1", "--size", str(1 << 20), "--binary"],
        "metric": "mb_per_s",
        "unit": "MB/s",
        "about": "4 connections x 1 in flight, 1 MiB binary",
    },
    "forward": {
        # Not the C load generator: bench/forward.py's peers (a sender and a receiver of masked
        # 256 KiB frames, pinned to core 1) through a forwarder started per run on core 0.
        "args": [],
        "metric": "mb_per_s",
        "unit": "MB/s",
        "about": "1 pair, every 256 KiB binary message forwarded to the paired connection "
        "(the relay's inner loop), 256 MiB per run; ratios against the raw asyncio TCP splice",
        "baseline": "raw-asyncio",
    },
    "idle": {
        "args": [],  # --idle N added at run time
        "metric": "rss_per_conn_kb",
        "unit": "KiB/conn",
        "about": "N connections opened (8 handshakes in flight), one echo each, then 3 s idle",
    },
}

# Issue 5's targets for Tube, as ratios against the websockets threading server.
TARGETS: dict[str, list[tuple[str, str, float]]] = {
    "small": [("messages_per_s", ">=", 2.0)],
    "latency": [("messages_per_s", ">=", 1.2)],
    "medium": [("mb_per_s", ">=", 1.5)],
    "large": [("mb_per_s", ">=", 1.0)],
    "idle": [("rss_per_conn_kb", "<=", 0.5), ("handshakes_per_s", ">=", 2.0)],
    # Issue 25: the relay's inner loop (Tube's asyncio forwarder) against the raw TCP splice.
    "forward": [("mb_per_s", ">=", 0.7)],
}

# The forward scenario's forwarder for each server name (bench/forward.py); others have none.
FORWARDERS = {
    "tube": "tube-threads",
    "tube-asyncio": "tube-asyncio",
    "tube-asyncio-uvloop": "tube-asyncio-uvloop",
    "raw-asyncio": "splice",
}

IMPORT_NAMES = {
    "websockets": "websockets",
    "wsproto": "wsproto",
    "aiohttp": "aiohttp",
    "picows": "picows",
    "simple-websocket": "simple_websocket",
    "werkzeug": "werkzeug",
    "uvicorn": "uvicorn",
    "uvloop": "uvloop",
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- setup


def pinned_requirements() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"]["optional-dependencies"]["bench"])


def ensure_peers(install: bool) -> dict[str, str]:
    """Install the pinned peers if any is missing or at another version; return their versions."""
    wanted = {}
    for requirement in pinned_requirements():
        name, _, version = requirement.partition("==")
        wanted[name.strip()] = version.strip()
    wrong = []
    for name, version in wanted.items():
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            have = None
        if have != version:
            wrong.append(f"{name} (have {have}, want {version})")
    if wrong:
        if not install:
            raise SystemExit(f"missing peers: {', '.join(wrong)}; run without --no-install")
        log(f"installing pinned peers: {', '.join(wrong)}")
        specs = [f"{n}=={v}" for n, v in wanted.items()]
        subprocess.run([PY, "-m", "pip", "install", "--quiet", *specs], check=True)
        importlib.invalidate_caches()
    return {name: importlib.metadata.version(name) for name in wanted}


def build_loadgen() -> None:
    source = BENCH / "loadgen.c"
    BUILD.mkdir(exist_ok=True)
    if not LOADGEN.exists() or LOADGEN.stat().st_mtime < source.stat().st_mtime:
        compiler = os.environ.get("CC", "gcc")
        if shutil.which(compiler) is None:
            raise SystemExit(f"{compiler} not found: the load generator is a C program")
        log(f"building {LOADGEN.relative_to(ROOT)}")
        subprocess.run(
            [compiler, "-O2", "-Wall", "-o", str(LOADGEN), str(source)], check=True, cwd=ROOT
        )
    subprocess.run([str(LOADGEN), "--selftest"], check=True, stdout=subprocess.DEVNULL)


def raise_nofile(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = hard if hard == resource.RLIM_INFINITY else min(hard, max(needed, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft < needed:
        raise SystemExit(
            f"RLIMIT_NOFILE is {soft} (hard {hard}), the idle scenario needs {needed}: "
            "raise it (ulimit -n) or pass a smaller --idle-connections"
        )
    return soft


def pinning() -> tuple[list[str], list[str]]:
    """taskset prefixes for the server (core 0) and the load generator (core 1)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2 or shutil.which("taskset") is None:
        log("warning: fewer than 2 cores or no taskset: server and load generator are not pinned")
        return [], []
    return ["taskset", "-c", str(cores[0])], ["taskset", "-c", str(cores[1])]


def tube_available() -> str | None:
    """None if Tube's echo server can be imported, else the reason it cannot."""
    result = subprocess.run(
        [PY, "-c", "import tube.websocket.echo"], cwd=ROOT, capture_output=True, text=True
    )
    if result.returncode == 0:
        return None
    return (result.stderr.strip().splitlines() or ["import failed"])[-1]


# -------------------------------------------------------------------------------------- servers


class Server:
    """One echo server process, started pinned and stopped by PID."""

    def __init__(
        self, name: str, prefix: list[str], logdir: Path, wrap: list[str] | None = None
    ) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        spec = SERVERS[name]
        # A baseline server (--baseline) runs Tube from another tree: its directory first.
        root = Path(spec.get("root", ROOT))
        env = dict(os.environ, PYTHONPATH=str(root), PYTHONUNBUFFERED="1")
        # wrap: arguments put between the interpreter and the server (bench/cprofile_wrap.py)
        base = [spec["cmd"][0], *(wrap or []), *spec["cmd"][1:]]
        cmd = [*prefix, *base, "--host", "127.0.0.1", "--port", "0"]
        cmd += ["--max-message-size", str(MAX_MESSAGE_SIZE)]
        self.log_file = open(self.log_path, "a")  # noqa: SIM115 - closed in stop()
        self.log_file.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n")
        self.log_file.flush()
        self.proc = subprocess.Popen(
            cmd,
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            text=True,  # the raised RLIMIT_NOFILE is inherited
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()
        self.port = self._wait_ready(timeout=30.0)

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _wait_ready(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise RuntimeError(f"{self.name}: no 'listening on' line within {timeout} s")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.stop()
                raise RuntimeError(f"{self.name}: exited before listening, see {self.log_path}")
            match = re.search(r"listening on [^\s:]+:(\d+)", line)
            if match:
                return int(match.group(1))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log_file.close()


def run_loadgen(
    prefix: list[str], server: Server, scenario: str, args: argparse.Namespace
) -> dict[str, Any]:
    cmd = [*prefix, str(LOADGEN), "--port", str(server.port), "--server-pid", str(server.proc.pid)]
    cmd += ["--mode", SERVERS[server.name]["mode"]]
    if scenario == "idle":
        cmd += ["--idle", str(args.idle_connections), "--text", "--size", "16"]
        timeout = 240.0
    else:
        cmd += SCENARIOS[scenario]["args"]
        cmd += ["--duration", str(args.duration), "--warmup", str(args.warmup)]
        timeout = args.duration + args.warmup + 60.0
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"load generator timed out after {timeout:.0f} s"}
    if result.returncode != 0:
        return {"error": result.stderr.strip()[-500:] or f"exit status {result.returncode}"}
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    seconds = data.get("seconds") or data.get("handshake_seconds")
    if seconds and data.get("server_cpu_s", -1) >= 0:
        data["server_cpu_share"] = data["server_cpu_s"] / seconds
        data["loadgen_cpu_share"] = data["loadgen_cpu_s"] / seconds
    if data.get("server_user_s") is not None and data.get("server_cpu_s", 0) > 0:
        # the kernel's part of the server's CPU time: system calls, switches between threads
        data["server_sys_fraction"] = 1 - data["server_user_s"] / data["server_cpu_s"]
    return data


# -------------------------------------------------------------------------------------- reports


def add_baseline(rev: str, servers: list[str]) -> list[str]:
    """Export ``rev`` (with its C accelerator built) and add a ``NAME@rev`` twin of each Tube
    echo server in ``servers``, right after it: before and after in the same run."""
    short = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = BUILD / f"baseline-{short}"
    if not (tree / "tube").is_dir():
        log(f"exporting {rev} ({short}) to {tree}")
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", short], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        subprocess.run(
            [PY, "setup.py", "-q", "build_ext", "--inplace"],
            cwd=tree,
            capture_output=True,
            check=False,  # without a compiler the baseline runs pure Python, as Tube would
        )
    result = []
    for name in servers:
        result.append(name)
        if name.startswith("tube") and "@" not in name:
            twin = f"{name}@{short}"
            SERVERS[twin] = {
                **SERVERS[name],
                "root": str(tree),
                "about": f"{SERVERS[name]['about']}, at {short}",
            }
            result.append(twin)
    return result


def run_forward(forwarder: str, args: argparse.Namespace) -> dict[str, Any]:
    """One run of bench/forward.py (its own pinning: peers on core 1, forwarder on core 0)."""
    size = "64M" if args.quick else "256M"
    cmd = [PY, str(BENCH / "forward.py"), "--servers", forwarder, "-r", "1", "--size", size]
    result = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    for line in result.stdout.splitlines():
        if line.startswith("json "):
            data = json.loads(line[5:])
            return {
                "mb_per_s": data["mb_per_s"],
                "server_cpu_us_per_msg": data["cpu_us_per_msg"],
                "server_cpu_s_per_gb": data["cpu_s_per_gb"],
                "server_cpu_share": data["cpu_share"],
            }
    return {"error": (result.stderr.strip() or result.stdout.strip() or "no result")[-500:]}


def median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if "error" not in r and r.get(key) is not None and r[key] >= 0]
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return value / base


def verdict(scenario: str, ratios: dict[str, float | None]) -> str:
    parts = []
    for key, op, bound in TARGETS.get(scenario, []):
        r = ratios.get(key)
        if r is None:
            parts.append(f"{op} {bound}x: ?")
            continue
        met = r >= bound if op == ">=" else r <= bound
        parts.append(f"{op} {bound}x: {'met' if met else 'NOT met'}")
    return "; ".join(parts)


def scenario_table(
    scenario: str, results: dict[str, dict[str, list[dict[str, Any]]]], servers: list[str]
) -> list[str]:
    spec = SCENARIOS[scenario]
    if scenario == "forward":
        servers = [s for s in servers if s in FORWARDERS]
    runs_of = {s: results.get(scenario, {}).get(s, []) for s in servers}
    base_runs = runs_of.get(spec.get("baseline", BASELINE), [])
    lines = []
    if scenario == "idle":
        header = [
            "server",
            "KiB/conn",
            "ratio",
            "KiB/conn at open",
            "handshakes/s",
            "ratio",
            "server CPU us/handshake",
            "ok runs",
            "target (Tube)",
        ]
        base_mem = median(base_runs, "rss_per_conn_kb")
        base_hs = median(base_runs, "handshakes_per_s")
        rows = []
        for s in servers:
            runs = runs_of[s]
            mem, hs = median(runs, "rss_per_conn_kb"), median(runs, "handshakes_per_s")
            ratios = {
                "rss_per_conn_kb": ratio(mem, base_mem),
                "handshakes_per_s": ratio(hs, base_hs),
            }
            rows.append(
                [
                    s,
                    fmt(mem, 1),
                    fmt(ratios["rss_per_conn_kb"], 2),
                    fmt(median(runs, "rss_per_conn_kb_at_open"), 1),
                    fmt(hs),
                    fmt(ratios["handshakes_per_s"], 2),
                    fmt(median(runs, "server_cpu_us_per_handshake")),
                    f"{sum('error' not in r for r in runs)}/{len(runs)}",
                    verdict(scenario, ratios) if s == "tube" else "",
                ]
            )
    else:
        metric = spec["metric"]
        base = median(base_runs, metric)
        base_cpu = median(base_runs, "server_cpu_us_per_msg")
        header = [
            "server",
            spec["unit"],
            "ratio",
            "server CPU us/msg",
            "CPU ratio",
            "server CPU",
            "of it in kernel",
            "loadgen CPU",
        ]
        if scenario == "latency":
            header += ["p50 us", "p99 us"]
        header += ["ok runs", "target (Tube)"]
        rows = []
        for s in servers:
            runs = runs_of[s]
            value = median(runs, metric)
            r = ratio(value, base)
            share_s, share_l = median(runs, "server_cpu_share"), median(runs, "loadgen_cpu_share")
            sys_f = median(runs, "server_sys_fraction")
            cpu = median(runs, "server_cpu_us_per_msg")
            row = [
                s,
                fmt(value, 1 if metric == "mb_per_s" else 0),
                fmt(r, 2),
                fmt(cpu, 1),
                fmt(ratio(base_cpu, cpu), 2),
                "-" if share_s is None else f"{share_s:.0%}",
                "-" if sys_f is None else f"{sys_f:.0%}",
                "-" if share_l is None else f"{share_l:.0%}",
            ]
            if scenario == "latency":
                row += [
                    fmt(median(runs, "latency_p50_us"), 1),
                    fmt(median(runs, "latency_p99_us"), 1),
                ]
            row += [
                f"{sum('error' not in r for r in runs)}/{len(runs)}",
                verdict(scenario, {metric: r})
                if s == ("tube-asyncio" if scenario == "forward" else "tube")
                else "",
            ]
            rows.append(row)
    lines.append(f"### {scenario}: {spec['about']}")
    lines.append("")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        lines.append("| " + " | ".join(row) + " |")
    errors = [
        f"- {s} rep {r.get('rep')}: {r['error']}"
        for s in servers
        for r in runs_of[s]
        if "error" in r
    ]
    if errors:
        lines += ["", "Failed runs:", *errors]
    lines.append("")
    return lines


def summary_table(
    results: dict[str, dict[str, list[dict[str, Any]]]], scenarios: list[str], servers: list[str]
) -> list[str]:
    """Tube's median over each peer's median, per scenario (> 1: Tube ahead, except memory)."""
    if "tube" not in servers:
        return []
    peers = [s for s in servers if s != "tube"]
    lines = [
        "### Tube against each peer (Tube / peer; for memory per connection lower is better)",
        "",
        "| scenario | " + " | ".join(peers) + " |",
        "|---|" + "|".join("---" for _ in peers) + "|",
    ]
    for scenario in scenarios:
        keys = (
            [("rss_per_conn_kb", "memory"), ("handshakes_per_s", "handshakes")]
            if scenario == "idle"
            else [(SCENARIOS[scenario]["metric"], "")]
        )
        for key, label in keys:
            tube = median(results.get(scenario, {}).get("tube", []), key)
            cells = [
                fmt(ratio(tube, median(results.get(scenario, {}).get(p, []), key)), 2)
                for p in peers
            ]
            name = f"{scenario} {label}".strip()
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def environment(versions: dict[str, str]) -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        # Reports are not code: a run that rewrites bench/results/ is still of this commit.
        ["git", "status", "--porcelain", "--", "tube", "bench", ":!bench/results"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if commit and dirty:
        commit += " + uncommitted changes in tube/ or bench/"
    # What Tube's servers will use (they inherit this environment, TUBE_NO_SPEEDUPS included).
    core = subprocess.run(
        [PY, "-c", "from tube.websocket.core.accelerator import IMPLEMENTATION as i; print(i)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "tube_core": {"c": "C accelerator", "python": "pure Python"}.get(core, "unknown"),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "commit": commit or "uncommitted",
        "peers": versions,
    }


def write_reports(
    path: Path,
    results: dict[str, dict[str, list[dict[str, Any]]]],
    args: argparse.Namespace,
    scenarios: list[str],
    servers: list[str],
    env: dict[str, Any],
    command: str,
) -> str:
    lines = [
        "# Tube benchmark results",
        "",
        f"Command: `{command}`",
        "",
        f"{env['date']}; commit {env['commit']}; Python {env['python']}; {env['cpu']} "
        f"({env['cores']} cores); Linux {env['kernel']}.",
        "Peers: " + ", ".join(f"{k} {v}" for k, v in env["peers"].items()) + ".",
        f"Tube's core: {env.get('tube_core', 'unknown')}.",
        "",
        f"Medians of {args.repetitions} repetitions (servers interleaved), {args.duration} s "
        f"measured after {args.warmup} s of warm-up; server pinned to one core, the C load "
        "generator to the other. Ratios are against the `websockets` threading server "
        "measured in the same run. MB/s counts echoed payload bytes in one direction (1 MB = "
        "10^6 B). CPU shares are CPU seconds per wall-clock second of the measurement; a "
        "server share well below 100 % in a throughput scenario means it was waiting, or that "
        "other work on the machine took its core. CPU ratio is the baseline's server CPU time "
        "per message divided by this server's (above 1: cheaper per message), which varies "
        "less than throughput on a busy machine.",
        f"Load average (1 min) just before the run: {env['loadavg_start']} (other work on the "
        "machine; during the run the servers' own threads dominate it).",
        "",
    ]
    for scenario in scenarios:
        lines += scenario_table(scenario, results, servers)
    lines += summary_table(results, scenarios, servers)
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    raw = {"environment": env, "command": command, "settings": vars(args), "results": results}
    path.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
    return text


# ----------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--servers",
        default=",".join(s for s in SERVERS if not SERVERS[s].get("optional")),
        help=f"comma-separated, from: {', '.join(SERVERS)} (experiments only if named)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from: {', '.join(SCENARIOS)}",
    )
    parser.add_argument("-r", "--repetitions", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before that")
    parser.add_argument("--idle-connections", type=int, default=2000)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 repetition, 1 s runs, 200 idle connections (for development)",
    )
    parser.add_argument("--output", type=Path, help="markdown report (JSON written beside it)")
    parser.add_argument("--no-install", action="store_true", help="fail if a peer is missing")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run each Tube server at this git revision (NAME@REV): before and after a "
        "change in the same run (the forward scenario runs only the current tree)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repetitions, args.duration, args.warmup = 1, 1.0, 0.3
        args.idle_connections = min(args.idle_connections, 200)
    if args.output is None:
        args.output = BUILD / "quick.md" if args.quick else BENCH / "results" / "latest.md"
    for name in args.servers.split(","):
        if name not in SERVERS:
            parser.error(f"unknown server {name!r}")
    for name in args.scenarios.split(","):
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(["python3 bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    servers = [s for s in SERVERS if s in args.servers.split(",")]
    if args.baseline:
        servers = add_baseline(args.baseline, servers)
    scenarios = [s for s in SCENARIOS if s in args.scenarios.split(",")]
    versions = ensure_peers(install=not args.no_install)
    build_loadgen()
    if "idle" in scenarios:
        nofile = raise_nofile(args.idle_connections + 200)
        log(f"RLIMIT_NOFILE: {nofile}")
    server_prefix, loadgen_prefix = pinning()
    if any(s.startswith("tube") for s in servers):
        reason = tube_available()
        if reason is not None:
            log(f"skipping tube: its echo server does not import ({reason})")
            servers = [s for s in servers if not s.startswith("tube")]
    if BASELINE not in servers:
        log(f"note: {BASELINE} is not in the run, so there are no ratios")
    logdir = BUILD / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    throughput = [s for s in scenarios if s not in ("idle", "forward")]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {s: {} for s in scenarios}
    started = time.monotonic()
    load_start = loadavg()

    def record(scenario: str, name: str, rep: int, data: dict[str, Any]) -> None:
        data["rep"] = rep
        results[scenario].setdefault(name, []).append(data)
        if "error" in data:
            log(f"  {scenario:8} {name:20} ERROR {data['error'].splitlines()[-1]}")
        elif scenario == "idle":
            log(
                f"  {scenario:8} {name:20} {data['rss_per_conn_kb']:8.1f} KiB/conn "
                f"{data['handshakes_per_s']:8.0f} handshakes/s"
            )
        else:
            metric = SCENARIOS[scenario]["metric"]
            log(
                f"  {scenario:8} {name:20} {data[metric]:12,.1f} {SCENARIOS[scenario]['unit']:14}"
                f" server {data.get('server_cpu_us_per_msg', -1):8.1f} us/msg"
                f" cpu {data.get('server_cpu_share', 0):4.0%} / loadgen"
                f" {data.get('loadgen_cpu_share', 0):4.0%}"
            )

    for rep in range(args.repetitions):
        shift = rep % len(servers)
        order = servers[shift:] + servers[:shift]
        log(f"repetition {rep + 1}/{args.repetitions} ({time.monotonic() - started:.0f} s)")
        for name in order:
            if throughput:
                try:
                    server = Server(name, server_prefix, logdir)
                except RuntimeError as exc:
                    for scenario in throughput:
                        record(scenario, name, rep, {"error": str(exc)})
                else:
                    try:
                        for scenario in throughput:
                            if not server.alive():
                                record(scenario, name, rep, {"error": "server died"})
                                continue
                            record(
                                scenario,
                                name,
                                rep,
                                run_loadgen(loadgen_prefix, server, scenario, args),
                            )
                    finally:
                        server.stop()
            if "forward" in scenarios and name in FORWARDERS:
                record("forward", name, rep, run_forward(FORWARDERS[name], args))
            if "idle" in scenarios:
                # a fresh process, so its memory is not inflated by the throughput runs
                try:
                    server = Server(name, server_prefix, logdir)
                except RuntimeError as exc:
                    record("idle", name, rep, {"error": str(exc)})
                else:
                    try:
                        record("idle", name, rep, run_loadgen(loadgen_prefix, server, "idle", args))
                    finally:
                        server.stop()
    log(f"done in {time.monotonic() - started:.0f} s")
    env = environment(versions)
    env["loadavg_start"] = load_start
    text = write_reports(args.output, results, args, scenarios, servers, env, command)
    print(text)
    log(f"wrote {args.output} and {args.output.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
