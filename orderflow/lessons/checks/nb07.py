"""Notebook 07's exercise: the p99 of a batch and whether every order met the 15-second rule."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pandas as pd

from orderflow import order_client
from orderflow.lessons.exercise import NotDone, Verdict, Wrong, exercise, learner
from orderflow.notebook import run_batch

EXERCISE = "07-p99-budget"
BUDGET = 15.0


async def _temporal_seconds(stack, order_ids) -> pd.Series:
    """Start to close of each order by Temporal's own clock (describe(): start and close time)."""

    async def one(order_id: str) -> float:
        d = await order_client.order_handle(stack.client, order_id).describe()
        if d.close_time is None:
            raise Wrong(f"order {order_id} of the check's batch has not closed (a bug in the check)")
        return (d.close_time - d.start_time).total_seconds()

    return pd.Series(await asyncio.gather(*(one(o) for o in order_ids)), index=list(order_ids), name="seconds")


def _frames(real: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The batch the check ran, and two made-up runs where p99, mean and max differ and one order is late."""
    rng = np.random.default_rng(7)
    quick = rng.uniform(2.0, 9.0, 200).round(3)
    late = quick.copy()
    late[17] = 16.5  # one order over the budget
    tail = quick.copy()
    tail[:4] = [13.0, 13.5, 14.0, 14.5]  # a slow tail, all within the budget
    made = [
        (name, pd.DataFrame({"seconds": s}, index=[f"made-up-{i}" for i in range(len(s))]))
        for name, s in (("a made-up run with one order late", late), ("a made-up run with a slow tail", tail))
    ]
    return [("the batch the check ran", real)] + made


def _report(fn, frame: pd.DataFrame) -> tuple[float, bool]:
    answer = fn(frame.copy())
    if answer is None:
        raise NotDone("budget_report(frame) returned None: it still has the `...`; return (p99, all_within).")
    try:
        p99, within = answer
    except (TypeError, ValueError):
        raise Wrong(
            f"budget_report returned {answer!r}: return a pair (p99 seconds, every order within 15 s)"
        ) from None
    return float(p99), bool(within)


@exercise(EXERCISE, title="p99 and the 15-second rule", notebook="07")
async def check_p99_budget(stack, ns: dict) -> Verdict:
    fn = learner(ns, "budget_report", "a function of a batch DataFrame")
    if not callable(fn):
        raise Wrong(f"`budget_report` should be a function of a DataFrame; it is a {type(fn).__name__}.")
    _report(fn, _frames(pd.DataFrame({"seconds": [1.0]}))[1][1])  # an untouched starter is said before the batch
    batch = await run_batch(stack, 6, concurrency=6, prefix="exercise-p99", progress=False)
    batch["seconds"] = await _temporal_seconds(stack, batch.index)
    for name, frame in _frames(batch):
        p99, within = _report(fn, frame)
        true_p99 = float(frame["seconds"].quantile(0.99))
        true_within = bool((frame["seconds"] <= BUDGET).all())
        if not math.isclose(p99, true_p99, rel_tol=0.005, abs_tol=0.01):
            mean = frame["seconds"].mean()
            hint = " (that is the mean)" if math.isclose(p99, mean, rel_tol=1e-3) else ""
            raise Wrong(
                f"on {name} your p99 is {p99:.3f} s{hint}; the 99th percentile of `seconds` is {true_p99:.3f} s: "
                "99 % of the orders took at most that long (frame['seconds'].quantile(0.99))."
            )
        if within != true_within:
            slowest = frame["seconds"].max()
            raise Wrong(
                f"on {name} you say every order was within {BUDGET:g} s: {within}; the slowest took {slowest:.1f} s. "
                "The rule is about every order, not the p99: a single late order breaks it."
            )
    return Verdict(
        "passed",
        f"right on the check's own batch of {len(batch)} orders (timed by Temporal: p99 "
        f"{batch['seconds'].quantile(0.99):.2f} s) and on two made-up runs, one with an order over {BUDGET:g} s.",
    )
