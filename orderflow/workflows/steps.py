"""How both workflows run a flaky step, let messages in between steps, and keep their audit trail.

A step is ONE local activity whose attempts the SDK core retries (``RetryPolicy``): each
attempt gets ``attempt_timeout_seconds`` (start-to-close), failures are retried after a
short backoff, and the whole step gets the time left until the order's deadline
(schedule-to-close). No workflow task and no history event per attempt: that is what keeps
an order cheap (docs/performance.md).

The activity records every attempt under the step's key (workflow id / run id / step) in
the database, and answers a repeated execution of the same key with the recorded outcome.
That is what makes local activities safe: when a workflow task is discarded (a server
restart, a signal that arrives while the task runs), its local activities run again, and
they must converge on what the first execution recorded instead of taking another random path.

Messages (signals and Updates) reach the workflow only between steps: the ``Gate``
(``workflows/gate.py`` says why). A step closes the gate while it runs.

Decisions never read ``workflow.now()`` right after a local-activity result, for the same
reason: the clock differs between live and replay there. Deadlines become activity timeouts
(schedule-to-close) and the child's execution timeout instead.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError, TimeoutError, TimeoutType

from orderflow.models import AuditEvent, Settled, SettleRequest, StepPolicy, StepRequest, StepResult, StepStats
from orderflow.workflows.gate import Gate

with workflow.unsafe.imports_passed_through():
    from orderflow.activities import ProgressActivities

RECENT_ERRORS = 10
# Bookkeeping (database only, never flaky) retries until the database answers. A RetryPolicy tells
# the SDK how to retry a failed activity attempt: first pause, growth, longest pause, attempts.
BOOKKEEPING_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=50), maximum_interval=timedelta(seconds=1))
BOOKKEEPING_TIMEOUT = timedelta(seconds=5)


class StepError(Exception):
    """A step ended without success; ``reason`` is what the order's status will say."""

    def __init__(self, step: str, reason: str):
        super().__init__(reason)
        self.step = step
        self.reason = reason


class StepFailed(StepError):
    """The step recorded a business (non-retryable) failure, or used up its attempts."""


class StepAbandoned(StepError):
    """Out of time: the deadline passed before an attempt succeeded."""


class AuditTrail:
    """The workflow's own audit events: what it decided, in order, keyed by sequence number.

    Written when the order awaits review (``take()``) and, whole, by the order's final write,
    which also removes any event a discarded workflow task wrote and the committed run did not
    repeat. (The attempts of each step are written live by the activities themselves.)
    """

    def __init__(self, order_id: str):
        self.order_id = order_id
        self.events: list[AuditEvent] = []
        self._unsent = 0
        info = workflow.info()
        self.prefix = f"wf:{info.workflow_id}/{info.run_id}/"

    def record(self, event_type: str, step: str | None = None, attempt: int | None = None, **detail: Any) -> None:
        self.events.append(
            AuditEvent(
                key=f"{self.prefix}{len(self.events) + 1}",
                order_id=self.order_id,
                type=event_type,
                ts=workflow.now().isoformat(),
                step=step,
                attempt=attempt,
                detail=detail,
            )
        )
        fields = {"event": event_type, "order_id": self.order_id, "step": step, "attempt": attempt, **detail}
        workflow.logger.info(event_type, extra={"orderflow": fields})

    def take(self) -> list[AuditEvent]:
        """The events not handed to an activity yet."""
        unsent, self._unsent = self.events[self._unsent :], len(self.events)
        return unsent

    def adopt(self, events: list[AuditEvent]) -> None:
        """Take over a child's events (they reached us through its committed result)."""
        self.events.extend(events)


class StepRunner:
    """Runs the steps of one workflow run, closes its gate while they run, and keeps what
    status() shows about them."""

    def __init__(self, policy: StepPolicy, trail: AuditTrail):
        self.policy = policy
        self.trail = trail
        self.gate = Gate()
        self.stats: dict[str, StepStats] = {}
        self.errors: list[str] = []

    def retry_policy(self, max_attempts: int = 0) -> RetryPolicy:
        """A step's retries: short backoffs (models.StepPolicy), and 0 attempts = until the deadline."""
        p = self.policy
        return RetryPolicy(
            initial_interval=timedelta(seconds=p.retry_initial_seconds),
            backoff_coefficient=p.retry_backoff,
            maximum_interval=timedelta(seconds=p.retry_max_seconds),
            maximum_attempts=max_attempts,
        )

    async def run(
        self, activity: Callable, req: StepRequest, *, deadline: datetime | None, settle: bool = True
    ) -> StepResult:
        """Run the step until it succeeds; raise StepFailed or StepAbandoned.

        ``deadline`` bounds the whole step (schedule-to-close); None retries until success
        (marking shipped, refunding: after dispatch nothing is abandoned). A step is never
        interrupted: a cancellation takes effect when it has ended. With ``settle`` an
        abandoned step is closed in the database first, and a late attempt that did succeed wins.
        """
        step = req.step
        self.stats[step] = StepStats(state="running")
        options: dict[str, Any] = dict(
            start_to_close_timeout=timedelta(seconds=self.policy.attempt_timeout_seconds),
            retry_policy=self.retry_policy(req.max_attempts),
        )
        if deadline is not None:
            # Computed from the clock but never branched on: a timeout is not part of the
            # command replay compares. At least one attempt's worth, so the step always runs.
            left = max(deadline - workflow.now(), timedelta(seconds=self.policy.attempt_timeout_seconds))
            options["schedule_to_close_timeout"] = left
        self.gate.close()
        try:
            # A local activity runs in this worker's process, its attempts retried by the SDK core
            # with one marker event per step instead of events per attempt
            # (docs/performance.md#figures-that-depend-on-the-step-model). The regular activity,
            # scheduled through the server, is the baseline the benchmark compares with.
            if self.policy.local_activities:
                result: StepResult = await workflow.execute_local_activity_method(activity, req, **options)
            else:
                result = await workflow.execute_activity_method(activity, req, **options)
        except FailureError as err:
            return await self._failed(req, err, settle)
        self.stats[step] = result.stats()
        for message in result.errors:
            self.error(message)
        return result

    async def _failed(self, req: StepRequest, err: FailureError, settle: bool) -> StepResult:
        step = req.step
        # Live, a failed local activity arrives as ActivityError(cause); when its marker is
        # replayed, as the cause itself. Both must take the same branch.
        cause = err.cause if isinstance(err, ActivityError) else err
        if isinstance(cause, ApplicationError) and cause.non_retryable:
            stats = cause.details[0] if cause.details else {}
            self.stats[step] = StepStats(
                stats.get("attempts", 0), stats.get("failures", 0), stats.get("timeouts", 0), "failed"
            )
            for message in stats.get("errors", [])[:-1]:
                self.error(message)
            message = f"{step}: {cause.message}"
            self.error(message)
            raise StepFailed(step, message) from None
        if settle:
            settled = await self.settle(req)
            self.stats[step] = StepStats(settled.attempts, settled.failures, settled.timeouts, "abandoned")
            if settled.status == "succeeded" and settled.result is not None:
                self.stats[step] = settled.result.stats()
                return settled.result  # a late attempt got through before the step was closed
            if settled.status == "failed":
                self.stats[step].state = "failed"
                self.error(f"{step}: {settled.error}")
                raise StepFailed(step, f"{step}: {settled.error}") from None
        else:
            self.stats[step].state = "abandoned"
        used_up = isinstance(cause, ApplicationError) or (
            isinstance(cause, TimeoutError) and cause.type != TimeoutType.SCHEDULE_TO_CLOSE
        )
        if used_up:  # the core used up the step's attempts (the last one failed or timed out)
            last = cause.message if isinstance(cause, ApplicationError) else "timed out"
            message = f"{step} failed {req.max_attempts or ''} times, last: {last}"
            self.stats[step].state = "failed"
            self.error(message)
            raise StepFailed(step, message) from None
        message = f"{step} did not succeed before the order's deadline"
        self.error(message)
        self.trail.record("step_abandoned", step, reason=message)
        raise StepAbandoned(step, message) from None

    async def settle(self, req: StepRequest, shipment_status: str = "") -> Settled:
        """Close the step in the database (and, for a dispatch, its shipment); the truth wins."""
        info = workflow.info()
        return await self.bookkeeping(
            ProgressActivities.settle_step,
            SettleRequest(req.order_id, req.step, info.workflow_id, info.run_id, req.shipment_no, shipment_status),
        )

    async def bookkeeping(self, activity: Callable, arg: Any) -> Any:
        """A database-only activity (no flaky call), retried until it succeeds. A step too: it closes the gate."""
        options: dict[str, Any] = dict(start_to_close_timeout=BOOKKEEPING_TIMEOUT, retry_policy=BOOKKEEPING_RETRY)
        self.gate.close()
        if self.policy.local_activities:
            return await workflow.execute_local_activity_method(activity, arg, **options)
        return await workflow.execute_activity_method(activity, arg, **options)

    def error(self, message: str) -> None:
        self.errors = (self.errors + [message])[-RECENT_ERRORS:]
