"""Idempotent writes on SQLite and MySQL: duplicates and concurrent duplicates change nothing."""

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from orderflow.errors import PaymentClosed, PaymentConflict
from orderflow.models import AuditEvent, Item, OrderState, PaymentState


def fresh_order(repo, state: OrderState | None = None) -> tuple[str, str]:
    order_id = f"o-{uuid.uuid4().hex[:10]}"
    payment_id = f"p-{order_id}"
    repo.insert_order(order_id, payment_id, [Item("ABC", 2)], "addr")
    if state:
        repo.advance_state(order_id, state)
    return order_id, payment_id


def test_insert_order_twice_keeps_the_first(repo):
    order_id, payment_id = fresh_order(repo)
    repo.insert_order(order_id, "other", [Item("ZZZ", 9)], "elsewhere")
    row = repo.get_order(order_id)
    assert (row["payment_id"], row["items_json"], row["address"]) == (payment_id, [{"sku": "ABC", "qty": 2}], "addr")


def test_concurrent_charges_charge_once(repo):
    order_id, payment_id = fresh_order(repo)
    with ThreadPoolExecutor(8) as pool:
        amounts = list(pool.map(lambda _: repo.charge_payment(payment_id, order_id, 2), range(16)))
    assert amounts == [2] * 16
    payments = repo.order_view(order_id)["payments"]
    assert [(p["status"], p["amount"]) for p in payments] == [("charged", 2)]


def test_a_payment_id_belongs_to_one_order(repo):
    first, payment_id = fresh_order(repo)
    second, _ = fresh_order(repo)
    repo.charge_payment(payment_id, first, 2)
    with pytest.raises(PaymentConflict):
        repo.charge_payment(payment_id, second, 2)
    assert repo.refund_payment(payment_id, second) == PaymentState.NONE
    assert repo.order_view(first)["payments"][0]["status"] == "charged"


def test_refund_is_idempotent_and_final(repo):
    order_id, payment_id = fresh_order(repo)
    repo.charge_payment(payment_id, order_id, 2)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: repo.refund_payment(payment_id, order_id), range(8)))
    assert set(results) == {PaymentState.REFUNDED}
    with pytest.raises(PaymentClosed):
        repo.charge_payment(payment_id, order_id, 2)


def test_refund_before_charge_voids_the_payment_id(repo):
    order_id, payment_id = fresh_order(repo)
    assert repo.refund_payment(payment_id, order_id) == PaymentState.VOIDED
    with pytest.raises(PaymentClosed):
        repo.charge_payment(payment_id, order_id, 2)


def test_state_only_moves_forward(repo):
    order_id, _ = fresh_order(repo, OrderState.CHARGED)
    assert not repo.advance_state(order_id, OrderState.VALIDATED)  # a late write of an earlier step
    assert repo.advance_state(order_id, OrderState.SHIPPED)
    assert not repo.advance_state(order_id, OrderState.CANCELLED)  # terminal is final
    assert repo.get_order(order_id)["state"] == "shipped"


def test_shipments_are_idempotent(repo):
    order_id, _ = fresh_order(repo, OrderState.SHIPPING)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: repo.prepare_shipment(order_id, 1, "a"), range(8)))
        list(pool.map(lambda _: repo.dispatch_shipment(order_id, 1, "b"), range(8)))
    assert repo.settle_shipment(order_id, 1, "failed") == "dispatched"  # a dispatched shipment stays so
    ships = repo.order_view(order_id)["shipments"]
    assert [(s["shipment_no"], s["status"], s["address"]) for s in ships] == [(1, "dispatched", "b")]
    assert repo.get_order(order_id)["state"] == "dispatched"


def test_events_are_appended_once_per_key(repo):
    order_id, _ = fresh_order(repo)
    batch = [
        AuditEvent(key=f"{order_id}/{n}", order_id=order_id, type="state_changed",
                   ts="2026-11-25T10:00:00.123456+00:00", detail={"n": n})
        for n in range(3)
    ]
    repo.append_events(batch)
    repo.append_events(batch[1:])
    events = repo.order_view(order_id)["events"]
    assert [e["payload_json"] for e in events] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert events[0]["ts"].microsecond == 123456


def test_an_order_that_ends_before_it_was_received_still_gets_its_row(repo):
    order_id = f"o-{uuid.uuid4().hex[:10]}"
    repo.insert_order(order_id, "p", [Item("ABC")], "", OrderState.FAILED)
    repo.insert_order(order_id, "p", [Item("ABC")], "", OrderState.RECEIVED)  # a late ReceiveOrder: ignored
    assert repo.get_order(order_id)["state"] == "failed"


def test_settling_a_shipment_fences_off_a_late_dispatch(repo):
    """A dispatch attempt that timed out may write after the workflow gave up: settle decides."""
    order_id, _ = fresh_order(repo, OrderState.SHIPPING)
    repo.prepare_shipment(order_id, 1, "a")
    assert repo.settle_shipment(order_id, 1, "failed") == "failed"
    repo.dispatch_shipment(order_id, 1, "a")  # the late write finds nothing to move
    assert [s["status"] for s in repo.order_view(order_id)["shipments"]] == ["failed"]
    assert repo.get_order(order_id)["state"] == "shipping"
    repo.prepare_shipment(order_id, 2, "a")
    repo.dispatch_shipment(order_id, 2, "a")  # this time the late write came first
    assert repo.settle_shipment(order_id, 2, "cancelled") == "dispatched"
    assert repo.settle_shipment(order_id, 3, "failed") == "failed"  # never prepared
