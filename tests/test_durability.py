"""Durable execution: kill the orders worker (SIGKILL) in the middle of an order, start a new
one, and the order finishes as if nothing happened: no lost step, no second charge."""

import asyncio

from orderflow import audit, order_client
from orderflow.config import Settings
from orderflow.db.repository import Repository
from orderflow.devstack import ProcessStack
from orderflow.models import PaymentState
from tests.helpers import new_id


async def test_an_order_survives_its_worker_being_killed(client, dev_server, tmp_path):
    settings = Settings(
        temporal_address=dev_server.address,
        db_url=f"sqlite:///{tmp_path / 'crash.db'}",
        log_level="WARNING",
        orders_task_queue="orders-tq-crash",
        shipping_task_queue="shipping-tq-crash",
    )
    async with ProcessStack(settings) as stack:  # worker processes, on the session's dev server
        order_id = new_id("crash")
        handle = await order_client.start_order(client, order_client.new_order(order_id, f"pay-{order_id}"), settings)
        assert await order_client.approve_when_ready(handle)
        async with asyncio.timeout(15):
            while (await order_client.status(client, order_id)).payment != PaymentState.CHARGED:
                await asyncio.sleep(0.02)
        stack.kill("orders")  # no shutdown, no cleanup: the process just vanishes
        stack.respawn("orders")
        result = await asyncio.wait_for(handle.result(), 60)
    repo = Repository.from_url(settings.db_url)
    try:
        assert await audit.check_against_temporal(repo, client, [order_id], with_status=False) == []
        assert repo.get_order(order_id)["state"] == result.state.value
        assert len(repo.order_view(order_id)["payments"]) == 1
    finally:
        repo.engine.dispose()
