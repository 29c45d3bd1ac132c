"""Every read and write of the app database.

Writes are idempotent: they may run twice, or twice at once (a timed-out attempt
can still be finishing while its retry runs), and leave the same rows. Inserts
ignore duplicates; state changes are conditional updates that only move forward.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from orderflow.db.schema import events, orders, payments, shipments
from orderflow.errors import OrderNotFound, PaymentClosed, PaymentConflict
from orderflow.models import LIFECYCLE, TERMINAL_STATES, AuditEvent, Item, OrderState, PaymentState

TERMINAL = [s.value for s in TERMINAL_STATES]


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(timezone.utc).replace(tzinfo=None)


def make_engine(url: str) -> Engine:
    """An engine tuned for many short concurrent writes from worker threads."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # WAL lets readers run beside the writer
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return sa.create_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=20, isolation_level="READ COMMITTED"
    )


def _insert_ignore(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT that skips rows whose unique key already exists, on every supported dialect."""
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        conn.execute(sa.insert(table).prefix_with("IGNORE"), list(rows))
        return
    conn.execute(insert(table).on_conflict_do_nothing(), list(rows))


def _payment_row(payment_id: str, order_id: str, status: PaymentState, amount: int) -> dict[str, Any]:
    now = utcnow()
    return dict(payment_id=payment_id, order_id=order_id, status=status.value, amount=amount,
                created_at=now, updated_at=now)


def _states_before(state: OrderState) -> list[str]:
    if state in TERMINAL_STATES:
        return [s.value for s in LIFECYCLE if s not in TERMINAL_STATES]
    return [s.value for s in LIFECYCLE[: LIFECYCLE.index(state)]]


class Repository:
    def __init__(self, engine: Engine):
        self.engine = engine

    @classmethod
    def from_url(cls, url: str) -> "Repository":
        return cls(make_engine(url))

    # -- orders ---------------------------------------------------------------
    def insert_order(
        self, order_id: str, payment_id: str, items: Iterable[Item], address: str,
        state: OrderState = OrderState.RECEIVED,
    ) -> None:
        now = utcnow()
        row = dict(
            id=order_id,
            state=state.value,
            payment_id=payment_id,
            items_json=[{"sku": i.sku, "qty": i.qty} for i in items],
            address=address,
            validated=False,
            created_at=now,
            updated_at=now,
        )
        with self.engine.begin() as conn:
            _insert_ignore(conn, orders, [row])

    def get_order(self, order_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(orders).where(orders.c.id == order_id)).mappings().first()
        if row is None:
            raise OrderNotFound(order_id)
        return dict(row)

    def mark_validated(self, order_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(orders).where(orders.c.id == order_id).values(validated=True, updated_at=utcnow())
            )
        self.advance_state(order_id, OrderState.VALIDATED)

    def advance_state(self, order_id: str, state: OrderState, reason: str | None = None) -> bool:
        """Move the order forward to ``state``; a late or repeated write changes nothing."""
        values: dict[str, Any] = {"state": state.value, "updated_at": utcnow()}
        if reason is not None:
            values["reason"] = reason
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(orders)
                .where(orders.c.id == order_id, orders.c.state.in_(_states_before(state)))
                .values(**values)
            )
        return result.rowcount > 0

    def update_address(self, order_id: str, address: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(orders)
                .where(orders.c.id == order_id, orders.c.state.not_in(TERMINAL))
                .values(address=address, updated_at=utcnow())
            )

    # -- payments -------------------------------------------------------------
    def charge_payment(self, payment_id: str, order_id: str, amount: int) -> int:
        """Charge once per payment id; a repeat of the same charge returns the first amount."""
        with self.engine.begin() as conn:
            _insert_ignore(conn, payments, [_payment_row(payment_id, order_id, PaymentState.CHARGED, amount)])
            stored = conn.execute(
                sa.select(payments).where(payments.c.payment_id == payment_id)
            ).mappings().one()
        if stored["order_id"] != order_id:
            raise PaymentConflict(f"payment {payment_id} belongs to order {stored['order_id']}")
        if stored["status"] != PaymentState.CHARGED.value:
            raise PaymentClosed(f"payment {payment_id} is {stored['status']}")
        self.advance_state(order_id, OrderState.CHARGED)
        return stored["amount"]

    def refund_payment(self, payment_id: str, order_id: str) -> PaymentState:
        """Refund a charge, or void the payment id if nothing was charged yet.

        The void row makes a charge attempt that is still in flight a no-op.
        """
        tombstone = _payment_row(payment_id, order_id, PaymentState.VOIDED, 0)
        with self.engine.begin() as conn:
            # UPDATE before INSERT: taking the row's exclusive lock first keeps two concurrent
            # refunds from deadlocking on MySQL (shared lock from INSERT IGNORE, then upgrade).
            conn.execute(
                sa.update(payments)
                .where(
                    payments.c.payment_id == payment_id,
                    payments.c.order_id == order_id,
                    payments.c.status == PaymentState.CHARGED.value,
                )
                .values(status=PaymentState.REFUNDED.value, updated_at=utcnow())
            )
            _insert_ignore(conn, payments, [tombstone])
            stored = conn.execute(
                sa.select(payments).where(payments.c.payment_id == payment_id)
            ).mappings().one()
        if stored["order_id"] != order_id:
            return PaymentState.NONE  # the id is another order's; nothing of ours was charged
        return PaymentState(stored["status"])

    # -- shipments ------------------------------------------------------------
    def prepare_shipment(self, order_id: str, shipment_no: int, address: str) -> None:
        now = utcnow()
        row = dict(
            order_id=order_id, shipment_no=shipment_no, status="prepared",
            address=address, created_at=now, updated_at=now,
        )
        with self.engine.begin() as conn:
            _insert_ignore(conn, shipments, [row])

    def dispatch_shipment(self, order_id: str, shipment_no: int, address: str) -> None:
        if self._leave_prepared(order_id, shipment_no, status="dispatched", address=address):
            self.advance_state(order_id, OrderState.DISPATCHED)

    def settle_shipment(self, order_id: str, shipment_no: int, status: str) -> str:
        """Close a shipment the workflow gave up on, and return what it finally is.

        A dispatch attempt that timed out may still have written ``dispatched``; then that is
        the answer, and the caller must treat the parcel as sent. After this call no late
        write can change the shipment any more (late writes only move ``prepared`` rows).
        """
        self._leave_prepared(order_id, shipment_no, status=status)
        with self.engine.connect() as conn:
            final = conn.execute(
                sa.select(shipments.c.status).where(
                    shipments.c.order_id == order_id, shipments.c.shipment_no == shipment_no
                )
            ).scalar_one_or_none()
        return final or status  # no row: PreparePackage never got through; nothing was sent

    def _leave_prepared(self, order_id: str, shipment_no: int, **values: Any) -> bool:
        """Move a prepared shipment on; one that already moved on stays as it is."""
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(shipments)
                .where(
                    shipments.c.order_id == order_id,
                    shipments.c.shipment_no == shipment_no,
                    shipments.c.status == "prepared",
                )
                .values(**values, updated_at=utcnow())
            )
        return result.rowcount > 0

    # -- audit events ---------------------------------------------------------
    def append_events(self, batch: Sequence[AuditEvent]) -> None:
        rows = [
            dict(
                event_key=e.key, order_id=e.order_id, type=e.type, step=e.step,
                attempt=e.attempt, payload_json=e.detail, ts=parse_ts(e.ts),
            )
            for e in batch
        ]
        with self.engine.begin() as conn:
            _insert_ignore(conn, events, rows)

    # -- reads ----------------------------------------------------------------
    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def list_orders(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        query = sa.select(orders).order_by(orders.c.created_at.desc(), orders.c.id).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def order_view(self, order_id: str, event_limit: int = 50) -> dict[str, Any]:
        """The persisted picture of one order: its row, payments, shipments and latest events."""
        order = self.get_order(order_id)
        with self.engine.connect() as conn:
            pays = conn.execute(sa.select(payments).where(payments.c.order_id == order_id)).mappings()
            pays = [dict(r) for r in pays]
            ships = conn.execute(
                sa.select(shipments).where(shipments.c.order_id == order_id).order_by(shipments.c.shipment_no)
            ).mappings()
            ships = [dict(r) for r in ships]
            evs = conn.execute(
                sa.select(events).where(events.c.order_id == order_id).order_by(events.c.id.desc()).limit(event_limit)
            ).mappings()
            evs = [dict(r) for r in evs][::-1]
        return {"order": order, "payments": pays, "shipments": ships, "events": evs}
