"""Notebook 04's exercise: a child workflow on another task queue."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.client import WorkflowFailureError

from orderflow.lessons import harness
from orderflow.lessons.exercise import NotDone, Verdict, Wrong, exercise, learner, one_line
from orderflow.lessons.playground import PackingWorkflow

EXERCISE = "04-child-queue"
WAIT = 5.0  # seconds for the parent's result: a child that runs answers in well under one


def _children(history) -> list[tuple[str, str]]:
    return [
        (
            e.start_child_workflow_execution_initiated_event_attributes.workflow_type.name,
            e.start_child_workflow_execution_initiated_event_attributes.task_queue.name,
        )
        for e in history.events
        if e.HasField("start_child_workflow_execution_initiated_event_attributes")
    ]


@exercise(EXERCISE, title="A child workflow on another task queue", notebook="04")
async def check_child_queue(stack, ns: dict) -> Verdict:
    parent = learner(ns, "MyParent", "the parent workflow class")
    parent_queue, packing_queue = harness.task_queue(EXERCISE), harness.task_queue(EXERCISE + "-packing")
    with harness.quiet_worker_logs():  # a child on a queue whose worker does not know it: the verdict says so
        return await _judge(stack, parent, parent_queue, packing_queue)


async def _judge(stack, parent: Any, parent_queue: str, packing_queue: str) -> Verdict:
    result: object = None
    failure: BaseException | None = None
    async with (
        harness.worker(stack.client, parent_queue, [parent]),
        harness.worker(stack.client, packing_queue, [PackingWorkflow]),
    ):
        handle = await harness.start(stack.client, parent.run, packing_queue, queue=parent_queue, exercise_id=EXERCISE)
        try:
            async with asyncio.timeout(WAIT):
                result = await handle.result()
        except (TimeoutError, WorkflowFailureError) as err:
            failure = err
        history = await handle.fetch_history()
        if failure is not None:
            await handle.terminate("the check is done")  # its child too (parent close policy: terminate)
    children = _children(history)
    if not children:
        if failure is None and result is None:
            raise NotDone("run() returned None and started no child: replace the `...` with the child workflow.")
        raise Wrong(
            f"the parent {'returned ' + repr(result) if failure is None else 'failed: ' + one_line(failure)} but "
            "started no child workflow: use `await workflow.execute_child_workflow(PackingWorkflow.run, ...)`."
        )
    kind, queue = children[-1]
    if queue != packing_queue:
        raise Wrong(
            f"the child {kind} was started on task queue {queue!r}, the parent's own, where no worker runs "
            f"PackingWorkflow: it never ran. Pass task_queue=packing_queue ({packing_queue!r})."
        )
    if failure is not None:
        raise Wrong(f"the child was started on the packing queue, but the parent did not finish: {one_line(failure)}")
    expected = f"packed by the worker of task queue {packing_queue}"
    if result != expected:
        raise Wrong(f"the parent returned {result!r}; the child answered {expected!r}: return what the child returns.")
    return Verdict(
        "passed",
        f"Temporal started your child {kind} on {packing_queue!r}; only the worker polling that queue ran it, "
        f"and the parent returned its answer: {result!r}.",
    )
