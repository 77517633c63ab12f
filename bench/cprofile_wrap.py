"""Run a Python server with cProfile enabled in every thread; dump the merged stats on SIGTERM.

Usage (bench/profile.py does this)::

    python3 bench/cprofile_wrap.py OUT.pstats -m tube.websocket.echo --port 0
    python3 bench/cprofile_wrap.py OUT.pstats path/to/script.py --port 0

Times are CPU time of the calling thread (``time.thread_time``: user + kernel), not wall-clock
time: a thread blocked in ``recv``, on a lock or waiting for the GIL costs nothing, so the
numbers add up to the server's CPU time and show where it goes.

cProfile only profiles the thread that enables it, so ``threading.Thread._bootstrap_inner`` is
wrapped to give each new thread a profiler of its own; the main thread gets one too. On SIGTERM
the stats of all of them are merged into OUT.pstats (``pstats`` format) and the process exits.
Deterministic profiling adds a fixed cost per Python call, so absolute times are inflated
(small functions most); use it for call counts and for where the time goes relative to the rest.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import runpy
import signal
import sys
import threading
import time

profiles: list[cProfile.Profile] = []
finished: list[cProfile.Profile] = []
profiles_lock = threading.Lock()
_original_bootstrap_inner = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]


def _profiled_bootstrap_inner(self: threading.Thread) -> None:
    profile = cProfile.Profile(time.thread_time)
    with profiles_lock:
        profiles.append(profile)
    profile.enable()
    try:
        _original_bootstrap_inner(self)
    finally:
        profile.disable()
        with profiles_lock:
            finished.append(profile)


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    out = sys.argv[1]
    if sys.argv[2] == "-m":
        target, rest, as_module = sys.argv[3], sys.argv[4:], True
    else:
        target, rest, as_module = sys.argv[2], sys.argv[3:], False

    main_profile = cProfile.Profile(time.thread_time)

    def dump(signum: int, frame: object) -> None:
        # Stop this thread's profiler before anything else: the merging below is not the
        # server's work (and another profiler's disable() would silently stop this one too).
        main_profile.disable()
        stats = None
        with profiles_lock:
            # Only threads that have ended, and this (main) thread: a call still in progress in
            # another thread would be timed with *this* thread's CPU clock, which is garbage.
            done = [*finished, main_profile]
            running = len(profiles) - len(done)
            if running:
                sys.stderr.write(f"cprofile_wrap: {running} threads still running, not counted\n")
            for profile in done:
                try:
                    part = pstats.Stats(profile)
                except TypeError:  # a profiler with nothing recorded yet
                    continue
                if stats is None:
                    stats = part
                else:
                    stats.add(part)
        if stats is not None:
            stats.dump_stats(out)
        os._exit(0)

    signal.signal(signal.SIGTERM, dump)
    threading.Thread._bootstrap_inner = _profiled_bootstrap_inner  # type: ignore[attr-defined]
    with profiles_lock:
        profiles.append(main_profile)
    sys.argv = [target, *rest]
    if not as_module:
        sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
    main_profile.enable()
    try:
        if as_module:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(target, run_name="__main__")
    finally:
        # A server that handles SIGTERM itself (Tube's serve() shuts down gracefully) replaces
        # the handler above and returns or exits: dump then, or the profile is lost.
        dump(signal.SIGTERM, None)


if __name__ == "__main__":
    main()
