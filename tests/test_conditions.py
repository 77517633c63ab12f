"""The lean Condition (tube.websocket.threads.conditions) behaves as threading.Condition."""

from __future__ import annotations

import sys
import threading

from tube.websocket.threads.conditions import Condition


def test_waiters_are_kept_in_a_list_and_cost_less_than_a_deque() -> None:
    condition = Condition(threading.Lock())
    assert isinstance(condition._waiters, list)
    standard: object = threading.Condition()
    assert sys.getsizeof(condition._waiters) < sys.getsizeof(vars(standard)["_waiters"])


def test_notify_wakes_the_given_number_of_waiters_then_notify_all_the_rest() -> None:
    condition = Condition(threading.RLock())
    state = {"tickets": 0, "woken": 0}
    all_waiting = threading.Event()

    def wait_for_ticket() -> None:
        with condition:
            state["waiting"] = state.get("waiting", 0) + 1
            if state["waiting"] == 5:
                all_waiting.set()
            condition.wait_for(lambda: state["tickets"] > 0, timeout=10)
            state["tickets"] -= 1
            state["woken"] += 1
            condition.notify_all()  # lets the test observe the count

    threads = [threading.Thread(target=wait_for_ticket) for _ in range(5)]
    for thread in threads:
        thread.start()
    assert all_waiting.wait(10)
    with condition:
        state["tickets"] = 2
        condition.notify(2)
        assert condition.wait_for(lambda: state["woken"] == 2, timeout=10)
        state["tickets"] = 3
        condition.notify_all()
        assert condition.wait_for(lambda: state["woken"] == 5, timeout=10)
    for thread in threads:
        thread.join(10)
    assert condition._waiters == []


def test_wait_times_out_and_leaves_no_waiter_behind() -> None:
    condition = Condition()
    with condition:
        assert condition.wait(0.01) is False
        assert condition._waiters == []
