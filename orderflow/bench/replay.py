"""Every order's and shipment's history fetched, and replayed on today's workflow code."""

from __future__ import annotations

from collections.abc import Sequence

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.worker import Replayer

from orderflow import order_client
from orderflow.devstack import ProcessStack
from orderflow.worker import WORKFLOW_RUNNER
from orderflow.workflows import OrderWorkflow, ShippingWorkflow

CLOSE_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
}


async def histories_of(client: Client, stack: ProcessStack, admitted: list[str]) -> list[WorkflowHistory]:
    """Every order's history and every shipment's (the children, found by their task queue)."""
    found = [await order_client.order_handle(client, order_id).fetch_history() for order_id in admitted]
    query = f"TaskQueue='{stack.settings.shipping_task_queue}'"
    async for execution in client.list_workflows(query):
        found.append(await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history())
    return found


def start_to_close(history: WorkflowHistory) -> float | None:
    """Seconds from the workflow's start to its close, by Temporal's own event times (None: still open)."""
    first, last = history.events[0], history.events[-1]
    if last.event_type not in CLOSE_EVENTS:
        return None
    return (last.event_time.ToDatetime() - first.event_time.ToDatetime()).total_seconds()


def workflow_type(history: WorkflowHistory) -> str:
    return history.events[0].workflow_execution_started_event_attributes.workflow_type.name


async def replay_histories(
    histories: list[WorkflowHistory],
    data_converter: DataConverter = DataConverter.default,
    workflows: Sequence[type] = (OrderWorkflow, ShippingWorkflow),
) -> dict:
    """Replay each history on today's workflow code, as a restarted worker would (with the
    workers' data converter: an encrypted history needs its codec). ``workflows``: the classes
    to replay on (a test's variant of OrderWorkflow, registered under the same name)."""
    replayer = Replayer(workflows=list(workflows), workflow_runner=WORKFLOW_RUNNER, data_converter=data_converter)

    async def each():
        for history in histories:
            yield history

    results = await replayer.replay_workflows(each(), raise_on_replay_failure=False)
    by_run = {h.run_id: h.workflow_id for h in histories}
    failures = [f"{by_run.get(run, run)}: {err}" for run, err in results.replay_failures.items()]
    return {
        "histories": len(histories),
        "failures": len(failures),
        "first_failures": failures[:5],
        "failed_runs": sorted(results.replay_failures),
    }
