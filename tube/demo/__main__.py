"""``python -m tube.demo``: run the chat demo (see :mod:`tube.demo.server`)."""

from tube.demo.server import main

if __name__ == "__main__":
    raise SystemExit(main())
