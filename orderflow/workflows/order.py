"""OrderWorkflow: receive, validate, manual review, charge, ship, with compensation.

Deterministic orchestration only: no I/O, no clocks but ``workflow.now()``, and no branch on
the clock after an activity result (see steps.py): the order's deadlines are activity and
child-workflow timeouts, and the review deadline a timer.
Every order ends (shipped, cancelled or failed) before ``budget_seconds``: steps stop
retrying at ``work_deadline``, which keeps a reserve for the refund.

Where an order becomes X: ``_enter`` is the only place that changes ``self.state``; the
step that establishes a state persists it with its own outcome (``state=`` on the step),
and the final write (``_close``) persists the end state.

Commands (approve, cancel, change the address) arrive between steps only (gate.Gate): the
gate opens on a history event after the steps before each point where the order listens (the
review, the shipment), and every state an Update waits for is entered with the gate open.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError, ChildWorkflowError, FailureError

from orderflow.models import (
    ORDER_WORKFLOW,
    OrderRequest,
    OrderResult,
    OrderState,
    OrderStatus,
    PaymentState,
    ProgressRecord,
    SettleRequest,
    ShippingRequest,
    ShippingResult,
    Signal,
    SignalRecord,
    StepRequest,
    StepResult,
    StepStats,
    Update,
)
from orderflow.workflows.shipping import ShippingWorkflow
from orderflow.workflows.steps import RECENT_ERRORS, AuditTrail, StepError, StepRunner

with workflow.unsafe.imports_passed_through():
    from orderflow.activities import OrderActivities, ProgressActivities

CHILD_TASK_TIMEOUT = timedelta(seconds=5)
# How long a cancelled or out-of-time child gets to acknowledge before the parent settles its
# shipment itself (the shipping worker may be gone: the parent must not wait for it).
CHILD_GRACE = timedelta(seconds=1)
# Orders that end without a recorded charge close their payment id (an extra local activity).
# It came in as workflow.patched("close-uncharged-payment") and is deprecated now (2026-11-26):
# called right after a step's result, patched() was answered differently live and on replay when
# the SDK core recorded that result one workflow task before the workflow saw it (a query forced
# the task to complete; docs/reliability.md#the-sdk-core-defects-reproduced). deprecate_patch() takes no branch, so it
# cannot disagree. Histories with the marker still replay; review_timeout.json, the one recorded
# before the patch, was re-recorded: an order lives 15 s at most, so no running order predates it.
CLOSE_UNCHARGED_PAYMENT = "close-uncharged-payment"
# The order publishes its status in its memo (_publish_status), so the API and the notebooks read a
# running order with describe(): no query, no worker, no replay. A query the server sends as a task
# of its own can move a cached run in the SDK core (docs/reliability.md, defect 2), and status
# polling sent thousands of them per storm. Orders started before it do not publish
# (OrderRequest.publish_status): tests/test_replay.py replays both kinds.
# The memo keeps the last 3 commands and errors (status() gives 20 and 10): a memo over 2 KB makes
# the server log a warning on every upsert (limit.memoSize.warn), and with 5 and 10 storm orders
# reached 2.5 KB.
MEMO_SIGNALS = 3
MEMO_ERRORS = 3


class OrderCancelled(Exception):
    pass


def _rejected(reason: str) -> ApplicationError:
    """How a command is refused: the validator (before it is accepted) or the update's answer."""
    return ApplicationError(reason, type="Rejected", non_retryable=True)


def _refuse_if(refusal: str | None, gate_refusal: str | None) -> None:
    """A validator: the command's own rule first (a 409 with its reason), then the gate (Busy:
    a step is running; the client sends the command again a moment later)."""
    if refusal:
        raise _rejected(refusal)
    if gate_refusal:
        raise ApplicationError(gate_refusal, type="Busy", non_retryable=True)


# @workflow.defn makes the class a workflow type. Its name is what every history records and what a
# worker matches a task to, so it never changes (models.ORDER_WORKFLOW); the code behind it may,
# as long as it replays the histories already recorded (tests/test_replay.py).
@workflow.defn(name=ORDER_WORKFLOW)
class OrderWorkflow:
    # @workflow.init: __init__ gets the run's input before anything else runs, so the signal and
    # Update handlers below find the order's state even when a message arrives with the first task.
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
        self.trail = AuditTrail(req.order_id)
        self.steps = StepRunner(req.policy, self.trail)
        self.step = "start"  # what status() says the order is doing
        self.started = workflow.info().workflow_start_time
        self.deadline = self.started + timedelta(seconds=req.budget_seconds)
        self.work_deadline = self.deadline - timedelta(seconds=self.policy.refund_reserve_seconds)
        self.review_deadline: datetime | None = None  # after it, an approval is refused
        self.audit_events = 0
        self.closing = False
        self.publisher: asyncio.Task[None] | None = None  # _publish_status, in runs that publish
        # What Updates wait for; set only with the gate open (see the module docstring).
        self.review_open = False
        self.dispatched_to: str | None = None
        self.address_changes = 0  # adopted address changes, counted: tells a later one apart
        self.ended = False
        self.child_address = ""

    # -- the lifecycle ----------------------------------------------------------------
    # @workflow.run: the workflow's main coroutine. Its return value is the order's result, kept
    # in the history's close event (the API reads an ended order from there, with no worker).
    @workflow.run
    async def run(self, req: OrderRequest) -> OrderResult:
        if req.publish_status:  # decided by the input, the same live and on replay
            self.publisher = asyncio.create_task(self._publish_status())
        lifecycle = asyncio.create_task(self._lifecycle())
        try:
            await asyncio.shield(lifecycle)
        except asyncio.CancelledError:
            # A cancellation through Temporal (client cancel(), Web UI) is a CancelOrder with the
            # same rule and compensation, held like a signal until the gate opens; the shielded
            # lifecycle sees the flag and compensates.
            self.steps.gate.hold_or_apply(self._temporal_cancel)
            await lifecycle
            if self.state == OrderState.CANCELLED:
                await self._close()
                raise
        await self._close()
        return OrderResult(
            order_id=req.order_id,
            state=self.state,
            payment=self.payment,
            reason=self.reason,
            shipping_attempts=self.shipping_attempts,
            elapsed_seconds=(workflow.now() - self.started).total_seconds(),
            address=self.address,
            audit_events=self.audit_events,
        )

    async def _lifecycle(self) -> None:
        self.trail.record(
            "order_started",
            payment_id=self.req.payment_id,
            budget_seconds=self.req.budget_seconds,
            deadline=self.deadline.isoformat(),
        )
        try:
            await self._step("receive", OrderActivities.receive_order, OrderState.RECEIVED)
            # A validated order awaits review at once: the step persists that state with its outcome.
            await self._step(
                "validate", OrderActivities.validate_order, OrderState.VALIDATED, persist=OrderState.AWAITING_REVIEW
            )
            await self._review()
            self.payment = PaymentState.CHARGING
            await self._step("charge", OrderActivities.charge_payment, OrderState.CHARGED)
            self.payment = PaymentState.CHARGED
            await self._ship()
            # After dispatch nothing is abandoned: marking shipped retries until it succeeds.
            await self._step("mark_shipped", OrderActivities.mark_shipped, OrderState.SHIPPED, deadline=False)
            await self._finish(OrderState.SHIPPED, None)
        except OrderCancelled:
            await self._abort(OrderState.CANCELLED, self.cancel_reason or "cancelled")
        except StepError as err:
            if self.cancel_requested:  # a step that fails while we cancel: the order is cancelled
                await self._abort(OrderState.CANCELLED, self.cancel_reason)
            else:
                await self._abort(OrderState.FAILED, err.reason)

    async def _step(
        self, step: str, activity, state: OrderState | None, *, deadline: bool = True, persist: OrderState | None = None
    ) -> StepResult:
        self.step = step
        result = await self.steps.run(
            activity, self._request(step, persist or state), deadline=self.work_deadline if deadline else None
        )
        if state is not None:
            self._enter(state)
        return result

    def _request(self, step: str, state: OrderState | None = None) -> StepRequest:
        return StepRequest(
            order_id=self.req.order_id,
            step=step,
            payment_id=self.req.payment_id,
            items=self.req.items,
            address=self.address,
            state=state,
        )

    async def _review(self) -> None:
        """Wait for a human's approval, or a cancellation, until the review deadline."""
        # The order listens now: the gate opens (a 1 ms timer); commands held during receive and
        # validate apply, and Updates are accepted from here on.
        await self.steps.gate.open()
        self._enter(OrderState.AWAITING_REVIEW)
        self.review_open = True
        self.step = "review"
        if self.cancel_requested:
            raise OrderCancelled()
        now = workflow.now()
        review_deadline = self.work_deadline - timedelta(seconds=self.policy.post_review_reserve_seconds)
        if self.req.review_timeout_seconds is not None:
            review_deadline = min(review_deadline, now + timedelta(seconds=self.req.review_timeout_seconds))
        self.review_deadline = review_deadline
        try:
            # wait_condition: sleeps until the predicate holds; it is checked again after every
            # event (a signal or Update applied). The timeout is a durable timer in the history, so
            # the review deadline holds across worker restarts.
            await workflow.wait_condition(
                lambda: self.approved or self.cancel_requested,
                timeout=max(review_deadline - now, timedelta(milliseconds=1)),
                timeout_summary="manual review deadline",
            )
        except asyncio.TimeoutError:
            self.cancel_reason = "manual review deadline passed without approval"
            raise OrderCancelled() from None
        if self.cancel_requested:
            raise OrderCancelled()
        self._enter(OrderState.APPROVED)

    async def _ship(self) -> None:
        """Run ShippingWorkflow children until one dispatches, within the budget."""
        for shipment_no in range(1, self.policy.shipping_attempts + 1):
            if self.cancel_requested:
                break
            # No new shipment with less than CHILD_GRACE left before the work deadline: it would
            # eat the refund reserve (a storm order that started a third shipment at 12.2 s ended
            # at 16.2 s; one that started a fourth at 11.55 s, at 15.8 s). The clock is safe to
            # branch on here: the previous child's end, or the gate's timer after settling it, is
            # the history event this workflow task started from, live and on replay.
            if shipment_no > 1 and workflow.now() > self.work_deadline - CHILD_GRACE:
                break
            self.shipping_attempts = shipment_no
            self.shipping = f"shipment {shipment_no}: in progress"
            if self.state != OrderState.SHIPPING:
                self._enter(OrderState.SHIPPING)
            self.step = "shipping"
            result = await self._run_child(shipment_no)
            # A child that ended by itself is a history event and the gate is open; one settled
            # from here took a bookkeeping step, so the gate opens on a timer before Updates hear of it.
            await self.steps.gate.open()
            for name, stats in result.steps.items():
                total = self.shipping_steps.setdefault(name, StepStats())
                total.attempts += stats.attempts
                total.failures += stats.failures
                total.timeouts += stats.timeouts
                total.state = stats.state
            for message in result.errors:  # state only, no command: older histories replay the same
                self.steps.error(message)
            self.trail.adopt(result.events)
            if result.dispatched:
                self._dispatched(result)
                return
            self.shipping = f"shipment {shipment_no}: failed ({result.reason})"
            self.trail.record("shipment_failed", "shipping", shipment_no, reason=result.reason)
            if result.out_of_time:  # decided from the child's result, never from the clock
                break
        if self.cancel_requested:
            raise OrderCancelled()
        if not self.shipping_attempts:
            raise StepError("shipping", "no time left to ship before the order's deadline")
        raise StepError("shipping", f"shipping failed {self.shipping_attempts} times: {self.shipping}")

    async def _run_child(self, shipment_no: int) -> ShippingResult:
        info = workflow.info()
        child_id = f"{info.workflow_id}-shipping-{shipment_no}"
        self.child_address = self.address  # what the shipment has been told
        # A child workflow: the shipment runs with a history of its own, on the shipping task queue
        # (its own workers). Starting it returns a handle to signal it and, later, await its result.
        child = await workflow.start_child_workflow(
            ShippingWorkflow.run,
            ShippingRequest(
                order_id=self.req.order_id,
                shipment_no=shipment_no,
                address=self.child_address,
                items=self.req.items,
                deadline=self.work_deadline.isoformat(),
                parent_workflow_id=info.workflow_id,
                policy=self.policy,
            ),
            id=child_id,
            task_queue=self.req.shipping_task_queue,
            task_timeout=CHILD_TASK_TIMEOUT,
            # The child cannot outlive the work deadline: with no shipping worker it times out
            # there, and the refund reserve is still ahead. (A timeout is not a branch on the clock.)
            execution_timeout=max(self.work_deadline - workflow.now(), CHILD_GRACE),
        )
        # The child's start is a history event: the gate opens without a timer. From here the
        # order listens while the shipment runs; what changes is passed on to the child.
        await self.steps.gate.open(after_history_event=True)
        while not child.done():
            await workflow.wait_condition(
                lambda: child.done() or self.cancel_requested or self.address != self.child_address
            )
            if child.done():
                break
            if self.cancel_requested:
                await self._tell_child(child, Signal.CANCEL_SHIPMENT)
                try:  # the child answers at once unless the carrier was called; no shipping worker: settle here
                    await workflow.wait_condition(child.done, timeout=CHILD_GRACE, timeout_summary="child grace")
                except asyncio.TimeoutError:
                    pass
                break
            self.child_address = self.address
            await self._tell_child(child, Signal.UPDATE_ADDRESS, self.child_address)
        if child.done():
            try:
                return await child
            except ChildWorkflowError:
                pass  # timed out or failed: what it shipped is settled below
        return await self._settle_child(shipment_no, child_id, child.first_execution_run_id or "")

    async def _tell_child(self, child: workflow.ChildWorkflowHandle, signal: str, *args: str) -> None:
        try:
            # A signal to the child: a command in this history, an event in the child's.
            await child.signal(signal, args=list(args))
        except FailureError as err:  # the child closed meanwhile: its result says what happened
            self.trail.record("signal_to_shipment_failed", "shipping", signal=signal, error=str(err))

    async def _settle_child(self, shipment_no: int, child_id: str, run_id: str) -> ShippingResult:
        """Fence the shipment of a child that ended without reporting: dispatched or never."""
        status = "cancelled" if self.cancel_requested else "failed"
        settled = await self.steps.bookkeeping(
            ProgressActivities.settle_step,
            SettleRequest(self.req.order_id, "dispatch", child_id, run_id, shipment_no, status),
        )
        if settled.shipment == "dispatched":
            # As the child records it: the parcel went, found late, and its trail says where.
            address = settled.address if settled.address is not None else self.address
            self.trail.record("late_dispatch_found", "dispatch", shipment_no)
            self.trail.record("dispatched", "dispatch", shipment_no, address=address)
            return ShippingResult(shipment_no, dispatched=True, address=address)
        reason = "cancelled" if self.cancel_requested else "no shipping worker finished it before the deadline"
        return ShippingResult(shipment_no, dispatched=False, address=self.address, reason=reason, out_of_time=True)

    def _dispatched(self, result: ShippingResult) -> None:
        self._enter(OrderState.DISPATCHED)
        self.dispatched_to = result.address
        self.shipping = f"shipment {result.shipment_no}: dispatched to {result.address!r}"
        if result.address != self.address:
            self.trail.record("address_update_too_late", "shipping", used=result.address, requested=self.address)
            self.address = result.address
        if self.cancel_requested:
            self.cancel_requested = False
            self.trail.record("cancel_overtaken_by_dispatch", "shipping")
            self._record(Signal.CANCEL, False, "the parcel was dispatched before the cancellation took effect")

    async def _abort(self, state: OrderState, reason: str) -> None:
        """Compensate: refund whatever may have been charged (shipping has stopped), then end."""
        self.reason = reason
        if self.payment == PaymentState.NONE:
            # Versioning: patched(id) let new code branch while old histories replayed the old
            # path; deprecate_patch(id) says every running order has the new path (CLOSE_UNCHARGED_PAYMENT).
            workflow.deprecate_patch(CLOSE_UNCHARGED_PAYMENT)
            # History says nothing was charged, but a discarded workflow task may have charged
            # (found by the soak: the approval that led to a charge was lost in a server restart,
            # the re-run ended at the review deadline). Void the payment id, and refund what is there.
            found = await self.steps.bookkeeping(ProgressActivities.close_payment, self._request("close_payment"))
            if found == PaymentState.CHARGED:
                self.trail.record("unrecorded_charge_found", "charge")
            self.payment = found
        if self.payment in (PaymentState.CHARGING, PaymentState.CHARGED, PaymentState.REFUNDING):
            self.payment = PaymentState.REFUNDING
            self.trail.record("compensation_started", "refund", reason=reason)
            # A refund is never abandoned: it retries until the payment is refunded or voided.
            self.step = "refund"
            refund = await self.steps.run(OrderActivities.refund_payment, self._request("refund"), deadline=None)
            self.payment = PaymentState(refund.value)
            self.trail.record("compensation_finished", "refund", payment=self.payment.value)
        await self._finish(state, reason)

    def _enter(self, state: OrderState) -> None:
        """The one place the order's state changes (and its transition is recorded)."""
        self.state = state
        self.trail.record("state_changed", state=state.value)

    async def _finish(self, state: OrderState, reason: str | None) -> None:
        if state != OrderState.SHIPPED:
            # Cancel and address Updates may be waiting for this end: it is entered with the gate
            # open (a 1 ms timer after the refund). After a dispatch nobody waits: they were
            # answered when the child reported it.
            await self.steps.gate.open()
        self.ended = True
        self._enter(state)
        self.reason = reason
        self.step = "done"
        elapsed = (workflow.now() - self.started).total_seconds()
        self.trail.record(
            f"order_{state.value}",
            reason=reason,
            payment=self.payment.value,
            elapsed_seconds=elapsed,
            address=self.address,
        )

    async def _close(self) -> None:
        """The final write, once every handler has finished: the order's row, and its workflow
        events exactly as this run recorded them. It is the run's last database write; a signal
        that arrives while it runs makes the server refuse the completion, and the re-run of this
        task writes again, with that signal's event in the list."""
        # Every signal and Update handler has returned: none is cut off when the run completes.
        await workflow.wait_condition(workflow.all_handlers_finished)
        self.steps.gate.drain()  # signals that came during the last steps: recorded as too late
        self.closing = True
        self.trail.take()
        self.audit_events = await self.steps.bookkeeping(
            ProgressActivities.record_progress,
            ProgressRecord(
                order_id=self.req.order_id,
                events=list(self.trail.events),
                state=self.state,
                reason=self.reason,
                address=self.address,
                order=self._request("finish"),
                complete=True,
                workflow_prefix=self.trail.prefix,
            ),
        )

    # -- commands: approve, cancel, change the address -----------------------------------
    # Each command has one rule (``_*_refusal``) and one effect. As a Workflow Update its
    # validator applies the rule before the update is accepted (the API answers 409 with the
    # reason), and the gate's rule after it (Busy while a step runs: the API sends it again).
    # As a signal (the assignment's names) it cannot answer: it is held while a step runs, and
    # a refusal is recorded in status().signals. Handlers only change the order's state: they
    # never call activities or send commands, and an Update that waits for an outcome waits for
    # a state entered with the gate open (gate.Gate says why).
    def _record(self, name: str, accepted: bool, detail: str) -> None:
        self.signals.append(SignalRecord(name, accepted, detail, workflow.now().isoformat()))
        self.trail.record("signal_accepted" if accepted else "signal_rejected", name=name, detail=detail)

    def _approve_refusal(self) -> str | None:
        if self.reason is not None:  # compensation has begun (the review deadline passed, a step failed)
            return self._too_late()
        # Validated is awaiting review as the database has it (the step persists that state):
        # an approval then is held or answered Busy until the review opens a moment later.
        if self.state not in (OrderState.VALIDATED, OrderState.AWAITING_REVIEW):
            return f"order is not awaiting review (state {self.state.value})"
        if self.approved or self.cancel_requested:
            return "order was already approved" if self.approved else "order is being cancelled"
        # The review deadline's timer may not have reached the workflow yet: the server fires
        # timers late under load, and in the task where it does, messages are applied first.
        # workflow.now() is the task's start, from the history: the same live and on replay. (A
        # storm order approved 1.2 s past its deadline had 1.35 s left to ship, and ended at 15.3 s.)
        if self.review_deadline is not None and workflow.now() >= self.review_deadline:
            return f"the manual review deadline passed at {self.review_deadline.isoformat()}"
        return None

    def _cancel_refusal(self) -> str | None:
        return self._too_late() or ("order is already being cancelled" if self.cancel_requested else None)

    def _address_refusal(self, new_address: str) -> str | None:
        if not new_address or not new_address.strip():
            return "new address is empty"
        return self._too_late()

    def _too_late(self) -> str | None:
        """Why nothing about the order can change any more (None: it still can)."""
        if self.state.terminal:
            return f"order already ended ({self.state.value})"
        if self.state == OrderState.DISPATCHED:
            return f"order was already dispatched to {self.dispatched_to!r}"
        if self.reason is not None:  # _abort has begun: the refund and the end are under way
            return f"order is ending: {self.reason}"
        return None

    def _approve(self) -> None:
        self.approved = True
        self._record(Signal.APPROVE, True, "approved")

    def _request_cancel(self, reason: str) -> None:
        self.cancel_requested = True
        self.cancel_reason = reason or "cancelled by request"
        self._record(Signal.CANCEL, True, self.cancel_reason)

    def _temporal_cancel(self) -> None:
        refusal = self._cancel_refusal()
        if refusal:
            self._record(Signal.CANCEL, False, f"Temporal cancellation refused: {refusal}")
        else:
            self._request_cancel("cancelled through Temporal")

    def _adopt_address(self, new_address: str) -> None:
        """The order's address from now on; during shipping the main loop passes it to the child."""
        self.address = new_address
        self.address_changes += 1
        self._record(Signal.UPDATE_ADDRESS, True, new_address)

    # The signals: held while a step runs; then the rule, and the effect or a recorded refusal.
    # @workflow.signal: a one-way message. The sender gets no answer, and the handler may only
    # change the workflow's state: a signal is recorded in the history and replayed with it.
    @workflow.signal(name=Signal.APPROVE)
    def approve_signal(self) -> None:
        self.steps.gate.hold_or_apply(lambda: self._apply(Signal.APPROVE, self._approve_refusal(), self._approve))

    @workflow.signal(name=Signal.CANCEL)
    def cancel_signal(self, reason: str = "") -> None:
        self.steps.gate.hold_or_apply(
            lambda: self._apply(Signal.CANCEL, self._cancel_refusal(), lambda: self._request_cancel(reason))
        )

    @workflow.signal(name=Signal.UPDATE_ADDRESS)
    def update_address_signal(self, new_address: str) -> None:
        self.steps.gate.hold_or_apply(
            lambda: self._apply(
                Signal.UPDATE_ADDRESS, self._address_refusal(new_address), lambda: self._adopt_address(new_address)
            )
        )

    def _apply(self, name: str, refusal: str | None, effect) -> None:
        if refusal:
            self._record(name, False, refusal)
        else:
            effect()

    @workflow.signal(name=Signal.DISPATCH_FAILED)
    def dispatch_failed(self, reason: str) -> None:
        self.steps.gate.hold_or_apply(lambda: self._dispatch_failed(reason))

    def _dispatch_failed(self, reason: str) -> None:
        self.dispatch_failures.append(reason)
        self.trail.record("dispatch_failed", "shipping", len(self.dispatch_failures), reason=reason)

    # The Updates. Each validator applies the command's rule, then the gate's.
    # @workflow.update: a message with an answer. Its validator runs first, may not change state,
    # and can refuse the Update before anything is written to the history; once accepted, the
    # handler runs and its return value (or error) is the caller's answer.
    @workflow.update(name=Update.APPROVE)
    def approve(self) -> str:
        self.steps.gate.update_entered()  # every handler first: accepted while the gate's timer ran, it opens the gate
        self._approve()
        return "approved"

    @approve.validator  # refuses before acceptance: a refused Update leaves no history event
    def validate_approve(self) -> None:
        _refuse_if(self._approve_refusal(), self.steps.gate.refusal())

    @workflow.update(name=Update.CANCEL)
    async def cancel(self, reason: str = "") -> str:
        """Answers once the outcome is known: cancelled (and refunded), or dispatched first."""
        self.steps.gate.update_entered()
        self._request_cancel(reason)
        await workflow.wait_condition(lambda: self.ended or self.dispatched_to is not None)
        if self.dispatched_to is not None:
            raise _rejected(f"the parcel was dispatched to {self.dispatched_to!r} before the cancellation took effect")
        if self.state == OrderState.CANCELLED:
            refunded = {
                PaymentState.REFUNDED: "; the payment was refunded",
                PaymentState.VOIDED: "; nothing had been charged (payment voided)",
            }
            return "order cancelled" + refunded.get(self.payment, "")
        raise _rejected(f"order ended {self.state.value}: {self.reason}")

    @cancel.validator
    def validate_cancel(self, reason: str = "") -> None:
        _refuse_if(self._cancel_refusal(), self.steps.gate.refusal())

    @workflow.update(name=Update.UPDATE_ADDRESS)
    async def update_address(self, new_address: str) -> str:
        """Before shipping: adopted at once. During shipping: answers once the parcel is
        dispatched (to this address, or too late) or the order ends."""
        self.steps.gate.update_entered()
        self._adopt_address(new_address)
        if self.state != OrderState.SHIPPING:
            return "address updated"
        # During shipping the answer waits for what settles it: the parcel leaving (to this
        # address or not), the order ending, or a later change. A later change is said as just
        # that, never as a refusal: it may reach the carrier too late, and the parcel go here.
        adopted_as = self.address_changes
        await workflow.wait_condition(
            lambda: self.ended or self.dispatched_to is not None or self.address_changes != adopted_as
        )
        if self.dispatched_to is not None:
            if self.dispatched_to == new_address:
                return "address updated; the parcel was dispatched to it"
            raise _rejected(f"too late: the parcel was dispatched to {self.dispatched_to!r}")
        if self.address_changes != adopted_as:
            return f"address updated; since changed again to {self.address!r}"
        # Adopted (it is the order's address), but no parcel left: say so, as a success.
        return f"address updated; the order then ended {self.state.value} before dispatch: {self.reason}"

    @update_address.validator
    def validate_update_address(self, new_address: str) -> None:
        _refuse_if(self._address_refusal(new_address), self.steps.gate.refusal())

    @workflow.update(name=Update.WAIT_FOR_REVIEW)
    async def wait_for_review(self) -> OrderState:
        """Return once the order awaits review or has moved past it: a reviewer's long poll."""
        self.steps.gate.update_entered()
        await workflow.wait_condition(lambda: self.review_open or self.ended)
        return self.state

    @wait_for_review.validator
    def validate_wait_for_review(self) -> None:
        _refuse_if(None, self.steps.gate.refusal())

    # @workflow.query: a read of the current state, answered by a worker (replaying if it must).
    # It changes nothing and adds no history event.
    @workflow.query(name="status")
    def status(self) -> OrderStatus:
        left = 0.0 if self.state.terminal else max((self.deadline - workflow.now()).total_seconds(), 0.0)
        return self._status(signals=20, errors=RECENT_ERRORS, seconds_left=left)

    def _status(self, signals: int, errors: int, seconds_left: float = 0.0) -> OrderStatus:
        return OrderStatus(
            order_id=self.req.order_id,
            state=self.state,
            step=self.step,
            address=self.address,
            payment=self.payment,
            shipping=self.shipping,
            shipping_attempts=self.shipping_attempts,
            approved=self.approved,
            cancel_requested=self.cancel_requested,
            reason=self.reason,
            deadline=self.deadline.isoformat(),
            seconds_left=seconds_left,
            review_deadline=self.review_deadline.isoformat() if self.review_deadline else None,
            steps={**self.steps.stats, **self.shipping_steps},
            recent_errors=self.steps.errors[-errors:],
            signals=list(self.signals[-signals:]),
            dispatch_failures=list(self.dispatch_failures),
        )

    # workflow.upsert_memo: a command that sets keys of the workflow's memo (an event in the history);
    # describe() returns the memo, so anyone can read it without a worker. The memo is the status()
    # answer without seconds_left (the reader computes it from the deadline).
    async def _publish_status(self) -> None:
        """Publish what changed in the status where the order listens (the gate is open: the start,
        the review, the shipment) and at its end; a step's progress goes out with the next of these.

        Why not after every step: each upsert is an event (and a visibility write on the server).
        Published after every change, a shipped order had 11 more events and cost 13 % more CPU
        (orderflow bench --api --rate 8 --duration 60, 2026-12-04); at these points, about 4. The
        points are where messages come in, so an accepted command is in the memo when it is answered.
        """
        published: dict[str, Any] = {}
        while True:
            changed = self._status_changes(published)
            if changed:
                workflow.upsert_memo(changed)
                published.update(changed)
            if self.state.terminal:
                return
            # Checked after every activation, once its messages and results are applied.
            await workflow.wait_condition(
                lambda: (self.state.terminal or not self.steps.gate.closed) and bool(self._status_changes(published))
            )

    def _status_changes(self, published: dict[str, Any]) -> dict[str, Any]:
        fields = asdict(self._status(signals=MEMO_SIGNALS, errors=MEMO_ERRORS))
        del fields["seconds_left"]
        return {key: value for key, value in fields.items() if key not in published or published[key] != value}
