"""Notebook 10's exercise: a safe Update (validator + handler) on a workflow with a busy phase."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.client import WorkflowFailureError
from temporalio.service import RPCError
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from orderflow.lessons import harness
from orderflow.lessons.exercise import NotDone, Verdict, Wrong, exercise, learner, one_line
from orderflow.lessons.messages import (
    HOLDS,
    SHELF_COUNT,
    Press,
    accepted_ids,
    classify,
    log_take,
    press,
    stocktake,
)

EXERCISE = "10-safe-update"
HELD_DELIVERIES = (5, 5)  # signalled while the stocktake runs
TAKES = 12  # take(3) at once, on a stock of SHELF_COUNT + 10 = 30: exactly 10 fit
TAKE = 3
LATE_DELIVERY = 4
ANSWER_WITHIN = 12.0  # seconds the check waits for an answer of the workflow


@exercise(EXERCISE, title="A safe Update under concurrent presses", notebook="10")
async def check_safe_update(stack, ns: dict) -> Verdict:
    stock = learner(ns, "Stock", "the workflow class")
    if not isinstance(stock, type) or getattr(stock, "take", None) is None:
        raise NotDone(
            "`Stock` has no `take` yet: add the Update (@workflow.update) and its validator "
            "(@take.validator) where the TODO is, run the cell, then this one."
        )
    queue = harness.task_queue(EXERCISE)
    with harness.quiet_worker_logs():  # a failing handler's task retries are the verdict, not red text
        return await _judge(stack, stock, queue)


async def _judge(stack, stock: Any, queue: str) -> Verdict:
    workflow_id = harness.workflow_id(EXERCISE)
    started, release = asyncio.Event(), asyncio.Event()
    HOLDS[workflow_id] = (started, release)
    try:
        async with harness.worker(stack.client, queue, [stock], [stocktake, log_take]):
            handle = await harness.start(stack.client, stock.run, queue=queue, exercise_id=EXERCISE, id=workflow_id)
            try:
                found = await _drive(handle, started, release)
                history = await handle.fetch_history()
            finally:
                release.set()
                try:
                    await handle.terminate("the check is done")
                except Exception:  # noqa: BLE001 - it ended already
                    pass
    finally:
        HOLDS.pop(workflow_id, None)
    return await _judge_history(stock, history, found)


async def _drive(handle, started: asyncio.Event, release: asyncio.Event) -> dict:
    async with asyncio.timeout(10):
        await started.wait()
    # While the stocktake runs: one take, sent once (no retry), and two deliveries.
    during = asyncio.create_task(press(handle, "take", TAKE, int, retry_busy=False))
    for n in HELD_DELIVERIES:
        await handle.signal("deliver", n)
    await asyncio.wait({during}, timeout=0.5)  # a validator answers at once; a take it lets in too
    release.set()
    first = await _answered(during, f"take({TAKE}) sent during the stocktake")
    if first.outcome == "accepted":
        raise Wrong(
            f"take({TAKE}) was accepted while the stocktake ran (it answered {first.answer}). A handler that changes "
            "the count then loses the take: the stocktake's result replaces the count. (One that waits for the "
            "stocktake works here, but an Update accepted while one of the package's steps, a local activity, runs "
            "can break replay: docs/reliability.md.) Your validator must refuse while self.busy: raise "
            "ApplicationError(..., type='Busy'); the client sends it again."
        )
    if first.outcome == "refused" and first.kind != "Busy":
        raise Wrong(
            f"take({TAKE}) sent while the stocktake ran was refused, but as {first.kind!r} ({first.answer}), not "
            "as 'Busy'. A client sends a Busy refusal again a moment later (send_update does); any other refusal "
            "is final. Check self.busy before the stock, and raise ApplicationError(..., type='Busy')."
        )
    if first.outcome != "refused":
        raise Wrong(f"take({TAKE}) sent while the stocktake ran ended as {first.outcome!r}: {first.answer}")

    expected_open = SHELF_COUNT + sum(HELD_DELIVERIES)
    opened = await _wait_for_count(handle, expected_open)
    # Open: TAKES x take(3) at once, two takes that must be refused, all as send_update sends them.
    burst = asyncio.gather(
        *(press(handle, "take", TAKE, int) for _ in range(TAKES)),
        press(handle, "take", 0, int),
        press(handle, "take", -1, int),
    )
    presses: list[Press] = await _answered(burst, f"{TAKES} takes at once")
    try:
        await handle.signal("deliver", LATE_DELIVERY)
        await handle.signal("close")
        result = await _answered(handle.result(), "the workflow's result after `close`")
    except (RPCError, WorkflowFailureError) as err:
        status = (await handle.describe()).status
        ended = status.name.lower().replace("_", " ") if status else "ended"
        raise Wrong(
            f"the workflow {ended} before the check was done ({one_line(err)}). Does your code raise an exception "
            "other than ApplicationError? That fails the workflow task, and Temporal retries it until the code is "
            "fixed (here: until the workflow's time ran out). Refuse with ApplicationError(..., type=...) in the "
            "validator."
        ) from None
    return {"opened": opened, "presses": presses, "result": result, "first": first}


async def _answered(awaitable: Any, what: str) -> Any:
    """``awaitable``'s result, or a plain verdict if the workflow never answers."""
    try:
        return await asyncio.wait_for(awaitable, ANSWER_WITHIN)
    except TimeoutError:
        raise Wrong(
            f"{what}: no answer within {ANSWER_WITHIN:g} s. Does your code raise an exception other than "
            "ApplicationError? That fails the workflow task, and Temporal retries it until the code is fixed: "
            "refuse with ApplicationError(..., type=...) in the validator."
        ) from None


async def _wait_for_count(handle, expected: int) -> int:
    count = None
    for _ in range(100):
        count = await handle.query("current", result_type=int)
        if count == expected:
            return count
        await asyncio.sleep(0.05)
    raise Wrong(
        f"after the stocktake ({SHELF_COUNT}) and the deliveries held during it ({' + '.join(map(str, HELD_DELIVERIES))}) "
        f"the count is {count}, not {expected}. Did your code change the count, or the signal's handling?"
    )


async def _judge_history(stock: Any, history: Any, found: dict) -> Verdict:
    presses: list[Press] = found["presses"]
    first: Press = found["first"]
    if first.update_id in accepted_ids(history):
        raise Wrong(
            f"take({TAKE}) during the stocktake was refused as Busy, but by the handler, after Temporal had accepted "
            "it: it is in the history. Refuse in the validator (@take.validator): it runs before acceptance, and a "
            "refusal leaves no event in the history."
        )
    classify(presses, history)
    takes, bad = presses[:TAKES], presses[TAKES:]
    for p in bad:
        if p.outcome != "refused by the validator":
            detail = f"answered {p.answer!r}" if p.outcome == "accepted" else p.answer
            raise Wrong(
                f"take({p.sent}) was {p.outcome} ({detail}): a take must be at least 1. Refuse it in the validator "
                "(type 'Rejected'), where a refusal leaves no trace in the history."
            )
    applied = [p for p in takes if p.outcome == "accepted"]
    stock_before = SHELF_COUNT + sum(HELD_DELIVERIES)
    fit = stock_before // TAKE
    activities = harness.scheduled_activities(history)
    extra = [a for a in activities if a != "ExerciseStocktake"]
    if len(applied) > fit:
        why = (
            f" Your handler ran an activity ({extra[0]}): while it awaited, the other takes were validated "
            "against a count nobody had lowered yet."
            if extra
            else " Between the validator's check and the handler's change something awaited, and the other "
            "takes were validated against a count nobody had lowered yet."
        )
        raise Wrong(
            f"{len(applied)} takes of {TAKE} were accepted at once from a stock of {stock_before}: the count went to "
            f"{found['result'] - LATE_DELIVERY}.{why} Change the state in the handler with no await before it."
        )
    if extra:
        raise Wrong(
            f"your take handler ran an activity ({extra[0]}, {len(extra)} times). A handler only changes the "
            "workflow's state and answers: work with the outside world belongs in the run method."
        )
    stuck = [p for p in takes if p.outcome == "not accepted in time"]
    if stuck:
        raise Wrong(
            f"{len(stuck)} of the {TAKES} takes were never accepted ({stuck[0].answer}): the stocktake had ended, "
            "so the validator must let them in once self.busy is False."
        )
    if len(applied) != fit:
        refused = [p.answer for p in takes if p.outcome != "accepted"]
        raise Wrong(
            f"{len(applied)} of {TAKES} takes of {TAKE} were accepted from a stock of {stock_before}; {fit} fit. "
            f"Refused: {refused[:2]}. Refuse only n <= 0, more than the count, or while busy."
        )
    expected_left = stock_before - TAKE * fit
    answers = sorted(int(p.answer) for p in applied)
    if answers != list(range(expected_left, stock_before, TAKE)):
        raise Wrong(
            f"the accepted takes answered {answers}: each should return the count left after it "
            f"({expected_left}, {expected_left + TAKE}, ... {stock_before - TAKE})."
        )
    if found["result"] != expected_left + LATE_DELIVERY:
        raise Wrong(
            f"the workflow ended with a count of {found['result']}, not {expected_left + LATE_DELIVERY} "
            f"({stock_before} - {fit} x {TAKE} + a delivery of {LATE_DELIVERY})."
        )
    in_handler = [p for p in takes if p.outcome == "accepted, then refused by the handler"]
    if in_handler:
        raise Wrong(
            f"{len(in_handler)} takes were refused ({in_handler[0].answer}), but by the handler, after Temporal had "
            "accepted them: they are in the history. Refuse in the validator (@take.validator): it runs before "
            "acceptance, and a refusal leaves no event in the history."
        )
    in_history = harness.event_kinds(history).count("workflow_execution_update_accepted")
    replayer = Replayer(workflows=[stock], workflow_runner=UnsandboxedWorkflowRunner())
    replay = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    if replay.replay_failure is not None:
        raise Wrong(f"the recorded history does not replay on your class: {one_line(replay.replay_failure)}")
    busy = sum(p.busy_answers for p in presses)
    short = len(takes) - len(applied)
    return Verdict(
        "passed",
        f"Temporal ran your Stock: take({TAKE}) during the stocktake was refused as Busy and the two deliveries were "
        f"held; then {TAKES} takes at once: {fit} accepted (answers {expected_left} to {stock_before - TAKE}, none "
        f"twice), {short} refused for want of stock, take(0) and take(-1) refused, {busy} Busy answer(s) on the "
        f"way. The history holds exactly {in_history} accepted updates and replays on your class.",
    )
