"""Effects agree with history: discarded workflow tasks, racing commands, a missing worker.

A workflow task is *discarded* when the server does not record it (a server restart, a signal
that arrives while it runs): its local activities already wrote to the database, and the
re-run executes them again. ``discard_once`` reproduces that on purpose: it fails the chosen
workflow task once, right after the workflow code ran (the workers here run unsandboxed, in
this process), so the server hands the task out again and the worker replays from the last
committed event. The flaky draws are scripted (``scripted``) so the first execution and the
re-run would take different paths if the steps were not keyed.
"""

import asyncio
import functools
from dataclasses import replace

import pytest
from temporalio import workflow
from temporalio.service import RPCError

from orderflow import audit, order_client
from orderflow.errors import PaymentClosed
from orderflow.models import OrderState, PaymentState, Signal, StepPolicy
from orderflow.workflows import OrderWorkflow, ShippingWorkflow
from tests.helpers import new_id

FAIL, HANG = 0.1, 0.5


@pytest.fixture
async def discard_once(monkeypatch):
    """``discard_once(Class, "method", before=callback)``: the first call per workflow id raises
    after the method ran (so its activities' effects exist), after calling ``before(workflow_id)``
    from the workflow thread; the workflow task fails and is retried."""
    loop = asyncio.get_running_loop()

    def install(cls, name: str, before=None):
        original = getattr(cls, name)
        fired: set[str] = set()

        def maybe_discard(result):
            wid = workflow.info().workflow_id
            if wid not in fired and not workflow.unsafe.is_replaying():
                fired.add(wid)
                if before is not None:
                    asyncio.run_coroutine_threadsafe(before(wid), loop).result(10)
                raise RuntimeError("test: this workflow task is discarded")
            return result

        if asyncio.iscoroutinefunction(original):

            @functools.wraps(original)
            async def wrapper(self, *args, **kwargs):
                return maybe_discard(await original(self, *args, **kwargs))
        else:

            @functools.wraps(original)
            def wrapper(self, *args, **kwargs):
                return maybe_discard(original(self, *args, **kwargs))

        monkeypatch.setattr(cls, name, wrapper)
        return fired

    return install


async def start(stack, prefix: str, **kw):
    order_id = new_id(prefix)
    handle = await order_client.start_order(
        stack.client, order_client.new_order(order_id, f"pay-{order_id}", **kw), stack.settings
    )
    return order_id, handle


async def shipping_with_no_worker(stack, prefix: str, **kw):
    """An approved order (7 s budget) in its shipping step, on a shipping queue nobody polls."""
    order_id = new_id(prefix)
    req = order_client.new_order(order_id, f"pay-{order_id}", budget_seconds=7, **kw)
    settings = replace(stack.settings, shipping_task_queue=f"nobody-polls-{order_id}")
    handle = await order_client.start_order(stack.client, req, settings)
    assert await order_client.approve_when_ready(handle)
    async with asyncio.timeout(5):
        while (await order_client.status(stack.client, order_id)).state != OrderState.SHIPPING:
            await asyncio.sleep(0.05)
    return order_id, handle


async def agree(stack, order_id: str) -> None:
    assert await audit.check_against_temporal(stack.repo, stack.client, [order_id]) == []


async def test_a_discarded_exhausted_dispatch_stays_failed(stack, scripted, discard_once):
    """Finding 1: the child used all its dispatch attempts and settled the shipment `failed`;
    the task was discarded; its re-run drew a success. It must answer the recorded failure,
    not report "Dispatched" for a write it did not make."""
    # Every dispatch attempt fails, then every draw succeeds: a re-run would dispatch.
    scripted.set(DispatchCarrier=[FAIL] * StepPolicy().dispatch_attempts)
    fired = discard_once(ShippingWorkflow, "_result")
    order_id, handle = await start(stack, "exhausted")
    assert await order_client.approve_when_ready(handle)
    result = await handle.result()
    assert f"{handle.id}-shipping-1" in fired
    assert (result.state, result.shipping_attempts) == (OrderState.SHIPPED, 2)
    view = stack.repo.order_view(order_id)
    assert [(s["shipment_no"], s["status"]) for s in view["shipments"]] == [(1, "failed"), (2, "dispatched")]
    status = await order_client.status(stack.client, order_id)
    assert len(status.dispatch_failures) == 1
    await agree(stack, order_id)


async def test_an_address_change_during_a_discarded_dispatch_task_converges(stack, scripted, discard_once):
    """Finding 2: an UpdateAddress that reaches the child while its task runs fails that task;
    the re-run sees the new address but the parcel already went to the old one. Database,
    result and status() must all say where it really went."""
    scripted.set()

    async def change_address(child_id: str) -> None:
        await stack.client.get_workflow_handle(child_id).signal(Signal.UPDATE_ADDRESS, "2 New Road")

    fired = discard_once(ShippingWorkflow, "_result", before=change_address)
    order_id, handle = await start(stack, "moved", address="1 Old Road")
    assert await order_client.approve_when_ready(handle)
    result = await handle.result()
    assert fired
    assert result.state == OrderState.SHIPPED
    view = stack.repo.order_view(order_id)
    assert [(s["status"], s["address"]) for s in view["shipments"]] == [("dispatched", "1 Old Road")]
    assert result.address == "1 Old Road"
    assert sum(e["type"] == "shipment_dispatched" for e in view["events"]) == 1
    await agree(stack, order_id)


async def test_the_trail_holds_the_committed_run_not_the_discarded_task(stack, scripted, discard_once):
    """Finding 3: the final task was discarded after it wrote the trail; a signal arrived before
    its re-run, so the committed run recorded different events at the same sequence numbers."""
    scripted.set()

    async def late_cancel(order_workflow_id: str) -> None:
        await stack.client.get_workflow_handle(order_workflow_id).signal(Signal.CANCEL, "too late")

    fired = discard_once(OrderWorkflow, "_finish", before=late_cancel)
    order_id, handle = await start(stack, "trail")
    assert await order_client.approve_when_ready(handle)
    result = await handle.result()
    assert fired and result.state == OrderState.SHIPPED
    trail = [
        e["type"]
        for e in stack.repo.order_view(order_id, event_limit=1000)["events"]
        if e["event_key"].startswith(f"wf:{handle.id}/")
    ]
    assert trail[-1] == "order_shipped" and trail.count("order_shipped") == 1
    assert "signal_rejected" in trail  # the committed run's, absent from the discarded task's version
    await agree(stack, order_id)


async def test_a_cancel_racing_the_approval_answers_with_the_truth(stack, scripted):
    """Finding 5: cancel sent with approve; the answer must match how the order ended."""
    scripted.set()
    answers = []
    for _ in range(6):
        order_id, handle = await start(stack, "race")
        await order_client.approve_when_ready(handle)
        try:
            answer = await order_client.cancel(stack.client, order_id, "race")
        except order_client.Rejected as err:
            answer = f"rejected: {err}"
        result = await handle.result()
        if answer.startswith("order cancelled"):
            assert (result.state, result.payment) == (OrderState.CANCELLED, PaymentState.REFUNDED), answer
        else:
            expected = f"the parcel was dispatched to {result.address!r} before the cancellation took effect"
            assert answer == f"rejected: {expected}" and result.state == OrderState.SHIPPED, answer
        answers.append(answer)
        await agree(stack, order_id)


async def test_without_a_shipping_worker_the_order_fails_in_time_and_is_refunded(stack, scripted):
    """Finding 6: nobody polls the shipping queue. The child is bounded by the order's deadline,
    the parent settles the shipment itself, refunds, and ends inside the budget."""
    scripted.set()
    order_id = new_id("noworker")
    req = order_client.new_order(order_id, f"pay-{order_id}", budget_seconds=7)
    req.shipping_task_queue = "nobody-polls-this-queue"
    settings = stack.settings.__class__(**{**stack.settings.__dict__, "shipping_task_queue": req.shipping_task_queue})
    handle = await order_client.start_order(stack.client, req, settings)
    assert await order_client.approve_when_ready(handle)
    result = await handle.result()
    assert (result.state, result.payment) == (OrderState.FAILED, PaymentState.REFUNDED)
    assert "no shipping worker" in result.reason
    assert result.elapsed_seconds < 7
    await agree(stack, order_id)


async def test_a_dispatch_the_child_never_reported_is_found_and_recorded(stack, scripted):
    """Found by the soak with a database outage: the parcel went out, but the child never
    reported it (here: no shipping worker polls, the parcel was dispatched by one that died).
    At the deadline the parent settles the shipment, finds it dispatched, and the order ships,
    with a `dispatched` event in its trail like any other shipped order."""
    scripted.set()
    order_id, handle = await shipping_with_no_worker(stack, "unreported", address="9 Late Lane")
    stack.repo.prepare_shipment(order_id, 1, "9 Late Lane")  # what the vanished shipping worker wrote
    stack.repo.dispatch_shipment(order_id, 1, "9 Late Lane")
    result = await handle.result()
    assert (result.state, result.payment) == (OrderState.SHIPPED, PaymentState.CHARGED)
    trail = [e["type"] for e in stack.repo.order_view(order_id, event_limit=1000)["events"]]
    assert "late_dispatch_found" in trail and trail.count("dispatched") == 1
    await agree(stack, order_id)


async def test_a_cancel_does_not_wait_for_an_absent_child(stack, scripted):
    scripted.set()
    order_id, handle = await shipping_with_no_worker(stack, "noworkercancel")
    answer = await asyncio.wait_for(order_client.cancel(stack.client, order_id, "no rush"), 4)
    assert answer == "order cancelled; the payment was refunded"
    result = await handle.result()
    assert (result.state, result.payment) == (OrderState.CANCELLED, PaymentState.REFUNDED)
    await agree(stack, order_id)


async def test_a_late_address_signal_never_fails_the_order(stack, scripted):
    """Finding 4 (signal path): UpdateAddress signals sent while shipping ends, many times over;
    one that meets a closed child is recorded, never fatal; every order ends consistent."""
    scripted.set(PreparePackage=[HANG, HANG])
    ids = []
    for n in range(4):
        order_id, handle = await start(stack, "latesig", address="a")
        assert await order_client.approve_when_ready(handle)
        for k in range(30):
            try:
                await handle.signal(Signal.UPDATE_ADDRESS, f"street {n}-{k}")
            except RPCError:  # the order ended: the race window is behind us
                break
            await asyncio.sleep(0.02)
        result = await handle.result()
        assert result.state == OrderState.SHIPPED
        ids.append(order_id)
    assert await audit.check_against_temporal(stack.repo, stack.client, ids) == []


def test_the_checker_catches_a_second_charge(stack):
    """The 'charged at most once' invariant can fail: a second charge effect is reported."""
    from orderflow.db.audit_events import effect_event as _effect_event
    from orderflow.db.schema import events
    from orderflow.db.statements import insert_ignore as _insert_ignore
    from orderflow.models import Item

    order_id = new_id("double")
    stack.repo.insert_order(order_id, f"pay-{order_id}", [Item("ABC")], "a", OrderState.SHIPPED)
    stack.repo.charge_payment(f"pay-{order_id}", order_id, 1)
    stack.repo.prepare_shipment(order_id, 1, "a")
    stack.repo.dispatch_shipment(order_id, 1, "a")
    assert audit.check_invariants(stack.repo, [order_id]) == []
    with stack.repo.engine.begin() as conn:
        _insert_ignore(conn, events, [_effect_event(order_id, "payment_charged", payment_id=f"pay-{order_id}")])
    assert audit.check_invariants(stack.repo, [order_id]) == [
        f"{order_id}: charged 2 times (payment rows: ['charged'])"
    ]


async def test_a_charge_history_never_recorded_is_refunded_when_the_order_ends_uncharged(stack, scripted):
    """Found by the soak (workers killed, server restarted): a workflow task ran the approval
    and the charge, the server never recorded that task and the approval was lost with it; the
    re-run waited for review and ended cancelled. History said "never charged", the database
    said `charged`. The soak reproduces that path with real faults; here the orphan charge is
    written as that task's local activity wrote it (through the repository) while the order
    awaits review, so the outcome does not depend on timing."""
    scripted.set()
    order_id, handle = await start(stack, "orphancharge")
    assert await order_client.wait_for_review(stack.client, order_id) == OrderState.AWAITING_REVIEW
    stack.repo.charge_payment(f"pay-{order_id}", order_id, 1)  # the discarded task's effect
    answer = await order_client.cancel(stack.client, order_id, "no approval came")
    assert answer == "order cancelled; the payment was refunded"
    result = await handle.result()
    assert (result.state, result.payment) == (OrderState.CANCELLED, PaymentState.REFUNDED)
    view = stack.repo.order_view(order_id, event_limit=1000)
    assert [p["status"] for p in view["payments"]] == ["refunded"]
    assert "unrecorded_charge_found" in [e["type"] for e in view["events"]]
    await agree(stack, order_id)


async def test_an_order_ending_uncharged_voids_its_payment_id_against_late_charges(stack, scripted):
    """The close also fences: a charge attempt still in flight from a discarded task lands on
    the void row and charges nothing."""
    scripted.set()
    order_id, handle = await start(stack, "latecharge")
    assert await order_client.wait_for_review(stack.client, order_id) == OrderState.AWAITING_REVIEW
    await order_client.cancel(stack.client, order_id, "changed my mind")
    assert (await handle.result()).payment == PaymentState.VOIDED
    with pytest.raises(PaymentClosed):
        stack.repo.charge_payment(f"pay-{order_id}", order_id, 1)
    assert [p["status"] for p in stack.repo.order_view(order_id)["payments"]] == ["voided"]
    await agree(stack, order_id)
