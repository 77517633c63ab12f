"""The contract suite's fixture: ``driver``, each test once per transport."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .drivers import DRIVERS, Driver


@pytest.fixture(params=sorted(DRIVERS))
def driver(request: pytest.FixtureRequest) -> Iterator[Driver]:
    """A :class:`~.drivers.Driver` of the transport under test, cleaned up after."""
    made = DRIVERS[request.param]()
    try:
        yield made
    finally:
        made.stop()
