"""Notebook 02's exercise: an Update handler with a validator, on a tiny workflow of your own."""

from __future__ import annotations

from typing import Any

from temporalio.client import WorkflowUpdateFailedError

from orderflow.lessons import harness
from orderflow.lessons.exercise import NotDone, Verdict, Wrong, exercise, learner, one_line

EXERCISE = "02-update-validator"


@exercise(EXERCISE, title="An Update with a validator", notebook="02")
async def check_update_validator(stack, ns: dict) -> Verdict:
    basket = learner(ns, "Basket", "the workflow class")
    if not isinstance(basket, type) or getattr(basket, "set_quantity", None) is None:
        raise NotDone(
            "`Basket` has no `set_quantity` yet: add the Update (@workflow.update) and its validator "
            "(@set_quantity.validator) where the TODO is."
        )
    queue = harness.task_queue(EXERCISE)
    with harness.quiet_worker_logs():  # a failing handler's task retries are the verdict, not red text
        return await _judge(stack, basket, queue)


async def _judge(stack, basket: Any, queue: str) -> Verdict:
    async with harness.worker(stack.client, queue, [basket]):
        handle = await harness.start(stack.client, basket.run, queue=queue, exercise_id=EXERCISE)
        try:
            try:
                answer = await handle.execute_update("set_quantity", 3, result_type=int)
            except WorkflowUpdateFailedError as err:
                raise Wrong(f"set_quantity(3) was refused: {one_line(err)}. A quantity of 3 is fine.") from None
            if answer != 3:
                raise Wrong(f"set_quantity(3) returned {answer!r}: return the new quantity, 3.")
            current = await handle.query("current", result_type=int)
            if current != 3:
                raise Wrong(f"set_quantity(3) answered, but the basket's quantity is {current}: set self.quantity.")
            for bad in (0, -2):
                try:
                    accepted = await handle.execute_update("set_quantity", bad, result_type=int)
                except WorkflowUpdateFailedError:
                    continue
                raise Wrong(
                    f"set_quantity({bad}) was accepted and returned {accepted!r}: a quantity must be at least 1. "
                    "The validator should raise (e.g. ValueError) for n <= 0."
                )
            current = await handle.query("current", result_type=int)
            if current != 3:
                raise Wrong(
                    f"after the refused updates the quantity is {current}, not 3: a refusal must change nothing."
                )
            history = await handle.fetch_history()
        finally:
            await handle.terminate("the check is done")
    accepted = harness.event_kinds(history).count("workflow_execution_update_accepted")
    if accepted != 1:
        raise Wrong(
            f"set_quantity(0) and set_quantity(-2) were refused, but by the handler, after Temporal had accepted them: "
            f"the history holds {accepted} accepted updates instead of 1. Refuse in a validator "
            "(@set_quantity.validator): it runs before acceptance, and a refusal leaves no event in the history."
        )
    return Verdict(
        "passed",
        "Temporal ran your Basket: set_quantity(3) was accepted and applied; set_quantity(0) and "
        "set_quantity(-2) were refused by the validator and left no trace in the history (1 accepted update).",
    )
