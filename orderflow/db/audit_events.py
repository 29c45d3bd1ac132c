"""The audit trail: rows of ``events``, written by the workflows (their decisions, in batches) and
by every effect in the transaction that makes it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from orderflow.db.engine import parse_ts, utcnow
from orderflow.db.orders import advance
from orderflow.db.schema import events, orders
from orderflow.db.statements import insert_ignore, starts_with, upsert
from orderflow.models import TERMINAL, AuditEvent, OrderState


def event_row(e: AuditEvent) -> dict[str, Any]:
    return dict(
        event_key=e.key,
        order_id=e.order_id,
        type=e.type,
        step=e.step,
        attempt=e.attempt,
        payload_json=e.detail,
        ts=parse_ts(e.ts),
    )


def effect_event(order_id: str, event_type: str, **detail: Any) -> dict[str, Any]:
    """An audit row written in the same transaction as the effect it reports, with a key of
    its own: if an effect were ever applied twice, the trail would show it twice."""
    return dict(
        event_key=f"effect:{uuid.uuid4().hex}",
        order_id=order_id,
        type=event_type,
        step=None,
        attempt=None,
        payload_json=detail,
        ts=utcnow(),
    )


class AuditEvents:
    """What a workflow decided, persisted with the order's state in one transaction."""

    engine: Engine

    def write_progress(
        self,
        order_id: str,
        batch: Sequence[AuditEvent],
        *,
        state: OrderState | None = None,
        reason: str | None = None,
        address: str | None = None,
        complete_prefix: str | None = None,
        order_row: dict[str, Any] | None = None,
    ) -> None:
        """Persist what a workflow decided, in one transaction.

        Workflow events are overwritten by key (a re-run of a discarded task writes its own
        version of the same sequence numbers); ``complete_prefix`` marks the order's final
        write: the run's events are then exactly ``batch``, so none from a discarded task stays.
        """
        with self.engine.begin() as conn:
            if order_row is not None:
                insert_ignore(conn, orders, [order_row])
            if address is not None:  # the final write is the workflow's last word, even on an ended row
                live = orders.c.state.not_in(TERMINAL) if complete_prefix is None else sa.true()
                conn.execute(
                    sa.update(orders).where(orders.c.id == order_id, live).values(address=address, updated_at=utcnow())
                )
            if state is not None:
                advance(conn, order_id, state, reason)
            upsert(conn, events, [event_row(e) for e in batch], "event_key")
            if complete_prefix is not None:
                keep = [e.key for e in batch if e.key.startswith(complete_prefix)]
                conn.execute(
                    sa.delete(events).where(
                        events.c.order_id == order_id,
                        starts_with(events.c.event_key, complete_prefix),
                        events.c.event_key.not_in(keep),
                    )
                )
