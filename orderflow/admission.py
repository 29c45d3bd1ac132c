"""Load shedding at the door: refuse a new order (HTTP 429) while more orders are in flight
than the stack can finish inside their budget, instead of accepting it, charging it and
refunding it at its deadline.

"In flight" is counted where every API process can see it, in Temporal's visibility store:
the running ``OrderWorkflow`` executions on our orders task queue. Each API process adds the
orders it admitted itself since its last count, so a burst inside one refresh interval
cannot slip past the limit. What the count can miss is another API process's admissions in
the last few milliseconds (visibility lags a start by a few milliseconds:
docs/performance.md#measurements-behind-the-code); what it may include is an order that closed
a moment ago. Both errors are small next to a limit of tens of orders, and the second one errs on the side of refusing.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque

from temporalio.client import Client
from temporalio.exceptions import TemporalError

from orderflow.config import Settings
from orderflow.errors import OrderflowError
from orderflow.models import ORDER_WORKFLOW
from orderflow.order_client import TemporalUnavailable

REFRESH_SECONDS = 0.25  # at most four visibility counts a second per API process
COUNT_TIMEOUT = 2.0  # a count that takes longer means Temporal is not answering: 503
# Own admissions from this long before a count was sent are still added to it: the count
# may not include a start that was accepted just before it (visibility lag).
LAG_SECONDS = 0.1


class Overloaded(OrderflowError):
    """Too many orders in flight: come back after ``retry_after`` seconds."""

    def __init__(self, in_flight: int, limit: int, retry_after: int) -> None:
        super().__init__(
            f"{in_flight} orders in flight, the limit is {limit} (ORDERFLOW_MAX_IN_FLIGHT); "
            f"nothing was started, retry after {retry_after} s"
        )
        self.in_flight, self.limit, self.retry_after = in_flight, limit, retry_after


class Admission:
    """Counts orders in flight and admits a new one only below ``settings.max_in_flight``.

    Use one instance per API process: ``ticket = await admission.admit(client)`` before
    starting an order; ``admission.release(ticket)`` if the start then did not happen.
    """

    def __init__(self, settings: Settings, budget_seconds: float = 15.0) -> None:
        self.limit = settings.max_in_flight
        self.budget_seconds = budget_seconds
        self.query = f"WorkflowType='{ORDER_WORKFLOW}' AND ExecutionStatus='Running' AND TaskQueue='{settings.orders_task_queue}'"
        self._visible = 0
        self._sent_at = -math.inf  # monotonic time the last successful count was requested
        self._refresh: asyncio.Task | None = None
        self._admitted: deque[float] = deque()  # monotonic times of this process's admissions

    async def admit(self, client: Client) -> float | None:
        """Reserve a place for one order, or raise Overloaded / TemporalUnavailable."""
        if self.limit == 0:
            return None
        await self._count(client)
        in_flight = self.in_flight()
        if in_flight >= self.limit:
            raise Overloaded(in_flight, self.limit, self.retry_after(in_flight))
        # No await between the check and the reservation: concurrent requests cannot overshoot.
        ticket = time.monotonic()
        self._admitted.append(ticket)
        return ticket

    def release(self, ticket: float | None) -> None:
        """Give back a place whose order was not started (a duplicate id, Temporal down)."""
        if ticket is not None:
            try:
                self._admitted.remove(ticket)
            except ValueError:
                pass  # already outside the window

    def in_flight(self) -> int:
        since = self._sent_at - LAG_SECONDS
        while self._admitted and self._admitted[0] < since:
            self._admitted.popleft()
        return self._visible + len(self._admitted)

    def retry_after(self, in_flight: int) -> int:
        """Seconds until a place is likely free: orders drain at least at limit/budget per second."""
        excess = in_flight - self.limit + 1
        return max(1, min(math.ceil(self.budget_seconds), math.ceil(excess * self.budget_seconds / self.limit)))

    async def _count(self, client: Client) -> None:
        if time.monotonic() - self._sent_at < REFRESH_SECONDS:
            return
        if self._refresh is None:  # one count at a time; concurrent requests share it
            self._refresh = asyncio.create_task(self._fetch(client))
            self._refresh.add_done_callback(lambda _task: setattr(self, "_refresh", None))
        await asyncio.shield(self._refresh)

    async def _fetch(self, client: Client) -> None:
        sent_at = time.monotonic()
        try:
            counted = await asyncio.wait_for(client.count_workflows(self.query), COUNT_TIMEOUT)
        except (TemporalError, asyncio.TimeoutError) as err:
            raise TemporalUnavailable(
                f"Temporal did not answer how many orders are in flight ({type(err).__name__}: {err}); "
                "nothing was started"
            ) from err
        self._visible, self._sent_at = counted.count, sent_at
