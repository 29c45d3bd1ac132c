"""The reviewers' long polls, answered from one database read per interval.

A reviewer waits on ``GET /orders/{id}/review`` until the validate step has written
``awaiting_review`` to the order's row. Each waiting reviewer used to read its own row every
50 ms, on a thread of its own: at 8 orders/s that was a quarter of the API's samples in a
py-spy profile (docs/performance.md#the-reviewers-long-poll). Here one task reads the states of
every order a reviewer waits on with one query, then wakes each waiter with its order's state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection

REVIEW_POLL_SECONDS = 0.05

# Reads the states of the given orders: {order id: state}; an order with no row yet is left out.
ReadStates = Callable[[Collection[str]], dict[str, str]]


class ReviewWatch:
    """``await watch.next_state(order_id)``: the order's state at the next read (None: no row yet).

    One instance per API process. The reading task runs while anyone waits and stops when
    nobody does; a failed read raises its error in every waiter of that read.
    """

    def __init__(self, read_states: ReadStates, interval: float = REVIEW_POLL_SECONDS) -> None:
        self.read_states = read_states
        self.interval = interval
        self._waiting: dict[str, list[asyncio.Future[str | None]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def next_state(self, order_id: str) -> str | None:
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(order_id, []).append(future)
        if self._task is None:
            self._task = asyncio.create_task(self._read_while_waited_on())
        return await future

    async def _read_while_waited_on(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                try:
                    states = await asyncio.to_thread(self.read_states, list(batch))
                except Exception as err:  # noqa: BLE001 - every waiter of this read gets the error
                    for future in self._still_waiting(batch):
                        future.set_exception(err)
                else:
                    for order_id, futures in batch.items():
                        for future in self._still_waiting({order_id: futures}):
                            future.set_result(states.get(order_id))
                await asyncio.sleep(self.interval)
        finally:
            self._task = None

    @staticmethod
    def _still_waiting(batch: dict[str, list[asyncio.Future[str | None]]]):
        """The futures of ``batch`` whose request is still open (a cancelled one: the client left)."""
        return [future for futures in batch.values() for future in futures if not future.done()]
