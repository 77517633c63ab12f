"""Run a benchmark server under uvloop instead of asyncio's own event loop.

Usage: ``python uvloop_run.py -m MODULE ARGS...`` or ``python uvloop_run.py SCRIPT ARGS...``.
uvloop's event loop policy is installed first, so the server's ``asyncio.run()`` gets a uvloop
loop; nothing else about the server changes (bench/run.py's ``-uvloop`` servers).
"""

import asyncio
import os
import runpy
import sys

import uvloop

asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
if sys.argv[1] == "-m":
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
else:
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")
