"""``place_orders``: the one place a batch of orders is driven in-process (closed-loop benchmark,
notebooks, tests)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.service import RPCError

from orderflow.config import Settings
from orderflow.models import OrderRequest, OrderResult, OrderState, Update
from orderflow.order_client.commands import send_update, start_order, start_order_for_review


@dataclass
class PlacedOrder:
    """One order of a batch, as ``place_orders`` saw it end."""

    order_id: str
    state: str  # the final state, or "workflow_failed" (failed, cancelled or terminated in Temporal)
    seconds: float  # workflow start -> close, from Temporal's own timestamps
    client_seconds: float  # start request -> result, as the caller saw it
    result: OrderResult | None = None


async def place_orders(
    client: Client,
    requests: list[OrderRequest],
    settings: Settings,
    *,
    concurrency: int = 10,
    approve: bool = True,
    on_done: Any = None,
) -> list[PlacedOrder]:
    """Start each order, approve it the moment it awaits review (the reviewer bot), await its end.

    At most ``concurrency`` at once (a closed loop). The one place a batch of orders is driven
    in-process: the closed-loop benchmark, the notebooks and the tests call it; ``on_done`` is
    called with each PlacedOrder (a progress bar).
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(req: OrderRequest) -> PlacedOrder:
        async with gate:
            began = time.monotonic()
            if approve:  # the reviewer's long poll rides on the start (see start_order_for_review)
                handle, review = await start_order_for_review(client, req, settings)
                if await review.result() == OrderState.AWAITING_REVIEW:
                    with contextlib.suppress(WorkflowUpdateFailedError, RPCError):  # refused: cancelled or ended first
                        await send_update(handle, Update.APPROVE)
            else:
                handle = await start_order(client, req, settings)
            ended: OrderResult | None = None
            try:
                ended = await handle.result()
                state = ended.state.value
            except WorkflowFailureError:
                state = "workflow_failed"
            client_seconds = time.monotonic() - began
            desc = await handle.describe()
            placed = PlacedOrder(
                req.order_id,
                state,
                ((desc.close_time or desc.start_time) - desc.start_time).total_seconds(),
                client_seconds,
                ended,
            )
            if on_done is not None:
                on_done(placed)
            return placed

    return list(await asyncio.gather(*(one(req) for req in requests)))
