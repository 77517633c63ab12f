"""The lean threading objects (tube.websocket.threads.lean) behave as threading's own."""

from __future__ import annotations

import sys
import threading

import pytest

from tube.websocket.threads.lean import Condition, start_daemon_thread


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


def test_a_lean_daemon_thread_runs_and_waits_with_a_list() -> None:
    done = threading.Event()
    ran: list[int] = []

    def record(value: int) -> None:
        ran.append(value)
        done.set()

    thread = start_daemon_thread(record, (7,), "lean")
    assert done.wait(10)
    thread.join(10)
    assert ran == [7]
    assert thread.daemon
    assert thread.name == "lean"
    assert isinstance(vars(vars(thread)["_started"])["_cond"]._waiters, list)


def test_acquire_and_release_go_to_the_lock() -> None:
    lock = threading.RLock()
    condition = Condition(lock)
    assert condition.acquire(timeout=1)
    assert condition.acquire(blocking=False)  # reentrant, as the RLock is
    condition.release()
    condition.release()
    assert lock.acquire(blocking=False)  # free again
    lock.release()
    with condition:
        assert condition.wait(0) is False  # owned: waiting is allowed


def test_waiting_on_a_reentrant_lock_held_twice_releases_it_and_restores_both_levels() -> None:
    # RLock's _release_save/_acquire_restore are looked up at wait time, not stored.
    lock = threading.RLock()
    condition = Condition(lock)
    entered = threading.Event()
    state: dict[str, bool] = {"go": False, "restored": False}

    def waiter() -> None:
        with condition, condition:  # two levels
            entered.set()
            assert condition.wait_for(lambda: state["go"], timeout=10)
        # Both levels were restored: leaving both with-blocks released the lock completely.
        state["restored"] = lock.acquire(blocking=False)
        if state["restored"]:
            lock.release()

    thread = threading.Thread(target=waiter)
    thread.start()
    assert entered.wait(10)
    with condition:  # only possible if wait() released both levels
        state["go"] = True
        condition.notify()
    thread.join(10)
    assert state["restored"]
    assert sorted(vars(condition)) == ["_lock", "_waiters"]  # no bound methods kept


def test_notify_without_the_lock_raises_for_both_kinds_of_lock() -> None:
    for lock in (threading.Lock(), threading.RLock()):
        condition = Condition(lock)
        with pytest.raises(RuntimeError, match="un-acquired"):
            condition.notify()
        with condition:
            condition.notify()  # held: fine
