"""The assignment's function stubs: the fault injector and the six business functions.

``flaky_call`` is the assignment's, unchanged: every stub awaits it first and
records its side effect in the database only after it succeeds. The database
work runs in a thread so a slow write never blocks the worker's event loop.
"""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

from orderflow.db.repository import Repository
from orderflow.errors import CarrierRejected
from orderflow.models import Item, OrderState, PaymentState


async def flaky_call() -> None:
    """Fail a third of the time, hang (until the activity timeout cuts it) a third, else succeed."""
    rand_num = random.random()
    if rand_num < 0.33:
        raise RuntimeError("Forced failure for testing")
    if rand_num < 0.67:
        await asyncio.sleep(300)


async def order_received(
    order_id: str, db: Repository, payment_id: str, items: list[Item], address: str
) -> dict[str, Any]:
    await flaky_call()
    await asyncio.to_thread(db.insert_order, order_id, payment_id, items, address)
    return {"order_id": order_id, "items": [{"sku": i.sku, "qty": i.qty} for i in items]}


async def order_validated(order: dict[str, Any], db: Repository) -> bool:
    await flaky_call()
    stored = await asyncio.to_thread(db.get_order, order["order_id"])
    if not stored["items_json"]:
        raise ValueError("No items to validate")
    await asyncio.to_thread(db.mark_validated, order["order_id"])
    return True


async def payment_charged(order: dict[str, Any], payment_id: str, db: Repository) -> dict[str, Any]:
    await flaky_call()
    amount = sum(i.get("qty", 1) for i in order.get("items", []))
    charged = await asyncio.to_thread(db.charge_payment, payment_id, order["order_id"], amount)
    return {"status": "charged", "amount": charged}


async def order_shipped(order: dict[str, Any], db: Repository) -> str:
    await flaky_call()
    await asyncio.to_thread(db.advance_state, order["order_id"], OrderState.SHIPPED)
    return "Shipped"


async def package_prepared(order: dict[str, Any], db: Repository, shipment_no: int, address: str) -> str:
    await flaky_call()
    await asyncio.to_thread(db.prepare_shipment, order["order_id"], shipment_no, address)
    return "Package ready"


PO_BOX = re.compile(r"\bp\.?\s*o\.?\s*box\b", re.IGNORECASE)


async def carrier_dispatched(order: dict[str, Any], db: Repository, shipment_no: int, address: str) -> str:
    await flaky_call()
    if PO_BOX.search(address):
        raise CarrierRejected(f"the carrier does not deliver to PO boxes ({address!r})")
    await asyncio.to_thread(db.dispatch_shipment, order["order_id"], shipment_no, address)
    return "Dispatched"


async def payment_refunded(order: dict[str, Any], payment_id: str, db: Repository) -> PaymentState:
    """Our compensation, written like the stubs: a refund is a flaky external call too."""
    await flaky_call()
    return await asyncio.to_thread(db.refund_payment, payment_id, order["order_id"])
