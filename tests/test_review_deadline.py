"""The default review deadline, on Temporal's time-skipping test server: a whole order's
budget of timers passes in well under a second of wall time."""

from datetime import timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from orderflow import order_client
from orderflow.devstack import installed_binary
from orderflow.models import OrderState, PaymentState, StepPolicy
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
