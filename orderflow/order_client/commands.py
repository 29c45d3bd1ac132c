"""Commands to an order: start it (alone or with a reviewer's Update riding on the start), and
the Updates approve, wait_for_review, cancel and update_address, each sent again while the
workflow answers Busy."""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateHandle,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import TemporalError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from orderflow.config import Settings
from orderflow.errors import InvalidOrder
from orderflow.models import Item, OrderRequest, OrderResult, OrderState, Update
from orderflow.order_client.errors import (
    NoAnswer,
    OrderExists,
    Rejected,
    Stuck,
    busy,
    temporal_error,
    workflow_not_ready,
)
from orderflow.order_client.queries import describe, order_handle, order_workflow_id, stuck_reason
from orderflow.workflows import OrderWorkflow

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
WORKFLOW_TASK_TIMEOUT = timedelta(seconds=5)
ACCEPT_TIMEOUT = timedelta(seconds=10)


def check_order(req: OrderRequest) -> None:
    """Raise InvalidOrder for input no workflow should see."""
    for name, value in (("order id", req.order_id), ("payment id", req.payment_id)):
        if not isinstance(value, str) or not ID_PATTERN.match(value):
            raise InvalidOrder(f"{name} must be 1-64 letters, digits or _.:- (got {value!r})")
    for item in req.items:
        if not item.sku or not isinstance(item.qty, int) or item.qty < 1 or item.qty > 10_000:
            raise InvalidOrder(f"each item needs a sku and a quantity from 1 to 10000 (got {item!r})")
    if not 1 <= req.budget_seconds <= 3600:
        raise InvalidOrder("budget_seconds must be between 1 and 3600")


def _start_options(req: OrderRequest, settings: Settings) -> dict[str, Any]:
    # The workflow id is the order's id: Temporal allows one execution per id, and REJECT_DUPLICATE
    # keeps an id from being used again even after its order ended.
    return dict(
        id=order_workflow_id(req.order_id),
        task_queue=settings.orders_task_queue,
        task_timeout=WORKFLOW_TASK_TIMEOUT,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
    )


async def start_order(client: Client, req: OrderRequest, settings: Settings | None = None) -> WorkflowHandle:
    """Start OrderWorkflow; raises InvalidOrder, or OrderExists for a reused order id."""
    settings = settings or Settings.from_env()
    check_order(req)
    req = replace(req, shipping_task_queue=settings.shipping_task_queue)
    try:
        return await client.start_workflow(OrderWorkflow.run, req, **_start_options(req, settings))
    except WorkflowAlreadyStartedError as err:
        raise OrderExists(f"order {req.order_id} already exists") from err
    except RPCError as err:  # e.g. Temporal went down after the first connect
        raise temporal_error(err, f"starting order {req.order_id}") from err


async def start_order_for_review(
    client: Client, req: OrderRequest, settings: Settings | None = None
) -> tuple[WorkflowHandle, WorkflowUpdateHandle[Any]]:
    """Start OrderWorkflow and, in the same request, a reviewer's ``wait_for_review`` Update
    (update-with-start): it reaches the workflow's first task, before any step runs, so it is
    never refused as Busy. Returns the order's handle and the Update's (its result: the state
    once the order awaits review or has moved past it)."""
    settings = settings or Settings.from_env()
    check_order(req)
    req = replace(req, shipping_task_queue=settings.shipping_task_queue)
    start = WithStartWorkflowOperation(OrderWorkflow.run, req, **_start_options(req, settings))
    try:
        review = await client.start_update_with_start_workflow(
            OrderWorkflow.wait_for_review, wait_for_stage=WorkflowUpdateStage.ACCEPTED, start_workflow_operation=start
        )
        return await start.workflow_handle(), review
    except WorkflowAlreadyStartedError as err:
        raise OrderExists(f"order {req.order_id} already exists") from err
    except RPCError as err:
        raise temporal_error(err, f"starting order {req.order_id}") from err


NOT_READY_PAUSE = 0.05  # the retried workflow task is usually scheduled within a few ms
RESEND_MAX_PAUSE = 1.0


def resend_pause(tries: int) -> float:
    """The pause before an Update is sent again under the same id ("not ready", "aborted"): 50 ms,
    doubling up to 1 s. An overloaded server aborts held Updates by the thousand (3322 in 10 s in a
    failing storm); sent again every 50 ms, each held Update was 20 calls a second that fed the
    overload it came from."""
    return min(NOT_READY_PAUSE * 2**tries, RESEND_MAX_PAUSE)


# A command that arrives while a step runs is refused as Busy (workflows/gate.py) and
# sent again after these pauses (then every BUSY_PAUSES[-1] s); the caller bounds the whole wait.
BUSY_PAUSES = (0.02, 0.05, 0.1, 0.2)


def update_aborted(err: BaseException) -> bool:
    """The server aborted an Update it held because it reloaded the workflow's state (seen
    under CPU starvation). Sending it again under the same id either finds the Update already
    accepted (the server dedupes by id) or delivers it anew."""
    return isinstance(err, RPCError) and err.status == RPCStatusCode.UNAVAILABLE and "update was aborted" in err.message


def crowded(err: BaseException) -> bool:
    """The server refused to admit the Update: too many Updates in flight for this workflow
    (10 by default) or a rate limit. Nothing was admitted; try again in a moment."""
    return isinstance(err, RPCError) and err.status == RPCStatusCode.RESOURCE_EXHAUSTED


def dropped(err: BaseException) -> bool:
    """The server rejected the Update because the workflow task that carried it completed
    without handling it ("wasn't processed by worker": seen in MySQL storms, where the SDK core
    had new work arrive over Update messages it had not processed). Nothing ran: send it again."""
    return isinstance(err, WorkflowUpdateFailedError) and "wasn't processed by worker" in str(err.cause)


async def _start_update(handle: WorkflowHandle, name: str, args: list[Any], result_type: type) -> WorkflowUpdateHandle:
    """Send the Update once, and again under the same id while the server answers "workflow
    not ready" or "aborted" (see ``workflow_not_ready``, ``update_aborted``), after ``resend_pause``."""
    update_id = str(uuid.uuid4())
    tries = 0
    while True:
        try:
            # start_update returns once the workflow's validator accepted the Update (or raises its
            # refusal); the outcome comes later, from the returned handle's result().
            return await handle.start_update(
                name, args=args, id=update_id, wait_for_stage=WorkflowUpdateStage.ACCEPTED, result_type=result_type
            )
        except RPCError as err:
            if not (workflow_not_ready(err) or update_aborted(err)):
                raise
        await asyncio.sleep(resend_pause(tries))
        tries += 1


async def _outcome(update: WorkflowUpdateHandle) -> Any:
    """An accepted (or refused) Update's outcome, polled again while the server says "aborted"."""
    tries = 0
    while True:
        try:
            return await update.result()
        except RPCError as err:
            if not update_aborted(err):
                raise
        await asyncio.sleep(resend_pause(tries))
        tries += 1


async def send_update(
    handle: WorkflowHandle,
    name: str,
    *args: Any,
    result_type: type = str,
    accept_within: timedelta = ACCEPT_TIMEOUT,
) -> Any:
    """Send an Update until the workflow accepts it or refuses it for a reason of its own, and
    return its outcome (raises WorkflowUpdateFailedError with the workflow's refusal).

    A Busy refusal (a step was running, nothing was changed) or a crowded server is tried again
    after BUSY_PAUSES. NoAnswer if it was not accepted within ``accept_within``, saying what
    happened meanwhile, and whether the last try may still take effect (it was sent and no
    answer came). Once accepted, the caller bounds the wait.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + accept_within.total_seconds()
    refusals = crowding = 0

    def not_accepted(in_flight: bool) -> NoAnswer:
        seen = []
        if refusals:
            seen.append(f"the workflow answered Busy {refusals} times (a step was running)")
        if crowding:
            seen.append(f"Temporal turned it away {crowding} times (too many commands in flight for this order)")
        if in_flight:
            seen.append("the last try got no answer: it may still take effect, the order's status will show it")
        else:
            seen.append("nothing was changed")
        return NoAnswer(
            f"{name} for {handle.id}: not accepted within {accept_within.total_seconds():g} s; " + "; ".join(seen)
        )

    while True:
        if loop.time() >= deadline:
            raise not_accepted(in_flight=False)
        try:
            update = await asyncio.wait_for(
                _start_update(handle, name, list(args), result_type), deadline - loop.time()
            )
        # A start cut by the deadline: the SDK turns the cancellation into RPCTimeoutOrCancelledError.
        except (asyncio.TimeoutError, RPCTimeoutOrCancelledError):
            raise not_accepted(in_flight=True) from None
        except RPCError as err:
            if not crowded(err):
                raise
            crowding += 1
            await asyncio.sleep(BUSY_PAUSES[-1])
            continue
        try:
            # A refusal comes back at once; an accepted Update answers when its outcome is known.
            return await _outcome(update)
        except WorkflowUpdateFailedError as err:
            if not (busy(err) or dropped(err)):
                raise
        await asyncio.sleep(BUSY_PAUSES[min(refusals, len(BUSY_PAUSES) - 1)])
        refusals += 1


async def workers_polling(client: Client, order_id: str) -> str:
    """Whether a worker polls the order's task queue: what a command that got no answer needs
    to say ("no orders worker is polling" vs "the worker did not get to it in time")."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    try:
        queue = (await order_handle(client, order_id).describe()).task_queue
        answer = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            ),
            timeout=timedelta(seconds=2),
        )
    except RPCError:
        return "Temporal could not say whether an orders worker is running"
    if not answer.pollers:
        return f"no orders worker is polling task queue {queue!r}; is one running?"
    return f"{len(answer.pollers)} orders worker(s) poll {queue!r}, but none ran the order's workflow task in time (overloaded?)"


async def _update(client: Client, order_id: str, name: str, *args: str, result_type: type = str) -> Any:
    """Run a validated Workflow Update; Rejected carries the workflow's reason.

    Every Temporal error becomes one of ours: Rejected / CommandFailed (409), OrderNotFound
    (404), TemporalUnavailable (503) or NoAnswer (504).
    """
    handle = order_handle(client, order_id)
    what = f"{name} for order {order_id}"
    try:
        return await send_update(handle, name, *args, result_type=result_type)
    except NoAnswer as err:
        stuck = await stuck_reason(client, order_id)
        if stuck is not None:  # not a missing worker: the order's own task keeps failing
            raise Stuck(f"{what}: not accepted, nothing was changed: {stuck}") from err
        raise NoAnswer(f"{err}; {await workers_polling(client, order_id)}") from err
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:  # unknown order, or its workflow has closed
            if await describe(client, order_id) != WorkflowExecutionStatus.RUNNING:
                raise Rejected("it has already ended") from err
        raise temporal_error(err, what) from err
    except TemporalError as err:
        raise temporal_error(err, what) from err


async def approve(client: Client, order_id: str) -> str:
    return await _update(client, order_id, Update.APPROVE)


async def wait_for_review(client: Client, order_id: str) -> OrderState:
    """A reviewer's long poll: the order's state once it awaits review or has moved past it.

    One Update instead of a status query every fraction of a second
    (docs/performance.md#what-an-order-costs).
    """
    return await _update(client, order_id, Update.WAIT_FOR_REVIEW, result_type=OrderState)


async def cancel(client: Client, order_id: str, reason: str = "") -> str:
    return await _update(client, order_id, Update.CANCEL, reason)


async def update_address(client: Client, order_id: str, new_address: str) -> str:
    return await _update(client, order_id, Update.UPDATE_ADDRESS, new_address)


async def approve_when_ready(handle: WorkflowHandle) -> bool:
    """The reviewer bot: wait until the order awaits review, then approve it at once.

    False when the order never awaited review or left it first (cancelled, review deadline).
    """
    try:
        if await send_update(handle, Update.WAIT_FOR_REVIEW, result_type=OrderState) != OrderState.AWAITING_REVIEW:
            return False
        await send_update(handle, Update.APPROVE)
    except (WorkflowUpdateFailedError, RPCError):  # refused, or the workflow closed meanwhile
        return False
    return True


async def result(handle: WorkflowHandle) -> OrderResult:
    return await handle.result()


def new_order(
    order_id: str, payment_id: str, *, items: list[Item] | None = None, address: str = "", **kw
) -> OrderRequest:
    """An OrderRequest with the default item (sku ABC, qty 1) unless items are given; the order
    publishes its status in its memo (OrderRequest.publish_status)."""
    req = OrderRequest(order_id=order_id, payment_id=payment_id, address=address, **{"publish_status": True, **kw})
    if items is not None:
        req.items = items
    return req
