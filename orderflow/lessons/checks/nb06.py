"""Notebook 06's exercise: a replay-safe change behind ``workflow.patched``."""

from __future__ import annotations

from temporalio.worker import Replayer, UnsandboxedWorkflowRunner
from temporalio.workflow import NondeterminismError

from orderflow import order_client
from orderflow.lessons import harness
from orderflow.lessons.exercise import NotDone, Verdict, Wrong, exercise, learner, one_line
from orderflow.lessons.playground import ShipmentV1, insure, pack, ship

EXERCISE = "06-patched"
SHORT = {"ExercisePack": "pack", "ExerciseInsure": "insure", "ExerciseShip": "ship"}


async def _history(stack, workflow_class, activities, order_id: str):
    queue = harness.task_queue(EXERCISE)
    async with harness.worker(stack.client, queue, [workflow_class], activities):
        handle = await harness.start(stack.client, workflow_class.run, order_id, queue=queue, exercise_id=EXERCISE)
        await handle.result()
        return await handle.fetch_history()


@exercise(EXERCISE, title="A replay-safe change behind workflow.patched", notebook="06")
async def check_patched(stack, ns: dict) -> Verdict:
    v2 = learner(ns, "ShipmentV2", "the changed workflow class")
    old = await _history(stack, ShipmentV1, [pack, ship], "old-order")  # a shipment that ran on today's code
    replayer = Replayer(
        workflows=[v2],
        workflow_runner=UnsandboxedWorkflowRunner(),
        data_converter=stack.client.data_converter,
        runtime=order_client.runtime(),  # the core's own log lines limited to errors, as in the workers
    )
    with harness.quiet_worker_logs():
        replay = await replayer.replay_workflow(old, raise_on_replay_failure=False)
    failure = replay.replay_failure
    if isinstance(failure, NondeterminismError):
        raise Wrong(
            f"nondeterminism: {harness.nondeterminism_reason(failure)}. A shipment started on the old code "
            'cannot continue on yours: put the new step behind `if workflow.patched("insure"):` so replays of '
            "old histories skip it."
        )
    if failure is not None:
        raise Wrong(
            f"replaying a shipment recorded on the old code failed: {one_line(failure)}. Keep the workflow type "
            'name: @workflow.defn(name="ExerciseShipment", sandboxed=False).'
        )
    new = await _history(stack, v2, [pack, insure, ship], "new-order")
    ran = [SHORT.get(name, name) for name in harness.scheduled_activities(new)]
    if "insure" not in ran:
        raise NotDone(
            f"old shipments replay, but a new one is not insured: it ran {', '.join(ran)}. Call insure between "
            "pack and ship, behind workflow.patched."
        )
    if ran != ["pack", "insure", "ship"]:
        raise Wrong(f"the new shipment ran {', '.join(ran)}: insure belongs between pack and ship.")
    return Verdict(
        "passed",
        "Temporal replayed a shipment recorded on the old code against your class without a nondeterminism error, "
        "and a new shipment took the new path: pack, insure, ship.",
    )
