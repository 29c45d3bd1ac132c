"""Notebook 08's exercise: a workflow test on the time-skipping server that can fail."""

from __future__ import annotations

import asyncio
import dis
import inspect
import time

from orderflow.lessons.exercise import NotDone, Verdict, Wrong, exercise, learner, one_line
from orderflow.lessons.testkit import LateReviewOrderWorkflow, test_queue, test_worker, time_skipping_env
from orderflow.workflows import OrderWorkflow

EXERCISE = "08-deadline-test"
TEST_TIMEOUT = 20.0  # wall seconds for one run of the learner's test (time-skipping: well under 1)


def _asserts_anything(fn) -> bool:
    code = getattr(fn, "__code__", None)
    if code is None:
        return True
    return any(i.opname in ("LOAD_ASSERTION_ERROR", "RAISE_VARARGS") for i in dis.get_instructions(code))


async def _outcome(env, fn, workflow_class) -> tuple[BaseException | None, float]:
    """Run the learner's test against ``workflow_class``: the exception it raised (None if it
    passed) and the wall-clock seconds it took."""
    queue = test_queue()
    began = time.monotonic()
    async with test_worker(env.client, queue, workflow_class):
        try:
            async with asyncio.timeout(TEST_TIMEOUT):
                await fn(env.client, queue)
        except TimeoutError:
            return TimeoutError(f"the test did not finish within {TEST_TIMEOUT:g} s of wall time"), TEST_TIMEOUT
        except Exception as err:  # noqa: BLE001 - a failing test is an answer here
            return err, time.monotonic() - began
    return None, time.monotonic() - began


@exercise(EXERCISE, title="A test that catches a broken review deadline", notebook="08", timeout=90)
async def check_deadline_test(stack, ns: dict) -> Verdict:
    fn = learner(ns, "test_nobody_approves", "your test function")
    if not inspect.iscoroutinefunction(fn):
        raise Wrong("`test_nobody_approves` should be an `async def` test taking (client, task_queue).")
    env = await time_skipping_env()
    try:
        real, real_seconds = await _outcome(env, fn, OrderWorkflow)
        if real is not None:
            raise Wrong(
                f"your test failed against the real OrderWorkflow: {one_line(real)}. The real order is cancelled "
                "9 s after its start, with payment voided, when nobody approves."
            )
        broken, _ = await _outcome(env, fn, LateReviewOrderWorkflow)
    finally:
        await env.shutdown()
    if broken is None:
        if not _asserts_anything(fn):
            raise NotDone("your test asserts nothing yet: add asserts on the result where the TODO is.")
        raise Wrong(
            "your test passed against a broken workflow too: it cancels an unapproved order at 12 s instead of 9 s "
            "(it forgot the post-review reserve). A test that cannot fail checks nothing: assert when the order "
            "ended as well (result.elapsed_seconds)."
        )
    return Verdict(
        "passed",
        f"your test passed against the real OrderWorkflow in {real_seconds:.2f} s of wall time (the order's 9 s "
        f"passed on the test server's clock), and failed against the broken one: {one_line(broken)}",
    )
