"""End to end with the unmodified fault injector: many orders, prompt approval, invariants.

Nothing here controls flaky_call: a third of attempts fail and a third hang.
"""

import pytest

from orderflow import audit, order_client
from orderflow.models import OrderState
from tests.helpers import new_id

BUDGET = 15.0


async def run_orders(stack, count: int, concurrency: int) -> dict[str, tuple]:
    requests = [
        order_client.new_order(order_id, f"pay-{order_id}") for order_id in (new_id(f"e2e{n}") for n in range(count))
    ]
    placed = await order_client.place_orders(stack.client, requests, stack.settings, concurrency=concurrency)
    return {p.order_id: (p.result, p.seconds) for p in placed}


async def check(stack, outcomes: dict[str, tuple]) -> None:
    slow = {o: s for o, (_, s) in outcomes.items() if s >= BUDGET}
    assert not slow, f"orders over {BUDGET} s: {slow}"
    # Database, history and status() agree; nothing lost, charged twice or charged without shipment.
    assert await audit.check_against_temporal(stack.repo, stack.client, outcomes) == []
    shipped = sum(r.state == OrderState.SHIPPED for r, _ in outcomes.values())
    assert shipped >= 0.9 * len(outcomes), f"only {shipped} of {len(outcomes)} shipped"


async def test_fifty_orders_under_real_faults_on_sqlite(stack):
    await check(stack, await run_orders(stack, 50, 10))


@pytest.mark.mysql
async def test_orders_under_real_faults_on_mysql(mysql_stack):
    await check(mysql_stack, await run_orders(mysql_stack, 20, 10))
