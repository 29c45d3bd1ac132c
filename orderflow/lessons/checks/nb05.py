"""Notebook 05's exercise: a pandas question over the payments, checked against the database."""

from __future__ import annotations

import asyncio

import pandas as pd
import sqlalchemy as sa

from orderflow import order_client
from orderflow.lessons.exercise import NotDone, Verdict, Wrong, exercise, learner
from orderflow.notebook import new_id

EXERCISE = "05-refunds"
PO_BOX = "PO Box 7, Springfield"  # the carrier refuses it: charged, never dispatched, refunded
STREET = "9 Refund Row"


async def _an_order(stack, address: str) -> str:
    """An approved order, run to its end. To a PO box it ends refunded for sure (the carrier refuses
    it five times); to a street it ends shipped and charged (or, rarely, refunded too)."""
    order_id = new_id("exercise-refund")
    handle = await order_client.start_order(
        stack.client, order_client.new_order(order_id, f"pay-{order_id}", address=address), stack.settings
    )
    await order_client.approve_when_ready(handle)
    async with asyncio.timeout(30):
        await handle.result()
    return order_id


def _truth(stack) -> dict[str, int]:
    with stack.repo.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT order_id, amount FROM payments WHERE status = 'refunded'")).all()
    return {order_id: int(amount) for order_id, amount in rows}


@exercise(EXERCISE, title="Which orders were refunded, and how much", notebook="05")
async def check_refunds(stack, ns: dict) -> Verdict:
    refunds = learner(ns, "refunds", "a function of the payments DataFrame")
    if not callable(refunds):
        raise Wrong(f"`refunds` should be a function taking the payments DataFrame; it is a {type(refunds).__name__}.")
    if refunds(stack.payments()) is None:  # before placing orders: an untouched starter is said at once
        raise NotDone("refunds(payments) returned None: it still has the `...`; return a Series.")
    placed, _ = await asyncio.gather(_an_order(stack, PO_BOX), _an_order(stack, STREET))  # one refund at least
    payments = stack.payments()
    answer = refunds(payments.copy())
    if isinstance(answer, pd.DataFrame) and answer.shape[1] == 1:
        answer = answer.iloc[:, 0]
    if not isinstance(answer, pd.Series):
        raise Wrong(f"refunds(payments) returned a {type(answer).__name__}; return a pandas Series.")
    truth = _truth(stack)
    got = {str(k): v for k, v in answer.items()}
    by_payment = set(payments.loc[payments["status"] == "refunded", "payment_id"])
    if got and set(got) <= by_payment:
        raise Wrong("your Series is indexed by payment_id: index it by order_id (e.g. .set_index('order_id')).")
    missing = sorted(set(truth) - set(got))
    extra = sorted(set(got) - set(truth))
    if extra:
        status = payments.set_index("order_id")["status"]
        shown = ", ".join(f"{o} ({status.get(o, 'no payment')})" for o in extra[:3])
        raise Wrong(
            f"{len(extra)} of your orders were not refunded: {shown}. Keep only the rows whose status is 'refunded'."
        )
    if missing:
        raise Wrong(
            f"{len(missing)} refunded orders are missing, e.g. {missing[0]} (the check's own order is {placed})."
        )
    off = {o: (got[o], truth[o]) for o in truth if not _same(got[o], truth[o])}
    if off:
        o, (yours, real) = next(iter(off.items()))
        raise Wrong(f"the amounts are off: order {o} says {yours!r}, the database {real}. The values are the amounts.")
    total = sum(truth.values())
    return Verdict(
        "passed",
        f"the database agrees: {len(truth)} refunded orders, {total} refunded in all (the check placed one of them, "
        f"{placed}, to a PO box the carrier refuses, and one more to a street).",
    )


def _same(yours, real: int) -> bool:
    try:
        return float(yours) == float(real)
    except (TypeError, ValueError):
        return False
