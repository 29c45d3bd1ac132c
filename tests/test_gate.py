"""The gate (orderflow/workflows/gate.py) on the real dev server: while its timer runs after a
step, an Update is accepted at once (not refused Busy) and opens the gate, and a signal is still
held; the history replays. The gate's timer is stretched to 2 s here so that "while it runs" can be hit on purpose
(it is 1 ms in the product); scripted draws make every flaky call succeed."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError
from temporalio.worker import Worker

from orderflow.models import OrderRequest, OrderResult, OrderState
from orderflow.workflows import OrderWorkflow, ShippingWorkflow
from orderflow.workflows.gate import Gate

# The sandbox re-imports this module to run SlowGateOrderWorkflow: what is not workflow code
# passes through (the configuration module reads the working directory when imported).
with workflow.unsafe.imports_passed_through():
    from orderflow import order_client
    from orderflow.activities import all_activities
    from orderflow.bench.replay import replay_histories
    from orderflow.config import Settings
    from orderflow.db.repository import Repository
    from orderflow.errors import OrderNotFound
    from orderflow.worker import build_workers, worker_runner
    from tests.helpers import new_id

SLOW_GATE = timedelta(seconds=2)


@workflow.defn(name="OrderWorkflow")
class SlowGateOrderWorkflow(OrderWorkflow):
    """OrderWorkflow whose gate timer lasts 2 s: the window a 1 ms timer makes too short to aim at."""

    @workflow.init
    def __init__(self, req: OrderRequest) -> None:
        super().__init__(req)
        self.steps.gate = Gate(timer=SLOW_GATE)

    @workflow.run
    async def run(self, req: OrderRequest) -> OrderResult:
        return await super().run(req)


async def run_orders(client, dev_server, sqlite_url, *scenarios):
    """Run each scenario (an async function of the order's handle) against an order of its own,
    on an orders worker of SlowGateOrderWorkflow; replay each history; return them."""
    settings = Settings(temporal_address=dev_server.address, db_url=sqlite_url).with_own_queues("gate")
    repo = Repository.from_url(sqlite_url)
    orders_acts, _ = all_activities(repo)
    orders = Worker(
        client,
        task_queue=settings.orders_task_queue,
        workflows=[SlowGateOrderWorkflow],
        activities=orders_acts,
        workflow_runner=worker_runner(),
    )
    (shipping,) = build_workers(client, repo, settings, kinds=("shipping",))  # the product's shipping worker
    histories = []
    try:
        async with orders, shipping:
            for scenario in scenarios:
                order_id = new_id("gate")
                req = order_client.new_order(order_id, f"pay-{order_id}", address="1 Old Road")
                handle = await order_client.start_order(client, req, settings)
                async with asyncio.timeout(10):  # validate persisted "awaiting review": the gate's timer starts
                    while persisted_state(repo, order_id) != "awaiting_review":
                        await asyncio.sleep(0.02)
                await scenario(handle)
                result = await handle.result()
                assert result.state == OrderState.SHIPPED, result
                histories.append(await handle.fetch_history())
    finally:
        repo.engine.dispose()
    replay = await replay_histories(histories, workflows=[SlowGateOrderWorkflow, ShippingWorkflow])
    assert replay["failures"] == 0, replay["first_failures"]
    return histories


def persisted_state(repo: Repository, order_id: str) -> str | None:
    try:
        return repo.get_order(order_id)["state"]
    except OrderNotFound:  # the receive step writes the row
        return None


def first(history, event_type, name: str | None = None) -> int:
    """The id of the first event of a type (an accepted Update: of that name)."""
    for e in history.events:
        if e.event_type != event_type:
            continue
        if name is None or e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name == name:
            return e.event_id
    raise AssertionError(f"no {EventType.Name(event_type)} {name or ''} in the history")


async def test_an_update_is_accepted_while_the_gate_timer_runs_and_opens_the_gate(
    client, dev_server, sqlite_url, scripted
):
    async def approve_at_once(handle):
        # No retry here: a Busy refusal would raise WorkflowUpdateFailedError.
        assert await handle.execute_update(OrderWorkflow.approve) == "approved"

    (history,) = await run_orders(client, dev_server, sqlite_url, approve_at_once)
    started = first(history, EventType.EVENT_TYPE_TIMER_STARTED)  # the gate's timer, before the review
    accepted = first(history, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED, "approve")
    cancelled = first(history, EventType.EVENT_TYPE_TIMER_CANCELED)
    assert started < accepted < cancelled, (started, accepted, cancelled)
    fired = [e.event_id for e in history.events if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED]
    assert fired == [], f"the gate waited for its timer although an Update opened it: {fired}"
    # The charge runs in the workflow task that accepted the approval, not one task later.
    charged = first_after(history, EventType.EVENT_TYPE_MARKER_RECORDED, accepted)
    next_task = first_after(history, EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, accepted)
    assert charged < next_task, (accepted, charged, next_task)


def first_after(history, event_type, after: int) -> int:
    return next(e.event_id for e in history.events if e.event_type == event_type and e.event_id > after)


async def test_a_held_signal_keeps_updates_out_until_the_gate_opens(client, dev_server, sqlite_url, scripted):
    async def signal_then_approve(handle):
        await handle.signal(OrderWorkflow.update_address_signal, "2 New Road")
        try:
            await handle.execute_update(OrderWorkflow.approve)
        except WorkflowUpdateFailedError as err:
            assert order_client.busy(err), err  # the held signal must not be overtaken
        else:
            raise AssertionError("an approval overtook a held signal")
        status = await handle.query(OrderWorkflow.status)
        assert status.address == "1 Old Road", status  # still held: the timer has not fired
        assert await order_client.send_update(handle, "approve") == "approved"  # sent again after Busy

    (history,) = await run_orders(client, dev_server, sqlite_url, signal_then_approve)
    signaled = first(history, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
    fired = first(history, EventType.EVENT_TYPE_TIMER_FIRED)
    accepted = first(history, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED, "approve")
    assert signaled < fired < accepted, (signaled, fired, accepted)
