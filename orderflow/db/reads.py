"""Reads for the API and the notebooks: is the database up, a page of orders, one order's picture."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from orderflow.db.orders import read_order
from orderflow.db.schema import events, orders, payments, shipments


class Reads:
    """``ping``, ``list_orders`` and ``order_view`` ."""

    engine: Engine

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
        order = read_order(self.engine, order_id)
        with self.engine.connect() as conn:
            pays = [
                dict(r) for r in conn.execute(sa.select(payments).where(payments.c.order_id == order_id)).mappings()
            ]
            ship_query = sa.select(shipments).where(shipments.c.order_id == order_id).order_by(shipments.c.shipment_no)
            ships = [dict(r) for r in conn.execute(ship_query).mappings()]
            event_query = (
                sa.select(events).where(events.c.order_id == order_id).order_by(events.c.id.desc()).limit(event_limit)
            )
            evs = [dict(r) for r in conn.execute(event_query).mappings()][::-1]
        return {"order": order, "payments": pays, "shipments": ships, "events": evs}
