"""An order's status is read from what its workflow published in its memo: no worker, no query.

A query makes a worker answer, and the SDK core can let a query's own task move a cached run
(docs/reliability.md, defect 2), so the API and the notebooks read the memo instead
(OrderWorkflow._publish_status). These tests check that the memo says what the workflow's own
``status()`` query says, and that it answers with every worker stopped.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict

from orderflow import order_client
from orderflow.config import Settings
from orderflow.models import OrderState
from orderflow.worker import InProcessWorkers
from tests.helpers import new_id


async def until(read, predicate, timeout: float = 10.0):
    async with asyncio.timeout(timeout):
        while not predicate(current := await read()):
            await asyncio.sleep(0.1)
    return current


async def test_a_running_orders_status_is_its_memo_and_needs_no_worker(client, dev_server, sqlite_url, scripted):
    # Every flaky call succeeds (scripted): the order reaches its review at once and waits there.
    settings = Settings(temporal_address=dev_server.address, db_url=sqlite_url).with_own_queues("memo")
    order_id = new_id("memo")
    req = order_client.new_order(order_id, f"pay-{order_id}", address="1 Main St", review_timeout_seconds=30)
    async with InProcessWorkers(client, settings):
        await order_client.start_order(client, req, settings)
        # Read before the order's first workflow task completes, the status comes from a query
        # (nothing is published yet); once it awaits review, the memo says so.
        await until(
            lambda: order_client.order_status(client, order_id), lambda a: a.status["state"] == "awaiting_review"
        )
        waiting = await order_client.order_status(client, order_id)
        await order_client.update_address(client, order_id, "2 Side St")
        changed = await until(
            lambda: order_client.order_status(client, order_id), lambda a: a.status["address"] == "2 Side St"
        )
        queried = asdict(await order_client.status(client, order_id))
    assert (waiting.source, waiting.status["state"]) == ("memo", "awaiting_review")
    assert changed.source == "memo"
    # The memo is status() without the reader's clock, and with the last 3 commands and errors
    # (OrderWorkflow.MEMO_SIGNALS): every other field is the same.
    memo = {key: value for key, value in changed.status.items() if key != "seconds_left"}
    queried.update(signals=queried["signals"][-3:], recent_errors=queried["recent_errors"][-3:])
    assert memo == {key: value for key, value in queried.items() if key != "seconds_left"}
    assert 0 < changed.status["seconds_left"] <= 15
    assert [(s["name"], s["accepted"], s["detail"]) for s in memo["signals"]] == [("UpdateAddress", True, "2 Side St")]
    assert memo["steps"]["validate"]["state"] == "done" and memo["steps"]["receive"]["attempts"] == 1

    # Every worker is stopped: a query would wait for one; the memo answers at once.
    began = time.monotonic()
    answer = await order_client.order_status(client, order_id)
    published = await order_client.published_status(client, order_id)
    assert time.monotonic() - began < order_client.STATUS_QUERY_TIMEOUT.total_seconds() / 2
    assert (answer.source, answer.temporal_status, answer.status["address"]) == ("memo", "RUNNING", "2 Side St")
    assert published is not None and (published.state, published.address) == (OrderState.AWAITING_REVIEW, "2 Side St")
    await order_client.order_handle(client, order_id).terminate("test over")


async def test_an_order_publishes_its_end(stack, scripted):
    """The last status is published before the run completes: the memo of an ended order is its end."""
    order_id = new_id("memo-end")
    req = order_client.new_order(order_id, f"pay-{order_id}", address="1 Main St")
    handle = await order_client.start_order(stack.client, req, stack.settings)
    assert await order_client.approve_when_ready(handle)
    result = await handle.result()
    published = await order_client.published_status(stack.client, order_id)
    assert published is not None
    assert (published.state, published.payment, published.address, published.step, published.seconds_left) == (
        result.state,
        result.payment,
        result.address,
        "done",
        0.0,
    )
    assert result.state == OrderState.SHIPPED and published.approved
