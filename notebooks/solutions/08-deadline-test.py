from temporalio.client import Client

from orderflow.lessons.testkit import start_test_order
from orderflow.models import OrderState, PaymentState


async def test_nobody_approves(client: Client, task_queue: str) -> None:
    """Nobody approves: the order is cancelled at its review deadline, 9 s after the start
    (15 s budget - 3 s refund reserve - 3 s post-review reserve), and nothing is charged."""
    handle = await start_test_order(client, task_queue)
    result = await handle.result()
    assert result.state == OrderState.CANCELLED, result
    assert result.payment == PaymentState.VOIDED, result
    assert "review deadline" in (result.reason or ""), result.reason
    assert 9 <= result.elapsed_seconds < 10, result.elapsed_seconds
