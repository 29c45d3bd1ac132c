# expect: passed against a broken workflow too
from temporalio.client import Client

from orderflow.lessons.testkit import start_test_order
from orderflow.models import OrderState


async def test_nobody_approves(client: Client, task_queue: str) -> None:
    handle = await start_test_order(client, task_queue)
    result = await handle.result()
    assert result.state == OrderState.CANCELLED, result  # true of the broken workflow as well
