"""What lesson 09 (changing a running workflow) runs: a delivery workflow in three versions, a
worker that is "deployed" and replaced while deliveries wait, and the histories they leave.

A delivery packs, waits for the courier's pickup (a signal), then ships. Version 2 insures the
parcel after packing, for new deliveries only (``workflow.patched``); the unsafe version insures
every delivery, which breaks the ones that were already waiting."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker

from orderflow import order_client
from orderflow.lessons import harness
from orderflow.lessons.playground import STEP, insure, pack, ship

PATCH = "insure-parcels"
DELIVERY_TIMEOUT = harness.WORKFLOW_TIMEOUT * 6  # a minute: a reader pauses between cells
SHORT = {"ExercisePack": "pack", "ExerciseInsure": "insure", "ExerciseShip": "ship"}


@workflow.defn(name="ExerciseDelivery", sandboxed=False)
class DeliveryV1:
    """Today's code: pack, wait for the courier, ship."""

    def __init__(self) -> None:
        self.picked_up = False

    @workflow.run
    async def run(self, order_id: str) -> str:
        await workflow.execute_activity(pack, order_id, start_to_close_timeout=STEP)
        await workflow.wait_condition(lambda: self.picked_up)
        return await workflow.execute_activity(ship, order_id, start_to_close_timeout=STEP)

    @workflow.signal
    def pickup(self) -> None:
        self.picked_up = True


@workflow.defn(name="ExerciseDelivery", sandboxed=False)
class DeliveryV2(DeliveryV1):
    """Version 2: new deliveries are insured after packing; deliveries that packed on version 1
    (their history has no patch marker there) go on without insurance."""

    @workflow.run
    async def run(self, order_id: str) -> str:
        await workflow.execute_activity(pack, order_id, start_to_close_timeout=STEP)
        if workflow.patched(PATCH):
            await workflow.execute_activity(insure, order_id, start_to_close_timeout=STEP)
        await workflow.wait_condition(lambda: self.picked_up)
        return await workflow.execute_activity(ship, order_id, start_to_close_timeout=STEP)


@workflow.defn(name="ExerciseDelivery", sandboxed=False)
class DeliveryUnsafe(DeliveryV1):
    """The same change without a patch: every delivery, old or new, insures after packing."""

    @workflow.run
    async def run(self, order_id: str) -> str:
        await workflow.execute_activity(pack, order_id, start_to_close_timeout=STEP)
        await workflow.execute_activity(insure, order_id, start_to_close_timeout=STEP)
        await workflow.wait_condition(lambda: self.picked_up)
        return await workflow.execute_activity(ship, order_id, start_to_close_timeout=STEP)


@dataclass
class Deployment:
    """A worker for one version of the delivery on a task queue, running in this kernel until
    ``stop()``: what a deploy replaces."""

    client: Client
    task_queue: str
    version: type
    worker: Worker | None = None
    task: asyncio.Task | None = field(default=None, repr=False)

    @classmethod
    async def start(cls, client: Client, task_queue: str, version: type) -> Deployment:
        deployed = cls(client, task_queue, version)
        deployed.worker = Worker(
            client,
            task_queue=task_queue,
            workflows=[version],
            activities=[pack, insure, ship],
            workflow_runner=UnsandboxedWorkflowRunner(),
            max_cached_workflows=0,  # every task replays the history: the new code meets the old runs at once
        )
        deployed.task = asyncio.create_task(deployed.worker.run())
        return deployed

    async def stop(self) -> None:
        if self.worker is not None and self.task is not None:
            await self.worker.shutdown()
            await self.task

    def __repr__(self) -> str:
        state = "stopped" if self.task is None or self.task.done() else "running"
        return f"worker for {self.version.__name__} on {self.task_queue}: {state}"


def delivery_queue() -> str:
    return f"deliveries-{os.urandom(3).hex()}"


async def start_deliveries(client: Client, task_queue: str, prefix: str, n: int = 3) -> list[WorkflowHandle]:
    """Start ``n`` deliveries; each packs, then waits for its courier."""
    return [
        await client.start_workflow(
            DeliveryV1.run,
            f"{prefix}-{i}",
            id=harness.workflow_id("09", f"{prefix}-{i}"),
            task_queue=task_queue,
            execution_timeout=DELIVERY_TIMEOUT,
        )
        for i in range(n)
    ]


async def wait_until_packed(handles: list[WorkflowHandle], timeout: float = 10.0) -> None:
    """Until every delivery's workflow has seen its pack activity complete (a workflow task
    completed after it), so it waits for the courier on the code that ran it. The activity's
    completion alone is not enough: a worker deployed before that task would run it instead,
    and meet ``workflow.patched`` live."""

    def packed(kinds: list[str]) -> bool:
        return (
            "activity_task_completed" in kinds
            and "workflow_task_completed" in kinds[kinds.index("activity_task_completed") :]
        )

    async with asyncio.timeout(timeout):
        for handle in handles:
            while not packed(harness.event_kinds(await handle.fetch_history())):
                await asyncio.sleep(0.1)


async def pick_up(handles: list[WorkflowHandle]) -> pd.DataFrame:
    """The courier arrives for each delivery; one row per delivery: result and the activities it ran."""
    for handle in handles:
        await handle.signal(DeliveryV1.pickup)
    rows = []
    for handle in handles:
        result = await handle.result()
        history = await handle.fetch_history()
        ran = [SHORT.get(a, a) for a in harness.scheduled_activities(history)]
        rows.append({"delivery": handle.id.split("-", 3)[-1], "result": result, "activities": ", ".join(ran)})
    return pd.DataFrame(rows).set_index("delivery")


async def replay(history: Any, version: type) -> str | None:
    """Replay ``history`` on ``version``: None if it replays, else the nondeterminism in one sentence."""
    replayer = Replayer(
        workflows=[version], workflow_runner=UnsandboxedWorkflowRunner(), runtime=order_client.runtime()
    )
    with harness.quiet_worker_logs():
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    if result.replay_failure is None:
        return None
    return harness.nondeterminism_reason(result.replay_failure)
