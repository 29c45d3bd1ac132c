"""ShippingWorkflow: the child on ``shipping-tq`` that prepares and dispatches one shipment.

When dispatch cannot succeed it signals the parent ``DispatchFailed(reason)``
and ends; the parent decides whether to try another shipment.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from temporalio import workflow

from orderflow.models import (
    Activity,
    SettleRequest,
    ShipmentRequest,
    ShippingRequest,
    ShippingResult,
    Signal,
)
from orderflow.workflows.steps import StepError, StepRunner


@workflow.defn(name="ShippingWorkflow")
class ShippingWorkflow:
    @workflow.init
    def __init__(self, req: ShippingRequest) -> None:
        self.req = req
        self.address = req.address
        self.dispatched = False
        self.runner = StepRunner(req.order_id, req.policy)

    @workflow.run
    async def run(self, req: ShippingRequest) -> ShippingResult:
        deadline = datetime.fromisoformat(req.deadline)
        try:
            await self.runner.run("prepare", Activity.PREPARE_PACKAGE, self._request, deadline=deadline)
            await self.runner.run(
                "dispatch", Activity.DISPATCH_CARRIER, self._request,
                deadline=deadline, max_attempts=req.policy.dispatch_attempts,
            )
        except StepError as err:
            if await self._settle("failed") != "dispatched":
                await self.runner.flush()
                parent = workflow.get_external_workflow_handle(req.parent_workflow_id)
                await parent.signal(Signal.DISPATCH_FAILED, err.reason)
                return self._result(dispatched=False, reason=err.reason)
            self.runner.event("late_dispatch_found", "dispatch", req.shipment_no)
        except asyncio.CancelledError:
            if await self._settle("cancelled") != "dispatched":
                self.runner.event("shipment_cancelled", "shipping", req.shipment_no)
                await self.runner.flush()
                raise
            self.runner.event("late_dispatch_found", "dispatch", req.shipment_no)  # too late to cancel
        self.dispatched = True
        self.runner.event("dispatched", "dispatch", req.shipment_no, address=self.address)
        await self.runner.flush()
        return self._result(dispatched=True, reason=None)

    async def _settle(self, status: str) -> str:
        """Close the shipment unless an attempt that timed out did dispatch it after all."""
        return await self.runner.bookkeeping(
            Activity.SETTLE_SHIPMENT, SettleRequest(self.req.order_id, self.req.shipment_no, status), str
        )

    def _request(self, attempt: int) -> ShipmentRequest:
        return ShipmentRequest(
            order_id=self.req.order_id,
            shipment_no=self.req.shipment_no,
            address=self.address,
            items=self.req.items,
            attempt=attempt,
        )

    def _result(self, dispatched: bool, reason: str | None) -> ShippingResult:
        return ShippingResult(
            shipment_no=self.req.shipment_no,
            dispatched=dispatched,
            address=self.address,
            reason=reason,
            steps=dict(self.runner.steps),
        )

    @workflow.signal(name=Signal.UPDATE_ADDRESS)
    def update_address(self, new_address: str) -> None:
        if self.dispatched:
            self.runner.event("signal_rejected", name=Signal.UPDATE_ADDRESS, detail="already dispatched")
            return
        self.address = new_address
        self.runner.event("signal_accepted", name=Signal.UPDATE_ADDRESS, detail=new_address)

    @workflow.query(name="status")
    def status(self) -> dict:
        return {
            "order_id": self.req.order_id,
            "shipment_no": self.req.shipment_no,
            "step": self.runner.current_step,
            "address": self.address,
            "dispatched": self.dispatched,
            "recent_errors": list(self.runner.errors),
        }
