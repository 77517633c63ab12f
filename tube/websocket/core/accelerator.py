"""Which implementation of the core's hot loops is in use: the C accelerator or pure Python.

``tube.websocket.core._speedups`` (``_speedups.c``) is an optional C extension, built by
``pip install`` when a C compiler and the Python headers are available. :mod:`.masking` and
:mod:`.utf8` use it when it can be imported, and their pure-Python code otherwise. Setting
``TUBE_NO_SPEEDUPS`` to anything but ``""`` or ``"0"`` in the environment forces pure Python;
it is read once, at import.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType
from typing import Final

__all__ = ["IMPLEMENTATION", "speedups"]

_logger = logging.getLogger("tube.websocket.core")


def _load() -> ModuleType | None:
    """Import the C accelerator, or return None when it is switched off or missing."""
    if os.environ.get("TUBE_NO_SPEEDUPS", "") not in ("", "0"):
        _logger.debug("TUBE_NO_SPEEDUPS is set: using the pure-Python core")
        return None
    try:
        from . import _speedups
    except ImportError as error:
        _logger.debug("C accelerator not available (%s): using the pure-Python core", error)
        return None
    return _speedups


#: The ``_speedups`` module, or None when the pure-Python code is in use.
speedups: Final = _load()

#: ``"c"`` when the C accelerator is in use, ``"python"`` otherwise.
IMPLEMENTATION: Final = "python" if speedups is None else "c"
