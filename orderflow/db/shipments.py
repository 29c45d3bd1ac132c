"""The ``shipments`` table: one row per shipment of an order; prepared, then dispatched or settled."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from orderflow.db.audit_events import effect_event
from orderflow.db.engine import utcnow
from orderflow.db.schema import events, shipments
from orderflow.db.statements import insert_ignore
from orderflow.errors import ShipmentClosed


class Shipments:
    """Prepare, dispatch and settle a shipment; a settled shipment never changes again."""

    engine: Engine

    def prepare_shipment(self, order_id: str, shipment_no: int, address: str) -> None:
        now = utcnow()
        row = dict(
            order_id=order_id,
            shipment_no=shipment_no,
            status="prepared",
            address=address,
            created_at=now,
            updated_at=now,
        )
        with self.engine.begin() as conn:
            insert_ignore(conn, shipments, [row])

    def dispatch_shipment(self, order_id: str, shipment_no: int, address: str) -> str:
        """Dispatch a prepared shipment; returns the address it went to.

        A shipment already dispatched answers with its recorded address (the carrier has it);
        one that was settled (failed, cancelled) or never prepared raises ShipmentClosed: a
        dispatch after the workflow gave up must not report success for a write it did not make.
        """
        with self.engine.begin() as conn:
            moved = self._leave_prepared(conn, order_id, shipment_no, status="dispatched", address=address)
            if moved:
                insert_ignore(
                    conn,
                    events,
                    [effect_event(order_id, "shipment_dispatched", shipment_no=shipment_no, address=address)],
                )
            row = self._shipment(conn, order_id, shipment_no)
        if row is None or row.status != "dispatched":
            raise ShipmentClosed(f"shipment {shipment_no} is {row.status if row else 'not prepared'}")
        return row.address

    def settle_shipment(self, order_id: str, shipment_no: int, status: str) -> str:
        """Close a shipment the workflow gave up on, and return what it finally is.

        A dispatch attempt that timed out may still have written ``dispatched``; then that is
        the answer, and the caller must treat the parcel as sent. After this call no late
        write can change the shipment: a late dispatch finds it closed (ShipmentClosed), and
        a late prepare of a shipment that never got one finds the tombstone row.
        """
        now = utcnow()
        with self.engine.begin() as conn:
            self._leave_prepared(conn, order_id, shipment_no, status=status)
            insert_ignore(
                conn,
                shipments,
                [
                    dict(
                        order_id=order_id,
                        shipment_no=shipment_no,
                        status=status,
                        address="",
                        created_at=now,
                        updated_at=now,
                    )
                ],
            )
            row = self._shipment(conn, order_id, shipment_no)
        return row.status

    def shipment_address(self, order_id: str, shipment_no: int) -> str | None:
        with self.engine.connect() as conn:
            row = self._shipment(conn, order_id, shipment_no)
        return row.address if row else None

    @staticmethod
    def _shipment(conn: Connection, order_id: str, shipment_no: int) -> Any:
        return conn.execute(
            sa.select(shipments).where(shipments.c.order_id == order_id, shipments.c.shipment_no == shipment_no)
        ).first()

    @staticmethod
    def _leave_prepared(conn: Connection, order_id: str, shipment_no: int, **values: Any) -> bool:
        """Move a prepared shipment on; one that already moved on stays as it is."""
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
