"""Notebook 10's helpers: many presses at once on one order, each answer counted; and the
stocktake activities exercise 10 builds on (the check runs them on task queues of its own).

A press is sent as the package's client sends every command (``send_update``): a refusal as
``Busy`` (a step was running, nothing changed) is sent again after 20, 50, 100, then every
200 ms. Here each press also counts its Busy answers, and tells a validator's refusal (before
acceptance: no trace in the history) from a handler's (after acceptance: in the history).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pandas as pd
from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.service import RPCError

from orderflow import order_client

OUTCOMES = (
    "accepted",
    "accepted, then refused by the handler",
    "accepted, then the workflow ended",
    "refused by the validator",
    "refused by the server",
)
ACCEPT_WITHIN = 10.0  # seconds a press keeps sending a Busy-refused Update (the API's bound too)


@dataclass
class Press:
    sent: str
    outcome: str  # one of OUTCOMES; "refused" until ``classify`` reads the history
    answer: str
    busy_answers: int
    seconds: float
    update_id: str = ""  # of the last sending (each Busy-refused one had an id of its own)
    busy_ids: list[str] = field(default_factory=list)
    kind: str = ""  # a refusal's ApplicationError type ("Rejected", "Busy", ...)


def _reason(err: WorkflowUpdateFailedError) -> str:
    cause = err.cause
    return getattr(cause, "message", None) or str(cause or err)


async def press(
    handle: WorkflowHandle, update: Any, arg: Any, result_type: type = str, *, retry_busy: bool = True
) -> Press:
    """Send one Update as ``send_update`` does (Busy: again after a pause), counting the Busy answers.

    Whether a refusal came from the validator (before acceptance) or the handler (after) the
    caller cannot see in the answer: ``classify`` reads it from the history, by update id."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    busy_ids: list[str] = []

    def done(outcome: str, answer: str, update_id: str, kind: str = "") -> Press:
        took = round(loop.time() - began, 3)
        return Press(str(arg), outcome, answer, len(busy_ids), took, update_id, busy_ids, kind)

    while True:
        update_id = f"press-{uuid.uuid4().hex[:12]}"
        if loop.time() - began > ACCEPT_WITHIN:
            return done("not accepted in time", f"Busy {len(busy_ids)} times", update_id)
        try:
            sent = await handle.start_update(
                update, arg, id=update_id, wait_for_stage=WorkflowUpdateStage.ACCEPTED, result_type=result_type
            )
            return done("accepted", str(await sent.result()), update_id)
        except WorkflowUpdateFailedError as err:
            if retry_busy and order_client.busy(err):
                pauses = order_client.BUSY_PAUSES
                await asyncio.sleep(pauses[min(len(busy_ids), len(pauses) - 1)])
                busy_ids.append(update_id)
                continue
            kind = getattr(err.cause, "type", None) or type(err.cause).__name__
            return done("refused", _reason(err), update_id, kind)
        except RPCError as err:
            if order_client.workflow_not_ready(err):
                await asyncio.sleep(order_client.NOT_READY_PAUSE)
                continue
            return done("ended", err.message, update_id)  # the workflow ended before or after accepting it


def accepted_ids(history: Any) -> set[str]:
    """The ids of the Updates a history shows accepted (only those are in it at all)."""
    return {
        e.workflow_execution_update_accepted_event_attributes.accepted_request.meta.update_id
        for e in history.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    }


def classify(presses: Sequence[Press], history: Any) -> None:
    """Tell the refusals apart by the history: an accepted Update is in it, a validator's refusal is not."""
    accepted = accepted_ids(history)
    for p in presses:
        if p.outcome == "refused":
            p.outcome = (
                "accepted, then refused by the handler" if p.update_id in accepted else "refused by the validator"
            )
        elif p.outcome == "ended":
            p.outcome = "accepted, then the workflow ended" if p.update_id in accepted else "refused by the server"


async def burst(handle: WorkflowHandle, update: Any, args: Sequence[Any]) -> pd.DataFrame:
    """Every ``update(arg)`` at once (asyncio.gather), one row per press, in the order sent; each
    refusal classified by the workflow's history."""
    presses = await asyncio.gather(*(press(handle, update, arg) for arg in args))
    classify(presses, await handle.fetch_history())
    return pd.DataFrame([vars(p) for p in presses])


async def signal_burst(handle: WorkflowHandle, signal: Any, args: Sequence[Any]) -> list[Any]:
    """Every ``signal(arg)`` at once; what each sender got back (always None: a signal cannot answer)."""
    return list(await asyncio.gather(*(handle.signal(signal, arg) for arg in args)))


async def query_burst(handle: WorkflowHandle, query: Any, times: int) -> list[Any]:
    """The same query ``times`` times at once."""
    return list(await asyncio.gather(*(handle.query(query) for _ in range(times))))


def summary(presses: pd.DataFrame) -> pd.DataFrame:
    """Presses per outcome, and the Busy answers they got on the way."""
    return (
        presses.groupby("outcome")
        .agg(presses=("sent", "count"), busy_answers=("busy_answers", "sum"))
        .reset_index()
        .sort_values("presses", ascending=False)
    )


# -- exercise 10: the stocktake -------------------------------------------------------------------

STOCKTAKE = timedelta(seconds=10)  # start-to-close of the stocktake in the exercise's workflow
SHELF_COUNT = 20  # what the stocktake finds on the shelves
# workflow id -> (the stocktake has started, the check lets it finish); only checks register here
HOLDS: dict[str, tuple[asyncio.Event, asyncio.Event]] = {}


@activity.defn(name="ExerciseStocktake")
async def stocktake() -> int:
    """Counts the shelves: the stock's true count. While a check holds it, it waits for the check."""
    hold = HOLDS.get(activity.info().workflow_id or "")
    if hold is None:
        await asyncio.sleep(0.2)
        return SHELF_COUNT
    started, release = hold
    started.set()
    await release.wait()
    return SHELF_COUNT


@activity.defn(name="ExerciseLogTake")
async def log_take(n: int) -> str:
    """Writes a take to the stock ledger (an activity: a call to the world outside the workflow)."""
    await asyncio.sleep(0.3)
    return f"logged a take of {n}"
