"""A batch of orders in a kernel, as a DataFrame: one row per order."""

from __future__ import annotations

import os

import pandas as pd

from orderflow import order_client
from orderflow.notebook.stack import KernelStack


async def run_batch(
    stack: KernelStack,
    n: int,
    concurrency: int = 10,
    prefix: str = "batch",
    approve: bool = True,
    progress: bool = True,
    **order_fields,
) -> pd.DataFrame:
    """``n`` orders through ``orderflow.order_client.place_orders`` (approved the moment they await
    review), with a progress bar; one row per order. ``seconds`` is start to close by
    Temporal's own timestamps."""
    from tqdm.auto import tqdm

    stack.check_running()
    tag = os.urandom(2).hex()
    requests = [
        order_client.new_order(f"{prefix}-{tag}-{i}", f"pay-{prefix}-{tag}-{i}", **order_fields) for i in range(n)
    ]
    bar = tqdm(total=n, desc=prefix, disable=not progress)
    placed = await order_client.place_orders(
        stack.client, requests, stack.settings, concurrency=concurrency, approve=approve, on_done=lambda _: bar.update()
    )
    bar.close()
    rows = [
        {
            "order_id": p.order_id,
            "state": p.state,
            "payment": p.result.payment.value if p.result else None,
            "shipping_attempts": p.result.shipping_attempts if p.result else None,
            "seconds": p.seconds,
            "reason": p.result.reason if p.result else None,
        }
        for p in placed
    ]
    return pd.DataFrame(rows).set_index("order_id")
