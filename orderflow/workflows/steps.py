"""How both workflows run a flaky step, count its tries and keep the audit trail.

The workflow drives retries itself, one activity attempt per call, so that
``status()`` can show attempts, failures and timeouts while they happen, and so
a step stops retrying before the order's deadline instead of being killed there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError, TimeoutError

from orderflow.models import Activity, AuditEvent, OrderState, ProgressRecord, StepPolicy, StepStats

RECENT_ERRORS = 10
ONE_ATTEMPT = RetryPolicy(maximum_attempts=1)
BOOKKEEPING_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=50), maximum_interval=timedelta(seconds=1))


class StepError(Exception):
    """A step ended without success; ``reason`` is what the order's status will say."""

    def __init__(self, step: str, reason: str):
        super().__init__(reason)
        self.step = step
        self.reason = reason


class StepFailed(StepError):
    """The activity raised a business (non-retryable) error."""


class StepAbandoned(StepError):
    """Out of time or out of attempts."""


class StepInterrupted(StepError):
    """Stopped between attempts because the order is being cancelled."""


class StepRunner:
    """Step statistics, recent errors and the outbox of audit events of one workflow run."""

    def __init__(self, order_id: str, policy: StepPolicy):
        self.order_id = order_id
        self.policy = policy
        self.steps: dict[str, StepStats] = {}
        self.errors: list[str] = []
        self.current_step = "start"
        self._outbox: list[AuditEvent] = []
        self._seq = 0

    # -- audit trail ------------------------------------------------------------------
    def event(self, type: str, step: str | None = None, attempt: int | None = None, **detail: Any) -> None:
        """Queue one audit event (written by the next flush) and log it."""
        self._seq += 1
        info = workflow.info()
        self._outbox.append(
            AuditEvent(
                key=f"{info.workflow_id}/{info.run_id}/{self._seq}",
                order_id=self.order_id,
                type=type,
                ts=workflow.now().isoformat(),
                step=step,
                attempt=attempt,
                detail=detail,
            )
        )
        fields = {"event": type, "order_id": self.order_id, "step": step, "attempt": attempt, **detail}
        workflow.logger.info(type, extra={"orderflow": fields})

    async def flush(self, state: OrderState | None = None, reason: str | None = None, **extra: Any) -> None:
        """Write queued events (and a new state, address or missing order row) to the database."""
        record = ProgressRecord(order_id=self.order_id, events=self._outbox, state=state, reason=reason, **extra)
        self._outbox = []
        await self.bookkeeping(Activity.RECORD_PROGRESS, record)

    async def bookkeeping(self, activity_name: str, arg: Any, result_type: type | None = None) -> Any:
        """Run a database-only activity (no flaky call) until it succeeds."""
        return await self._execute(activity_name, arg, result_type, timedelta(seconds=5), BOOKKEEPING_RETRY)

    # -- running steps ----------------------------------------------------------------
    async def run(
        self,
        step: str,
        activity_name: str,
        make_request: Callable[[int], Any],
        *,
        result_type: type | None = None,
        deadline: datetime | None = None,
        max_attempts: int | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> Any:
        """Run ``activity_name`` until it succeeds, retrying failures and timeouts.

        ``make_request(attempt)`` builds each attempt's input (so it sees the latest
        address). Raises StepFailed, StepAbandoned (no time or attempts left before
        ``deadline``/``max_attempts``) or StepInterrupted (``stop()`` became true).
        """
        stats = self.steps.setdefault(step, StepStats())
        self.current_step = step
        timeout = timedelta(seconds=self.policy.attempt_timeout_seconds)
        attempt = 0
        while True:
            if stop is not None and stop():
                stats.state = "abandoned"
                raise StepInterrupted(step, f"{step} stopped: order is being cancelled")
            if deadline is not None and workflow.now() + timeout > deadline:
                stats.state = "abandoned"
                self.event("step_abandoned", step, attempt, reason="deadline")
                raise StepAbandoned(step, f"{step} did not succeed before the order's deadline")
            if max_attempts is not None and attempt >= max_attempts:
                stats.state = "abandoned"
                self.event("step_abandoned", step, attempt, reason="attempts exhausted")
                raise StepAbandoned(step, f"{step} failed {attempt} times: {self.errors[-1]}")
            attempt += 1
            stats.attempts += 1
            stats.state = "running"
            try:
                result = await self._execute(activity_name, make_request(attempt), result_type, timeout, ONE_ATTEMPT)
            except FailureError as err:
                # Live, a failed attempt arrives as ActivityError(cause); when a local activity's
                # marker is replayed, as the cause itself. Both must take the same branch.
                cause = err.cause if isinstance(err, ActivityError) else err
                if isinstance(cause, TimeoutError):
                    stats.timeouts += 1
                    kind, message = "attempt_timed_out", f"{step}: timed out after {timeout.total_seconds()} s"
                else:
                    message = f"{step}: {(cause or err).message}"
                    if isinstance(cause, ApplicationError) and cause.non_retryable:
                        stats.state = "failed"
                        self._error(message)
                        self.event("step_failed", step, attempt, error=message)
                        raise StepFailed(step, message) from err
                    stats.failures += 1
                    kind = "attempt_failed"
                self._error(message)
                self.event(kind, step, attempt, error=message)
                if not self.policy.local_activities or attempt % self.policy.attempts_per_task == 0:
                    # Local activities retry inside the same workflow task, which holds back
                    # signals, updates and queries until it ends; every few failed attempts a
                    # 1 ms timer ends it so they get in. Regular activities pause every time
                    # (that is their backoff).
                    await self._pause(stop)
                continue
            stats.state = "done"
            return result

    def _error(self, message: str) -> None:
        self.errors = (self.errors + [message])[-RECENT_ERRORS:]

    async def _pause(self, stop: Callable[[], bool] | None) -> None:
        """A short timer between attempts; a cancellation wakes it early."""
        try:
            await workflow.wait_condition(
                lambda: stop is not None and stop(),
                timeout=self.policy.retry_pause_seconds,
                timeout_summary="retry pause",
            )
        except asyncio.TimeoutError:
            pass

    async def _execute(
        self, name: str, arg: Any, result_type: type | None, timeout: timedelta, retry: RetryPolicy
    ) -> Any:
        if self.policy.local_activities:
            return await workflow.execute_local_activity(
                name, arg, result_type=result_type, start_to_close_timeout=timeout, retry_policy=retry
            )
        return await workflow.execute_activity(
            name, arg, result_type=result_type, start_to_close_timeout=timeout, retry_policy=retry
        )
