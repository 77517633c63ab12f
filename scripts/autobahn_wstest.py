"""Autobahn's wstest, with its WebSocket server bound to 127.0.0.1 only (used by scripts/autobahn).

    build/autobahn/venv/bin/python scripts/autobahn_wstest.py -m fuzzingserver -s SPEC -u 0

Python 2.7 code (autobahntestsuite 25.10.1 is Python 2 only; it is also valid Python 3 so that
ruff reads it). wstest's fuzzingserver listens on every interface (``listenWS`` with
``interface=''``); this wrapper passes ``interface='127.0.0.1'`` instead, then runs wstest with
the command line it was given. ``-u 0`` turns off wstest's other listener, its web page.
"""

import sys

from autobahntestsuite import fuzzing, wstest

_listen_ws = fuzzing.listenWS


def listen_loopback(factory, contextFactory=None, backlog=50, interface=""):  # noqa: N803
    """``listenWS`` on 127.0.0.1 whatever interface is asked for."""
    return _listen_ws(factory, contextFactory, backlog, "127.0.0.1")


fuzzing.listenWS = listen_loopback

if __name__ == "__main__":
    sys.exit(wstest.run())
