"""The ``payments`` table: one row per payment id; a charge happens once, a refund or void closes it."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from orderflow.db.audit_events import effect_event
from orderflow.db.engine import utcnow
from orderflow.db.schema import events, payments
from orderflow.db.statements import insert_ignore
from orderflow.errors import PaymentClosed, PaymentConflict
from orderflow.models import PaymentState


def _payment_row(payment_id: str, order_id: str, status: PaymentState, amount: int) -> dict[str, Any]:
    now = utcnow()
    return dict(
        payment_id=payment_id, order_id=order_id, status=status.value, amount=amount, created_at=now, updated_at=now
    )


_PAYMENT = sa.select(payments).where(payments.c.payment_id == sa.bindparam("payment_id"))


class Payments:
    """Charge once per payment id; refund, or void what was never charged."""

    engine: Engine

    def charge_payment(self, payment_id: str, order_id: str, amount: int) -> int:
        """Charge once per payment id; a repeat of the same charge returns the first amount."""
        for _ in range(3):
            with self.engine.begin() as conn:
                row = _payment_row(payment_id, order_id, PaymentState.CHARGED, amount)
                if insert_ignore(conn, payments, [row]):
                    insert_ignore(
                        conn, events, [effect_event(order_id, "payment_charged", payment_id=payment_id, amount=amount)]
                    )
                stored = conn.execute(_PAYMENT, {"payment_id": payment_id}).mappings().first()
            # No row at all: on MariaDB, an INSERT IGNORE racing a refund's void row can end
            # having written nothing while that row is not committed yet (seen once in 40 x 2 races
            # of tests/db/test_repository.py, 2026-12-03). Go again: the void row is there by then.
            if stored is not None:
                break
        else:
            raise RuntimeError(f"payment {payment_id}: no row after three tries")  # retried by the step
        if stored["order_id"] != order_id:
            raise PaymentConflict(f"payment {payment_id} belongs to order {stored['order_id']}")
        if stored["status"] != PaymentState.CHARGED.value:
            raise PaymentClosed(f"payment {payment_id} is {stored['status']}")
        return stored["amount"]

    def refund_payment(self, payment_id: str, order_id: str) -> PaymentState:
        """Refund a charge, or void the payment id if nothing was charged yet.

        The void row makes a charge attempt that is still in flight a no-op.
        """
        tombstone = _payment_row(payment_id, order_id, PaymentState.VOIDED, 0)
        # On MySQL (READ COMMITTED) a late charge can commit between our UPDATE (it matched
        # nothing) and our INSERT IGNORE (it then skips the charged row): the refund would see
        # `charged`. The second round refunds that charge; after a round the row exists, so
        # two rounds always suffice (tested with real concurrent connections on MariaDB).
        for _ in range(3):
            with self.engine.begin() as conn:
                # UPDATE before INSERT: taking the row's exclusive lock first keeps two concurrent
                # refunds from deadlocking on MySQL (shared lock from INSERT IGNORE, then upgrade).
                refunded = conn.execute(
                    sa.update(payments)
                    .where(
                        payments.c.payment_id == payment_id,
                        payments.c.order_id == order_id,
                        payments.c.status == PaymentState.CHARGED.value,
                    )
                    .values(status=PaymentState.REFUNDED.value, updated_at=utcnow())
                ).rowcount
                if refunded:
                    insert_ignore(conn, events, [effect_event(order_id, "payment_refunded", payment_id=payment_id)])
                insert_ignore(conn, payments, [tombstone])
                stored = conn.execute(sa.select(payments).where(payments.c.payment_id == payment_id)).mappings().one()
            if stored["order_id"] != order_id:
                return PaymentState.NONE  # the id is another order's; nothing of ours was charged
            if stored["status"] != PaymentState.CHARGED.value:
                break
        return PaymentState(stored["status"])

    def close_payment(self, payment_id: str, order_id: str) -> PaymentState:
        """Void a payment id its order never charged, and tell what is there.

        An order that ends without a recorded charge calls this before it ends. A charge made
        by a workflow task the server never recorded (a server restart, a lost approval) shows
        up as ``CHARGED``: the caller refunds it. Otherwise the void row makes any charge
        attempt still in flight a no-op, as in ``refund_payment``. NONE: the id is another order's.
        """
        with self.engine.begin() as conn:
            insert_ignore(conn, payments, [_payment_row(payment_id, order_id, PaymentState.VOIDED, 0)])
            stored = conn.execute(sa.select(payments).where(payments.c.payment_id == payment_id)).mappings().one()
        if stored["order_id"] != order_id:
            return PaymentState.NONE
        return PaymentState(stored["status"])
