"""The ``orders`` table: an order's row, and its state moving forward only."""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from orderflow.db.engine import utcnow
from orderflow.db.schema import orders
from orderflow.db.statements import insert_ignore
from orderflow.errors import OrderNotFound
from orderflow.models import LIFECYCLE, TERMINAL, TERMINAL_STATES, Item, OrderState


@functools.cache
def _advance_statement(state: OrderState, with_reason: bool, with_address: bool = False) -> sa.Update:
    """Move an order to ``state`` from any state before it (bind ``order_id``, ``now``,
    ``new_reason``, ``new_address``)."""
    values: dict[str, Any] = {"state": state.value, "updated_at": sa.bindparam("now")}
    if with_reason:
        values["reason"] = sa.bindparam("new_reason")
    if with_address:
        values["address"] = sa.bindparam("new_address")
    where = orders.c.id == sa.bindparam("order_id"), orders.c.state.in_(_states_before(state))
    return sa.update(orders).where(*where).values(**values)


def _states_before(state: OrderState) -> list[str]:
    if state in TERMINAL_STATES:
        return [s.value for s in LIFECYCLE if s not in TERMINAL_STATES]
    return [s.value for s in LIFECYCLE[: LIFECYCLE.index(state)]]


def advance(
    conn: Connection, order_id: str, state: OrderState, reason: str | None = None, address: str | None = None
) -> bool:
    """Move the order to ``state`` inside ``conn``'s transaction; a late or repeated write changes nothing."""
    values = {"order_id": order_id, "now": utcnow(), "new_reason": reason, "new_address": address}
    statement = _advance_statement(state, reason is not None, address is not None)
    return conn.execute(statement, values).rowcount > 0


_STATES = sa.select(orders.c.id, orders.c.state).where(orders.c.id.in_(sa.bindparam("ids", expanding=True)))


def read_order(engine: Engine, order_id: str) -> dict[str, Any]:
    """The order's row; OrderNotFound if there is none."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(orders).where(orders.c.id == order_id)).mappings().first()
    if row is None:
        raise OrderNotFound(order_id)
    return dict(row)


class Orders:
    """Insert an order, read it, move its state forward, change its address while it runs."""

    engine: Engine

    def insert_order(
        self,
        order_id: str,
        payment_id: str,
        items: Iterable[Item],
        address: str,
        state: OrderState = OrderState.RECEIVED,
    ) -> None:
        with self.engine.begin() as conn:
            insert_ignore(conn, orders, [self.order_row(order_id, payment_id, items, address, state)])

    @staticmethod
    def order_row(
        order_id: str, payment_id: str, items: Iterable[Item], address: str, state: OrderState
    ) -> dict[str, Any]:
        now = utcnow()
        return dict(
            id=order_id,
            state=state.value,
            payment_id=payment_id,
            items_json=[{"sku": i.sku, "qty": i.qty} for i in items],
            address=address,
            validated=False,
            created_at=now,
            updated_at=now,
        )

    def get_order(self, order_id: str) -> dict[str, Any]:
        return read_order(self.engine, order_id)

    def order_states(self, order_ids: Collection[str]) -> dict[str, str]:
        """The state of each order that has a row, in one query (the reviewers' long polls)."""
        with self.engine.connect() as conn:
            return {row.id: row.state for row in conn.execute(_STATES, {"ids": list(order_ids)})}

    def mark_validated(self, order_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.update(orders).where(orders.c.id == order_id).values(validated=True, updated_at=utcnow()))

    def advance_state(self, order_id: str, state: OrderState, reason: str | None = None) -> bool:
        """Persist ``state`` (the workflow decided it); a late or repeated write changes nothing."""
        with self.engine.begin() as conn:
            return advance(conn, order_id, state, reason)

    def update_address(self, order_id: str, address: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(orders)
                .where(orders.c.id == order_id, orders.c.state.not_in(TERMINAL))
                .values(address=address, updated_at=utcnow())
            )
