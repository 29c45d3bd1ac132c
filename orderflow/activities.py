"""Temporal activities: each runs one step's attempt (or a bookkeeping write) against the stubs.

Every step attempt goes through ``run_attempt``, which makes the step idempotent by its key
(workflow id / run id / step):

1. count the attempt in the ``steps`` row (and write the workflow's audit events it carries);
   a step that already has an outcome answers with it and calls nothing;
2. call the stub (``flaky_call()``, then its database work);
3. record what happened: a failed attempt as ``attempt_failed #n``; a business error (or the
   last allowed attempt failing) as the step's final ``failed`` outcome; a success as
   ``succeeded`` with its result. The first outcome recorded is final for the key.

Business errors become non-retryable ``ApplicationError``s so the core stops retrying at once;
the injected ``RuntimeError`` and timeouts are retried by the core (the workflow's RetryPolicy).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

from temporalio import activity
from temporalio.api.failure.v1 import Failure
from temporalio.converter import DefaultFailureConverter, PayloadConverter
from temporalio.exceptions import ApplicationError

from orderflow import stubs
from orderflow.db.repository import Repository, StepRecord
from orderflow.errors import CarrierRejected, PaymentClosed, PaymentConflict, ShipmentClosed
from orderflow.models import (
    Activity,
    AuditEvent,
    PaymentState,
    ProgressRecord,
    Settled,
    SettleRequest,
    StepRequest,
    StepResult,
)

LOG = logging.getLogger(__name__)
NON_RETRYABLE = (ValueError, PaymentConflict, PaymentClosed, CarrierRejected, ShipmentClosed)


class AttemptFailed(ApplicationError):
    """An expected, retryable fault of one attempt (the injected RuntimeError), already written
    to the audit trail. It crosses to Temporal without a stack trace (``QuietFailureConverter``)."""


class QuietFailureConverter(DefaultFailureConverter):
    """Expected faults cross to Temporal without a stack trace: an ``AttemptFailed`` carries none,
    nor does an attempt cancelled by its own timeout (the trace only shows where the hang was
    waiting). Formatting them cost CPU (docs/performance.md#what-an-order-costs); every other
    error keeps its trace."""

    def to_failure(self, exception: BaseException, payload_converter: PayloadConverter, failure: Failure) -> None:
        if isinstance(exception, (AttemptFailed, asyncio.CancelledError)):
            exception.__traceback__ = None
        super().to_failure(exception, payload_converter, failure)


def _report_background_failure(written: asyncio.Future) -> None:
    """A timed-out attempt's event is written in the background; if the database is down then,
    say so in one line (close_step backfills the event later) instead of asyncio's
    "Future exception was never retrieved" traceback (seen in the database-cut soak)."""
    if not written.cancelled() and written.exception() is not None:
        LOG.warning("timed-out attempt not recorded yet: %s", _one_line(written.exception()))


def _one_line(err: BaseException | None) -> str:
    return str(err).splitlines()[0] if err is not None and str(err) else type(err).__name__


def step_key(workflow_id: str, run_id: str, step: str) -> str:
    return f"{workflow_id}/{run_id}/{step}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _answer(record: StepRecord) -> StepResult:
    """The step's recorded outcome as this activity's answer: a result, or a non-retryable error."""
    if record.status == "succeeded":
        result = record.result or {}
        return StepResult(
            result.get("value"),
            record.attempts,
            record.failures,
            record.timeouts,
            result.get("detail") or {},
            record.attempt_errors or [],
        )
    stats = {
        "attempts": record.attempts,
        "failures": record.failures,
        "timeouts": record.timeouts,
        "errors": record.attempt_errors or [],
    }
    message = record.error or f"the step was {record.status}"
    raise ApplicationError(message, stats, type=f"Step{record.status.capitalize()}", non_retryable=True)


def _order(req: StepRequest) -> dict[str, Any]:
    return {"order_id": req.order_id, "items": [asdict(i) for i in req.items]}


class StepActivities:
    """What both workers' step activities share: the repository and the attempt protocol."""

    def __init__(self, db: Repository):
        self.db = db

    async def run_attempt(
        self,
        req: StepRequest,
        call: Callable[[], Awaitable[Any]],
        detail: Callable[[Any], dict] = lambda _value: {},
    ) -> StepResult:
        info = activity.info()
        key = step_key(info.workflow_id or "", info.workflow_run_id or "", req.step)
        n, record = await asyncio.to_thread(self.db.begin_attempt, key, req.order_id, req.step, info.attempt == 1)
        if record.final:
            return _answer(record)  # executed again (a discarded workflow task): same outcome
        try:
            value = await call()
        except NON_RETRYABLE as err:
            message = str(err)
            await asyncio.to_thread(
                self.db.record_attempt, key, self._event(req, key, n, "step_failed", message), False
            )
            return await self._close_failed(req, key, message)
        except asyncio.CancelledError:
            details = activity.cancellation_details()
            if details is not None and details.timed_out:
                # Written in the background: the core is already starting the next attempt.
                event = self._event(req, key, n, "attempt_timed_out", "timed out")
                written = asyncio.get_running_loop().run_in_executor(None, self.db.record_attempt, key, event, False)
                written.add_done_callback(_report_background_failure)
            raise
        except Exception as err:  # noqa: BLE001 - the injected fault, or a database error: retried by the core
            message = f"{type(err).__name__}: {err}" if not isinstance(err, RuntimeError) else str(err)
            await asyncio.to_thread(
                self.db.record_attempt, key, self._event(req, key, n, "attempt_failed", message), True
            )
            if req.max_attempts and n >= req.max_attempts:
                return await self._close_failed(req, key, f"failed {n} times, last: {message}")
            raise AttemptFailed(message, type=type(err).__name__) from None
        timeout_event = self._event(req, key, 0, "attempt_timed_out")

        def close() -> StepRecord:  # one thread hop for both: each hop costs a loop wake-up
            result = {"value": value, "detail": detail(value)}
            return self.db.close_step(
                key,
                "succeeded",
                result=result,
                order_state=req.state,
                order_id=req.order_id,
                address=req.address if req.state is not None else None,
                timeout_event=timeout_event,
            )

        return _answer(await asyncio.to_thread(close))

    async def _close_failed(self, req: StepRequest, key: str, error: str) -> StepResult:
        """Record the step as failed (the first outcome wins) and answer with its final record."""
        record = await asyncio.to_thread(
            self.db.close_step, key, "failed", error=error, timeout_event=self._event(req, key, 0, "attempt_timed_out")
        )
        return _answer(record)

    @staticmethod
    def _event(req: StepRequest, key: str, n: int, event_type: str, error: str | None = None) -> AuditEvent:
        detail: dict[str, Any] = {"error": error} if error else {}
        if req.shipment_no:
            detail["shipment_no"] = req.shipment_no
        return AuditEvent(
            key=f"step:{key}#{n}",
            order_id=req.order_id,
            type=event_type,
            ts=_now(),
            step=req.step,
            attempt=n,
            detail=detail,
        )


class OrderActivities(StepActivities):
    """The order side: runs on the orders worker."""

    @activity.defn(name=Activity.RECEIVE_ORDER)
    async def receive_order(self, req: StepRequest) -> StepResult:
        return await self.run_attempt(
            req, lambda: stubs.order_received(req.order_id, self.db, req.payment_id, req.items, req.address)
        )

    @activity.defn(name=Activity.VALIDATE_ORDER)
    async def validate_order(self, req: StepRequest) -> StepResult:
        return await self.run_attempt(req, lambda: stubs.order_validated(_order(req), self.db))

    @activity.defn(name=Activity.CHARGE_PAYMENT)
    async def charge_payment(self, req: StepRequest) -> StepResult:
        return await self.run_attempt(
            req,
            lambda: stubs.payment_charged(_order(req), req.payment_id, self.db),
            lambda value: {"amount": value["amount"]},
        )

    @activity.defn(name=Activity.REFUND_PAYMENT)
    async def refund_payment(self, req: StepRequest) -> StepResult:
        return await self.run_attempt(req, lambda: stubs.payment_refunded(_order(req), req.payment_id, self.db))

    @activity.defn(name=Activity.MARK_SHIPPED)
    async def mark_shipped(self, req: StepRequest) -> StepResult:
        return await self.run_attempt(req, lambda: stubs.order_shipped(_order(req), self.db))


class ShippingActivities(StepActivities):
    """The shipping side: runs on the shipping worker, on its own task queue."""

    @activity.defn(name=Activity.PREPARE_PACKAGE)
    async def prepare_package(self, req: StepRequest) -> StepResult:
        return await self.run_attempt(
            req, lambda: stubs.package_prepared(_order(req), self.db, req.shipment_no, req.address)
        )

    @activity.defn(name=Activity.DISPATCH_CARRIER)
    async def dispatch_carrier(self, req: StepRequest) -> StepResult:
        """The result's ``detail["address"]`` is where the parcel went, read from the shipment row."""
        return await self.run_attempt(
            req,
            lambda: stubs.carrier_dispatched(_order(req), self.db, req.shipment_no, req.address),
            lambda _value: {"address": self.db.shipment_address(req.order_id, req.shipment_no)},
        )


class ProgressActivities:
    """Bookkeeping the workflows ask for (database only, never flaky); on both workers."""

    def __init__(self, db: Repository):
        self.db = db

    @activity.defn(name=Activity.RECORD_PROGRESS)
    async def record_progress(self, rec: ProgressRecord) -> int:
        """Persist the workflow's decisions; returns how many workflow events the trail holds."""
        await asyncio.to_thread(self._write, rec)
        return len(rec.events)

    def _write(self, rec: ProgressRecord) -> None:
        row = None
        if rec.order is not None and rec.state is not None:  # an order ending unreceived is not lost
            row = self.db.order_row(rec.order_id, rec.order.payment_id, rec.order.items, rec.order.address, rec.state)
        self.db.write_progress(
            rec.order_id,
            rec.events,
            state=rec.state,
            reason=rec.reason,
            address=rec.address,
            complete_prefix=rec.workflow_prefix if rec.complete else None,
            order_row=row,
        )

    @activity.defn(name=Activity.CLOSE_PAYMENT)
    async def close_payment(self, req: StepRequest) -> PaymentState:
        """Void the payment id of an order ending uncharged; CHARGED: an unrecorded charge to refund."""
        return await asyncio.to_thread(self.db.close_payment, req.payment_id, req.order_id)

    @activity.defn(name=Activity.SETTLE_STEP)
    async def settle_step(self, req: SettleRequest) -> Settled:
        return await asyncio.to_thread(self._settle, req)

    def _settle(self, req: SettleRequest) -> Settled:
        key = step_key(req.workflow_id, req.run_id, req.step)
        record = self.db.settle_step(key, req.order_id, req.step)
        settled = Settled(record.status, record.attempts, record.failures, record.timeouts, record.error)
        if record.status == "succeeded":
            settled.result = _answer(record)
        if req.shipment_status:
            settled.shipment = self.db.settle_shipment(req.order_id, req.shipment_no, req.shipment_status)
            if settled.shipment == "dispatched":
                settled.address = self.db.shipment_address(req.order_id, req.shipment_no)
        return settled


def all_activities(db: Repository) -> tuple[list, list]:
    """(orders-worker activities, shipping-worker activities)."""
    progress = ProgressActivities(db)
    orders = OrderActivities(db)
    shipping = ShippingActivities(db)
    bookkeeping = [progress.record_progress, progress.settle_step]
    return (
        [
            orders.receive_order,
            orders.validate_order,
            orders.charge_payment,
            orders.refund_payment,
            orders.mark_shipped,
            progress.close_payment,
            *bookkeeping,
        ],
        [shipping.prepare_package, shipping.dispatch_carrier, *bookkeeping],
    )
