"""A legacy query task that makes the SDK core run a fired timer as live work (SDK only).

Timeline, in seconds after the workflow starts (the timing is the reproduction):

  0.0  worker A (a subprocess, sticky schedule-to-start timeout STICKY) runs the first workflow
       task: the workflow starts a TIMER-second timer and waits for ``approve`` or the timer.
  0.5  worker A is killed (SIGKILL); worker B, in this process, polls the normal task queue.
  1.0  a status query. No workflow task is pending, so the server sends it straight to A's sticky
       queue, where it waits STICKY seconds for the dead worker.
  2.0  the timer fires: TimerFired and WorkflowTaskScheduled join the history.
  4.0  the sticky wait ends; the query goes to the normal queue, and worker B gets it with the
       history as it is now, ending in TimerFired. The core replays it and then hands the fired
       timer to the workflow as live work (``is_replaying`` false) before it answers the query:
       the workflow takes the "deadline" path.
  then the ``approve`` Update. The real workflow task brings only the Update, so the worker saw
       "timer" and "approve" in two activations; a replay sees them in one and runs the Update
       first, the "approved" path, which issues other commands: a nondeterminism error.

Server side (temporalio/temporal, service/history/api/queryworkflow/api.go): a query goes
straight to a worker when no workflow task is pending; matching attaches the history as it is
when a worker picks the query up, events that arrived meanwhile included.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker, WorkflowRunner

TIMER, STICKY, KILL_AT, QUERY_AT = 2.0, 3.0, 0.5, 1.0
TASK_QUEUE = "cold-query"


@workflow.defn(sandboxed=False)
class ReviewWorkflow:
    def __init__(self) -> None:
        self.approved = False
        self.path = "pending"

    @workflow.run
    async def run(self) -> str:
        deadline = asyncio.ensure_future(workflow.sleep(TIMER))
        await workflow.wait_condition(lambda: self.approved or deadline.done())
        self.path = "approved" if self.approved else "deadline"
        await workflow.wait_condition(lambda: self.approved)
        if self.path == "deadline":
            await workflow.sleep(0.05)  # a command only the deadline path issues
        return self.path

    @workflow.update
    def approve(self) -> str:
        self.approved = True
        return self.path

    @workflow.query
    def status(self) -> str:
        return self.path


async def run_scenario(client: Client, target: str, runner: WorkflowRunner | None = None) -> dict[str, Any]:
    """The timeline once; ``runner`` wraps worker B's workflow runner (to try a workaround).
    Returns what the query and the Update answered, the result, and the replay's failure."""
    loop = asyncio.get_running_loop()
    queue = f"{TASK_QUEUE}-{uuid.uuid4().hex[:6]}"
    worker_a = subprocess.Popen(
        [sys.executable, __file__, target, queue], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert worker_a.stdout is not None
        await loop.run_in_executor(None, worker_a.stdout.readline)  # "ready"
        began = loop.time()
        handle = await client.start_workflow(
            ReviewWorkflow.run, id=queue, task_queue=queue, task_timeout=timedelta(seconds=5)
        )
        while not any(e.HasField("timer_started_event_attributes") for e in (await handle.fetch_history()).events):
            await asyncio.sleep(0.05)  # worker A ran the first task
        await asyncio.sleep(max(0.0, began + KILL_AT - loop.time()))
    finally:
        os.killpg(worker_a.pid, signal.SIGKILL)
        worker_a.wait()
    worker_b = Worker(
        client,
        task_queue=queue,
        workflows=[ReviewWorkflow],
        unsandboxed_workflow_runner=runner or UnsandboxedWorkflowRunner(),
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=STICKY),
    )
    outcome: dict[str, Any] = {}
    async with worker_b:
        await asyncio.sleep(max(0.0, began + QUERY_AT - loop.time()))
        try:
            outcome["query"] = await handle.query(ReviewWorkflow.status)
        except Exception as err:  # noqa: BLE001 - a workaround may refuse the query
            outcome["query"] = f"failed: {type(err).__name__}"
        outcome["update"] = await handle.execute_update(ReviewWorkflow.approve)
        outcome["result"] = await handle.result()
    replay = await Replayer(workflows=[ReviewWorkflow], workflow_runner=UnsandboxedWorkflowRunner()).replay_workflow(
        await handle.fetch_history(), raise_on_replay_failure=False
    )
    outcome["replay_failure"] = replay.replay_failure
    return outcome


async def _worker_a(target: str, queue: str) -> None:
    client = await Client.connect(target)
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[ReviewWorkflow],
        workflow_runner=UnsandboxedWorkflowRunner(),
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=STICKY),
    )
    print("ready", flush=True)
    await worker.run()


if __name__ == "__main__":  # worker A, run by run_scenario
    asyncio.run(_worker_a(sys.argv[1], sys.argv[2]))
