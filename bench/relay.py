"""Relay benchmark: Tube's relay forwarding against its peers, in one run.

Usage (from anywhere; see bench/README.md, "The relay benchmark")::

    python3 bench/relay.py              # full run: 256 MiB per pair, 1 and 8 pairs, 3 times
    python3 bench/relay.py --quick      # a small smoke run for development
    python3 bench/relay.py --systems splice,transit --size 64M -r 5

Three relays carry the same bytes: Tube's relay (``python -m tube``, TRP/1 over WebSocket), a
raw asyncio TCP splice (``bench/servers/splice.py``, the ceiling for a Python relay) and
magic-wormhole's transit relay (``bench/servers/transit_relay.py``, Twisted, pinned in the
``bench`` extra). The C peers (``bench/relay_peer.c``, built into ``bench/build/``) pair up
through each relay's own handshake and send 262,169-byte binary WebSocket frames (a TRP/1 DATA
frame's size), checked on arrival. Each relay runs in a fresh process pinned to core 0 for each
run, the peers on core 1. The report gives medians, and ratios against the peers measured in the
same run; a full run writes ``bench/results/relay.md`` and ``relay.json``, ``--quick`` writes to
``bench/build/``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from run import environment, fmt, loadavg, log, median, ratio  # noqa: E402

ROOT = BENCH.parent
BUILD = BENCH / "build"
PEER = BUILD / "relay_peer"
PY = sys.executable
PEER_PACKAGE = "magic-wormhole-transit-relay"
MIB = 1 << 20
FRAME = 262_169  # TRP/1 DATA frame: 1 + 8 + 262,144 + 16
CHUNK = 262_144

SYSTEMS: dict[str, dict[str, Any]] = {
    "tube": {
        # every peer connects from 127.0.0.1, and each side holds one of its address's slots:
        # 8 pairs need 16 (the default, 8, is a rate limit for real clients, not forwarding)
        "cmd": [PY, "-m", "tube", "--host", "127.0.0.1", "--port", "0", "--pairs-per-ip", "64"],
        "mode": "tube",
        "ready": r"Tube relay on http://127\.0\.0\.1:(\d+)/",
        "about": "Tube's relay (`python -m tube`), TRP/1 over WebSocket",
    },
    "splice": {
        "cmd": [PY, str(BENCH / "servers" / "splice.py"), "--host", "127.0.0.1", "--port", "0"],
        "mode": "splice",
        "ready": r"listening on 127\.0\.0\.1:(\d+)",
        "about": "raw asyncio TCP splice (Protocols, pause/resume reading), the Python ceiling",
    },
    "transit": {
        "cmd": [
            PY,
            str(BENCH / "servers" / "transit_relay.py"),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        "mode": "transit",
        "ready": r"listening on 127\.0\.0\.1:(\d+)",
        "about": "magic-wormhole's transit relay (Twisted)",
    },
}

SCENARIOS: dict[str, dict[str, Any]] = {
    "1-pair": {"pairs": 1, "about": "one pair, SIZE per pair"},
    "8-pairs": {"pairs": 8, "about": "8 pairs at once, SIZE each"},
    "slow": {
        "pairs": 8,
        "about": "slow receiver: 8 pairs, each receiver reads 10x slower than its sender sends",
    },
}

TARGETS = {
    "mb_per_cpu_s vs transit": 1.5,
    "mb_per_s vs splice": 0.6,
    "slow rss_per_pair_mib": 2.5,  # upper bound
}


# ---------------------------------------------------------------------------------------- setup


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(i?b?)\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 256M, 64MiB, 1G, 1000000)")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit])


def ensure_peer_package(install: bool) -> dict[str, str]:
    """Install the pinned transit relay if missing or at another version; return versions."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        extra = tomllib.load(f)["project"]["optional-dependencies"]["bench"]
    pinned = [r for r in extra if r.partition("==")[0].strip() == PEER_PACKAGE]
    if not pinned:
        raise SystemExit(f"{PEER_PACKAGE} is not pinned in the bench extra of pyproject.toml")
    want = pinned[0].partition("==")[2].strip()
    try:
        have = importlib.metadata.version(PEER_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        have = None
    if have != want:
        if not install:
            raise SystemExit(
                f"{PEER_PACKAGE} {have} installed, {want} pinned: run without --no-install"
            )
        log(f"installing {PEER_PACKAGE}=={want}")
        subprocess.run(
            [PY, "-m", "pip", "install", "--quiet", f"{PEER_PACKAGE}=={want}"], check=True
        )
        importlib.invalidate_caches()
    return {
        PEER_PACKAGE: importlib.metadata.version(PEER_PACKAGE),
        "twisted": importlib.metadata.version("twisted"),
    }


def build_peer() -> None:
    source = BENCH / "relay_peer.c"
    BUILD.mkdir(exist_ok=True)
    if not PEER.exists() or PEER.stat().st_mtime < source.stat().st_mtime:
        compiler = os.environ.get("CC", "gcc")
        if shutil.which(compiler) is None:
            raise SystemExit(f"{compiler} not found: the relay peers are a C program")
        log(f"building {PEER.relative_to(ROOT)}")
        subprocess.run([compiler, "-O2", "-Wall", "-o", str(PEER), str(source)], check=True)


def cores() -> tuple[list[str], list[str], int | None]:
    """taskset prefixes for the relay (first core) and the peers (second), and that core."""
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < 2 or shutil.which("taskset") is None:
        log("warning: fewer than 2 cores or no taskset: relay and peers are not pinned")
        return [], [], None
    return ["taskset", "-c", str(mine[0])], ["taskset", "-c", str(mine[1])], mine[1]


# -------------------------------------------------------------------------------------- servers


class Relay:
    """One relay process, started pinned, stopped by PID."""

    def __init__(self, name: str, prefix: list[str], logdir: Path, extra: list[str]) -> None:
        self.name = name
        spec = SYSTEMS[name]
        self.log_path = logdir / f"relay-{name}.log"
        cmd = [*prefix, *spec["cmd"], *extra]
        self.log_file = open(self.log_path, "a")  # noqa: SIM115 - closed in stop()
        self.log_file.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n")
        self.log_file.flush()
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self.log_file, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()
        self.port = self._wait_ready(spec["ready"], timeout=20.0)

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _wait_ready(self, pattern: str, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                got = f" (it printed {seen[0].strip()!r})" if seen else ""
                raise RuntimeError(f"{self.name}: no ready line within {timeout:.0f} s{got}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.stop()
                raise RuntimeError(f"{self.name}: exited before listening, see {self.log_path}")
            seen.append(line)
            match = re.search(pattern, line)
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


def tube_status(prefix: list[str], logdir: Path) -> tuple[str | None, bool]:
    """(None if Tube's relay starts, else why not; whether it takes --metrics)."""
    try:
        relay = Relay("tube", prefix, logdir, [])
    except RuntimeError as exc:
        return str(exc), False
    relay.stop()
    help_text = subprocess.run(
        [PY, "-m", "tube", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30
    ).stdout
    return None, "--metrics" in help_text


class MetricsSampler:
    """Samples ``tube_relay_bytes_queued`` from GET /metrics every ``interval`` seconds."""

    def __init__(self, port: int, interval: float = 0.05) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.interval = interval
        self.values: list[float] = []
        self.errors = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        pattern = re.compile(r"^tube_relay_bytes_queued(?:\{[^}]*\})?\s+([0-9.eE+-]+)", re.M)
        while not self.stopping.wait(self.interval):
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    text = response.read().decode()
            except OSError:
                self.errors += 1
                continue
            found = [float(v) for v in pattern.findall(text)]
            if found:
                self.values.append(sum(found))

    def stop(self) -> dict[str, Any]:
        self.stopping.set()
        self.thread.join()
        return {
            "bytes_queued_max": max(self.values) if self.values else None,
            "metrics_samples": len(self.values),
            "metrics_errors": self.errors,
        }


# ------------------------------------------------------------------------------------------ runs


def run_one(
    name: str,
    scenario: str,
    args: argparse.Namespace,
    relay_prefix: list[str],
    peer_prefix: list[str],
    logdir: Path,
    metrics: bool,
) -> dict[str, Any]:
    pairs = SCENARIOS[scenario]["pairs"]
    slow = scenario == "slow"
    size = args.slow_size if slow else args.size
    extra = ["--metrics"] if (slow and name == "tube" and metrics) else []
    try:
        relay = Relay(name, relay_prefix, logdir, extra)
    except RuntimeError as exc:
        return {"error": str(exc)}
    sampler = None
    try:
        time.sleep(args.settle)  # let the fresh process finish starting before the baseline
        cmd = [*peer_prefix, str(PEER), "--mode", SYSTEMS[name]["mode"]]
        cmd += ["--port", str(relay.port), "--pairs", str(pairs), "--size", str(size)]
        cmd += ["--server-pid", str(relay.proc.pid)]
        frames = -(-size // CHUNK) * pairs
        if slow:
            cmd += ["--recv-rate", str(args.slow_rate), "--send-rate", str(10 * args.slow_rate)]
            timeout = 60 + frames * FRAME / pairs / args.slow_rate * 2
        else:
            timeout = 60 + frames * FRAME / 20e6  # bounded at a 20 MB/s floor
        cmd += ["--timeout", f"{timeout:.0f}"]
        if extra:
            sampler = MetricsSampler(relay.port)
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30)
        except subprocess.TimeoutExpired:
            return {"error": f"peers timed out after {timeout + 30:.0f} s"}
        if result.returncode != 0:
            return {"error": result.stderr.strip()[-500:] or f"exit status {result.returncode}"}
        data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        if not relay.alive():
            data["error"] = "relay died during the run"
    finally:
        if sampler is not None:
            sampler_data = sampler.stop()
        relay.stop()
    if sampler is not None:
        data.update(sampler_data)
    derive(data)
    return data


def derive(data: dict[str, Any]) -> None:
    seconds, cpu, gb = data["seconds"], data["server_cpu_s"], data["bytes"] / 1e9
    if cpu > 0:
        data["cpu_s_per_gb"] = cpu / gb
        data["mb_per_cpu_s"] = data["bytes"] / 1e6 / cpu
        data["relay_cpu_share"] = cpu / seconds
        data["relay_sys_fraction"] = 1 - data["server_user_s"] / cpu
    data["peer_cpu_share"] = data["peer_cpu_s"] / seconds
    data["rss_peak_mib"] = data["rss_peak_kb"] / 1024
    data["rss_per_pair_mib"] = (data["rss_peak_kb"] - data["rss_base_kb"]) / 1024 / data["pairs"]
    if data.get("bytes_queued_max") is not None:
        data["bytes_queued_max_mib"] = data["bytes_queued_max"] / MIB
        data["bytes_queued_per_pair_mib"] = data["bytes_queued_max"] / MIB / data["pairs"]


# -------------------------------------------------------------------------------------- reports


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def ok_runs(runs: list[dict[str, Any]]) -> str:
    return f"{sum('error' not in r for r in runs)}/{len(runs)}"


def throughput_table(
    scenario: str, results: dict[str, dict[str, list[dict[str, Any]]]], systems: list[str]
) -> list[str]:
    header = [
        "relay",
        "MB/s",
        "relay CPU s/GB",
        "MB per relay CPU-s",
        "relay CPU",
        "of it in kernel",
        "peers CPU",
        "relay peak RSS MiB",
        "RSS/pair MiB",
        "ok runs",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for name in systems:
        runs = results[scenario].get(name, [])
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    fmt(median(runs, "mb_per_s"), 0),
                    fmt(median(runs, "cpu_s_per_gb"), 2),
                    fmt(median(runs, "mb_per_cpu_s"), 0),
                    pct(median(runs, "relay_cpu_share")),
                    pct(median(runs, "relay_sys_fraction")),
                    pct(median(runs, "peer_cpu_share")),
                    fmt(median(runs, "rss_peak_mib"), 1),
                    fmt(median(runs, "rss_per_pair_mib"), 2),
                    ok_runs(runs),
                ]
            )
            + " |"
        )
    return lines


def slow_table(
    results: dict[str, dict[str, list[dict[str, Any]]]], systems: list[str]
) -> list[str]:
    header = [
        "relay",
        "MB/s (all receivers)",
        "relay CPU s/GB",
        "relay peak RSS MiB",
        "RSS/pair MiB",
        "max bytes_queued MiB (per pair)",
        "ok runs",
        "target (Tube)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for name in systems:
        runs = results["slow"].get(name, [])
        per_pair = median(runs, "rss_per_pair_mib")
        queued = median(runs, "bytes_queued_max_mib")
        queued_cell = (
            "-"
            if queued is None
            else (f"{queued:.2f} ({median(runs, 'bytes_queued_per_pair_mib'):.2f})")
        )
        target = ""
        if name == "tube":
            bound = TARGETS["slow rss_per_pair_mib"]
            met = "?" if per_pair is None else ("met" if per_pair <= bound else "NOT met")
            target = f"RSS/pair <= {bound} MiB: {met}"
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    fmt(median(runs, "mb_per_s"), 1),
                    fmt(median(runs, "cpu_s_per_gb"), 2),
                    fmt(median(runs, "rss_peak_mib"), 1),
                    fmt(per_pair, 2),
                    queued_cell,
                    ok_runs(runs),
                    target,
                ]
            )
            + " |"
        )
    return lines


def ratios(
    results: dict[str, dict[str, list[dict[str, Any]]]], scenarios: list[str]
) -> tuple[list[str], dict[str, Any]]:
    rows = [
        ("Tube MB/s / transit MB/s", "mb_per_s", "transit", None),
        ("Tube MB per CPU-s / transit's", "mb_per_cpu_s", "transit", 1.5),
        ("Tube MB/s / splice MB/s", "mb_per_s", "splice", 0.6),
        ("Tube MB per CPU-s / splice's", "mb_per_cpu_s", "splice", None),
    ]
    cols = [s for s in scenarios if s != "slow"]
    lines = [
        "| ratio | " + " | ".join(cols) + " | target |",
        "|---|" + "|".join("---" for _ in cols) + "|---|",
    ]
    found: dict[str, Any] = {}
    for label, key, peer, bound in rows:
        cells = []
        verdicts = []
        for scenario in cols:
            r = ratio(
                median(results[scenario].get("tube", []), key),
                median(results[scenario].get(peer, []), key),
            )
            found[f"{scenario}: {label}"] = r
            cells.append(fmt(r, 2))
            if bound is not None and r is not None:
                verdicts.append("met" if r >= bound else "NOT met")
        target = "" if bound is None else f">= {bound}: " + (", ".join(verdicts) or "?")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")
    return lines, found


def write_reports(
    path: Path,
    results: dict[str, dict[str, list[dict[str, Any]]]],
    args: argparse.Namespace,
    scenarios: list[str],
    systems: list[str],
    env: dict[str, Any],
    command: str,
    notes: list[str],
) -> str:
    size_mib = args.size / MIB
    lines = [
        "# Relay benchmark results",
        "",
        f"Command: `{command}`",
        "",
        f"{env['date']}; commit {env['commit']}; Python {env['python']}; {env['cpu']} "
        f"({env['cores']} cores); Linux {env['kernel']}.",
        "Peers: " + ", ".join(f"{k} {v}" for k, v in env["peers"].items()) + ".",
        f"Tube's core: {env.get('tube_core', 'unknown')}. Load average (1 min) before the run: "
        f"{env['loadavg_start']}.",
        "",
        "Relays: " + "; ".join(f"`{s}`: {SYSTEMS[s]['about']}" for s in systems) + ".",
        "",
        f"Medians of {args.repetitions} repetitions (relays interleaved, a fresh relay process "
        f"per run). {size_mib:g} MiB per pair: {-(-args.size // CHUNK)} binary frames of "
        f"{FRAME:,} bytes (a TRP/1 DATA frame), masked by the sender, checked by the receiver "
        "(length, sequence number, sampled content). Relay pinned to one core, the C peers "
        "(every sender and receiver, one epoll thread) to the other. MB/s: frame payload bytes "
        "received, all pairs, from the moment every pair is paired until the last frame "
        "arrives (1 MB = 10^6 B). Relay CPU: utime + stime from /proc/PID/stat over the same "
        "interval, per GB (10^9 B) forwarded; the CPU columns are CPU seconds per second of "
        "the transfer. Peak RSS: the relay's VmHWM during the transfer (reset at the start); "
        "RSS/pair: (peak - VmRSS before the first connection) / pairs.",
        "",
    ]
    for scenario in scenarios:
        if scenario == "slow":
            continue
        about = SCENARIOS[scenario]["about"].replace("SIZE", f"{size_mib:g} MiB")
        lines += [f"### {scenario}: {about}", ""]
        lines += throughput_table(scenario, results, systems)
        lines.append("")
    found: dict[str, Any] = {}
    if "tube" in systems and len([s for s in scenarios if s != "slow"]) > 0:
        lines += ["### Ratios (medians of each relay, same run)", ""]
        table, found = ratios(results, scenarios)
        lines += table
        lines.append("")
    if "slow" in scenarios:
        lines += [
            f"### slow: 8 pairs, {args.slow_size / MIB:g} MiB each; each receiver reads at most "
            f"{args.slow_rate / 1e6:g} MB/s, each sender sends at most "
            f"{10 * args.slow_rate / 1e6:g} MB/s",
            "",
        ]
        lines += slow_table(results, systems)
        lines += [
            "",
            "The relay must hold back the senders (stop reading them) rather than buffer: "
            "RSS/pair is what it kept per pair at the peak. `bytes_queued` is the relay's own "
            "gauge `tube_relay_bytes_queued` (GET /metrics every 50 ms, relay started with "
            "`--metrics`), summed over its series, maximum over the run.",
            "",
        ]
    errors = [
        f"- {scenario} {name} rep {r.get('rep')}: {r['error']}"
        for scenario in scenarios
        for name in systems
        for r in results[scenario].get(name, [])
        if "error" in r
    ]
    if errors:
        lines += ["Failed runs:", "", *errors, ""]
    if notes:
        lines += ["Notes:", "", *[f"- {n}" for n in notes], ""]
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    raw = {
        "environment": env,
        "command": command,
        "settings": vars(args),
        "ratios": found,
        "notes": notes,
        "results": results,
    }
    path.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
    return text


# ----------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="from: " + ", ".join(SYSTEMS))
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="from: " + ", ".join(SCENARIOS)
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=256 * MIB,
        help="bytes per pair (256M; suffixes K, M, G are binary)",
    )
    parser.add_argument(
        "--slow-size",
        type=parse_size,
        default=32 * MIB,
        help="bytes per pair in the slow-receiver scenario (32M)",
    )
    parser.add_argument(
        "--slow-rate",
        type=float,
        default=8e6,
        help="slow receiver: bytes/s each receiver reads (senders: 10x)",
    )
    parser.add_argument("-r", "--repetitions", type=int, default=3)
    parser.add_argument(
        "--settle",
        type=float,
        default=0.5,
        help="seconds between a relay's start and the first connection",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="64 MiB per pair (slow: 16 MiB), 1 repetition (for development)",
    )
    parser.add_argument("--output", type=Path, help="markdown report (JSON written beside it)")
    parser.add_argument("--no-install", action="store_true", help="fail if the peer is missing")
    args = parser.parse_args(argv)
    if args.quick:
        args.repetitions = 1
        args.size = min(args.size, 64 * MIB)
        args.slow_size = min(args.slow_size, 16 * MIB)
    if args.output is None:
        args.output = BUILD / "relay-quick.md" if args.quick else BENCH / "results" / "relay.md"
    for name in args.systems.split(","):
        if name not in SYSTEMS:
            parser.error(f"unknown relay {name!r}")
    for name in args.scenarios.split(","):
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(["python3 bench/relay.py", *(sys.argv[1:] if argv is None else argv)])
    systems = [s for s in SYSTEMS if s in args.systems.split(",")]
    scenarios = [s for s in SCENARIOS if s in args.scenarios.split(",")]
    versions = ensure_peer_package(install=not args.no_install)
    build_peer()
    relay_prefix, peer_prefix, peer_core = cores()
    if peer_core is not None:
        os.sched_setaffinity(0, {peer_core})  # this script (and its samplers) beside the peers
    logdir = BUILD / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    metrics = False
    if "tube" in systems:
        reason, metrics = tube_status(relay_prefix, logdir)
        if reason is not None:
            log(f"skipping tube: its relay does not start ({reason})")
            notes.append(f"Tube's relay was not measured: {reason}.")
            systems.remove("tube")
        elif "slow" in scenarios and not metrics:
            notes.append("Tube's relay has no --metrics option: no bytes_queued samples.")
    if not systems:
        raise SystemExit("no relay to measure")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {s: {} for s in scenarios}
    started = time.monotonic()
    load_start = loadavg()
    for rep in range(args.repetitions):
        shift = rep % len(systems)
        order = systems[shift:] + systems[:shift]
        log(f"repetition {rep + 1}/{args.repetitions} ({time.monotonic() - started:.0f} s)")
        for name in order:
            for scenario in scenarios:
                data = run_one(name, scenario, args, relay_prefix, peer_prefix, logdir, metrics)
                data["rep"] = rep
                results[scenario].setdefault(name, []).append(data)
                if "error" in data:
                    log(f"  {scenario:8} {name:8} ERROR {data['error'].splitlines()[-1]}")
                    continue
                queued = data.get("bytes_queued_max_mib")
                log(
                    f"  {scenario:8} {name:8} {data['mb_per_s']:9,.1f} MB/s"
                    f" {data.get('cpu_s_per_gb', -1):6.2f} CPU s/GB"
                    f" relay {data.get('relay_cpu_share', 0):4.0%}"
                    f" peers {data['peer_cpu_share']:4.0%}"
                    f" peak {data['rss_peak_mib']:6.1f} MiB"
                    f" ({data['rss_per_pair_mib']:5.2f}/pair)"
                    + ("" if queued is None else f" queued max {queued:.2f} MiB")
                )
    log(f"done in {time.monotonic() - started:.0f} s")
    env = environment(versions)
    env["loadavg_start"] = load_start
    text = write_reports(args.output, results, args, scenarios, systems, env, command, notes)
    print(text)
    log(f"wrote {args.output} and {args.output.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
