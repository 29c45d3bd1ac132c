"""OrderWorkflow and ShippingWorkflow, path by path, on the real dev server with real workers.

Each test scripts flaky_call's draws for the activities it is about (0.1 fails, 0.5 hangs
until the attempt timeout, 0.9 succeeds; unscripted draws succeed) so it takes one path
deterministically. tests/test_e2e.py runs the unmodified fault injector.
"""

import asyncio

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import CancelledError

from orderflow import order_client
from orderflow.errors import InvalidOrder
from orderflow.models import Item, OrderState, PaymentState, Signal, StepPolicy
from orderflow.workflows import OrderWorkflow
from tests.helpers import new_id, save_history

FAIL, HANG = 0.1, 0.5


async def start(stack, prefix: str, **kw):
    order_id = new_id(prefix)
    req = order_client.new_order(order_id, f"pay-{order_id}", **kw)
    handle = await order_client.start_order(stack.client, req, stack.settings)
    return order_id, handle


async def wait_for(stack, order_id: str, predicate, timeout: float = 10.0):
    """Poll status() until ``predicate(status)`` holds."""
    async with asyncio.timeout(timeout):
        while True:
            current = await order_client.status(stack.client, order_id)
            if predicate(current):
                return current
            await asyncio.sleep(0.02)


def db_view(stack, order_id):
    return stack.repo.order_view(order_id)


async def test_happy_path_ships_and_charges_once(stack, scripted):
    # A hang, then a failure, then success. Not failure-then-hang: the SDK core (1.35) leaves a
    # failed attempt's start-to-close timer running, and it can cut the attempt after next short
    # (temporalio/sdk-rust#1454), which would make this count (4, 1, 2) some of the time.
    scripted.set(ChargePayment=[HANG, FAIL], PreparePackage=[HANG])
    order_id, handle = await start(stack, "happy", items=[Item("ABC", 2), Item("XYZ", 1)], address="1 Main St")
    assert await order_client.approve_when_ready(handle)
    result = await handle.result()
    assert (result.state, result.payment, result.shipping_attempts) == (OrderState.SHIPPED, PaymentState.CHARGED, 1)
    assert result.elapsed_seconds < 15
    status = await order_client.status(stack.client, order_id)
    assert (status.steps["charge"].attempts, status.steps["charge"].failures, status.steps["charge"].timeouts) == (
        3,
        1,
        1,
    )
    assert status.steps["prepare"].timeouts == 1
    assert "charge: Forced failure for testing" in status.recent_errors
    assert "prepare: attempt 1 timed out" in status.recent_errors  # the shipping child's, reported by the order
    view = db_view(stack, order_id)
    assert view["order"]["state"] == "shipped"
    assert [(p["status"], p["amount"]) for p in view["payments"]] == [("charged", 3)]
    assert [(s["status"], s["address"]) for s in view["shipments"]] == [("dispatched", "1 Main St")]
    types = [e["type"] for e in view["events"]]
    assert {"order_started", "attempt_failed", "attempt_timed_out", "signal_accepted", "order_shipped"} <= set(types)
    await save_history(handle, "happy_path")


async def test_review_deadline_cancels_without_charging(stack, scripted):
    order_id, handle = await start(stack, "noreview", review_timeout_seconds=0.3)
    result = await handle.result()
    # Nothing was charged; the payment id is closed (voided) so no late charge can land.
    assert (result.state, result.payment) == (OrderState.CANCELLED, PaymentState.VOIDED)
    assert "manual review deadline" in result.reason
    view = db_view(stack, order_id)
    assert view["order"]["state"] == "cancelled"
    assert [(p["status"], p["amount"]) for p in view["payments"]] == [("voided", 0)]
    await save_history(handle, "review_timeout")  # re-recorded 2026-11-26 with the deprecated patch marker


async def test_cancel_during_review(stack, scripted):
    order_id, handle = await start(stack, "cancelreview")
    await wait_for(stack, order_id, lambda s: s.state == OrderState.AWAITING_REVIEW)
    # The Update answers once the outcome is known: the order is cancelled (nothing was charged).
    answer = await order_client.cancel(stack.client, order_id, "changed my mind")
    assert answer == "order cancelled; nothing had been charged (payment voided)"
    result = await handle.result()
    expected = (OrderState.CANCELLED, PaymentState.VOIDED, "changed my mind")
    assert (result.state, result.payment, result.reason) == expected
    assert [p["status"] for p in db_view(stack, order_id)["payments"]] == ["voided"]
    await save_history(handle, "cancel_during_review")  # recorded with the close-uncharged-payment patch marker


async def start_charged(stack, scripted, prefix: str):
    """An order that has been charged and is held in shipping for about a second."""
    scripted.set(PreparePackage=[HANG] * 8)
    order_id, handle = await start(stack, prefix)
    assert await order_client.approve_when_ready(handle)
    await wait_for(stack, order_id, lambda s: s.payment == PaymentState.CHARGED)
    return order_id, handle


async def test_cancel_after_charge_refunds(stack, scripted):
    order_id, handle = await start_charged(stack, scripted, "cancelpaid")
    assert await order_client.cancel(stack.client, order_id) == "order cancelled; the payment was refunded"
    result = await handle.result()
    assert (result.state, result.payment) == (OrderState.CANCELLED, PaymentState.REFUNDED)
    view = db_view(stack, order_id)
    assert [p["status"] for p in view["payments"]] == ["refunded"]
    assert all(s["status"] != "dispatched" for s in view["shipments"])
    await save_history(handle, "cancel_after_charge")


async def test_cancel_after_dispatch_is_rejected(stack, scripted):
    """Commands that arrive once the parcel left are refused by the command's own rule, never
    as Busy. Marking shipped hangs for ~2.5 s inside the workflow task that learned of the
    dispatch; a message that arrives meanwhile makes the server refuse that task, and the next
    one hands the workflow the message first, then the child's result. So a cancellation sent
    now is taken and then overtaken by the dispatch, or (later) finds the order ended."""
    scripted.set(MarkOrderShipped=[HANG] * 15)
    order_id, handle = await start(stack, "cancellate", address="1 Main St")
    assert await order_client.approve_when_ready(handle)
    async with asyncio.timeout(10):  # the order heard of the dispatch: marking shipped has begun
        while not any(e["step"] == "mark_shipped" for e in db_view(stack, order_id)["events"]):
            await asyncio.sleep(0.02)
    await handle.signal(Signal.CANCEL, "signal after dispatch")  # a signal cannot be refused: it is recorded
    refused = "^order is already being cancelled$|dispatched to '1 Main St'|already ended"
    with pytest.raises(order_client.Rejected, match=refused):
        await order_client.cancel(stack.client, order_id)
    with pytest.raises(order_client.Rejected, match="dispatched to '1 Main St'|already ended"):
        await order_client.update_address(stack.client, order_id, "too late")
    result = await handle.result()
    assert (result.state, result.payment, result.address) == (OrderState.SHIPPED, PaymentState.CHARGED, "1 Main St")
    status = await order_client.status(stack.client, order_id)
    signal = [r for r in status.signals if r.name == Signal.CANCEL and r.detail != "cancelled by request"]
    assert [(r.accepted, r.detail) for r in signal][-1] in {
        (False, "the parcel was dispatched before the cancellation took effect"),
        (False, "order already ended (shipped)"),
    }


async def test_address_update_before_dispatch_reaches_the_shipment(stack, scripted):
    scripted.set(PreparePackage=[HANG] * 6)
    order_id, handle = await start(stack, "address", address="old street")
    await wait_for(stack, order_id, lambda s: s.state == OrderState.AWAITING_REVIEW)
    await order_client.update_address(stack.client, order_id, "review street")
    assert await order_client.approve_when_ready(handle)
    await wait_for(stack, order_id, lambda s: s.state == OrderState.SHIPPING)
    await order_client.update_address(stack.client, order_id, "742 Evergreen Terrace")  # forwarded to the child
    result = await handle.result()
    assert result.state == OrderState.SHIPPED
    view = db_view(stack, order_id)
    assert view["order"]["address"] == "742 Evergreen Terrace"
    assert [s["address"] for s in view["shipments"]] == ["742 Evergreen Terrace"]


async def test_a_change_overtaken_by_a_later_one_that_came_too_late_is_told_where_the_parcel_went(stack, scripted):
    """A later address change that reaches the carrier too late does not make the earlier one
    refused as "superseded" (the parcel went to it): found by notebook 10's presses."""
    scripted.set(PreparePackage=[HANG] * 4, DispatchCarrier=[HANG] * 3)  # a slow prepare, a slow dispatch
    order_id, handle = await start(stack, "overtaken", address="old street")
    assert await order_client.approve_when_ready(handle)
    await wait_for(stack, order_id, lambda s: s.state == OrderState.SHIPPING)
    first = asyncio.create_task(order_client.update_address(stack.client, order_id, "first street"))
    async with asyncio.timeout(10):  # the carrier is being called: a change now is too late
        while not any(e["step"] == "dispatch" for e in db_view(stack, order_id)["events"]):
            await asyncio.sleep(0.02)
    with pytest.raises(order_client.Rejected, match="^too late: the parcel was dispatched to 'first street'$"):
        await order_client.update_address(stack.client, order_id, "second street")
    # The first change was changed again (true, whatever happens next); it is not "superseded",
    # a refusal that the parcel going there would make untrue.
    assert await first == "address updated; since changed again to 'second street'"
    result = await handle.result()
    assert (result.state, result.address) == (OrderState.SHIPPED, "first street")
    assert [s["address"] for s in db_view(stack, order_id)["shipments"]] == ["first street"]


async def test_dispatch_failure_signals_parent_which_retries(stack, scripted):
    # The first shipment uses up its dispatch attempts.
    scripted.set(DispatchCarrier=[FAIL] * StepPolicy().dispatch_attempts)
    order_id, handle = await start(stack, "redispatch")
    assert await order_client.approve_when_ready(handle)
    result = await handle.result()
    assert (result.state, result.shipping_attempts) == (OrderState.SHIPPED, 2)
    status = await order_client.status(stack.client, order_id)
    assert len(status.dispatch_failures) == 1 and "Forced failure" in status.dispatch_failures[0]
    view = db_view(stack, order_id)
    assert [(s["shipment_no"], s["status"]) for s in view["shipments"]] == [(1, "failed"), (2, "dispatched")]
    assert "dispatch_failed" in [e["type"] for e in view["events"]]
    await save_history(handle, "dispatch_failed_retry")


async def test_shipping_exhausted_refunds_and_fails(stack, scripted):
    scripted.set(DispatchCarrier=[FAIL] * StepPolicy().dispatch_attempts * StepPolicy().shipping_attempts)
    order_id, handle = await start(stack, "noship")
    assert await order_client.approve_when_ready(handle)
    result = await handle.result()
    assert (result.state, result.payment, result.shipping_attempts) == (OrderState.FAILED, PaymentState.REFUNDED, 5)
    assert "shipping failed 5 times" in result.reason
    view = db_view(stack, order_id)
    assert [p["status"] for p in view["payments"]] == ["refunded"]
    assert {s["status"] for s in view["shipments"]} == {"failed"}
    await save_history(handle, "shipping_exhausted")


async def test_temporal_cancellation_compensates(stack, scripted):
    order_id, handle = await start_charged(stack, scripted, "tcancel")
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as err:
        await handle.result()
    assert isinstance(err.value.cause, CancelledError)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    view = db_view(stack, order_id)
    assert view["order"]["state"] == "cancelled"
    assert [p["status"] for p in view["payments"]] == ["refunded"]
    await save_history(handle, "temporal_cancel")


async def test_an_order_without_items_fails_validation(stack, scripted):
    order_id, handle = await start(stack, "empty", items=[])
    result = await handle.result()
    assert (result.state, result.payment) == (OrderState.FAILED, PaymentState.VOIDED)
    assert result.reason == "validate: No items to validate"


async def test_a_payment_id_is_never_charged_for_two_orders(stack, scripted):
    first, handle1 = await start(stack, "pay1")
    req = order_client.new_order(new_id("pay2"), f"pay-{first}")
    handle2 = await order_client.start_order(stack.client, req, stack.settings)
    assert await order_client.approve_when_ready(handle1)
    assert (await handle1.result()).state == OrderState.SHIPPED
    assert await order_client.approve_when_ready(handle2)
    second = await handle2.result()
    assert second.state == OrderState.FAILED and "belongs to order" in second.reason
    assert [p["status"] for p in db_view(stack, first)["payments"]] == ["charged"]


async def test_starting_an_order_twice_is_rejected(stack, scripted):
    order_id, handle = await start(stack, "twice", review_timeout_seconds=0.2)
    with pytest.raises(order_client.OrderExists):
        await order_client.start_order(stack.client, order_client.new_order(order_id, "another"), stack.settings)
    await handle.result()
    with pytest.raises(order_client.OrderExists):  # also after it ended
        await order_client.start_order(stack.client, order_client.new_order(order_id, "another"), stack.settings)


async def test_late_and_repeated_signals_are_recorded_not_applied(stack, scripted):
    order_id, handle = await start(stack, "late")
    assert await order_client.approve_when_ready(handle)
    with pytest.raises(order_client.Rejected, match="not awaiting review|already approved"):
        await order_client.approve(stack.client, order_id)
    await handle.signal(Signal.APPROVE)  # a second approval by signal: recorded as refused
    await handle.result()
    with pytest.raises(order_client.Rejected, match="ended"):
        await order_client.cancel(stack.client, order_id)
    status = await order_client.status(stack.client, order_id)
    refused = [r for r in status.signals if r.name == Signal.APPROVE and not r.accepted]
    assert refused and "not awaiting review" in refused[0].detail


@pytest.mark.parametrize("bad", [dict(order_id="has space"), dict(payment_id=""), dict(items=[Item("ABC", 0)])])
async def test_bad_input_is_refused_before_starting(stack, bad):
    fields = dict(order_id=new_id("bad"), payment_id="p", items=None) | bad
    req = order_client.new_order(fields["order_id"], fields["payment_id"], items=fields["items"])
    with pytest.raises(InvalidOrder):
        await order_client.start_order(stack.client, req, stack.settings)


async def test_a_carrier_refusal_exhausts_shipping_and_refunds(stack, scripted):
    order_id, handle = await start(stack, "pobox", address="PO Box 42")
    assert await order_client.approve_when_ready(handle)
    result = await handle.result()
    assert (result.state, result.payment, result.shipping_attempts) == (OrderState.FAILED, PaymentState.REFUNDED, 5)
    status = await order_client.status(stack.client, order_id)
    assert len(status.dispatch_failures) == 5
    assert all("does not deliver to PO boxes" in reason for reason in status.dispatch_failures)


def order_in(state: OrderState, reason: str | None = None, **flags) -> OrderWorkflow:
    """An OrderWorkflow's command rules without a running workflow (its __init__ needs one)."""
    order = object.__new__(OrderWorkflow)
    order.state, order.reason = state, reason
    order.approved, order.cancel_requested = flags.get("approved", False), flags.get("cancel_requested", False)
    order.review_deadline = None  # the review has no deadline yet: workflow.now() needs a running workflow
    return order


def test_no_command_is_accepted_once_the_order_is_ending():
    """Compensation under way (``_abort`` set the reason): every command is refused with it, not
    accepted and later answered "ended", and an approval at the review deadline is not answered
    "approved" for an order being cancelled. Found by the soak: an approval validated while the
    review-deadline cancellation was running (state still awaiting_review) was accepted."""
    ending = order_in(OrderState.AWAITING_REVIEW, "manual review deadline passed without approval")
    expected = "order is ending: manual review deadline passed without approval"
    assert ending._approve_refusal() == expected
    assert ending._cancel_refusal() == expected
    assert ending._address_refusal("1 Late Street") == expected
    assert order_in(OrderState.AWAITING_REVIEW)._approve_refusal() is None
    assert order_in(OrderState.SHIPPING)._address_refusal("1 Late Street") is None
    assert order_in(OrderState.FAILED, "x")._cancel_refusal() == "order already ended (failed)"
