"""OrderWorkflow: receive, validate, manual review, charge, ship, with compensation.

Deterministic orchestration only: no I/O, no clocks but ``workflow.now()``.
Every order ends (shipped, cancelled or failed) before ``budget_seconds``:
steps stop retrying at ``work_deadline``, which keeps a reserve for the refund.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError, ChildWorkflowError

from orderflow.models import (
    LIFECYCLE,
    Activity,
    OrderRequest,
    OrderResult,
    OrderState,
    OrderStatus,
    PaymentState,
    ShippingRequest,
    ShippingResult,
    Signal,
    SignalRecord,
    StepRequest,
    StepStats,
    Update,
)
from orderflow.workflows.shipping import ShippingWorkflow
from orderflow.workflows.steps import StepError, StepInterrupted, StepRunner

CHILD_TASK_TIMEOUT = timedelta(seconds=5)


class OrderCancelled(Exception):
    pass


@workflow.defn(name="OrderWorkflow")
class OrderWorkflow:
    @workflow.init
    def __init__(self, req: OrderRequest) -> None:
        self.req = req
        self.policy = req.policy
        self.state = OrderState.STARTED
        self.address = req.address
        self.payment = PaymentState.NONE
        self.shipping = "not started"
        self.shipping_attempts = 0
        self.approved = False
        self.cancel_requested = False
        self.cancel_reason = ""
        self.reason: str | None = None
        self.signals: list[SignalRecord] = []
        self.dispatch_failures: list[str] = []
        self.shipping_steps: dict[str, StepStats] = {}
        self.runner = StepRunner(req.order_id, req.policy)
        self.started = workflow.info().workflow_start_time
        self.deadline = self.started + timedelta(seconds=req.budget_seconds)
        self.work_deadline = self.deadline - timedelta(seconds=self.policy.refund_reserve_seconds)
        self._child: workflow.ChildWorkflowHandle | None = None

    # -- the lifecycle ----------------------------------------------------------------
    @workflow.run
    async def run(self, req: OrderRequest) -> OrderResult:
        lifecycle = asyncio.create_task(self._lifecycle())
        try:
            await asyncio.shield(lifecycle)
        except asyncio.CancelledError:
            # A cancellation through Temporal (client cancel(), Web UI) becomes a CancelOrder:
            # the shielded lifecycle sees the flag at its next checkpoint and compensates.
            self.cancel_signal("cancelled through Temporal")
            await lifecycle
            if self.state == OrderState.CANCELLED:
                await workflow.wait_condition(workflow.all_handlers_finished)
                raise
        await workflow.wait_condition(workflow.all_handlers_finished)
        return OrderResult(
            order_id=req.order_id,
            state=self.state,
            payment=self.payment,
            reason=self.reason,
            shipping_attempts=self.shipping_attempts,
            elapsed_seconds=(workflow.now() - self.started).total_seconds(),
        )

    async def _lifecycle(self) -> None:
        self.runner.event("order_started", payment_id=self.req.payment_id, budget_seconds=self.req.budget_seconds,
                          deadline=self.deadline.isoformat())
        try:
            await self._step("receive", Activity.RECEIVE_ORDER, interruptible=False)
            await self._advance(OrderState.RECEIVED)
            await self._step("validate", Activity.VALIDATE_ORDER)
            await self._advance(OrderState.VALIDATED)
            await self._review()
            self.payment = PaymentState.CHARGING
            await self._step("charge", Activity.CHARGE_PAYMENT)
            self.payment = PaymentState.CHARGED
            await self._advance(OrderState.CHARGED)
            await self._ship()
            await self._mark_shipped()
        except (OrderCancelled, StepInterrupted):
            await self._abort(OrderState.CANCELLED, self.cancel_reason or "cancelled")
        except StepError as err:
            await self._abort(OrderState.FAILED, err.reason)

    async def _step(self, step: str, activity: str, *, interruptible: bool = True) -> object:
        return await self.runner.run(
            step,
            activity,
            self._request,
            deadline=self.work_deadline,
            stop=(lambda: self.cancel_requested) if interruptible else None,
        )

    def _request(self, attempt: int) -> StepRequest:
        return StepRequest(
            order_id=self.req.order_id,
            payment_id=self.req.payment_id,
            items=self.req.items,
            address=self.address,
            attempt=attempt,
        )

    async def _review(self) -> None:
        """Wait for a human's approval, or a cancellation, until the review deadline."""
        await self._advance(OrderState.AWAITING_REVIEW)
        self.runner.current_step = "review"
        now = workflow.now()
        review_deadline = self.work_deadline - timedelta(seconds=self.policy.post_review_reserve_seconds)
        if self.req.review_timeout_seconds is not None:
            review_deadline = min(review_deadline, now + timedelta(seconds=self.req.review_timeout_seconds))
        timeout = max((review_deadline - now).total_seconds(), 0.001)
        try:
            await workflow.wait_condition(
                lambda: self.approved or self.cancel_requested, timeout=timeout, timeout_summary="manual review deadline"
            )
        except asyncio.TimeoutError:
            self.cancel_reason = "manual review deadline passed without approval"
            raise OrderCancelled() from None
        if self.cancel_requested:
            raise OrderCancelled()
        await self._advance(OrderState.APPROVED)

    async def _ship(self) -> None:
        """Run ShippingWorkflow children until one dispatches, within the budget."""
        min_time = timedelta(seconds=2 * self.policy.attempt_timeout_seconds)
        for shipment_no in range(1, self.policy.shipping_attempts + 1):
            if workflow.now() + min_time > self.work_deadline:
                break
            self.shipping_attempts = shipment_no
            self.shipping = f"shipment {shipment_no}: in progress"
            await self._advance(OrderState.SHIPPING)
            self.runner.current_step = "shipping"
            result = await self._run_child(shipment_no)
            for name, stats in result.steps.items():
                total = self.shipping_steps.setdefault(name, StepStats())
                total.attempts += stats.attempts
                total.failures += stats.failures
                total.timeouts += stats.timeouts
                total.state = stats.state
            if result.dispatched:
                self._dispatched(result)
                return
            self.shipping = f"shipment {shipment_no}: failed ({result.reason})"
            self.runner.event("shipment_failed", "shipping", shipment_no, reason=result.reason)
            if self.cancel_requested:
                raise OrderCancelled()
        raise StepError("shipping", f"shipping failed {self.shipping_attempts} times: {self.shipping}")

    async def _run_child(self, shipment_no: int) -> ShippingResult:
        info = workflow.info()
        child = await workflow.start_child_workflow(
            ShippingWorkflow.run,
            ShippingRequest(
                order_id=self.req.order_id,
                shipment_no=shipment_no,
                address=self.address,
                items=self.req.items,
                deadline=self.work_deadline.isoformat(),
                parent_workflow_id=info.workflow_id,
                policy=self.policy,
            ),
            id=f"{info.workflow_id}-shipping-{shipment_no}",
            task_queue=self.req.shipping_task_queue,
            task_timeout=CHILD_TASK_TIMEOUT,
        )
        self._child = child
        try:
            await workflow.wait_condition(lambda: child.done() or self.cancel_requested)
            if not child.done():
                child.cancel()
            try:
                return await child
            except ChildWorkflowError as err:  # cancelled, or failed unexpectedly
                return ShippingResult(shipment_no, dispatched=False, address=self.address, reason=str(err.cause or err))
        finally:
            self._child = None

    def _dispatched(self, result: ShippingResult) -> None:
        self.state = OrderState.DISPATCHED
        self.shipping = f"shipment {result.shipment_no}: dispatched"
        if result.address != self.address:
            self.runner.event("address_update_too_late", "shipping", used=result.address, requested=self.address)
            self.address = result.address
        if self.cancel_requested:
            self.cancel_requested = False
            self.runner.event("cancel_overtaken_by_dispatch", "shipping")
            self._record(Signal.CANCEL, False, "the parcel was dispatched before the cancellation took effect")

    async def _mark_shipped(self) -> None:
        await self.runner.run("mark_shipped", Activity.MARK_SHIPPED, self._request)
        await self._finish(OrderState.SHIPPED, None)

    async def _abort(self, state: OrderState, reason: str) -> None:
        """Compensate: refund whatever may have been charged (shipping has stopped), then end."""
        self.reason = reason
        if self.payment in (PaymentState.CHARGING, PaymentState.CHARGED, PaymentState.REFUNDING):
            self.payment = PaymentState.REFUNDING
            self.runner.event("compensation_started", "refund", reason=reason)
            self.payment = await self.runner.run(
                "refund", Activity.REFUND_PAYMENT, self._request, result_type=PaymentState
            )
            self.runner.event("compensation_finished", "refund", payment=self.payment.value)
        await self._finish(state, reason)

    async def _advance(self, state: OrderState) -> None:
        """Enter ``state``. The stubs persist received/validated/charged/dispatched/shipped
        themselves; the workflow writes only the states no stub knows about."""
        self.state = state
        self.runner.event("state_changed", state=state.value)
        if state == OrderState.AWAITING_REVIEW:
            await self.runner.flush(state)

    async def _finish(self, state: OrderState, reason: str | None) -> None:
        self.state = state
        self.reason = reason
        self.runner.current_step = "done"
        elapsed = (workflow.now() - self.started).total_seconds()
        self.runner.event(f"order_{state.value}", reason=reason, payment=self.payment.value, elapsed_seconds=elapsed)
        await self.runner.flush(state, reason, order=self._request(0))

    # -- signals, updates and the query -------------------------------------------------
    def _record(self, name: str, accepted: bool, detail: str) -> None:
        self.signals.append(SignalRecord(name, accepted, detail, workflow.now().isoformat()))
        self.runner.event("signal_accepted" if accepted else "signal_rejected", name=name, detail=detail)

    def _approve_refusal(self) -> str | None:
        if self.state != OrderState.AWAITING_REVIEW:
            return f"order is not awaiting review (state {self.state.value})"
        if self.approved or self.cancel_requested:
            return "order was already approved" if self.approved else "order is being cancelled"
        return None

    def _cancel_refusal(self) -> str | None:
        if self.state.terminal:
            return f"order already ended ({self.state.value})"
        if self.state == OrderState.DISPATCHED:
            return "order was already dispatched"
        if self.cancel_requested:
            return "order is already being cancelled"
        return None

    def _address_refusal(self, new_address: str) -> str | None:
        if not new_address or not new_address.strip():
            return "new address is empty"
        if self.state.terminal:
            return f"order already ended ({self.state.value})"
        if self.state == OrderState.DISPATCHED:
            return "order was already dispatched"
        return None

    def _approve(self) -> str:
        self.approved = True
        self._record(Signal.APPROVE, True, "approved")
        return "approved"

    def _cancel(self, reason: str) -> str:
        self.cancel_requested = True
        self.cancel_reason = reason or "cancelled by request"
        self._record(Signal.CANCEL, True, self.cancel_reason)
        return "cancellation accepted" + (
            "; the payment will be refunded" if self.payment != PaymentState.NONE else ""
        )

    async def _change_address(self, new_address: str) -> str:
        self.address = new_address
        self._record(Signal.UPDATE_ADDRESS, True, new_address)
        if self._child is not None and not self._child.done():
            await self._child.signal(Signal.UPDATE_ADDRESS, new_address)
        await self.runner.flush(address=new_address)
        return "address updated"

    @workflow.signal(name=Signal.APPROVE)
    def approve_signal(self) -> None:
        refusal = self._approve_refusal()
        if refusal:
            self._record(Signal.APPROVE, False, refusal)
        else:
            self._approve()

    @workflow.signal(name=Signal.CANCEL)
    def cancel_signal(self, reason: str = "") -> None:
        refusal = self._cancel_refusal()
        if refusal:
            self._record(Signal.CANCEL, False, refusal)
        else:
            self._cancel(reason)

    @workflow.signal(name=Signal.UPDATE_ADDRESS)
    async def update_address_signal(self, new_address: str) -> None:
        refusal = self._address_refusal(new_address)
        if refusal:
            self._record(Signal.UPDATE_ADDRESS, False, refusal)
        else:
            await self._change_address(new_address)

    @workflow.signal(name=Signal.DISPATCH_FAILED)
    def dispatch_failed(self, reason: str) -> None:
        self.dispatch_failures.append(reason)
        self.runner.event("dispatch_failed", "shipping", len(self.dispatch_failures), reason=reason)

    @workflow.update(name=Update.APPROVE)
    def approve_update(self) -> str:
        return self._approve()

    @approve_update.validator
    def _validate_approve(self) -> None:
        _reject_if(self._approve_refusal())

    @workflow.update(name=Update.CANCEL)
    def cancel_update(self, reason: str = "") -> str:
        return self._cancel(reason)

    @cancel_update.validator
    def _validate_cancel(self, reason: str = "") -> None:
        _reject_if(self._cancel_refusal())

    @workflow.update(name=Update.UPDATE_ADDRESS)
    async def update_address_update(self, new_address: str) -> str:
        return await self._change_address(new_address)

    @update_address_update.validator
    def _validate_address(self, new_address: str) -> None:
        _reject_if(self._address_refusal(new_address))

    @workflow.update(name=Update.WAIT_FOR_REVIEW)
    async def wait_for_review(self) -> OrderState:
        """Return once the order awaits review or has moved past it: a reviewer's long poll."""
        await workflow.wait_condition(
            lambda: self.state.terminal or LIFECYCLE.index(self.state) >= LIFECYCLE.index(OrderState.AWAITING_REVIEW)
        )
        return self.state

    @workflow.query(name="status")
    def status(self) -> OrderStatus:
        steps = {**self.runner.steps, **self.shipping_steps}
        left = 0.0 if self.state.terminal else max((self.deadline - workflow.now()).total_seconds(), 0.0)
        return OrderStatus(
            order_id=self.req.order_id,
            state=self.state,
            step=self.runner.current_step,
            address=self.address,
            payment=self.payment,
            shipping=self.shipping,
            shipping_attempts=self.shipping_attempts,
            approved=self.approved,
            cancel_requested=self.cancel_requested,
            reason=self.reason,
            deadline=self.deadline.isoformat(),
            seconds_left=left,
            steps=steps,
            recent_errors=list(self.runner.errors),
            signals=list(self.signals[-20:]),
            dispatch_failures=list(self.dispatch_failures),
        )


def _reject_if(refusal: str | None) -> None:
    if refusal:
        raise ApplicationError(refusal, type="Rejected", non_retryable=True)
