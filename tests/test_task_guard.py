"""The task guard (orderflow/task_guard.py): which activations it refuses, on synthetic activations.

The defect it guards against needs a killed worker and a query racing a workflow task; the fault
soak (tests/test_soak.py) produces it under load. Here the rule itself, one case at a time.
"""

import time

from temporalio.bridge.proto.workflow_activation import WorkflowActivation, WorkflowActivationJob
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion

from orderflow.task_guard import REFUSAL, GuardedInstance, Refusals


class Recorder:
    """Stands in for the wrapped workflow instance: records what reached it. With ``reject``, it
    answers every Update as its validator would refuse it (Busy)."""

    def __init__(self, reject: bool = False) -> None:
        self.seen: list[list[str]] = []
        self.reject = reject

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        self.seen.append([job.WhichOneof("variant") for job in act.jobs])
        completion = WorkflowActivationCompletion(run_id=act.run_id)
        completion.successful.SetInParent()
        for job in act.jobs:
            if self.reject and job.WhichOneof("variant") == "do_update":
                command = completion.successful.commands.add()
                command.update_response.rejected.message = "a step is running; send it again in a moment"
        return completion


NOW = 12  # the activations' clock: second 12 is the worker's "now", second 5 is 7 s ago
_clock = [0.0]


def activation(seconds: float, replaying: bool, *jobs: str, local: bool = False, length: int = 0) -> WorkflowActivation:
    """``length``: the history length the activation comes with (its task's started event)."""
    if time.time() - _clock[0] > 1:  # one base for the activations of one test
        _clock[0] = time.time()
    act = WorkflowActivation(run_id="run", is_replaying=replaying, history_length=length)
    act.timestamp.FromNanoseconds(int((_clock[0] - NOW + seconds) * 1e9))
    for kind in jobs:
        job = WorkflowActivationJob()
        getattr(job, kind).SetInParent()
        if kind == "resolve_activity":
            job.resolve_activity.is_local = local
        act.jobs.append(job)
    return act


def run(*activations: WorkflowActivation) -> tuple[Recorder, list[WorkflowActivationCompletion]]:
    inner = Recorder()
    guard = GuardedInstance(inner, "order-1")  # type: ignore[arg-type]
    return inner, [guard.activate(act) for act in activations]


def test_a_cold_query_task_that_would_run_new_events_is_refused():
    """Replay up to the last task (time 10), then a fired timer with no newer task time: refused."""
    inner, done = run(
        activation(5, True, "initialize_workflow"),
        activation(10, True, "resolve_activity", local=True),
        activation(10, False, "fire_timer"),
    )
    assert inner.seen == [["initialize_workflow"], ["resolve_activity"]]
    assert done[-1].HasField("failed") and done[-1].failed.failure.message == REFUSAL


def test_the_same_events_in_a_real_workflow_task_run():
    """A newer task time means the events came with a workflow task: they run, Update included."""
    inner, done = run(
        activation(5, True, "initialize_workflow"),
        activation(10, True, "resolve_activity", local=True),
        activation(12, False, "fire_timer", "do_update"),
    )
    assert inner.seen[-1] == ["fire_timer", "do_update"]
    assert all(d.HasField("successful") for d in done)


def test_local_activity_results_queries_and_evictions_need_no_new_task():
    inner, done = run(
        activation(12, False, "initialize_workflow"),
        activation(12, False, "resolve_activity", local=True),
        activation(12, False, "query_workflow"),
        activation(12, False, "remove_from_cache"),
    )
    assert len(inner.seen) == 4 and all(d.HasField("successful") for d in done)


def test_a_regular_activity_result_without_a_new_task_is_refused():
    """Only a local activity resolves inside the task that scheduled it."""
    inner, done = run(activation(12, False, "initialize_workflow"), activation(12, False, "resolve_activity"))
    assert len(inner.seen) == 1 and done[-1].HasField("failed")


def test_a_dead_tasks_events_brought_by_a_query_are_refused_though_newer():
    """The worker that had the run died during a task (started at second 6, timed out): a query
    brings the events after it with that task's time, newer than the last completed task's (5)
    but 6 s behind the worker's clock. A real task is never that old when it arrives."""
    inner, done = run(
        activation(5, True, "initialize_workflow"),
        activation(6, False, "resolve_child_workflow_execution", "signal_workflow"),
    )
    assert inner.seen == [["initialize_workflow"]]
    assert done[-1].HasField("failed") and done[-1].failed.failure.message == REFUSAL


def test_a_refused_tasks_events_run_live_again_by_a_query_are_refused():
    """The chain the core's log showed in MySQL storms: the run moved on live at position 62 (a
    task whose completion the server then refused: "Task not found"), the core evicted it, and a
    query task replayed the history to the last completed task (46) and ran the refused task's
    events live again, with that task's newer time. No real task comes twice at one position:
    refused. The real task that follows (63) runs."""
    refusals = Refusals()

    def instance(*activations: WorkflowActivation) -> tuple[Recorder, list[WorkflowActivationCompletion]]:
        inner = Recorder()
        guard = GuardedInstance(inner, "order-1", refusals)  # type: ignore[arg-type]
        return inner, [guard.activate(act) for act in activations]

    _, done = instance(
        activation(10, False, "initialize_workflow", length=3), activation(11, False, "do_update", length=62)
    )
    assert all(d.HasField("successful") for d in done)
    inner, done = instance(  # after the eviction: the query task's replay, then its live part
        activation(10, True, "initialize_workflow", length=3),
        activation(10.5, True, "resolve_activity", local=True, length=46),
        activation(11, False, "resolve_signal_external_workflow", length=62),
    )
    assert inner.seen == [["initialize_workflow"], ["resolve_activity"]]
    assert done[-1].HasField("failed") and done[-1].failed.failure.message == REFUSAL
    inner, done = instance(  # the real task, at a position of its own
        activation(10, True, "initialize_workflow", length=3),
        activation(10.5, True, "resolve_activity", local=True, length=46),
        activation(12, False, "resolve_signal_external_workflow", "do_update", length=63),
    )
    assert inner.seen[-1] == ["resolve_signal_external_workflow", "do_update"]
    assert all(d.HasField("successful") for d in done)


def test_a_task_that_only_rejected_updates_leaves_its_position_to_the_next_task():
    """A workflow task that brought only Updates, all refused by their validators, is speculative:
    the server drops it with no event, and the next task (here the child's start) has the same
    position, 19 (seen in storms: such a task was refused, then failed once)."""
    refusals = Refusals()
    busy = Recorder(reject=True)
    guard = GuardedInstance(busy, "order-1", refusals)  # type: ignore[arg-type]
    first = guard.activate(activation(10, False, "initialize_workflow", length=3))
    rejected = guard.activate(activation(11, False, "do_update", length=19))
    assert rejected.successful.commands[0].update_response.HasField("rejected")
    inner = Recorder()
    guard = GuardedInstance(inner, "order-1", refusals)  # type: ignore[arg-type]
    real = guard.activate(activation(12, False, "resolve_child_workflow_execution_start", length=19))
    assert first.HasField("successful") and real.HasField("successful")
    assert inner.seen == [["resolve_child_workflow_execution_start"]]
    # An Update that was accepted made the task real: its position is taken.
    accepting = GuardedInstance(Recorder(), "order-1", refusals)  # type: ignore[arg-type]
    assert accepting.activate(activation(13, False, "do_update", length=23)).HasField("successful")
    again = accepting.activate(activation(14, False, "fire_timer", length=23))
    assert again.HasField("failed") and again.failed.failure.message == REFUSAL


def test_replays_are_never_refused():
    inner, _ = run(activation(5, True, "initialize_workflow"), activation(5, True, "fire_timer"))
    assert len(inner.seen) == 2


def test_refusals_stop_after_the_window_so_a_real_task_is_never_stuck():
    """A real task that looks no newer (a worker clock ahead of the server's) is refused for
    REFUSAL_WINDOW at most, across evictions (a new instance per replay), then let through."""
    refusals = Refusals(window=0.2)
    stale = (activation(5, True, "initialize_workflow"), activation(5, False, "fire_timer"))

    def replay_then_task() -> tuple[Recorder, WorkflowActivationCompletion]:
        inner = Recorder()
        guard = GuardedInstance(inner, "order-1", refusals)  # type: ignore[arg-type]
        return inner, [guard.activate(act) for act in stale][-1]

    for _ in range(3):  # the run evicted and replayed again each time: refused each time
        inner, last = replay_then_task()
        assert last.HasField("failed") and inner.seen == [["initialize_workflow"]]
    time.sleep(0.25)
    inner, last = replay_then_task()
    assert last.HasField("successful") and inner.seen[-1] == ["fire_timer"]


async def test_the_guard_keeps_the_cold_query_scenario_replayable():
    """The standalone reproduction of the defect (tests/sdk/cold_query.py, failing there without a
    guard), with worker B's runner wrapped in the guard: the query that would run the fired timer
    as live work is refused, the real task runs timer and Update together, and the history replays."""
    import shutil
    import sys
    from pathlib import Path

    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import UnsandboxedWorkflowRunner

    from orderflow.task_guard import TaskGuardRunner
    from tests.sdk.cold_query import run_scenario

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=shutil.which("temporal") or str(Path(sys.executable).with_name("temporal"))
    )
    try:
        outcome = await run_scenario(
            env.client, env.client.service_client.config.target_host, TaskGuardRunner(UnsandboxedWorkflowRunner())
        )
    finally:
        await env.shutdown()
    assert outcome["replay_failure"] is None, outcome
    assert outcome["query"] == "failed: WorkflowQueryFailedError"  # refused (the API answers from the database)
    assert outcome["result"] == "approved"
