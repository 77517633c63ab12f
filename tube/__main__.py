"""``python -m tube``: run the chat demo (see :mod:`tube.demo`)."""

from tube.demo.server import main

if __name__ == "__main__":
    raise SystemExit(main())
