"""Notebook 12's exercise: from a describe_task_queue answer, decide "scale up" or "ok"."""

from __future__ import annotations

import asyncio
import inspect
from datetime import timedelta
from typing import Any

from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from orderflow.lessons import harness
from orderflow.lessons.exercise import NotDone, Verdict, Wrong, exercise, learner
from orderflow.lessons.operations import ACTIVITY, PACKERS, PackingRun, describe_task_queue, pack_parcel, queue_row

EXERCISE = "12-scale-decision"
PARCELS = 8  # one worker packing one parcel at a time: 7 wait
ANSWERS = ("scale up", "ok")


async def _decision(decide: Any, answer: Any, case: str) -> str:
    said = decide(answer)
    if inspect.isawaitable(said):
        said = await said
    if said is None or said is Ellipsis:
        raise NotDone(f"`decide` returns {said!r}: make it return 'scale up' or 'ok' (the TODO in the exercise cell).")
    if said not in ANSWERS:
        raise Wrong(f"for the {case} queue `decide` returned {said!r}: return exactly 'scale up' or 'ok'.")
    return str(said)


def _described(answer: Any) -> str:
    row = queue_row(answer)
    return (
        f"{row['backlog (live hint)']} tasks waiting (backlog_count_hint), stats.approximate_backlog_count "
        f"{row['backlog (stats)']}, the oldest waiting {row['oldest task waits (s)']} s, {row['pollers']} poller(s)"
    )


@exercise(EXERCISE, title="Scale up or not: read the task queue", notebook="12")
async def check_scale_decision(stack, ns: dict) -> Verdict:
    decide = learner(ns, "decide", "a function of a describe_task_queue answer")
    if not callable(decide):
        raise Wrong(f"`decide` must be a function (def decide(answer): ...); it is {type(decide).__name__}.")
    client = stack.client
    idle_queue, busy_queue = harness.task_queue(EXERCISE) + "-idle", harness.task_queue(EXERCISE) + "-busy"
    busy_id = harness.workflow_id(EXERCISE, "busy")
    release = PACKERS[busy_id] = asyncio.Event()
    # One packer at a time: a worker that keeps polling, and a backlog behind it that is real.
    packer = Worker(
        client,
        task_queue=busy_queue,
        workflows=[PackingRun],
        activities=[pack_parcel],
        workflow_runner=UnsandboxedWorkflowRunner(),
        max_concurrent_activities=1,
        graceful_shutdown_timeout=timedelta(seconds=0),
    )
    try:
        async with packer, harness.worker(client, idle_queue, [PackingRun], [pack_parcel]):
            handle = await harness.start(
                client, PackingRun.run, PARCELS, queue=busy_queue, exercise_id=EXERCISE, id=busy_id
            )
            await asyncio.sleep(1.0)  # the parcels are scheduled; one is being packed, the rest wait
            busy = await describe_task_queue(client, busy_queue, ACTIVITY)  # one call: fresh stats
            idle = await describe_task_queue(client, idle_queue, ACTIVITY)
            for _ in range(20):  # the idle worker's poll reaches the server within moments
                if idle.pollers:
                    break
                await asyncio.sleep(0.25)
                idle = await describe_task_queue(client, idle_queue, ACTIVITY)
            said_idle = await _decision(decide, idle, "idle")
            said_busy = await _decision(decide, busy, "busy")
            release.set()
            await asyncio.wait_for(handle.result(), 10)
    finally:
        release.set()
        PACKERS.pop(busy_id, None)
    if busy.task_queue_status.backlog_count_hint < 3 and busy.stats.approximate_backlog_count < 3:
        raise Wrong(f"(the check's own fault) the busy queue had no backlog to judge: {_described(busy)}")
    if said_busy != "scale up":
        hint = (
            " Pollers say workers are there, not that they keep up: a worker with every slot taken still polls "
            "(and is listed) while tasks pile up behind it."
            if busy.pollers
            else ""
        )
        raise Wrong(
            f"the busy queue had {_described(busy)}, and `decide` said {said_busy!r}. Tasks that wait are the sign "
            f"to scale (more workers, or more slots/pollers): read the backlog, answer.stats.approximate_backlog_count "
            f"or answer.task_queue_status.backlog_count_hint, or answer.stats.approximate_backlog_age.{hint}"
        )
    if said_idle != "ok":
        raise Wrong(
            f"the idle queue had {_described(idle)}, and `decide` said {said_idle!r}: nothing waits there, a worker "
            "polls and finds nothing to do. Adding workers would only add idle pollers: say 'ok'."
        )
    return Verdict(
        "passed",
        f"On a live queue with {_described(busy)} your decide said 'scale up'; on an idle one with "
        f"{_described(idle)} it said 'ok'.",
    )
