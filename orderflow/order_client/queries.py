"""Reading an order from Temporal: its handle, its execution status, its status, and whether it is
stuck. No worker is needed: a running order answers from the status its workflow publishes in its
memo, an ended one from its recorded result. The ``status()`` query is there for operators and
lessons (a worker answers it)."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import Any

from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.converter import value_to_type
from temporalio.service import RPCError, RPCStatusCode

from orderflow.errors import OrderNotFound
from orderflow.models import OrderResult, OrderState, OrderStatus
from orderflow.order_client.errors import StatusUnavailable, temporal_error
from orderflow.task_guard import REFUSAL
from orderflow.workflows import OrderWorkflow

STATUS_QUERY_TIMEOUT = timedelta(seconds=5)
TERMINAL_STATES = {state.value for state in OrderState if state.terminal}
# The status fields that can be null or an empty list: the server keeps no memo key with such a
# value (upsert_memo(None) removes a key, and the server drops "[]" as it unsets a search attribute).
UNSET_IN_MEMO: dict[str, Any] = {
    "reason": None,
    "review_deadline": None,
    "recent_errors": [],
    "signals": [],
    "dispatch_failures": [],
}


def order_workflow_id(order_id: str) -> str:
    return f"order-{order_id}"


def order_handle(client: Client, order_id: str) -> WorkflowHandle:
    return client.get_workflow_handle_for(OrderWorkflow.run, order_workflow_id(order_id))


async def describe(client: Client, order_id: str) -> WorkflowExecutionStatus:
    """Temporal's view of the order's workflow; OrderNotFound if it never started."""
    described = await _described(order_handle(client, order_id), order_id)
    assert described.status is not None  # every described execution has a status
    return described.status


async def _described(handle: WorkflowHandle, order_id: str) -> WorkflowExecutionDescription:
    try:
        return await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise OrderNotFound(f"order {order_id} not found") from err
        raise temporal_error(err, f"describing order {order_id}") from err


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

    ``source`` is "memo" (a running order: the status its workflow published with its last
    workflow task), "query" (a running order that has published nothing yet, e.g. one started by
    an older version: its live ``status()``) or "result" (an ended order: what its workflow
    returned, read from the close event).
    """

    temporal_status: str
    status: dict[str, Any]
    source: str


async def order_status(client: Client, order_id: str, query_timeout: timedelta = STATUS_QUERY_TIMEOUT) -> StatusAnswer:
    """An order's status from Temporal's records, read with no worker: describe() and the memo.

    Querying a workflow makes a worker answer, replaying the history if the run is not cached:
    slow, impossible with no worker, broken for good if the replay fails, and under load the
    trigger of an SDK core defect (docs/reliability.md#status-without-a-query). A running order answers
    from its memo, unless its workflow task keeps failing (StatusUnavailable, stuck); one that has
    published nothing yet is queried (StatusUnavailable if that fails). An ended order answers
    from its recorded result.
    """
    handle = order_handle(client, order_id)
    described = await _described(handle, order_id)
    assert described.status is not None  # every described execution has a status
    if described.status == WorkflowExecutionStatus.RUNNING:
        stuck = await _stuck(handle, described)
        if stuck is not None:
            raise StatusUnavailable(stuck, timed_out=False, stuck=True)
        published = await _published(described)
        if published is not None:
            return StatusAnswer(described.status.name, published, "memo")
        return await _queried(client, order_id, query_timeout)
    return StatusAnswer(described.status.name, await _recorded_result(handle, order_id), "result")


async def published_status(client: Client, order_id: str) -> OrderStatus | None:
    """The status the order's workflow last published (running or ended), or None if it has
    published none (its first workflow task has not completed, or an older version started it)."""
    published = await _published(await _described(order_handle(client, order_id), order_id))
    return None if published is None else value_to_type(OrderStatus, published, [])


async def _published(described: WorkflowExecutionDescription) -> dict[str, Any] | None:
    """The memo in status()'s shape and field order, or None: unset fields filled in, and
    seconds_left is the reader's (the memo holds the deadline)."""
    memo = {**copy.deepcopy(UNSET_IN_MEMO), **await described.memo()}
    if "state" not in memo:
        return None
    left = (datetime.fromisoformat(memo["deadline"]) - datetime.now(timezone.utc)).total_seconds()
    memo["seconds_left"] = 0.0 if memo["state"] in TERMINAL_STATES else max(left, 0.0)
    return {field.name: memo[field.name] for field in fields(OrderStatus)}


async def _queried(client: Client, order_id: str, query_timeout: timedelta) -> StatusAnswer:
    """A running order that has no status in its memo: its ``status()`` query."""
    try:
        current = await order_handle(client, order_id).query(OrderWorkflow.status, rpc_timeout=query_timeout)
        return StatusAnswer(WorkflowExecutionStatus.RUNNING.name, asdict(current), "query")
    except (RPCError, RPCTimeoutOrCancelledError, WorkflowQueryFailedError, WorkflowQueryRejectedError) as err:
        execution = await describe(client, order_id)
        if execution != WorkflowExecutionStatus.RUNNING:  # it ended meanwhile: its result
            return StatusAnswer(
                execution.name, await _recorded_result(order_handle(client, order_id), order_id), "result"
            )
        # The server's "query timed out" is DEADLINE_EXCEEDED; our own rpc_timeout expiring
        # first is CANCELLED "Timeout expired" (both seen here).
        timed_out = isinstance(err, RPCTimeoutOrCancelledError) or (
            isinstance(err, RPCError) and err.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED)
        )
        detail = (
            f"no worker answered the status query within {query_timeout.total_seconds():g} s; "
            "is the orders worker running?"
            if timed_out
            else f"the workflow could not answer its status query ({type(err).__name__}: {err})"
        )
        raise StatusUnavailable(detail, timed_out) from err


async def stuck_reason(client: Client, order_id: str) -> str | None:
    """Why a running order cannot move, or None: its workflow task has failed again and again
    (a nondeterminism error, a fatal error in the SDK core, a bug), with the last failure's words."""
    handle = order_handle(client, order_id)
    try:
        described = await handle.describe()
    except RPCError:
        return None
    return await _stuck(handle, described)


async def _stuck(handle: WorkflowHandle, described: WorkflowExecutionDescription) -> str | None:
    """Stuck: the pending workflow task is a retry, and the last attempt failed in the worker (not a
    timeout: that is a worker gone, which a running worker picks up; not task_guard's refusal: its
    retry replays the run and goes on)."""
    raw = described.raw_description
    if described.status != WorkflowExecutionStatus.RUNNING or not raw.HasField("pending_workflow_task"):
        return None
    attempt = raw.pending_workflow_task.attempt
    if attempt < 2:
        return None
    last: str | None = None  # the last failed or timed-out task's failure message ("" for a timeout)
    async for event in handle.fetch_history_events():
        if event.HasField("workflow_task_failed_event_attributes"):
            last = event.workflow_task_failed_event_attributes.failure.message
        elif event.HasField("workflow_task_timed_out_event_attributes"):
            last = ""
    if not last or REFUSAL in last:
        return None
    return (
        f"the order is stuck: its workflow task has failed {attempt - 1} times in a row, last: {last.splitlines()[0]}"
    )


async def _recorded_result(handle: WorkflowHandle, order_id: str) -> dict[str, Any]:
    """An ended order's outcome from its close event: the OrderResult, or why the workflow failed."""
    try:
        ended: OrderResult = await handle.result(follow_runs=False, rpc_timeout=STATUS_QUERY_TIMEOUT)
        return asdict(ended)
    except WorkflowFailureError as err:  # failed, cancelled, terminated or timed out in Temporal
        return {"order_id": order_id, "state": None, "reason": str(err.cause or err)}
    except RPCError as err:
        raise temporal_error(err, f"result of order {order_id}") from err
