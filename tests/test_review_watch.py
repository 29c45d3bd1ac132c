"""The reviewers' long polls share one database read per interval (orderflow/api/review_watch.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy.exc import OperationalError

from orderflow.api.review_watch import ReviewWatch


class FakeTable:
    """Order states as the database would answer them, with every read recorded."""

    def __init__(self, states: dict[str, str]) -> None:
        self.states = states
        self.reads: list[list[str]] = []
        self.lock = threading.Lock()  # read on the watch's thread, changed by the test

    def read(self, order_ids):
        with self.lock:
            self.reads.append(sorted(order_ids))
            return {i: self.states[i] for i in order_ids if i in self.states}


def test_twenty_waiting_reviewers_cost_one_read_per_interval():
    table = FakeTable({f"o{i}": "received" for i in range(20)})

    async def scenario() -> list[str | None]:
        watch = ReviewWatch(table.read, interval=0.01)
        return await asyncio.gather(*(watch.next_state(f"o{i}") for i in range(20)), watch.next_state("no-row"))

    answers = asyncio.run(scenario())
    assert answers == ["received"] * 20 + [None]
    assert table.reads == [sorted([f"o{i}" for i in range(20)] + ["no-row"])]


def test_a_waiter_sees_the_state_written_between_reads():
    table = FakeTable({"o1": "validated"})

    async def scenario() -> list[str | None]:
        watch = ReviewWatch(table.read, interval=0.01)
        seen = [await watch.next_state("o1")]
        with table.lock:
            table.states["o1"] = "awaiting_review"
        seen.append(await watch.next_state("o1"))
        return seen

    assert asyncio.run(scenario()) == ["validated", "awaiting_review"]


def test_a_failed_read_raises_in_every_waiter_and_the_next_read_runs():
    calls = 0

    def flaky_read(order_ids):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OperationalError("SELECT", {}, Exception("database is locked"))
        return dict.fromkeys(order_ids, "awaiting_review")

    async def scenario():
        watch = ReviewWatch(flaky_read, interval=0.01)
        first = await asyncio.gather(watch.next_state("a"), watch.next_state("b"), return_exceptions=True)
        return first, await watch.next_state("a")

    first, then = asyncio.run(scenario())
    assert [type(e) for e in first] == [OperationalError, OperationalError]
    assert "database is locked" in str(first[0])
    assert then == "awaiting_review"


def test_a_reviewer_who_left_does_not_break_the_others():
    table = FakeTable({"a": "awaiting_review", "b": "awaiting_review"})

    async def scenario():
        watch = ReviewWatch(table.read, interval=0.01)
        gone = asyncio.create_task(watch.next_state("a"))
        stays = asyncio.create_task(watch.next_state("b"))
        await asyncio.sleep(0)  # both registered
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await stays

    assert asyncio.run(scenario()) == "awaiting_review"
