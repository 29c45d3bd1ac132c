"""Notebook 03's exercise: a retry policy and an attempt timeout that meet a deadline."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.exceptions import TimeoutError as TemporalTimeout

from orderflow.lessons import harness
from orderflow.lessons.exercise import Verdict, Wrong, exercise, learner, one_line

DEADLINE = timedelta(seconds=10)
ATTEMPTS: Counter[str] = Counter()  # workflow id -> attempts the scripted activity saw
SCRIPT = "attempt 1 fails, attempt 2 hangs for ever, attempt 3 fails, attempt 4 succeeds"
NEEDED_ATTEMPTS = 4


@activity.defn(name="ExerciseScriptedCharge")
async def scripted_charge(case: str) -> str:
    """``flaky``: fails, hangs, fails, then charges. ``declined``: the card is declined, every time."""
    info = activity.info()
    ATTEMPTS[info.workflow_id or ""] += 1
    if case == "declined":
        raise ApplicationError("the card was declined", type="CardDeclined")
    if info.attempt == 2:
        await asyncio.sleep(3600)  # a hang: only the attempt's timeout ends it
    if info.attempt < NEEDED_ATTEMPTS:
        raise RuntimeError(f"the card network is down (attempt {info.attempt})")
    return "charged"


def policy_fields(policy: RetryPolicy) -> dict:
    return {
        "initial_interval": policy.initial_interval.total_seconds(),
        "backoff_coefficient": policy.backoff_coefficient,
        "maximum_interval": policy.maximum_interval.total_seconds() if policy.maximum_interval else None,
        "maximum_attempts": policy.maximum_attempts,
        "non_retryable_error_types": list(policy.non_retryable_error_types or []),
    }


@workflow.defn(name="ExerciseRetryDeadline")
class RetryDeadlineWorkflow:
    @workflow.run
    async def run(self, case: str, policy: dict, attempt_timeout: float) -> str:
        retry = RetryPolicy(
            initial_interval=timedelta(seconds=policy["initial_interval"]),
            backoff_coefficient=policy["backoff_coefficient"],
            maximum_interval=timedelta(seconds=policy["maximum_interval"]) if policy["maximum_interval"] else None,
            maximum_attempts=policy["maximum_attempts"],
            non_retryable_error_types=policy["non_retryable_error_types"],
        )
        return await workflow.execute_activity(
            scripted_charge, case, start_to_close_timeout=timedelta(seconds=attempt_timeout), retry_policy=retry
        )


@exercise("03-retry-deadline", title="A retry policy that meets a deadline", notebook="03")
async def check_retry_deadline(stack, ns: dict) -> Verdict:
    timeout = learner(ns, "my_attempt_timeout", "a timedelta: how long one attempt may run")
    policy = learner(ns, "my_retry_policy", "a RetryPolicy")
    if not isinstance(timeout, timedelta) or timeout <= timedelta(0):
        raise Wrong(f"`my_attempt_timeout` must be a positive timedelta, e.g. timedelta(seconds=1); it is {timeout!r}")
    if not isinstance(policy, RetryPolicy):
        raise Wrong(f"`my_retry_policy` must be a temporalio.common.RetryPolicy; it is {type(policy).__name__}")

    queue = harness.task_queue("03-retry-deadline")
    fields = policy_fields(policy)
    async with harness.worker(stack.client, queue, [RetryDeadlineWorkflow], [scripted_charge]):
        flaky, declined = [
            await harness.start(
                stack.client,
                RetryDeadlineWorkflow.run,
                case,
                fields,
                timeout.total_seconds(),
                queue=queue,
                exercise_id="03-retry-deadline",
                timeout=DEADLINE,
            )
            for case in ("flaky", "declined")
        ]
        loop = asyncio.get_running_loop()
        began = loop.time()
        outcomes = await asyncio.gather(flaky.result(), declined.result(), return_exceptions=True)
        took = loop.time() - began
    flaky_out, declined_out = outcomes

    tried = ATTEMPTS[flaky.id]
    if isinstance(flaky_out, WorkflowFailureError):
        cause = flaky_out.cause
        if isinstance(cause, TemporalTimeout) or "timed out" in one_line(flaky_out).lower():
            raise Wrong(
                f"the charge did not finish within the {DEADLINE.seconds} s deadline: {tried} attempt(s) ran "
                f"({SCRIPT}). With an attempt timeout of {timeout.total_seconds():g} s the hanging attempt alone "
                "takes that long: give one attempt about a second, and keep the waits between attempts short "
                "(initial_interval, backoff_coefficient, maximum_interval)."
            )
        raise Wrong(
            f"the charge gave up after {tried} attempts ({one_line(flaky_out)}). The script needs "
            f"{NEEDED_ATTEMPTS} attempts ({SCRIPT}): allow more (maximum_attempts, or 0 for no limit)."
        )
    if isinstance(flaky_out, BaseException):
        raise flaky_out

    declined_tries = ATTEMPTS[declined.id]
    if declined_tries != 1:
        raise Wrong(
            f"the charge met the deadline, but CardDeclined was retried: {declined_tries} attempts for a card that "
            "is declined every time. List the error type in RetryPolicy(non_retryable_error_types=[...])."
        )
    if not isinstance(declined_out, WorkflowFailureError):
        raise Wrong(f"the declined card ended with {declined_out!r} instead of failing")
    return Verdict(
        "passed",
        f"the flaky charge succeeded on attempt {tried} after {took:.1f} s (deadline {DEADLINE.seconds} s), the hang "
        f"cut short by your {timeout.total_seconds():g} s attempt timeout; the declined card failed after 1 attempt, "
        "not retried.",
    )
