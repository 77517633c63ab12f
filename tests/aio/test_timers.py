"""The asyncio connection's one timer (aio/timers.py's Alarm), on a loop whose clock the test
turns by hand: it rings once per deadline, never before it, and a deadline moved later costs no
new timer handle until the old one rings."""

from __future__ import annotations

import asyncio
import functools
from typing import Any, cast

from tests.conftest import require
from tube.websocket.aio.timers import Alarm


class _Handle:
    def __init__(self, when: float, callback: Any) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _Loop:
    """``call_at`` only, and a clock the test moves: runs what is due, in order."""

    def __init__(self) -> None:
        self.now = 0.0
        self.handles: list[_Handle] = []

    def call_at(self, when: float, callback: Any) -> _Handle:
        handle = _Handle(when, callback)
        self.handles.append(handle)
        return handle

    def pending(self) -> list[_Handle]:
        return [h for h in self.handles if not h.cancelled and h.callback is not None]

    def advance(self, to: float) -> None:
        while True:
            due = [h for h in self.pending() if h.when <= to]
            if not due:
                break
            handle = min(due, key=lambda h: h.when)
            self.now = handle.when
            callback, handle.callback = handle.callback, None
            callback()
        self.now = to


def _alarm() -> tuple[_Loop, Alarm, list[float]]:
    loop = _Loop()
    rang: list[float] = []
    alarm = Alarm(cast(asyncio.AbstractEventLoop, loop), lambda: rang.append(loop.now))
    return loop, alarm, rang


def test_it_rings_once_at_its_deadline() -> None:
    loop, alarm, rang = _alarm()
    alarm.arm(10.0)
    loop.advance(9.9)
    assert rang == []
    loop.advance(30.0)
    assert rang == [10.0]
    assert alarm.when is None


def test_a_deadline_moved_later_keeps_the_handle_and_rings_at_the_new_time() -> None:
    loop, alarm, rang = _alarm()
    alarm.arm(10.0)  # the opening handshake's bound
    alarm.arm(20.0)  # open: the first keepalive ping
    assert len(loop.handles) == 1, "a move later must not add a timer handle"
    assert alarm.when == 20.0
    loop.advance(15.0)  # the old handle rang early: moved itself, nothing called
    assert rang == []
    assert len(loop.pending()) == 1
    assert loop.pending()[0].when == 20.0
    loop.advance(25.0)
    assert rang == [20.0]


def test_a_deadline_moved_earlier_gets_a_new_handle() -> None:
    loop, alarm, rang = _alarm()
    alarm.arm(20.0)
    alarm.arm(5.0)
    assert [h.when for h in loop.pending()] == [5.0]
    loop.advance(30.0)
    assert rang == [5.0]


def test_disarmed_it_never_rings_and_holds_no_handle() -> None:
    loop, alarm, rang = _alarm()
    alarm.arm(10.0)
    alarm.arm(20.0)
    alarm.cancel()
    assert loop.pending() == [], "a disarmed alarm keeps no handle (it would hold its owner)"
    loop.advance(60.0)
    assert rang == []


def test_rearmed_after_ringing_and_after_a_later_move() -> None:
    loop, alarm, rang = _alarm()
    alarm.arm(10.0)
    loop.advance(10.0)
    alarm.arm(15.0)
    alarm.arm(18.0)
    alarm.arm(12.0)
    loop.advance(40.0)
    assert rang == [10.0, 12.0]
    alarm.arm(50.0)
    alarm.arm(None)
    alarm.arm(45.0)
    loop.advance(60.0)
    assert rang == [10.0, 12.0, 45.0]


def test_on_uvloop_deadlines_moved_later_ring_once_at_their_time() -> None:
    """On uvloop, whose timer handles report their time rounded (above or below the time
    asked), a handle left pending by a move later rings early, moves itself once, and each
    alarm rings once, not before its deadline (comparing a deadline with the handle's
    reported time would re-arm a handle forever whenever the rounding went below it)."""
    require("uvloop")  # a pinned test dependency: a skip here fails under CI
    import uvloop

    count = 40

    async def main() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        rang: list[list[float]] = [[] for _ in range(count)]
        all_rang = loop.create_future()

        def ring(i: int) -> None:
            rang[i].append(loop.time())
            if all(rang) and not all_rang.done():
                all_rang.set_result(None)

        alarms = [Alarm(loop, functools.partial(ring, i)) for i in range(count)]
        deadlines = [start + 0.1 + i * 0.0013 for i in range(count)]
        for i, alarm in enumerate(alarms):
            alarm.arm(start + 0.05 + i * 0.0007)
            alarm.arm(deadlines[i])
        async with asyncio.timeout(5):
            await all_rang
        for alarm in alarms:
            assert alarm.when is None
        # uvloop's clock steps by milliseconds: a ring up to 2 ms before the deadline is on time.
        assert all(len(times) == 1 for times in rang), rang
        assert all(times[0] >= when - 0.002 for times, when in zip(rang, deadlines, strict=True))

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
