"""Read the audit trail back: pandas DataFrames for notebooks, invariant checks for tests and the benchmark."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import sqlalchemy as sa

from orderflow.db.repository import Repository
from orderflow.db.schema import events, orders, payments, shipments
from orderflow.models import OrderState, PaymentState

TERMINAL = {s.value for s in (OrderState.SHIPPED, OrderState.CANCELLED, OrderState.FAILED)}


def _frame(repo: Repository, table: sa.Table, order_ids: Iterable[str] | None, column) -> pd.DataFrame:
    query = sa.select(table)
    if order_ids is not None:
        query = query.where(column.in_(list(order_ids)))
    with repo.engine.connect() as conn:
        return pd.read_sql(query, conn)


def orders_df(repo: Repository, order_ids: Iterable[str] | None = None) -> pd.DataFrame:
    return _frame(repo, orders, order_ids, orders.c.id)


def payments_df(repo: Repository, order_ids: Iterable[str] | None = None) -> pd.DataFrame:
    return _frame(repo, payments, order_ids, payments.c.order_id)


def shipments_df(repo: Repository, order_ids: Iterable[str] | None = None) -> pd.DataFrame:
    return _frame(repo, shipments, order_ids, shipments.c.order_id)


def events_df(repo: Repository, order_ids: Iterable[str] | None = None) -> pd.DataFrame:
    frame = _frame(repo, events, order_ids, events.c.order_id)
    return frame.sort_values(["order_id", "ts", "id"]).reset_index(drop=True)


def retry_stats(repo: Repository, order_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Per step: orders that ran it, failed attempts and timed-out attempts (from the events table)."""
    ev = events_df(repo, order_ids)
    ev = ev[ev["step"].notna()]
    if ev.empty:
        return pd.DataFrame(columns=["step", "orders", "failures", "timeouts"]).set_index("step")
    grouped = ev.groupby("step")
    return pd.DataFrame(
        {
            "orders": grouped["order_id"].nunique(),
            "failures": grouped["type"].apply(lambda t: int((t == "attempt_failed").sum())),
            "timeouts": grouped["type"].apply(lambda t: int((t == "attempt_timed_out").sum())),
        }
    )


def durations(repo: Repository, order_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Seconds from each order's start to its terminal event, with the terminal state."""
    ev = events_df(repo, order_ids)
    started = ev[ev["type"] == "order_started"].groupby("order_id")["ts"].min()
    ended = ev[ev["type"].isin([f"order_{s}" for s in TERMINAL])]
    ended = ended.groupby("order_id").agg(ts=("ts", "max"), outcome=("type", "last"))
    frame = ended.join(started.rename("started"), how="inner")
    frame["seconds"] = (frame["ts"] - frame["started"]).dt.total_seconds()
    frame["outcome"] = frame["outcome"].str.removeprefix("order_")
    return frame[["outcome", "seconds"]]


def check_invariants(repo: Repository, order_ids: Iterable[str]) -> list[str]:
    """Every broken promise about these orders, as sentences; an empty list means all hold.

    - no order lost: each has a row, in a terminal state;
    - nothing charged without shipment: a charged payment belongs to a shipped order;
    - no double charge: at most one payment row per order, and it matches the order's payment id;
    - a shipped order has exactly one dispatched shipment and a charged payment; no other order
      has a dispatched shipment.
    """
    ids = list(order_ids)
    problems: list[str] = []
    with repo.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(orders).where(orders.c.id.in_(ids)))}
        pays = list(conn.execute(sa.select(payments).where(payments.c.order_id.in_(ids))))
        ships = list(conn.execute(sa.select(shipments).where(shipments.c.order_id.in_(ids))))
    for order_id in ids:
        row = rows.get(order_id)
        if row is None:
            problems.append(f"{order_id}: no order row")
            continue
        if row.state not in TERMINAL:
            problems.append(f"{order_id}: not terminal ({row.state})")
        own = [p for p in pays if p.order_id == order_id]
        if len(own) > 1:
            problems.append(f"{order_id}: {len(own)} payment rows")
        charged = [p for p in own if p.status == PaymentState.CHARGED.value]
        if charged and row.state != OrderState.SHIPPED.value:
            problems.append(f"{order_id}: charged but {row.state} and not refunded")
        if any(p.payment_id != row.payment_id for p in own):
            problems.append(f"{order_id}: payment row under another payment id")
        dispatched = [s for s in ships if s.order_id == order_id and s.status == "dispatched"]
        if row.state == OrderState.SHIPPED.value and (len(dispatched) != 1 or not charged):
            problems.append(f"{order_id}: shipped with {len(dispatched)} dispatched shipments, charged={bool(charged)}")
        if row.state != OrderState.SHIPPED.value and dispatched:
            problems.append(f"{order_id}: {row.state} but a shipment was dispatched")
    return problems
