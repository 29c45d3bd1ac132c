"""The review deadline: the default one on Temporal's time-skipping test server (a whole order's
budget of timers passes in well under a second of wall time), and an approval that comes too late."""

import asyncio
from datetime import timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from orderflow import order_client
from orderflow.bench.replay import replay_histories
from orderflow.config import Settings
from orderflow.db.repository import Repository
from orderflow.devstack import installed_binary
from orderflow.models import OrderState, PaymentState, Signal, StepPolicy
from orderflow.worker import build_workers
from orderflow.workflows import OrderWorkflow
from tests.helpers import new_id, running_stack


@pytest.fixture(scope="module")
async def skipping_env():
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=installed_binary("temporal-test-server")
    )
    yield env
    await env.shutdown()


async def test_an_unapproved_order_is_cancelled_at_the_default_review_deadline(skipping_env, sqlite_url, scripted):
    """Budget 15 s, refund reserve 3 s, post-review reserve 3 s: review closes 9 s after the start."""
    async with running_stack(skipping_env.client, "time-skipping", sqlite_url, "skip") as stack:
        order_id = new_id("deadline")
        handle = await order_client.start_order(
            stack.client, order_client.new_order(order_id, f"pay-{order_id}"), stack.settings
        )
        result = await handle.result()  # the test server skips time while the workflow only waits
    policy = StepPolicy()
    review_closes = 15 - policy.refund_reserve_seconds - policy.post_review_reserve_seconds
    assert (result.state, result.payment) == (OrderState.CANCELLED, PaymentState.VOIDED)
    assert result.reason == "manual review deadline passed without approval"
    assert (
        timedelta(seconds=review_closes)
        <= timedelta(seconds=result.elapsed_seconds)
        < timedelta(seconds=review_closes + 1)
    )


async def test_an_approval_that_reaches_the_workflow_after_the_review_deadline_is_refused(
    client, dev_server, sqlite_url, scripted
):
    """On the real dev server. The orders worker stops while two orders await review (1 s review
    timeout); the deadline's timer fires with no worker; then one order gets an approve signal and
    the other an approve Update, both after the deadline. The worker comes back and sees each
    message in the same workflow task as the TimerFired, where messages are applied first: both
    approvals are refused and both orders are cancelled. (Before the rule both were charged and
    shipped.) Scripted draws make every flaky call succeed."""
    settings = Settings(temporal_address=dev_server.address, db_url=sqlite_url).with_own_queues("late-approval")
    repo = Repository.from_url(sqlite_url)
    by_signal, by_update = new_id("late-signal"), new_id("late-update")
    (shipping,) = build_workers(client, repo, settings, kinds=("shipping",))
    try:
        async with shipping:
            (orders,) = build_workers(client, repo, settings, kinds=("orders",))
            async with orders:
                handles = [
                    await order_client.start_order(
                        client, order_client.new_order(i, f"pay-{i}", review_timeout_seconds=1.0), settings
                    )
                    for i in (by_signal, by_update)
                ]
                async with asyncio.timeout(10):  # the review's timer has started
                    for handle in handles:
                        while (await handle.query(OrderWorkflow.status)).review_deadline is None:
                            await asyncio.sleep(0.02)
            await asyncio.sleep(1.5)  # no worker: the deadline's timer fires, nobody sees it yet
            await handles[0].signal(OrderWorkflow.approve_signal)
            update = asyncio.create_task(handles[1].execute_update(OrderWorkflow.approve))
            await asyncio.sleep(0.5)  # the Update reaches the server and waits for a worker
            (orders,) = build_workers(client, repo, settings, kinds=("orders",))
            async with orders:
                results = [await handle.result() for handle in handles]
                with pytest.raises(WorkflowUpdateFailedError) as refused:
                    await update
                signals = (await handles[0].query(OrderWorkflow.status)).signals
            histories = [await handle.fetch_history() for handle in handles]
    finally:
        repo.engine.dispose()
    for result in results:
        assert (result.state, result.payment) == (OrderState.CANCELLED, PaymentState.VOIDED), result
        assert result.reason == "manual review deadline passed without approval"
    assert refused.value.cause.message.startswith("the manual review deadline passed at "), refused.value.cause
    assert [(s.name, s.accepted) for s in signals] == [(Signal.APPROVE, False)], signals
    assert signals[0].detail.startswith("the manual review deadline passed at "), signals[0]
    replay = await replay_histories(histories)
    assert replay["failures"] == 0, replay["first_failures"]
