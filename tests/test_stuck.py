"""An order whose workflow task fails on every attempt is never silent and never reported as fine.

A bug stands in for any cause (a nondeterminism error, a fatal SDK core error): the order's
workflow raises once it awaits review, so each attempt of that task fails and Temporal retries
it. The worker must log it at ERROR with the order's workflow id, ``/status`` must say "stuck"
(not the database row's last state), and a command must say the order is stuck, not "is the
worker running?".
"""

from __future__ import annotations

import asyncio
import logging

import httpx
from temporalio import workflow
from temporalio.worker import Worker

from orderflow import api, order_client
from orderflow.activities import all_activities
from orderflow.config import Settings
from orderflow.db.repository import Repository
from orderflow.models import OrderRequest, OrderResult
from orderflow.worker import worker_runner
from orderflow.workflows import OrderWorkflow, ShippingWorkflow
from tests.helpers import new_id


@workflow.defn(name="OrderWorkflow")
class BrokenOrderWorkflow(OrderWorkflow):
    @workflow.init
    def __init__(self, req: OrderRequest) -> None:
        super().__init__(req)

    @workflow.run
    async def run(self, req: OrderRequest) -> OrderResult:  # the same lifecycle; only _review differs
        return await super().run(req)

    async def _review(self) -> None:
        await self.steps.gate.open()
        raise RuntimeError("a bug in the review step")


async def test_a_stuck_order_is_logged_and_reported_as_stuck(client, dev_server, sqlite_url, caplog):
    settings = Settings(temporal_address=dev_server.address, db_url=sqlite_url).with_own_queues("stuck")
    repo = Repository.from_url(sqlite_url)
    orders_acts, _ = all_activities(repo)
    worker = Worker(
        client,
        task_queue=settings.orders_task_queue,
        workflows=[BrokenOrderWorkflow, ShippingWorkflow],
        activities=orders_acts,
        workflow_runner=worker_runner(),
    )
    order_id = new_id("stuck")
    caplog.set_level(logging.ERROR, logger="orderflow.task_guard")
    async with worker:
        await order_client.start_order(client, order_client.new_order(order_id, f"pay-{order_id}"), settings)
        async with asyncio.timeout(20):  # the first failure, then Temporal's retry of the task
            while await order_client.stuck_reason(client, order_id) is None:
                await asyncio.sleep(0.2)
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any(
            m.startswith(f"workflow order-{order_id}: workflow task failed (exception in workflow code)")
            and "a bug in the review step" in m
            for m in errors
        ), errors

        app = api.create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
                status = await http.get(f"/orders/{order_id}/status")
        body = status.json()
        assert status.status_code == 200, body
        assert (body["status"]["state"], body["status"]["persisted_state"]) == ("stuck", "awaiting_review")
        assert body["note"].startswith("the order is stuck: its workflow task has failed")
        assert "a bug in the review step" in body["note"]

        try:
            await order_client.cancel(client, order_id)
        except order_client.Stuck as err:
            assert "nothing was changed: the order is stuck: its workflow task has failed" in str(err)
        else:
            raise AssertionError("a stuck order accepted a cancellation")
    await order_client.order_handle(client, order_id).terminate("test over")
    repo.engine.dispose()
    assert OrderWorkflow._review is not BrokenOrderWorkflow._review


async def test_a_task_the_sdk_core_fails_is_logged_with_the_order(caplog):
    """The other way a task fails: in the SDK core, after the workflow code ran. Here a history
    recorded under the update storm before the gate (it failed then with a fatal UpdateMachine
    error) replayed on today's code, which takes another path: the core's nondeterminism error.
    The core evicts the run with its reason; the worker says so, naming the order."""
    from temporalio.worker import Replayer

    from orderflow.task_guard import TaskGuardRunner
    from orderflow.worker import WORKFLOW_RUNNER
    from tests.helpers import HISTORIES, load_history

    caplog.set_level(logging.ERROR, logger="orderflow.task_guard")
    replayer = Replayer(workflows=[OrderWorkflow, ShippingWorkflow], workflow_runner=TaskGuardRunner(WORKFLOW_RUNNER))
    result = await replayer.replay_workflow(
        load_history(HISTORIES / "core_defect" / "update_storm.json"), raise_on_replay_failure=False
    )
    assert "Nondeterminism error" in str(result.replay_failure)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(m.startswith("workflow order-s4b-048: workflow task failed (NONDETERMINISM)") for m in errors), errors
