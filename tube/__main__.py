"""``python -m tube``: run the relay and its page (``send FILE`` / ``receive CODE``: the peer).

The chat demo is ``python -m tube.demo``.
"""

from tube.relay.main import main

if __name__ == "__main__":
    raise SystemExit(main())
