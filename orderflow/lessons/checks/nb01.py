"""Notebook 01's exercise: start an order with the SDK client yourself, and approve it."""

from __future__ import annotations

import asyncio
import inspect

from temporalio.client import WorkflowHandle
from temporalio.service import RPCError

from orderflow import order_client
from orderflow.lessons.exercise import Verdict, Wrong, exercise, learner, one_line
from orderflow.models import OrderState
from orderflow.workflows import OrderWorkflow

RESULT_TIMEOUT = 30.0  # an approved order ends within its 15 s budget


@exercise("01-start-order", title="Start an order with the SDK and approve it", notebook="01")
async def check_start_order(stack, ns: dict) -> Verdict:
    order_id = learner(ns, "my_order_id", "the order id")
    handle = learner(ns, "my_handle", "the WorkflowHandle that start_workflow returns")
    if inspect.iscoroutine(handle):
        handle.close()
        raise Wrong("`my_handle` is a coroutine: you forgot `await` before stack.client.start_workflow(...).")
    if not isinstance(handle, WorkflowHandle):
        raise Wrong(
            f"`my_handle` should be the WorkflowHandle start_workflow returns; it is a {type(handle).__name__}."
        )
    expected = order_client.order_workflow_id(order_id)
    ours = stack.client.get_workflow_handle_for(OrderWorkflow.run, expected)
    try:
        description = await ours.describe()
    except RPCError:
        raise Wrong(
            f"Temporal has no workflow with id {expected!r} (your handle's id is {handle.id!r}). An order's "
            "workflow id is `order_client.order_workflow_id(my_order_id)`: the console, the API and this check "
            "find the order by it."
        ) from None
    if description.task_queue != stack.settings.orders_task_queue:
        raise Wrong(
            f"the order was started on task queue {description.task_queue!r}, where no worker polls: use "
            f"stack.settings.orders_task_queue ({stack.settings.orders_task_queue!r})."
        )
    try:
        async with asyncio.timeout(5):
            status = await ours.query(OrderWorkflow.status)
    except (TimeoutError, RPCError) as err:
        raise Wrong(f"the order's status query did not answer: {one_line(err)}") from None
    if not status.approved:
        ended = f"it ended {status.state.value}: {status.reason}" if status.terminal else "it is waiting for review"
        raise Wrong(
            f"order {order_id} started, but nobody approved it ({ended}). After "
            "`await order_client.wait_for_review(stack.client, my_order_id)`, send the Update: "
            "`await my_handle.execute_update(OrderWorkflow.approve)`."
        )
    async with asyncio.timeout(RESULT_TIMEOUT):
        result = await ours.result()
    if result.state == OrderState.SHIPPED:
        return Verdict(
            "passed",
            f"Temporal ran your order {expected} on {description.task_queue}; it was approved and ended "
            f"shipped in {result.elapsed_seconds:.1f} s, to {result.address or 'no address'}.",
        )
    if result.state == OrderState.FAILED and result.payment.value == "refunded":
        return Verdict(
            "passed",
            f"your order {expected} was approved and ran to its end; this time the carrier's injected faults "
            f"won ({result.reason}) and the payment was refunded. Start another one to see it ship.",
        )
    raise Wrong(f"your order was approved but ended {result.state.value}: {result.reason}")
