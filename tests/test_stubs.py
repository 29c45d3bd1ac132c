"""The fault injector and the stubs' database work.

The flaky_call tests below control the random draw on purpose: each checks one of its
three paths. Everywhere else (end-to-end tests, the benchmark) flaky_call runs as is.
"""

import asyncio
import inspect

import pytest

from orderflow import stubs
from orderflow.errors import PaymentClosed
from orderflow.models import Item, PaymentState


class FixedDraw:
    def __init__(self, value: float):
        self.value = value

    def random(self) -> float:
        return self.value


async def test_flaky_call_fails_below_a_third(monkeypatch):
    monkeypatch.setattr(stubs, "random", FixedDraw(0.1))
    with pytest.raises(RuntimeError, match="Forced failure for testing"):
        await stubs.flaky_call()


async def test_flaky_call_hangs_in_the_middle_third(monkeypatch):
    monkeypatch.setattr(stubs, "random", FixedDraw(0.5))
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(stubs.flaky_call(), 0.2)


async def test_flaky_call_succeeds_above_two_thirds(monkeypatch):
    monkeypatch.setattr(stubs, "random", FixedDraw(0.9))
    assert await stubs.flaky_call() is None


def test_flaky_call_is_the_assignments():
    source = inspect.getsource(stubs.flaky_call)
    for fragment in ("random.random()", "< 0.33", "Forced failure for testing", "< 0.67", "asyncio.sleep(300)"):
        assert fragment in source


@pytest.fixture
def always_succeed(monkeypatch):
    monkeypatch.setattr(stubs, "random", FixedDraw(0.9))


async def test_stubs_record_each_step(repo, always_succeed):
    order_id = f"stub-{id(repo)}"
    order = await stubs.order_received(order_id, repo, "pay-" + order_id, [Item("ABC", 2), Item("XYZ")], "1 Main St")
    assert order == {"order_id": order_id, "items": [{"sku": "ABC", "qty": 2}, {"sku": "XYZ", "qty": 1}]}
    assert await stubs.order_validated(order, repo) is True
    assert await stubs.payment_charged(order, "pay-" + order_id, repo) == {"status": "charged", "amount": 3}
    assert await stubs.package_prepared(order, repo, 1, "1 Main St") == "Package ready"
    assert await stubs.carrier_dispatched(order, repo, 1, "2 Side St") == "Dispatched"
    assert await stubs.order_shipped(order, repo) == "Shipped"
    view = repo.order_view(order_id)
    assert view["order"]["state"] == "shipped" and view["order"]["validated"]
    assert [(p["status"], p["amount"]) for p in view["payments"]] == [("charged", 3)]
    assert [(s["status"], s["address"]) for s in view["shipments"]] == [("dispatched", "2 Side St")]


async def test_validation_rejects_an_order_without_items(repo, always_succeed):
    order_id = f"empty-{id(repo)}"
    order = await stubs.order_received(order_id, repo, "pay-" + order_id, [], "")
    with pytest.raises(ValueError, match="No items to validate"):
        await stubs.order_validated(order, repo)


async def test_refund_then_late_charge_is_refused(repo, always_succeed):
    order_id = f"late-{id(repo)}"
    order = await stubs.order_received(order_id, repo, "pay-" + order_id, [Item("ABC")], "")
    assert await stubs.payment_refunded(order, "pay-" + order_id, repo) == PaymentState.VOIDED
    with pytest.raises(PaymentClosed):
        await stubs.payment_charged(order, "pay-" + order_id, repo)
