"""Helpers for the teaching notebooks: the stack inside a Jupyter kernel, the order console
widget, DataFrames and plots. Notebooks import from here and define no workflow themselves.

In a kernel an event loop already runs: use top-level ``await``; the workers run as
background tasks and make progress while a cell awaits.
"""

from __future__ import annotations

import asyncio
import html
import os
import subprocess
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace

import ipywidgets as widgets
import pandas as pd
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from orderflow import audit
from orderflow import client as orders
from orderflow.config import DEFAULT_STATE_DIR, Settings
from orderflow.db import migrate
from orderflow.db.repository import Repository
from orderflow.devstack import DevServer, free_port, port_open, spawn_orderflow
from orderflow.models import OrderResult, OrderStatus
from orderflow.worker import build_workers

__all__ = ["KernelStack", "OrderConsole", "start_stack", "run_batch", "plot_timeline", "plot_durations"]


@dataclass
class KernelStack:
    """Temporal (reused or started), the app database and both workers, inside this kernel."""

    settings: Settings
    client: Client
    repo: Repository
    workers: list[Worker]
    server: DevServer | None = None
    tasks: list[asyncio.Task] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def ui_url(self) -> str | None:
        return self.server.ui_url if self.server else None

    async def start_order(self, order_id: str, payment_id: str, **kw) -> WorkflowHandle:
        return await orders.start_order(self.client, orders.new_order(order_id, payment_id, **kw), self.settings)

    async def status(self, order_id: str) -> OrderStatus:
        return await orders.status(self.client, order_id)

    async def wait_for(self, order_id: str, predicate, timeout: float = 15.0) -> OrderStatus:
        """Poll status() until ``predicate(status)`` is true."""
        async with asyncio.timeout(timeout):
            while True:
                current = await self.status(order_id)
                if predicate(current):
                    return current
                await asyncio.sleep(0.05)

    def payments(self, order_ids=None) -> pd.DataFrame:
        return audit.payments_df(self.repo, order_ids)

    def shipments(self, order_ids=None) -> pd.DataFrame:
        return audit.shipments_df(self.repo, order_ids)

    def orders(self, order_ids=None) -> pd.DataFrame:
        return audit.orders_df(self.repo, order_ids)

    def events(self, order_ids=None) -> pd.DataFrame:
        return audit.events_df(self.repo, order_ids)

    def retry_stats(self, order_ids=None) -> pd.DataFrame:
        return audit.retry_stats(self.repo, order_ids)

    async def pollers(self, kind: str = "orders") -> set[str]:
        """Identities of the workers polling the orders or shipping workflow task queue now."""
        from temporalio.api.enums.v1 import TaskQueueType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

        queue = self.settings.orders_task_queue if kind == "orders" else self.settings.shipping_task_queue
        answer = await self.client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(namespace=self.settings.namespace, task_queue=TaskQueue(name=queue),
                                     task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)
        )
        return {p.identity for p in answer.pollers}

    def spawn_workers(self, kind: str, count: int) -> list[subprocess.Popen]:
        """Start ``count`` more worker processes (``orderflow worker KIND``) sharing the queue."""
        quiet = replace(self.settings, log_level="WARNING")
        started = [spawn_orderflow("worker", kind, settings=quiet) for _ in range(count)]
        self.processes += started
        return started

    async def stop(self) -> None:
        """Stop the workers (in-kernel and spawned) and the dev server this stack started."""
        for proc in self.processes:
            proc.terminate()
        for worker in self.workers:
            await worker.shutdown()
        for task in self.tasks:
            await task
        for proc in self.processes:
            proc.wait(10)
        self.repo.engine.dispose()
        if self.server:
            self.server.stop()


async def start_stack(settings: Settings | None = None, *, fresh: bool = True) -> KernelStack:
    """Reuse the Temporal server at ``settings.temporal_address`` if one answers, else start one.

    ``fresh`` gives this kernel task queues and a database of its own, so a notebook never
    competes with an ``orderflow dev`` that may be running beside it.
    """
    settings = settings or Settings.from_env()
    host, _, port = settings.temporal_address.rpartition(":")
    server = None
    if not port_open(host or "127.0.0.1", int(port)):
        ui_port = 8233 if not port_open("127.0.0.1", 8233) else free_port()
        server = DevServer(port=int(port), ui_port=ui_port).start()
        await server.wait_ready()
    if fresh:
        tag = os.urandom(3).hex()
        db_dir = DEFAULT_STATE_DIR / "notebooks"
        settings = replace(
            settings,
            db_url=f"sqlite:///{db_dir / f'kernel-{tag}.db'}",
            orders_task_queue=f"{settings.orders_task_queue}-nb-{tag}",
            shipping_task_queue=f"{settings.shipping_task_queue}-nb-{tag}",
        )
    migrate.upgrade(settings.db_url)
    client = await orders.connect(settings)
    repo = Repository.from_url(settings.db_url)
    workers = build_workers(client, repo, settings)
    stack = KernelStack(settings, client, repo, workers, server)
    stack.tasks = [asyncio.create_task(w.run()) for w in workers]
    return stack


async def run_batch(stack: KernelStack, n: int, concurrency: int = 10, prefix: str = "batch",
                    approve: bool = True, progress: bool = True, **order_fields) -> pd.DataFrame:
    """Start ``n`` orders (approving each as soon as it awaits review); one row per order."""
    from tqdm.auto import tqdm

    gate = asyncio.Semaphore(concurrency)
    bar = tqdm(total=n, desc=prefix, disable=not progress)
    tag = os.urandom(2).hex()

    async def one(i: int) -> dict:
        async with gate:
            order_id = f"{prefix}-{tag}-{i}"
            handle = await stack.start_order(order_id, f"pay-{order_id}", **order_fields)
            if approve:
                await orders.approve_when_ready(handle)
            result: OrderResult = await handle.result()
            bar.update()
            return {"order_id": order_id, "state": result.state.value, "payment": result.payment.value,
                    "shipping_attempts": result.shipping_attempts, "seconds": result.elapsed_seconds,
                    "reason": result.reason}

    rows = await asyncio.gather(*(one(i) for i in range(n)))
    bar.close()
    return pd.DataFrame(rows).set_index("order_id")


class OrderConsole:
    """Start, approve, cancel and re-address one order with buttons; a live status panel.

    Every button schedules its command on the kernel's loop; ``last_task`` is the latest
    one (a notebook can ``await console.last_task`` after ``button.click()``). Errors from a
    command are shown in the output area, never swallowed.
    """

    def __init__(self, stack: KernelStack, order_id: str = "123", payment_id: str = "abc123"):
        self.stack = stack
        self.order_id = widgets.Text(value=order_id, description="order id")
        self.payment_id = widgets.Text(value=payment_id, description="payment id")
        self.address = widgets.Text(value="742 Evergreen Terrace", description="address")
        self.start = widgets.Button(description="Start", button_style="primary")
        self.approve = widgets.Button(description="Approve", button_style="success")
        self.cancel = widgets.Button(description="Cancel", button_style="danger")
        self.update_address = widgets.Button(description="Update address")
        self.panel = widgets.HTML()
        self.output = widgets.Output()
        self.last_task: asyncio.Task | None = None
        self.messages: list[str] = []
        self.errors: list[str] = []
        self._refresher: asyncio.Task | None = None
        self.start.on_click(lambda _: self._run(self._start()))
        self.approve.on_click(lambda _: self._run(orders.approve(stack.client, self.order_id.value)))
        self.cancel.on_click(lambda _: self._run(orders.cancel(stack.client, self.order_id.value, "cancelled from the console")))
        self.update_address.on_click(
            lambda _: self._run(orders.update_address(stack.client, self.order_id.value, self.address.value))
        )
        self.widget = widgets.VBox([
            widgets.HBox([self.order_id, self.payment_id]),
            widgets.HBox([self.start, self.approve, self.cancel]),
            widgets.HBox([self.address, self.update_address]),
            self.panel,
            self.output,
        ])

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    async def _start(self) -> str:
        handle = await self.stack.start_order(self.order_id.value, self.payment_id.value, address=self.address.value)
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.ensure_future(self._refresh_until_done())
        return f"started {handle.id}"

    def _run(self, command: Awaitable[str]) -> None:
        async def guarded() -> None:
            try:
                message = await command
                self.messages.append(message)
                self.output.append_stdout(f"{message}\n")
            except Exception as err:  # noqa: BLE001 - shown to the person pressing the button
                text = f"{type(err).__name__}: {err}"
                self.errors.append(text)
                self.output.append_stderr(f"{text}\n")
            await self.refresh()

        self.last_task = asyncio.ensure_future(guarded())

    async def refresh(self) -> OrderStatus | None:
        try:
            current = await self.stack.status(self.order_id.value)
        except Exception:  # noqa: BLE001 - not started yet
            self.panel.value = "<i>no order yet</i>"
            return None
        self.panel.value = render_status(current)
        return current

    async def _refresh_until_done(self) -> None:
        while True:
            current = await self.refresh()
            if current is not None and current.terminal:
                return
            await asyncio.sleep(0.3)


def render_status(status: OrderStatus) -> str:
    steps = "".join(
        f"<tr><td>{name}</td><td>{s.state}</td><td>{s.attempts}</td><td>{s.failures}</td><td>{s.timeouts}</td></tr>"
        for name, s in status.steps.items()
    )
    errors = "<br>".join(html.escape(e) for e in status.recent_errors[-3:]) or "none"
    return (
        f"<b>{html.escape(status.order_id)}</b>: <b>{status.state.value}</b> (step {status.step}), "
        f"payment {status.payment.value}, {html.escape(status.shipping)}, "
        f"{status.seconds_left:.1f} s left<br>address: {html.escape(status.address or '-')}"
        f"<table><tr><th>step</th><th>state</th><th>attempts</th><th>failures</th><th>timeouts</th></tr>{steps}</table>"
        f"recent errors: {errors}"
    )


def plot_timeline(stack: KernelStack, order_id: str):
    """One order's audit events on a time axis: a row per step, failures and timeouts marked."""
    import matplotlib.pyplot as plt

    ev = stack.events([order_id])
    start = ev["ts"].min()
    ev = ev.assign(t=(ev["ts"] - start).dt.total_seconds(), step=ev["step"].fillna("order"))
    colors = {"attempt_failed": "tab:red", "attempt_timed_out": "tab:orange"}
    fig, ax = plt.subplots(figsize=(9, 3))
    rows = list(dict.fromkeys(ev["step"]))
    for _, e in ev.iterrows():
        ax.scatter(e["t"], rows.index(e["step"]), color=colors.get(e["type"], "tab:green"), s=30)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("seconds since the order started")
    ax.set_title(f"order {order_id}: red = failed attempt, orange = timed out, green = progress")
    fig.tight_layout()
    return fig


def plot_durations(frame: pd.DataFrame, budget: float = 15.0):
    """Histogram of order durations (a ``seconds`` column) against the budget line."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    frame["seconds"].plot.hist(ax=ax, bins=30)
    ax.axvline(budget, color="red", linestyle="--", label=f"{budget:g} s")
    ax.set_xlabel("seconds from start to terminal state")
    ax.legend()
    fig.tight_layout()
    return fig

