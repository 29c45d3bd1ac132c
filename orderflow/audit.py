"""Read the audit trail back: pandas DataFrames for notebooks, invariant checks for tests and the benchmark."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import sqlalchemy as sa
from temporalio.client import Client

from orderflow.db.repository import Repository
from orderflow.db.schema import events, orders, payments, shipments
from orderflow.models import TERMINAL, OrderState, PaymentState


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
    """Every broken promise about these orders in the database alone, as sentences; [] = all hold.

    - no order lost: each has a row, in a terminal state;
    - nothing charged without shipment: a charged payment belongs to a shipped order;
    - charged at most once: the ``payment_charged`` effect events (written in the same
      transaction as the payment row, each with a key of its own) number at most one per order,
      and exactly one where a payment was charged or refunded;
    - a shipped order has exactly one dispatched shipment (one ``shipment_dispatched`` effect)
      and a charged payment; no other order has a dispatched shipment.
    """
    ids = list(order_ids)
    problems: list[str] = []
    with repo.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(orders).where(orders.c.id.in_(ids)))}
        pays = list(conn.execute(sa.select(payments).where(payments.c.order_id.in_(ids))))
        ships = list(conn.execute(sa.select(shipments).where(shipments.c.order_id.in_(ids))))
        effects = list(
            conn.execute(
                sa.select(events.c.order_id, events.c.type).where(
                    events.c.order_id.in_(ids), events.c.type.in_(["payment_charged", "shipment_dispatched"])
                )
            )
        )
    for order_id in ids:
        row = rows.get(order_id)
        if row is None:
            problems.append(f"{order_id}: no order row")
            continue
        if row.state not in TERMINAL:
            problems.append(f"{order_id}: not terminal ({row.state})")
        own = [p for p in pays if p.order_id == order_id]
        charged = [p for p in own if p.status == PaymentState.CHARGED.value]
        if charged and row.state != OrderState.SHIPPED.value:
            problems.append(f"{order_id}: charged but {row.state} and not refunded")
        if any(p.payment_id != row.payment_id for p in own):
            problems.append(f"{order_id}: payment row under another payment id")
        charges = sum(e.order_id == order_id and e.type == "payment_charged" for e in effects)
        took_money = any(p.status in (PaymentState.CHARGED.value, PaymentState.REFUNDED.value) for p in own)
        if charges > 1 or charges != int(took_money):
            problems.append(f"{order_id}: charged {charges} times (payment rows: {[p.status for p in own]})")
        dispatched = [s for s in ships if s.order_id == order_id and s.status == "dispatched"]
        sent = sum(e.order_id == order_id and e.type == "shipment_dispatched" for e in effects)
        if sent != len(dispatched):
            problems.append(f"{order_id}: {sent} dispatch effects for {len(dispatched)} dispatched shipments")
        if row.state == OrderState.SHIPPED.value and (len(dispatched) != 1 or not charged):
            problems.append(f"{order_id}: shipped with {len(dispatched)} dispatched shipments, charged={bool(charged)}")
        if row.state != OrderState.SHIPPED.value and dispatched:
            problems.append(f"{order_id}: {row.state} but a shipment was dispatched")
    return problems


async def check_against_temporal(
    repo: Repository, client: Client, order_ids: Iterable[str], with_status: bool = True
) -> list[str]:
    """Database, Temporal's history and ``status()`` must tell the same story of each order.

    Adds to ``check_invariants``: the row's final state, address and payment equal the
    workflow's result; the dispatched shipment went to the result's address; the workflow
    events in the trail are exactly the ones the committed run wrote (its count, its last
    event); every step status() reports done has a succeeded step record with the same
    attempt count; the status in its memo and ``status()`` (a replay of the history) agree with
    the result.
    """
    from temporalio.client import WorkflowFailureError

    from orderflow.order_client import order_handle

    ids = list(order_ids)
    problems = check_invariants(repo, ids)
    payment_for = {PaymentState.CHARGED: "charged", PaymentState.REFUNDED: "refunded", PaymentState.VOIDED: "voided"}
    for order_id in ids:
        handle = order_handle(client, order_id)
        try:
            result = await handle.result()
        except WorkflowFailureError:  # cancelled through Temporal: the row must say cancelled
            view = repo.order_view(order_id, event_limit=1000)
            if view["order"]["state"] != OrderState.CANCELLED.value:
                problems.append(f"{order_id}: cancelled in Temporal, {view['order']['state']} in the database")
            continue
        try:
            view = repo.order_view(order_id, event_limit=1000)
        except Exception:  # noqa: BLE001 - reported by check_invariants already
            continue
        row = view["order"]
        if row["state"] != result.state.value:
            problems.append(f"{order_id}: workflow ended {result.state.value}, database says {row['state']}")
        if row["address"] != result.address:
            problems.append(f"{order_id}: workflow address {result.address!r}, database {row['address']!r}")
        stored = [p["status"] for p in view["payments"]]
        expected = [payment_for[result.payment]] if result.payment in payment_for else []
        if stored != expected:
            problems.append(f"{order_id}: workflow payment {result.payment.value}, database {stored}")
        dispatched = [s for s in view["shipments"] if s["status"] == "dispatched"]
        if result.state == OrderState.SHIPPED and [s["address"] for s in dispatched] != [result.address]:
            problems.append(
                f"{order_id}: shipped to {result.address!r}, shipment rows {[s['address'] for s in dispatched]}"
            )
        info = await handle.describe()
        prefix = f"wf:{handle.id}/{info.run_id}/"
        own = [e for e in view["events"] if e["event_key"].startswith(prefix)]
        if len(own) != result.audit_events - _child_events(view["events"], handle.id):
            problems.append(
                f"{order_id}: {len(own)} workflow events in the trail, the run wrote "
                f"{result.audit_events - _child_events(view['events'], handle.id)}"
            )
        endings = [e["type"] for e in own if e["type"] in {f"order_{t}" for t in TERMINAL}]
        if endings != [f"order_{result.state.value}"]:
            problems.append(
                f"{order_id}: the trail records the endings {endings}, the workflow ended {result.state.value}"
            )
        if result.state == OrderState.SHIPPED and sum(e["type"] == "dispatched" for e in view["events"]) != 1:
            problems.append(f"{order_id}: {sum(e['type'] == 'dispatched' for e in view['events'])} dispatched events")
        published = await info.memo()  # the status the run published last (OrderWorkflow._publish_status)
        told = (published.get("state"), published.get("address"), published.get("payment"))
        if told != (result.state.value, result.address, result.payment.value):
            problems.append(
                f"{order_id}: its memo says {told}, result {result.state.value}/{result.address!r}/{result.payment.value}"
            )
        if with_status:
            from orderflow.models import OrderStatus

            status: OrderStatus = await handle.query("status", result_type=OrderStatus)
            if (status.state, status.address, status.payment) != (result.state, result.address, result.payment):
                problems.append(
                    f"{order_id}: status() says {status.state.value}/{status.address!r}/"
                    f"{status.payment.value}, result {result.state.value}/{result.address!r}/"
                    f"{result.payment.value}"
                )
            for step, stats in status.steps.items():
                if stats.state != "done" or step in ("prepare", "dispatch"):
                    continue
                record = repo.step_record(f"{handle.id}/{info.run_id}/{step}")
                if record is None or record.status != "succeeded" or record.attempts != stats.attempts:
                    problems.append(
                        f"{order_id}: step {step} done after {stats.attempts} attempts in the history, "
                        f"database record {record}"
                    )
    return problems


def _child_events(trail: list[dict], workflow_id: str) -> int:
    """Workflow events of this order's shipping children (they reach the trail through the parent)."""
    return sum(e["event_key"].startswith(f"wf:{workflow_id}-shipping-") for e in trail)
