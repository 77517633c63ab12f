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
import http.client
import importlib.metadata
import json
import os
import queue
import re
import shutil
import socket
import statistics
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
RTT_BYTES = 64  # relay_peer.c's small frame (latency run)

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
        subprocess.run(
            [compiler, "-O2", "-Wall", "-pthread", "-o", str(PEER), str(source)], check=True
        )


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

    def __init__(
        self,
        name: str,
        prefix: list[str],
        logdir: Path,
        extra: list[str],
        spec: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        spec = SYSTEMS[name] if spec is None else spec
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
        seen: list[str] = []
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


# ----------------------------------------------------------------------------------- scale-out

# Every peer comes from 127.0.0.1 (directly or as haproxy's X-Forwarded-For): the per-address
# limits are for real clients, not for a benchmark's hundreds of pairs from one address.
SCALE_LIMITS = [
    "--pairs-per-ip",
    "100000",
    *("--limit", "allocations_per_minute=1000000"),
    *("--limit", "claims_per_minute=1000000"),
    *("--limit", "outstanding_per_ip=100000"),
    *("--limit", "connections_per_ip=100000"),
]
DEPLOY_CFG = ROOT / "deploy" / "haproxy.cfg"
# the server lines of one backend: relay1 first, then any more
SERVER_LINES = re.compile(
    r'^([ \t]*)server relay1 "\$\{TUBE_RELAY_1\}"\n'
    r'(?:[ \t]*server relay\d+ "\$\{TUBE_RELAY_\d+\}"\n)*',
    re.M,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise SystemExit(f"{name} is not installed (Debian: apt-get install {name})")
    return found


def haproxy_config(instances: int) -> Path:
    """deploy/haproxy.cfg with ``instances`` server lines in both backends, into bench/build/."""
    text = DEPLOY_CFG.read_text()

    def servers(match: re.Match[str]) -> str:
        indent = match.group(1)
        return "".join(
            f'{indent}server relay{i} "${{TUBE_RELAY_{i}}}"\n' for i in range(1, instances + 1)
        )

    text, count = SERVER_LINES.subn(servers, text)
    if count != 2:
        raise SystemExit(f"{DEPLOY_CFG}: expected the server lines of two backends, found {count}")
    path = BUILD / f"haproxy-{instances}.cfg"
    header = (
        f"# Generated by bench/relay.py from deploy/haproxy.cfg: {instances} server line(s) in "
        "both backends, nothing else changed.\n"
    )
    path.write_text(header + text)
    return path


def redis_command(port: int, *words: str) -> bytes:
    """One RESP command, its raw reply (PING, INFO)."""
    request = f"*{len(words)}\r\n".encode() + b"".join(
        f"${len(w.encode())}\r\n{w}\r\n".encode() for w in words
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        reply = sock.recv(65536)
        if reply.startswith(b"$"):
            need = reply.index(b"\r\n") + 2 + int(reply[1 : reply.index(b"\r\n")]) + 2
            while len(reply) < need:
                more = sock.recv(65536)
                if not more:
                    break
                reply += more
        return reply


def http_get(port: int, path: str) -> tuple[int, str]:
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        client.request("GET", path)
        response = client.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        client.close()


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ScaleCluster:
    """redis-server, N relays (``--redis``, own ``--instance-url``) and haproxy in front of them,
    as deploy/haproxy.cfg describes; every process started here and stopped by its PID."""

    def __init__(self, instances: int, relay_cores: list[str], logdir: Path) -> None:
        self.instances = instances
        self.relays: list[Relay] = []
        self.ports: list[int] = []
        self.cores: list[str] = []
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.redis: subprocess.Popen[bytes] | None = None
        self.logs: list[Any] = []
        try:
            self._start(relay_cores, logdir)
        except BaseException:
            self.stop()
            raise

    def _log(self, logdir: Path, name: str) -> Any:
        f = open(logdir / name, "a")  # noqa: SIM115 - closed in stop()
        f.write(f"--- {time.strftime('%H:%M:%S')} {self.instances} instance(s)\n")
        f.flush()
        self.logs.append(f)
        return f

    def _start(self, relay_cores: list[str], logdir: Path) -> None:
        self.redis_port = free_port()
        self.redis = subprocess.Popen(
            [
                binary("redis-server"),
                *("--port", str(self.redis_port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=self._log(logdir, "scale-redis.log"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                if redis_command(self.redis_port, "PING").startswith(b"+PONG"):
                    break
            except OSError:
                pass
            if self.redis.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING")
            time.sleep(0.02)
        redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        for i in range(self.instances):
            port = free_port()
            core = relay_cores[i % len(relay_cores)] if relay_cores else None
            prefix = ["taskset", "-c", core] if core is not None else []
            cmd = [PY, "-m", "tube", "--host", "127.0.0.1", "--port", str(port)]
            cmd += ["--redis", redis_url, "--instance-url", f"ws://127.0.0.1:{port}"]
            cmd += ["--trust-proxy", "127.0.0.1", "--metrics", *SCALE_LIMITS]
            spec = {"cmd": cmd, "ready": rf"Tube relay on http://127\.0\.0\.1:({port})/"}
            self.relays.append(Relay(f"scale-{i + 1}", prefix, logdir, [], spec))
            self.ports.append(port)
            self.cores.append(core or "any")
        self.port = free_port()
        env = dict(os.environ, TUBE_LISTEN=f"127.0.0.1:{self.port}")
        for i, port in enumerate(self.ports, 1):
            env[f"TUBE_RELAY_{i}"] = f"127.0.0.1:{port}"
        config = haproxy_config(self.instances)
        self.haproxy = subprocess.Popen(
            [binary("haproxy"), "-f", str(config), "-db"],
            env=env,
            stdout=self._log(logdir, "scale-haproxy.log"),
            stderr=subprocess.STDOUT,
        )
        # up once /healthz answers through the round-robin backend once per instance
        deadline = time.monotonic() + 15
        answered = 0
        while answered < self.instances:
            if self.haproxy.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("haproxy did not answer /healthz (see bench/build/logs)")
            try:
                status, _ = http_get(self.port, "/healthz")
            except OSError:
                status = 0
            if status == 200:
                answered += 1
            else:
                time.sleep(0.05)

    def pids(self) -> list[int]:
        """haproxy, redis-server, then the relays: the order of --cpu-pids."""
        assert self.haproxy is not None and self.redis is not None
        return [self.haproxy.pid, self.redis.pid, *(r.proc.pid for r in self.relays)]

    def alive(self) -> bool:
        procs = [self.haproxy, self.redis, *(r.proc for r in self.relays)]
        return all(p is not None and p.poll() is None for p in procs)

    def counters(self) -> list[dict[str, float]]:
        """Each relay's pairings and forwarded bytes so far (GET /metrics, directly)."""
        found = []
        for port in self.ports:
            _, text = http_get(port, "/metrics")
            values = {}
            for name in ("tube_relay_pairings_total", "tube_relay_bytes_forwarded_total"):
                match = re.search(rf"^{name}\s+([0-9.eE+-]+)", text, re.M)
                values[name] = float(match.group(1)) if match else -1.0
            found.append(values)
        return found

    def redis_bytes(self) -> int:
        """Redis' total_net_input_bytes + total_net_output_bytes."""
        reply = redis_command(self.redis_port, "INFO", "stats").decode()
        total = 0
        for line in reply.splitlines():
            name, _, value = line.partition(":")
            if name in ("total_net_input_bytes", "total_net_output_bytes"):
                total += int(value)
        return total

    def stop(self) -> None:
        if self.haproxy is not None:
            stop_process(self.haproxy)
        for relay in self.relays:
            relay.stop()
        if self.redis is not None:
            stop_process(self.redis)
        for f in self.logs:
            f.close()
        self.logs = []


def run_peer(cmd: list[str], timeout: float) -> dict[str, Any]:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"peers timed out after {timeout:.0f} s"}
    if result.returncode != 0:
        return {"error": result.stderr.strip()[-500:] or f"exit status {result.returncode}"}
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def split_cpu(data: dict[str, Any], instances: int) -> None:
    """cpu_by_pid (haproxy, redis, relays...) into shares of the measured interval."""
    cpu = data.get("cpu_by_pid") or []
    seconds = data.get("seconds") or 0
    if len(cpu) != 2 + instances or seconds <= 0 or min(cpu) < 0:
        return
    data["cpu_haproxy"] = cpu[0] / seconds
    data["cpu_redis"] = cpu[1] / seconds
    data["cpu_relays"] = sum(cpu[2:]) / seconds
    data["cpu_peers"] = data["peer_cpu_s"] / seconds
    data["cpu_total"] = (sum(cpu) + data["peer_cpu_s"]) / seconds
    if "machine_tasks_s" in data:
        # Everything else the machine ran meanwhile (other tests on a shared machine). This
        # kernel has no IRQ time accounting: the softirq work of the loopback traffic is in the
        # processes' own times, and /proc/stat counts the ticks that land in it as softirq, so
        # the machine's busy time is user + nice + system + irq + softirq.
        busy = (data["machine_tasks_s"] + data["machine_irq_s"]) / seconds
        data["cpu_others"] = max(0.0, busy - data["cpu_total"])
        data["cpu_softirq"] = data["machine_irq_s"] / seconds
        data["cpu_steal"] = data["machine_steal_s"] / seconds
    if "bytes" in data and cpu[2:] and sum(cpu[2:]) > 0:
        data["mb_per_relay_cpu_s"] = data["bytes"] / 1e6 / sum(cpu[2:])
    if "bytes" in data and cpu[0] > 0 and data["redirected_pairs"] < data["pairs"]:
        # only the pairs that were not redirected cross haproxy (all pairs are the same size)
        through = data["bytes"] * (data["pairs"] - data["redirected_pairs"]) / data["pairs"]
        data["mb_per_haproxy_cpu_s"] = through / 1e6 / cpu[0]
    if "bytes" in data and data["cpu_total"] > 0:
        data["mb_per_cpu_s"] = data["bytes"] / 1e6 / (data["cpu_total"] * seconds)
    if data.get("run") == "churn":
        data["cpu_ms_per_pair"] = data["cpu_total"] * seconds * 1e3 / data["pairs"]


def per_instance(before: list[dict[str, float]], after: list[dict[str, float]]) -> dict[str, Any]:
    pairs = [
        a["tube_relay_pairings_total"] - b["tube_relay_pairings_total"]
        for a, b in zip(after, before, strict=True)
    ]
    forwarded = [
        a["tube_relay_bytes_forwarded_total"] - b["tube_relay_bytes_forwarded_total"]
        for a, b in zip(after, before, strict=True)
    ]
    return {"pairs_by_instance": pairs, "bytes_by_instance": forwarded}


def attempts(
    cluster: ScaleCluster, cmd: list[str], timeout: float, args: argparse.Namespace, label: str
) -> dict[str, Any]:
    """Run one measurement; again (at most --retries times) while other processes on the
    machine took more than --max-other-load cores meanwhile; keep the least disturbed."""
    tries: list[dict[str, Any]] = []
    for attempt in range(1 + args.retries):
        if attempt:
            time.sleep(2.0 * attempt)  # other tests' bursts pass: 2 s, then 4 s
        before, redis0 = cluster.counters(), cluster.redis_bytes()
        data = run_peer(cmd, timeout)
        if "error" not in data:
            data.update(per_instance(before, cluster.counters()))
            data["redis_bytes"] = cluster.redis_bytes() - redis0
            split_cpu(data, cluster.instances)
        tries.append(data)
        others = data.get("cpu_others")
        if "error" in data or others is None or others <= args.max_other_load:
            break
        log(f"    {label}: other load took {others:.2f} cores (> {args.max_other_load}): again")
    good = [d for d in tries if "error" not in d]
    best = min(good, key=lambda d: d.get("cpu_others", 0)) if good else tries[-1]
    best["tries"] = len(tries)
    best["other_load_of_tries"] = [d.get("cpu_others") for d in tries]
    return best


def scale_round(
    n: int, args: argparse.Namespace, relay_cores: list[str], logdir: Path
) -> dict[str, Any]:
    """One cluster of n instances, every measurement on it; the cluster stopped at the end."""
    out: dict[str, Any] = {}
    try:
        cluster = ScaleCluster(n, relay_cores, logdir)
    except (RuntimeError, OSError) as exc:
        return {"error": str(exc)}
    try:
        out["relay_cores"] = cluster.cores
        out["loadavg"] = loadavg()
        time.sleep(args.settle)
        pids = ",".join(str(p) for p in cluster.pids())
        base = [str(PEER), "--mode", "tube", "--cpu-pids", pids]
        for pairs in args.stream_pairs:
            frames = -(-args.size // CHUNK) * pairs
            timeout = 60 + frames * FRAME / 20e6
            cmd = [*base, "--port", str(cluster.port), "--pairs", str(pairs)]
            cmd += ["--size", str(args.size), "--timeout", f"{timeout:.0f}"]
            data = attempts(cluster, cmd, timeout + 30, args, f"stream {pairs}")
            out[f"stream-{pairs}"] = data
            log_stream(n, pairs, data)
        cmd = [*base, "--run", "churn", "--port", str(cluster.port)]
        cmd += ["--pairs", str(args.churn_pairs), "--size", str(CHUNK)]
        cmd += ["--concurrency", str(args.churn_concurrency), "--timeout", "60"]
        data = attempts(cluster, cmd, 120 + args.churn_pairs, args, "churn")
        out["churn"] = data
        log_churn(n, data)
        # latency: pairs through haproxy and direct to instance i alternate, one at a time
        ports = ",".join(f"{cluster.port},{p}" for p in cluster.ports)
        cmd = [*base, "--run", "latency", "--port", ports]
        cmd += ["--pairs", str(2 * args.latency_pairs), "--rtts", str(args.rtts)]
        data = attempts(cluster, cmd, 60 + 4 * args.latency_pairs, args, "latency")
        if "error" not in data:
            data["paths"] = ["haproxy" if p == cluster.port else "direct" for p in data["ports"]]
        out["latency"] = data
        log_latency(n, data)
        if not cluster.alive():
            out["error"] = "a process of the cluster died during the round"
    finally:
        cluster.stop()
    return out


def log_stream(n: int, pairs: int, data: dict[str, Any]) -> None:
    if "error" in data:
        log(f"  {n} inst  stream {pairs:2} pairs  ERROR {data['error'].splitlines()[-1]}")
        return
    log(
        f"  {n} inst  stream {pairs:2} pairs {data['mb_per_s']:8,.0f} MB/s"
        f"  redirected {data['redirected_pairs']}/{pairs}"
        f"  CPU relays {data.get('cpu_relays', 0):.2f} haproxy {data.get('cpu_haproxy', 0):.2f}"
        f" peers {data.get('cpu_peers', 0):.2f} total {data.get('cpu_total', 0):.2f}"
        f" others {data.get('cpu_others', 0):.2f}"
        f"  pairs by instance {[int(p) for p in data['pairs_by_instance']]}"
    )


def log_churn(n: int, data: dict[str, Any]) -> None:
    if "error" in data:
        log(f"  {n} inst  churn  ERROR {data['error'].splitlines()[-1]}")
        return
    log(
        f"  {n} inst  churn  {data['pairs_per_s']:8,.1f} pairs/s"
        f"  pair {data['pair_s_median'] * 1e3:.1f} ms (p90 {data['pair_s_p90'] * 1e3:.1f})"
        f"  redirected {data['redirected_pairs']}/{data['pairs']}"
        f"  CPU total {data.get('cpu_total', 0):.2f} others {data.get('cpu_others', 0):.2f}"
        f"  pairs by instance {[int(p) for p in data['pairs_by_instance']]}"
    )


def log_latency(n: int, data: dict[str, Any]) -> None:
    if "error" in data:
        log(f"  {n} inst  latency  ERROR {data['error'].splitlines()[-1]}")
        return
    for path in ("haproxy", "direct"):
        picked = [k for k in range(data["pairs"]) if data["paths"][k] == path]
        log(
            f"  {n} inst  latency {path:7}"
            f"  alloc {statistics.median(data['alloc_s'][k] for k in picked) * 1e3:.2f} ms"
            f"  connect->paired {statistics.median(data['paired_s'][k] for k in picked) * 1e3:.2f}"
            f" ms  RTT {statistics.median(data['rtt_s'][k] for k in picked) * 1e3:.3f} ms"
            f"  redirected {sum(data['redirects'][k] > 0 for k in picked)}/{len(picked)}"
        )


def latency_rows(runs: list[dict[str, Any]], path: str) -> dict[str, dict[str, list[float]]]:
    """Per-pair samples pooled over the rounds, by class: not redirected / redirected."""
    classes: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        data = run.get("latency", {})
        if "error" in data or not data:
            continue
        for k in range(data["pairs"]):
            if data["paths"][k] != path:
                continue
            name = "redirected" if data["redirects"][k] else "not redirected"
            row = classes.setdefault(name, {"alloc_s": [], "paired_s": [], "rtt_s": []})
            for key in row:
                row[key].append(data[key][k])
    return classes


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ms(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value * 1e3:.{digits}f}"


def scale_median(runs: list[dict[str, Any]], scenario: str, key: str) -> float | None:
    return median([r[scenario] for r in runs if scenario in r], key)


def cores_of(rounds: list[dict[str, Any]]) -> str:
    for r in rounds:
        if "relay_cores" in r:
            return ",".join(r["relay_cores"])
    return "?"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def with_ratio(value: float | None, base: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    r = ratio(value, base)
    return fmt(value, digits) + ("" if r is None else f" ({r:.2f}x)")


def write_scale_reports(
    path: Path,
    results: dict[int, list[dict[str, Any]]],
    args: argparse.Namespace,
    env: dict[str, Any],
    command: str,
    relay_cores: list[str],
) -> str:
    counts = sorted(results)
    size_mib = args.size / MIB
    cpu_keys = ("cpu_relays", "cpu_haproxy", "cpu_redis", "cpu_peers", "cpu_total", "cpu_others")
    streams = [f"stream-{pairs}" for pairs in args.stream_pairs]

    def runs_of(n: int, key: str) -> list[dict[str, Any]]:
        return [r[key] for r in results[n] if key in r]

    def good(n: int, key: str) -> list[dict[str, Any]]:
        return [r for r in runs_of(n, key) if "error" not in r]

    scaling = {
        key: {
            n: median(runs_of(n, key), "pairs_per_s" if key == "churn" else "mb_per_s")
            for n in counts
        }
        for key in [*streams, "churn"]
    }

    # latency: per-pair samples pooled over the rounds, by class
    latency: dict[str, Any] = {}
    latency_table: list[list[str]] = []
    added: dict[int, tuple[float | None, float | None]] = {}
    for n in counts:
        direct = latency_rows(results[n], "direct")
        via = latency_rows(results[n], "haproxy")
        empty: dict[str, list[float]] = {"alloc_s": [], "paired_s": [], "rtt_s": []}
        d = direct.get("not redirected", empty)
        d_paired, d_rtt = med(d["paired_s"]), med(d["rtt_s"])
        classes = [("direct", d)]
        classes += [
            (f"haproxy, {name}", via.get(name, empty)) for name in ("not redirected", "redirected")
        ]
        if "redirected" in direct:  # would be a bug: the direct pairs' instance owns the code
            classes.append(("direct, redirected (!)", direct["redirected"]))
        for label, row in classes:
            if not row["paired_s"]:
                continue
            paired, rtt = med(row["paired_s"]), med(row["rtt_s"])
            added_p = None if paired is None or d_paired is None else paired - d_paired
            added_r = None if rtt is None or d_rtt is None else rtt - d_rtt
            if label == "haproxy, not redirected":
                added[n] = (added_p, added_r)
            latency[f"{n} {label}"] = {
                "pairs": len(row["paired_s"]),
                "alloc_ms": (med(row["alloc_s"]) or 0) * 1e3,
                "paired_ms": (paired or 0) * 1e3,
                "rtt_ms": (rtt or 0) * 1e3,
                "added_paired_ms": None if added_p is None else added_p * 1e3,
                "added_rtt_ms": None if added_r is None else added_r * 1e3,
            }
            latency_table.append(
                [
                    str(n),
                    label,
                    str(len(row["paired_s"])),
                    ms(med(row["alloc_s"])),
                    ms(paired),
                    ms(rtt, 3),
                    "" if label == "direct" else ms(added_p),
                    "" if label == "direct" else ms(added_r, 3),
                ]
            )

    summary = []
    for n in counts:
        measured = [r for key in [*streams, "churn", "latency"] for r in good(n, key)]
        others = [r["cpu_others"] for r in measured if "cpu_others" in r]
        repeated = sum(r.get("tries", 1) > 1 for r in measured)
        hop = added.get(n, (None, None))
        stream_pairs = [r for key in streams for r in good(n, key)]
        via = sum(r["pairs"] - r["redirected_pairs"] for r in stream_pairs)
        summary.append(
            [
                f"{n} ({cores_of(results[n])})",
                *(with_ratio(scaling[key][n], scaling[key].get(1)) for key in streams),
                with_ratio(scaling["churn"][n], scaling["churn"].get(1)),
                f"{via}/{sum(r['pairs'] for r in stream_pairs)}" if stream_pairs else "-",
                f"{ms(hop[0])} / {ms(hop[1], 3)}",
                f"{fmt(med(others), 2)} ({fmt(max(others) if others else None, 2)}); "
                f"{repeated} of {len(measured)} repeated",
            ]
        )
    pinning = (
        "relay i pinned to core " + ", ".join(relay_cores) + " in turn (i mod 2)"
        if relay_cores
        else "nothing pinned (fewer than 2 cores or no taskset)"
    )
    lines = [
        "# Relay scale-out benchmark results",
        "",
        f"Command: `{command}`",
        "",
        f"{env['date']}; commit {env['commit']}; Python {env['python']}; {env['cpu']} "
        f"({env['cores']} cores); Linux {env['kernel']}.",
        "Around the relays: " + ", ".join(f"{k} {v}" for k, v in env["peers"].items()) + ".",
        f"Tube's core: {env.get('tube_core', 'unknown')}. Load average (1 min) before the run: "
        f"{env['loadavg_start']}.",
        "",
        f"Medians of {args.repetitions} round(s); in parentheses: against one instance.",
        "",
        *table(
            [
                "instances (relay cores)",
                *(f"MB/s, {p} x {size_mib:g} MiB" for p in args.stream_pairs),
                f"pairs/s ({args.churn_pairs} x 1 frame)",
                "pairs via haproxy (MB/s runs)",
                "haproxy hop adds, ms: connect -> paired / RTT",
                "other processes, cores: median (max); measurements repeated",
            ],
            summary,
        ),
        "",
        "Reading it: every process here shares 2 cores, so more instances cannot add capacity; "
        "a CPU total near 2.00 means the machine is the limit. With one instance every byte "
        "crosses haproxy, which in HTTP mode spends more CPU per byte than Tube's relay (compare "
        "'MB per haproxy CPU-s' with 'MB per relay CPU-s' below). With N instances about "
        "(N-1)/N of the pairs are redirected to the owning instance's own URL and their bytes "
        "skip haproxy, which leaves more of the 2 cores to the relays: that, not added cores, is "
        "what changes MB/s between 1 and N instances here. A redirect costs both sides of a "
        "pair another WebSocket upgrade (through haproxy) and the instance a Redis lookup, so "
        "CPU per pair grows with N and the pairing rate cannot scale on this machine. One "
        "instance's forwarding capacity per core is 'MB per relay CPU-s'.",
        "",
        "## Method",
        "",
        "For each instance count N: a private `redis-server` (`--save ''`, no AOF), N x "
        "`python -m tube --redis URL --instance-url ws://127.0.0.1:PORT --trust-proxy 127.0.0.1 "
        "--metrics` (per-address limits raised: every peer is 127.0.0.1) and haproxy with "
        "`deploy/haproxy.cfg` given N `server` lines in both backends (generated into "
        "`bench/build/haproxy-N.cfg`, nothing else changed: `balance uri` + `hash-type "
        "consistent` for `/v1/relay/<nameplate>`, round-robin for the rest, health checks every "
        f"2 s). A fresh cluster per instance count and round; {args.repetitions} round(s), the "
        "instance counts rotated between rounds. This machine is shared (other sessions run "
        "their tests on it): a measurement during which other processes took more than "
        f"{args.max_other_load:g} cores (from /proc/stat, see CPU below) is repeated after a "
        f"pause (2 s, 4 s, ...), at most {args.retries} times, and the least disturbed attempt "
        "is kept; every attempt's other load is in the JSON. Pinning (2 cores): "
        f"{pinning}; haproxy (its default: one thread per core), redis-server, the C peers and "
        "this script are not pinned: they share both cores with the relays, as they would on "
        "one 2-core machine.",
        "",
        "The C peers (`bench/relay_peer.c`) allocate with `POST /v1/nameplates` through haproxy "
        "(round-robin: the allocating instance owns the code in Redis), then open both "
        "WebSockets to `/v1/relay/<nameplate>` through haproxy (hashed on the path). When the "
        "hash lands on an instance that does not own the code, that instance answers with "
        "`redirect` to the owner's own URL and closes (1000); the peer sends its close frame "
        "and connects there directly (at most 3 redirects), so a redirected pair's bytes do "
        "not cross haproxy (expected share of redirected pairs: (N-1)/N).",
        "",
        f"- **MB/s**: {', '.join(str(p) for p in args.stream_pairs)} pairs at once, "
        f"{size_mib:g} MiB each ({-(-args.size // CHUNK)} frames of {FRAME:,} bytes, checked "
        "on arrival), frame payload bytes received by all receivers from the moment every "
        "pair is paired until the last frame (1 MB = 10^6 B); one peer process (one thread, "
        "epoll) holds every sender and receiver.",
        f"- **pairs/s**: {args.churn_pairs} pairs of one {FRAME:,}-byte frame, "
        f"{args.churn_concurrency} in flight (one thread each in the peer process), each from "
        "its allocation to its receiver's last frame, then `bye` and close (the closes overlap "
        "the next pairs); pairs / (first allocation to the last receiver's last frame). "
        "'pair ms' is one pair's own time from allocation to its last frame.",
        "- **CPU**: utime + stime (/proc/PID/stat) of the relays, haproxy and redis-server over "
        "the measured interval, and the peer process' own, in cores (CPU s per s; 2.00 = both "
        "cores busy with this benchmark's processes; the loopback traffic's softirq work is in "
        "them, this kernel has no IRQ time accounting). 'Other load': the whole machine's busy "
        "time over the same interval (/proc/stat: user + nice + system + irq + softirq) minus "
        "the benchmark's processes, i.e. other tests on this shared machine. 'MB per CPU-s' and "
        "'CPU ms per pair' divide by the benchmark's processes' CPU time: the cost of the work, "
        "which other load changes much less than MB/s and pairs/s. 'MB per relay CPU-s': the "
        "relays' CPU time only (one instance's forwarding capacity per core).",
        f"- **latency**: {args.latency_pairs} pairs through haproxy and {args.latency_pairs} "
        "direct, alternating, one pair at a time (nothing else of the benchmark running); per "
        "pair the allocation's round trip, the time from the sender's TCP connect until both "
        "sides have `paired` (two WebSocket upgrades, `hello`/`welcome`, `wait`, `claim`, "
        f"redirects included), and the median of {args.rtts} round trips of a {RTT_BYTES}-byte "
        "binary frame sender -> receiver -> sender (two relay traversals). Direct: allocation "
        "and WebSockets on an instance's own port (the instances in turn; the allocating "
        "instance owns the code: no redirect). Medians over the pairs of every round, by class "
        "(a redirected pair's WebSockets end on the owner directly); 'added' is a class' median "
        "minus direct's.",
        "",
        "## Throughput (through haproxy; redirected pairs direct to their instance)",
        "",
    ]
    rows = []
    for key, pairs in zip(streams, args.stream_pairs, strict=True):
        for n in counts:
            runs, ok = runs_of(n, key), good(n, key)
            via = sum(r["pairs"] - r["redirected_pairs"] for r in ok)
            rows.append(
                [
                    f"{n} ({cores_of(results[n])})",
                    f"{pairs} x {size_mib:g}",
                    with_ratio(scaling[key][n], scaling[key].get(1)),
                    f"{via}/{sum(r['pairs'] for r in ok)}" if ok else "-",
                    " / ".join(fmt(median(runs, k), 2) for k in cpu_keys),
                    fmt(median(runs, "mb_per_cpu_s"), 0),
                    fmt(median(runs, "mb_per_relay_cpu_s"), 0),
                    fmt(median(runs, "mb_per_haproxy_cpu_s"), 0),
                    f"{len(ok)}/{len(results[n])}",
                ]
            )
    lines += table(
        [
            "instances (relay cores)",
            "pairs x MiB",
            "MB/s",
            "pairs via haproxy",
            "CPU, cores: relays / haproxy / redis / peers / all / other load",
            "MB per CPU-s (all)",
            "MB per relay CPU-s",
            "MB per haproxy CPU-s (bytes through it)",
            "ok",
        ],
        rows,
    )
    lines += [
        "",
        f"## Pairing rate: {args.churn_pairs} pairs of one frame, "
        f"{args.churn_concurrency} in flight (through haproxy)",
        "",
    ]
    rows = []
    for n in counts:
        runs, ok = runs_of(n, "churn"), good(n, "churn")
        rows.append(
            [
                f"{n} ({cores_of(results[n])})",
                with_ratio(scaling["churn"][n], scaling["churn"].get(1)),
                f"{ms(median(runs, 'pair_s_median'), 1)} ({ms(median(runs, 'pair_s_p90'), 1)})",
                ms(median(runs, "paired_s_median"), 1),
                f"{sum(r['redirected_pairs'] for r in ok)}/{sum(r['pairs'] for r in ok)}"
                if ok
                else "-",
                " / ".join(fmt(median(runs, k), 2) for k in cpu_keys),
                fmt(median(runs, "cpu_ms_per_pair"), 1),
                f"{len(ok)}/{len(results[n])}",
            ]
        )
    lines += table(
        [
            "instances (relay cores)",
            "pairs/s",
            "pair ms: median (p90)",
            "allocation -> paired ms (median)",
            "redirected pairs",
            "CPU, cores: relays / haproxy / redis / peers / all / other load",
            "CPU ms per pair (all)",
            "ok",
        ],
        rows,
    )
    lines += ["", "## Latency: haproxy against direct connections (medians, ms)", ""]
    lines += table(
        [
            "instances",
            "path",
            "pairs",
            "allocate",
            "connect -> paired",
            "small-frame RTT",
            "added: connect -> paired",
            "added: RTT",
        ],
        latency_table,
    )
    lines.append("")
    pairs_split = [
        f"{n}: " + "/".join(str(int(p)) for p in ok[0]["pairs_by_instance"])
        for n in counts
        if (ok := good(n, "churn")) and "pairs_by_instance" in ok[0]
    ]
    if pairs_split:
        lines += [
            "Pairs by instance in the first pairing-rate run (each relay's "
            "`tube_relay_pairings_total`): " + "; ".join(pairs_split) + ".",
            "",
        ]
    redis_bytes = [r["redis_bytes"] for n in counts for key in streams for r in good(n, key)]
    if redis_bytes:
        lines += [
            "Redis traffic (`INFO stats`, in + out) during one MB/s run: at most "
            f"{max(redis_bytes):,} bytes, while up to "
            f"{max(args.stream_pairs) * size_mib:g} MiB crossed the relays.",
            "",
        ]
    errors = [
        f"- {n} instance(s), round {r.get('round')}: {key}: {value['error']}"
        for n in counts
        for r in results[n]
        for key, value in r.items()
        if isinstance(value, dict) and "error" in value
    ] + [
        f"- {n} instance(s), round {r.get('round')}: {r['error']}"
        for n in counts
        for r in results[n]
        if "error" in r
    ]
    if errors:
        lines += ["Failed runs:", "", *errors, ""]
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    raw = {
        "environment": env,
        "command": command,
        "settings": vars(args),
        "relay_cores": relay_cores,
        "scaling_vs_1": {
            k: {n: ratio(v.get(n), v.get(1)) for n in counts} for k, v in scaling.items()
        },
        "latency_ms": latency,
        "results": {str(n): runs for n, runs in results.items()},
    }
    path.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
    return text


def tool_version(cmd: list[str], pattern: str) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "?"
    match = re.search(pattern, out)
    return match.group(1) if match else "?"


def main_scale(args: argparse.Namespace, command: str) -> int:
    build_peer()
    mine = sorted(os.sched_getaffinity(0))
    relay_cores = [str(c) for c in mine] if len(mine) >= 2 and shutil.which("taskset") else []
    if not relay_cores:
        log("warning: fewer than 2 cores or no taskset: the relays are not pinned")
    versions = {
        "haproxy": tool_version([binary("haproxy"), "-v"], r"version (\S+)"),
        "redis-server": tool_version([binary("redis-server"), "--version"], r"v=(\S+)"),
    }
    logdir = BUILD / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    counts: list[int] = args.instances
    results: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    started = time.monotonic()
    load_start = loadavg()
    for rnd in range(args.repetitions):
        shift = rnd % len(counts)
        order = counts[shift:] + counts[:shift]
        log(f"round {rnd + 1}/{args.repetitions} ({time.monotonic() - started:.0f} s)")
        for n in order:
            data = scale_round(n, args, relay_cores, logdir)
            data["round"] = rnd + 1
            results[n].append(data)
            if "error" in data:
                log(f"  {n} inst  ERROR {data['error']}")
    log(f"done in {time.monotonic() - started:.0f} s")
    env = environment(versions)
    env["loadavg_start"] = load_start
    text = write_scale_reports(args.output, results, args, env, command, relay_cores)
    print(text)
    log(f"wrote {args.output} and {args.output.with_suffix('.json')}")
    return 0


# ----------------------------------------------------------------------------------------- main


def counts(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad list {text!r} (e.g. 1,2,4)") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"bad list {text!r} (positive numbers)")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="from: " + ", ".join(SYSTEMS))
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="from: " + ", ".join(SCENARIOS)
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        help="bytes per pair (256M; with --instances: 128M; suffixes K, M, G are binary)",
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
    scale = parser.add_argument_group(
        "scale-out (issue 20): redis-server, N relays and haproxy (deploy/haproxy.cfg)"
    )
    scale.add_argument(
        "--instances",
        type=counts,
        help="run the scale-out benchmark with these instance counts, e.g. 2 or 1,2,4",
    )
    scale.add_argument("--scale", action="store_true", help="shortcut for --instances 1,2,4")
    scale.add_argument(
        "--stream-pairs", type=counts, default=[8, 16], help="pairs at once for MB/s (8,16)"
    )
    scale.add_argument("--churn-pairs", type=int, default=200, help="short pairs for pairs/s")
    scale.add_argument(
        "--churn-concurrency", type=int, default=16, help="short pairs in flight (16)"
    )
    scale.add_argument(
        "--latency-pairs",
        type=int,
        default=40,
        help="pairs one by one for latency, through haproxy and as many direct (40)",
    )
    scale.add_argument("--rtts", type=int, default=20, help="small-frame round trips per pair")
    scale.add_argument(
        "--max-other-load",
        type=float,
        default=0.25,
        help="repeat a measurement while other processes took more cores than this (0.25)",
    )
    scale.add_argument(
        "--retries", type=int, default=2, help="repeats of a disturbed measurement (2)"
    )
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
    if args.scale:
        args.instances = [1, 2, 4]
    if args.size is None:
        args.size = (128 if args.instances else 256) * MIB
    if args.quick:
        args.repetitions = 1
        args.size = min(args.size, (32 if args.instances else 64) * MIB)
        args.slow_size = min(args.slow_size, 16 * MIB)
        args.churn_pairs = min(args.churn_pairs, 50)
        args.latency_pairs = min(args.latency_pairs, 10)
    if args.output is None:
        name = "relay-scale" if args.instances else "relay"
        args.output = BUILD / f"{name}-quick.md" if args.quick else BENCH / "results" / f"{name}.md"
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
    if args.instances:
        return main_scale(args, command)
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
