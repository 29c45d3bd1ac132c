"""What checks share: a task queue of their own, an in-process worker for the learner's workflow
and activities, bounded workflow starts, and reading a history."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from orderflow.lessons.exercise import NONDETERMINISM

WORKFLOW_TIMEOUT = timedelta(seconds=10)  # no workflow a check starts outlives this


def task_queue(exercise_id: str) -> str:
    """A task queue for one check run: nothing else polls it, so only the learner's code runs."""
    return f"exercise-{exercise_id}-{os.urandom(3).hex()}"


def workflow_id(exercise_id: str, what: str = "run") -> str:
    return f"exercise-{exercise_id}-{what}-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def worker(
    client: Client,
    queue: str,
    workflows: Sequence[type] = (),
    activities: Sequence[Any] = (),
) -> AsyncIterator[Worker]:
    """A worker in this process on ``queue`` for the duration of the block. Workflows run without
    the sandbox: a class defined in a notebook has no module the sandbox could re-import."""
    running = Worker(
        client,
        task_queue=queue,
        workflows=list(workflows),
        activities=list(activities),
        workflow_runner=UnsandboxedWorkflowRunner(),
        graceful_shutdown_timeout=timedelta(seconds=0),
    )
    async with running:
        yield running


async def start(
    client: Client,
    run: Any,
    *args: Any,
    queue: str,
    exercise_id: str,
    timeout: timedelta = WORKFLOW_TIMEOUT,
    **options: Any,
) -> WorkflowHandle:
    """Start a workflow for a check, bounded by ``execution_timeout`` so a wrong answer ends."""
    return await client.start_workflow(
        run,
        args=list(args),
        id=options.pop("id", None) or workflow_id(exercise_id),
        task_queue=queue,
        execution_timeout=timeout,
        **options,
    )


def event_kinds(history: Any) -> list[str]:
    """The events of a fetched history by attribute kind, e.g. ``activity_task_scheduled``."""
    kinds = []
    for event in history.events:
        kind = event.WhichOneof("attributes") or ""
        kinds.append(kind.removesuffix("_event_attributes"))
    return kinds


def scheduled_activities(history: Any) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]


# -- the scripted faults of a check are the lesson, not errors ----------------------------------

EXERCISE_PREFIX = "Exercise"  # activity type names of the checks' own activities start with it


class _QuietExerciseFailures(logging.Filter):
    """The SDK logs every failed activity attempt with its traceback; for a check's own scripted
    activities (names starting with "Exercise") that is the exercise working, so it is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = getattr(record, "temporal_activity", None) or {}
        name = info.get("activity_type", "") if isinstance(info, dict) else ""
        return not (name.startswith(EXERCISE_PREFIX) and record.getMessage().startswith("Completing activity"))


QUIET = _QuietExerciseFailures("orderflow-exercise-faults")


def quiet_exercise_failures() -> None:
    target = logging.getLogger("temporalio.activity")
    if QUIET not in target.filters:
        target.addFilter(QUIET)


quiet_exercise_failures()


@contextlib.contextmanager
def quiet_worker_logs() -> Iterator[None]:
    """Within the block, what the SDK's worker loggers report (a replay that fails on purpose) is
    the check's finding, reported in its verdict: not printed under the cell."""

    def hold(record: logging.LogRecord) -> bool:
        return False

    loggers = [logging.getLogger("temporalio.worker")] + [
        logging.getLogger(name)
        for name in list(logging.Logger.manager.loggerDict)
        if name.startswith("temporalio.worker")
    ]
    for each in loggers:
        each.addFilter(hold)
    try:
        yield
    finally:
        for each in loggers:
            each.removeFilter(hold)


def nondeterminism_reason(err: BaseException) -> str:
    """The one sentence of a nondeterminism error that says what differs (not a 300-character dump)."""
    text = str(err)
    match = NONDETERMINISM.search(text)
    reason = match.group(1) if match else " ".join(text.split())
    reason = reason.strip().rstrip(".")
    return reason if len(reason) <= 240 else reason[:239] + "…"
