"""ShippingWorkflow: the child on ``shipping-tq`` that prepares and dispatches one shipment.

When dispatch cannot succeed it settles the shipment (so no late attempt can dispatch it
afterwards), signals the parent ``DispatchFailed(reason)`` and ends; the parent decides
whether to try another shipment. Its audit events travel to the parent in its result.

The parent talks to it with two signals, ``UpdateAddress`` and ``CancelShipment``. Like every
message they are let in between steps only (gate.Gate): one that arrives while the package is
prepared takes effect before the carrier is called; one that arrives during dispatch is too late.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from temporalio import workflow
from temporalio.exceptions import FailureError

from orderflow.models import SHIPPING_WORKFLOW, OrderState, ShippingRequest, ShippingResult, Signal, StepRequest
from orderflow.workflows.steps import AuditTrail, StepAbandoned, StepError, StepRunner

with workflow.unsafe.imports_passed_through():
    from orderflow.activities import ShippingActivities


# The child workflow type: started by OrderWorkflow on the shipping task queue, one per shipment.
@workflow.defn(name=SHIPPING_WORKFLOW)
class ShippingWorkflow:
    @workflow.init  # the input is here before any handler runs (the parent may signal at once)
    def __init__(self, req: ShippingRequest) -> None:
        self.req = req
        self.address = req.address
        self.dispatched = False
        self.cancel_requested = False
        self.trail = AuditTrail(req.order_id)  # its events reach the database through the parent
        self.steps = StepRunner(req.policy, self.trail)
        self.step = "prepare"  # what status() says the shipment is doing

    @workflow.run  # the result goes back to the parent, which awaits the child's handle
    async def run(self, req: ShippingRequest) -> ShippingResult:
        # A cancellation through Temporal (the Web UI, the CLI) is held like a signal: the body is
        # shielded from it, so it never interrupts a step (see gate.Gate).
        body = asyncio.create_task(self._ship(req))
        try:
            return await asyncio.shield(body)
        except asyncio.CancelledError:
            self.steps.gate.hold_or_apply(self._cancel)
            return await body

    async def _ship(self, req: ShippingRequest) -> ShippingResult:
        deadline = datetime.fromisoformat(req.deadline)
        try:
            await self.steps.run(
                ShippingActivities.prepare_package, self._request("prepare", OrderState.SHIPPING), deadline=deadline
            )
            # Between the two steps the gate opens (a 1 ms timer): an address change or a
            # cancellation that arrived while the package was prepared applies now.
            await self.steps.gate.open()
            if self.cancel_requested:
                return await self._cancelled()
            # The core retries dispatch up to ``dispatch_attempts`` times; the activity counts
            # attempts in the database, so a re-run of this task cannot add five more.
            self.step = "dispatch"
            dispatch = self._request("dispatch", OrderState.DISPATCHED)
            dispatch.max_attempts = req.policy.dispatch_attempts
            result = await self.steps.run(
                ShippingActivities.dispatch_carrier, dispatch, deadline=deadline, settle=False
            )
            sent_to = result.detail.get("address")  # where the parcel went, read from the shipment row
            if sent_to is not None:  # "" is an address too (an order may ship without one)
                self.address = sent_to
        except StepError as err:
            settled = await self.steps.settle(self._request("dispatch"), shipment_status="failed")
            if settled.shipment != "dispatched":
                await self._tell_parent(err.reason)
                return self._result(dispatched=False, reason=err.reason, out_of_time=isinstance(err, StepAbandoned))
            self.trail.record("late_dispatch_found", "dispatch", req.shipment_no)
            self.address = settled.address if settled.address is not None else self.address
        self.dispatched = True
        self.step = "done"
        self.trail.record("dispatched", "dispatch", req.shipment_no, address=self.address)
        return self._result(dispatched=True, reason=None)

    async def _cancelled(self) -> ShippingResult:
        """Cancelled before the carrier was called: fence the shipment so nothing dispatches it later."""
        settled = await self.steps.settle(self._request("dispatch"), shipment_status="cancelled")
        if settled.shipment == "dispatched":  # cannot happen before dispatch ran; the row is the truth
            self.dispatched = True
            self.address = settled.address if settled.address is not None else self.address
            self.trail.record("dispatched", "dispatch", self.req.shipment_no, address=self.address)
            return self._result(dispatched=True, reason=None)
        self.step = "cancelled"
        self.trail.record("shipment_cancelled", "shipping", self.req.shipment_no)
        return self._result(dispatched=False, reason="cancelled")

    async def _tell_parent(self, reason: str) -> None:
        # An external workflow handle: any workflow can signal another by its id (here the parent).
        parent = workflow.get_external_workflow_handle(self.req.parent_workflow_id)
        try:
            await parent.signal(Signal.DISPATCH_FAILED, reason)
        except FailureError as err:  # the parent ended meanwhile: our result is what it needs
            self.trail.record("parent_unreachable", "shipping", error=str(err))

    def _request(self, step: str, state: OrderState | None = None) -> StepRequest:
        return StepRequest(
            order_id=self.req.order_id,
            step=step,
            items=self.req.items,
            address=self.address,
            shipment_no=self.req.shipment_no,
            state=state,
        )

    def _result(self, dispatched: bool, reason: str | None, out_of_time: bool = False) -> ShippingResult:
        return ShippingResult(
            shipment_no=self.req.shipment_no,
            dispatched=dispatched,
            address=self.address,
            reason=reason,
            steps=dict(self.steps.stats),
            events=list(self.trail.events),
            out_of_time=out_of_time,
            errors=list(self.steps.errors),
        )

    # -- messages from the parent: held while a step runs (gate.Gate) ----------------------
    # Signals: one-way messages, recorded in this history; the handlers only change state.
    @workflow.signal(name=Signal.UPDATE_ADDRESS)
    def update_address(self, new_address: str) -> None:
        """Reaches the dispatch step if it has not begun."""
        self.steps.gate.hold_or_apply(lambda: self._adopt(new_address))

    @workflow.signal(name=Signal.CANCEL_SHIPMENT)
    def cancel_shipment(self) -> None:
        """Stops the shipment if the carrier has not been called yet."""
        self.steps.gate.hold_or_apply(self._cancel)

    def _adopt(self, new_address: str) -> None:
        if self.step != "prepare":
            self.trail.record("signal_rejected", name=Signal.UPDATE_ADDRESS, detail="dispatch had begun")
            return
        self.address = new_address
        self.trail.record("signal_accepted", name=Signal.UPDATE_ADDRESS, detail=new_address)

    def _cancel(self) -> None:
        self.cancel_requested = True

    @workflow.query(name="status")  # read-only: the Web UI and the CLI can ask a shipment where it is
    def status(self) -> dict:
        return {
            "order_id": self.req.order_id,
            "shipment_no": self.req.shipment_no,
            "step": self.step,
            "address": self.address,
            "dispatched": self.dispatched,
            "cancel_requested": self.cancel_requested,
            "recent_errors": list(self.steps.errors),
        }
