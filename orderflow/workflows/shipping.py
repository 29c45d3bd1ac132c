"""ShippingWorkflow: the child on ``shipping-tq`` that prepares and dispatches one shipment.

When dispatch cannot succeed it settles the shipment (so no late attempt can dispatch it
afterwards), signals the parent ``DispatchFailed(reason)`` and ends; the parent decides
whether to try another shipment. Its audit events travel to the parent in its result.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import FailureError

from orderflow.models import OrderState, ShippingRequest, ShippingResult, Signal, StepRequest
from orderflow.workflows.steps import AuditTrail, StepAbandoned, StepError, StepRunner

with workflow.unsafe.imports_passed_through():
    from orderflow.activities import ShippingActivities


@workflow.defn(name="ShippingWorkflow")
class ShippingWorkflow:
    @workflow.init
    def __init__(self, req: ShippingRequest) -> None:
        self.req = req
        self.address = req.address
        self.dispatched = False
        self.trail = AuditTrail(req.order_id)  # its events reach the database through the parent
        self.steps = StepRunner(req.policy, self.trail)
        self.step = "prepare"  # what status() says the shipment is doing

    @workflow.run
    async def run(self, req: ShippingRequest) -> ShippingResult:
        deadline = datetime.fromisoformat(req.deadline)
        try:
            await self.steps.run(
                ShippingActivities.prepare_package, self._request("prepare", OrderState.SHIPPING), deadline=deadline
            )
            # A step's retries run inside one workflow task, so signals wait for its end. A 1 ms
            # timer ends the task here: an UpdateAddress that arrived while the package was being
            # prepared is applied before the carrier is called (and reaches this shipment).
            await workflow.sleep(timedelta(milliseconds=1), summary="take address changes before dispatch")
            # The core retries dispatch up to ``dispatch_attempts`` times; the activity counts
            # attempts in the database, so a re-run of this task cannot add five more.
            self.step = "dispatch"
            dispatch = self._request("dispatch", OrderState.DISPATCHED)
            dispatch.max_attempts = req.policy.dispatch_attempts
            result = await self.steps.run(
                ShippingActivities.dispatch_carrier, dispatch, deadline=deadline, settle=False
            )
            self.address = result.detail.get("address") or self.address
        except StepError as err:
            settled = await self.steps.settle(self._request("dispatch"), shipment_status="failed")
            if settled.shipment != "dispatched":
                await self._tell_parent(err.reason)
                return self._result(dispatched=False, reason=err.reason, out_of_time=isinstance(err, StepAbandoned))
            self.trail.record("late_dispatch_found", "dispatch", req.shipment_no)
            self.address = settled.address or self.address
        except asyncio.CancelledError:
            settled = await self.steps.settle(self._request("dispatch"), shipment_status="cancelled")
            if settled.shipment != "dispatched":
                self.trail.record("shipment_cancelled", "shipping", req.shipment_no)
                raise
            self.trail.record("late_dispatch_found", "dispatch", req.shipment_no)  # too late to cancel
            self.address = settled.address or self.address
        self.dispatched = True
        self.trail.record("dispatched", "dispatch", req.shipment_no, address=self.address)
        return self._result(dispatched=True, reason=None)

    async def _tell_parent(self, reason: str) -> None:
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
        )

    @workflow.signal(name=Signal.UPDATE_ADDRESS)
    def update_address(self, new_address: str) -> None:
        """Reaches the dispatch step if it has not begun (a step's attempts share one input)."""
        if self.dispatched:
            self.trail.record("signal_rejected", name=Signal.UPDATE_ADDRESS, detail="already dispatched")
            return
        self.address = new_address
        self.trail.record("signal_accepted", name=Signal.UPDATE_ADDRESS, detail=new_address)

    @workflow.query(name="status")
    def status(self) -> dict:
        return {
            "order_id": self.req.order_id,
            "shipment_no": self.req.shipment_no,
            "step": self.step,
            "address": self.address,
            "dispatched": self.dispatched,
            "recent_errors": list(self.steps.errors),
        }
