"""Reading an order from Temporal: its handle, its execution status, its ``status()`` query, and
whether it is stuck. An ended order answers from its recorded result, with no worker needed."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.service import RPCError, RPCStatusCode

from orderflow.errors import OrderNotFound
from orderflow.models import OrderResult, OrderStatus
from orderflow.order_client.errors import StatusUnavailable, temporal_error
from orderflow.workflows import OrderWorkflow

STATUS_QUERY_TIMEOUT = timedelta(seconds=5)


def order_workflow_id(order_id: str) -> str:
    return f"order-{order_id}"


def order_handle(client: Client, order_id: str) -> WorkflowHandle:
    return client.get_workflow_handle_for(OrderWorkflow.run, order_workflow_id(order_id))


async def describe(client: Client, order_id: str) -> WorkflowExecutionStatus:
    """Temporal's view of the order's workflow; OrderNotFound if it never started."""
    try:
        desc = await order_handle(client, order_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise OrderNotFound(f"order {order_id} not found") from err
        raise temporal_error(err, f"describing order {order_id}") from err
    assert desc.status is not None  # every described execution has a status
    return desc.status


async def status(client: Client, order_id: str) -> OrderStatus:
    """The workflow's ``status()`` query: its live view (a worker answers it, replaying if needed)."""
    try:
        return await order_handle(client, order_id).query(OrderWorkflow.status)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise OrderNotFound(f"order {order_id} not found") from err
        raise temporal_error(err, f"status of order {order_id}") from err


@dataclass
class StatusAnswer:
    """What ``order_status`` found: Temporal's execution status, the order's status and its source.

    ``source`` is "query" (a running order's live ``status()``) or "result" (an ended order:
    what its workflow returned, read from the close event; no worker and no replay needed).
    """

    temporal_status: str
    status: dict[str, Any]
    source: str


async def order_status(client: Client, order_id: str, query_timeout: timedelta = STATUS_QUERY_TIMEOUT) -> StatusAnswer:
    """Status that does not depend on a worker for an order that has ended.

    Querying a closed workflow makes a worker replay its whole history: slow, impossible
    with no worker, and broken for good if the replay fails. An ended order answers from
    its recorded result instead. A running order is queried; if that fails,
    StatusUnavailable says why (the caller may fall back to the database).
    """
    handle = order_handle(client, order_id)
    execution = await describe(client, order_id)
    if execution == WorkflowExecutionStatus.RUNNING:
        try:
            current = await handle.query(OrderWorkflow.status, rpc_timeout=query_timeout)
            return StatusAnswer(execution.name, asdict(current), "query")
        except (RPCError, RPCTimeoutOrCancelledError, WorkflowQueryFailedError, WorkflowQueryRejectedError) as err:
            execution = await describe(client, order_id)
            stuck = await stuck_reason(client, order_id) if execution == WorkflowExecutionStatus.RUNNING else None
            if stuck is not None:
                raise StatusUnavailable(stuck, timed_out=False, stuck=True) from err
            if execution == WorkflowExecutionStatus.RUNNING:  # not a race with the close: a real failure
                # The server's "query timed out" is DEADLINE_EXCEEDED; our own rpc_timeout
                # expiring first is CANCELLED "Timeout expired" (both seen here).
                timed_out = isinstance(err, RPCTimeoutOrCancelledError) or (
                    isinstance(err, RPCError)
                    and err.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED)
                )
                detail = (
                    (
                        "no worker answered the status query within "
                        f"{query_timeout.total_seconds():g} s; is the orders worker running?"
                    )
                    if timed_out
                    else (f"the workflow could not answer its status query ({type(err).__name__}: {err})")
                )
                raise StatusUnavailable(detail, timed_out) from err
    return StatusAnswer(execution.name, await _recorded_result(handle, order_id), "result")


async def stuck_reason(client: Client, order_id: str) -> str | None:
    """Why a running order cannot move, or None: its workflow task has failed again and again
    (a nondeterminism error, a fatal error in the SDK core, a bug), with the last failure's words."""
    handle = order_handle(client, order_id)
    try:
        described = await handle.describe()
    except RPCError:
        return None
    raw = described.raw_description
    if described.status != WorkflowExecutionStatus.RUNNING or not raw.HasField("pending_workflow_task"):
        return None
    attempt = raw.pending_workflow_task.attempt
    if attempt < 2:
        return None
    last = ""
    async for event in handle.fetch_history_events():
        if event.HasField("workflow_task_failed_event_attributes"):
            last = event.workflow_task_failed_event_attributes.failure.message
    return f"the order is stuck: its workflow task has failed {attempt - 1} times in a row, last: {last.splitlines()[0] if last else 'no message'}"


async def _recorded_result(handle: WorkflowHandle, order_id: str) -> dict[str, Any]:
    """An ended order's outcome from its close event: the OrderResult, or why the workflow failed."""
    try:
        ended: OrderResult = await handle.result(follow_runs=False, rpc_timeout=STATUS_QUERY_TIMEOUT)
        return asdict(ended)
    except WorkflowFailureError as err:  # failed, cancelled, terminated or timed out in Temporal
        return {"order_id": order_id, "state": None, "reason": str(err.cause or err)}
    except RPCError as err:
        raise temporal_error(err, f"result of order {order_id}") from err
