"""Shared command line and readiness line for the benchmark echo servers.

Every server takes ``--host``, ``--port`` (0 picks a free port) and ``--max-message-size``,
echoes text as text and binary as binary with compression off and keepalive pings off, and
prints ``listening on HOST:PORT`` on stdout once it accepts connections: bench/run.py waits for
that line. Everything else a server has to say goes to stderr.
"""

import argparse
import sys


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-message-size", type=int, default=4 * 1024 * 1024)
    return parser.parse_args()


def ready(host: str, port: int) -> None:
    print(f"listening on {host}:{port}", flush=True)
    sys.stdout.flush()
