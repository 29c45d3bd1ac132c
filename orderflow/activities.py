"""Temporal activities: unpack the request, await the stub, return its result.

Business errors become non-retryable ``ApplicationError``s so the workflow
stops retrying at once; everything else (the injected ``RuntimeError``,
timeouts) is retried by the workflow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from orderflow import stubs
from orderflow.db.repository import Repository
from orderflow.errors import CarrierRejected, PaymentClosed, PaymentConflict
from orderflow.models import Activity, PaymentState, ProgressRecord, SettleRequest, ShipmentRequest, StepRequest

NON_RETRYABLE = (ValueError, PaymentConflict, PaymentClosed, CarrierRejected)


@contextmanager
def business_errors() -> Iterator[None]:
    try:
        yield
    except NON_RETRYABLE as err:
        raise ApplicationError(str(err), type=type(err).__name__, non_retryable=True) from err


def _order(req: StepRequest | ShipmentRequest) -> dict[str, Any]:
    return {"order_id": req.order_id, "items": [asdict(i) for i in req.items]}


class OrderActivities:
    """The order side: runs on the orders worker."""

    def __init__(self, db: Repository):
        self.db = db

    @activity.defn(name=Activity.RECEIVE_ORDER)
    async def receive_order(self, req: StepRequest) -> dict[str, Any]:
        with business_errors():
            return await stubs.order_received(req.order_id, self.db, req.payment_id, req.items, req.address)

    @activity.defn(name=Activity.VALIDATE_ORDER)
    async def validate_order(self, req: StepRequest) -> bool:
        with business_errors():
            return await stubs.order_validated(_order(req), self.db)

    @activity.defn(name=Activity.CHARGE_PAYMENT)
    async def charge_payment(self, req: StepRequest) -> dict[str, Any]:
        with business_errors():
            return await stubs.payment_charged(_order(req), req.payment_id, self.db)

    @activity.defn(name=Activity.REFUND_PAYMENT)
    async def refund_payment(self, req: StepRequest) -> PaymentState:
        with business_errors():
            return await stubs.payment_refunded(_order(req), req.payment_id, self.db)

    @activity.defn(name=Activity.MARK_SHIPPED)
    async def mark_shipped(self, req: StepRequest) -> str:
        with business_errors():
            return await stubs.order_shipped(_order(req), self.db)


class ShippingActivities:
    """The shipping side: runs on the shipping worker, on its own task queue."""

    def __init__(self, db: Repository):
        self.db = db

    @activity.defn(name=Activity.PREPARE_PACKAGE)
    async def prepare_package(self, req: ShipmentRequest) -> str:
        return await stubs.package_prepared(_order(req), self.db, req.shipment_no, req.address)

    @activity.defn(name=Activity.DISPATCH_CARRIER)
    async def dispatch_carrier(self, req: ShipmentRequest) -> str:
        with business_errors():
            return await stubs.carrier_dispatched(_order(req), self.db, req.shipment_no, req.address)

    @activity.defn(name=Activity.SETTLE_SHIPMENT)
    async def settle_shipment(self, req: SettleRequest) -> str:
        """Bookkeeping, not a carrier call: never flaky."""
        return await asyncio.to_thread(self.db.settle_shipment, req.order_id, req.shipment_no, req.status)


class ProgressActivities:
    """Bookkeeping the workflows ask for: audit events and state, never flaky."""

    def __init__(self, db: Repository):
        self.db = db

    @activity.defn(name=Activity.RECORD_PROGRESS)
    async def record_progress(self, rec: ProgressRecord) -> None:
        await asyncio.to_thread(self._write, rec)

    def _write(self, rec: ProgressRecord) -> None:
        if rec.address is not None:
            self.db.update_address(rec.order_id, rec.address)
        if rec.order is not None and rec.state is not None:  # an order ending unreceived is not lost
            self.db.insert_order(rec.order_id, rec.order.payment_id, rec.order.items, rec.order.address, rec.state)
        if rec.state is not None:
            self.db.advance_state(rec.order_id, rec.state, rec.reason)
        self.db.append_events(rec.events)


def all_activities(db: Repository) -> tuple[list, list]:
    """(orders-worker activities, shipping-worker activities)."""
    progress = ProgressActivities(db)
    orders = OrderActivities(db)
    shipping = ShippingActivities(db)
    return (
        [orders.receive_order, orders.validate_order, orders.charge_payment, orders.refund_payment,
         orders.mark_shipped, progress.record_progress],
        [shipping.prepare_package, shipping.dispatch_carrier, shipping.settle_shipment, progress.record_progress],
    )
