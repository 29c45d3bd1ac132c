"""Small workflows and activities the exercises build on (notebooks import them; checks run them
on task queues of their own). Their activity names start with "Exercise": their scripted faults
are the exercise working, not printed as errors."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

STEP = timedelta(seconds=5)  # start-to-close of every playground activity


@activity.defn(name="ExercisePack")
async def pack(order_id: str) -> str:
    return f"{order_id}: packed"


@activity.defn(name="ExerciseInsure")
async def insure(order_id: str) -> str:
    return f"{order_id}: insured"


@activity.defn(name="ExerciseShip")
async def ship(order_id: str) -> str:
    return f"{order_id}: shipped"


@workflow.defn(name="ExerciseShipment", sandboxed=False)
class ShipmentV1:
    """Today's shipment: pack, then ship. Exercise 06 changes it while shipments are running."""

    @workflow.run
    async def run(self, order_id: str) -> str:
        await workflow.execute_activity(pack, order_id, start_to_close_timeout=STEP)
        return await workflow.execute_activity(ship, order_id, start_to_close_timeout=STEP)


@workflow.defn(name="ExercisePacking", sandboxed=False)
class PackingWorkflow:
    """The child of exercise 04: it runs only where a worker polls the packing task queue."""

    @workflow.run
    async def run(self) -> str:
        return f"packed by the worker of task queue {workflow.info().task_queue}"
