"""The kernel's stack: a Temporal server, a SQLite database and both workers inside a Jupyter kernel.

In a kernel an event loop already runs: cells use top-level ``await``; the workers run as
background tasks and make progress while a cell awaits.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RetryConfig, RPCError

from orderflow import audit, order_client
from orderflow.config import Settings, notebook_temporal_address
from orderflow.db import migrate
from orderflow.db.repository import Repository
from orderflow.devstack import DevServer, spawn_orderflow
from orderflow.errors import OrderflowError
from orderflow.logs import quiet_known_sdk_warnings
from orderflow.models import LIFECYCLE, OrderState, OrderStatus
from orderflow.notebook.faults import FAULTS, FaultCounter, install_fault_counter
from orderflow.worker import InProcessWorkers

if TYPE_CHECKING:
    from orderflow.notebook.console import OrderConsole

# Point every kernel at one Temporal server you run yourself (host:port); unset, each kernel
# starts a dev server of its own, so no notebook depends on a server another kernel may stop.
TEMPORAL_ENV = "ORDERFLOW_NOTEBOOK_TEMPORAL"
QUIET_BEFORE_SHUTDOWN = 0.5  # seconds; > the 0.15 s attempt timeout (see KernelStack.stop)


class StackError(OrderflowError):
    """The kernel's stack cannot start, or was stopped: a one-line reason for the reader."""


@dataclass
class KernelStack:
    """A Temporal server (this kernel's own, unless you named one), a SQLite database in a
    temporary folder and both workers, inside this kernel."""

    settings: Settings
    client: Client
    workers: InProcessWorkers
    home: Path
    server: DevServer | None = None
    processes: list[subprocess.Popen] = field(default_factory=list)
    consoles: list[OrderConsole] = field(default_factory=list)
    stopped: bool = False

    @property
    def ui_url(self) -> str | None:
        return self.server.ui_url if self.server else None

    @property
    def repo(self) -> Repository:
        return self.workers.repo

    @property
    def faults(self) -> FaultCounter:
        return FAULTS

    def describe(self) -> str:
        server = (
            f"this kernel's own Temporal dev server at {self.settings.temporal_address}, Web UI {self.ui_url}"
            if self.server
            else f"the Temporal server you named at {self.settings.temporal_address}"
        )
        return (
            f"{server}\ntask queues: {self.settings.orders_task_queue}, {self.settings.shipping_task_queue}\n"
            f"database: {self.settings.db_url}"
        )

    def check_running(self) -> None:
        if self.stopped:
            raise StackError(
                "this kernel's stack was stopped (the notebook's last cell): "
                "run the notebook's first code cell again to start a new one"
            )

    async def start_order(self, order_id: str, payment_id: str, **kw) -> WorkflowHandle:
        self.check_running()
        return await order_client.start_order(
            self.client, order_client.new_order(order_id, payment_id, **kw), self.settings
        )

    async def status(self, order_id: str) -> OrderStatus:
        """The status the order published in its memo (no worker involved), or, before it has
        published any, its status() query."""
        published = await order_client.published_status(self.client, order_id)
        return published if published is not None else await order_client.status(self.client, order_id)

    async def wait_for(
        self, order_id: str, target: str | Callable[[OrderStatus], bool] = "terminal", timeout: float = 20.0
    ) -> OrderStatus:
        """Poll the status until the order reaches ``target``: a state name (reached or passed),
        "terminal", or a predicate on the status."""
        reached = _reached(target)
        async with asyncio.timeout(timeout):
            while True:
                current = await self.status(order_id)
                if reached(current):
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
            DescribeTaskQueueRequest(
                namespace=self.settings.namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        return {p.identity for p in answer.pollers}

    def spawn_workers(self, kind: str, count: int) -> list[subprocess.Popen]:
        """Start ``count`` more worker processes (``orderflow worker KIND``) sharing the queue."""
        self.check_running()
        quiet = replace(self.settings, log_level="WARNING")
        started = [spawn_orderflow("worker", kind, settings=quiet) for _ in range(count)]
        self.processes += started
        return started

    async def stop(self) -> None:
        """Stop the workers (in-kernel and spawned), this kernel's dev server and its files."""
        global _LIVE
        if self.stopped:
            return
        self.stopped = True
        for console in self.consoles:
            console._stack_stopped()
        for proc in self.processes:
            proc.terminate()
        # The SDK core leaves the start-to-close timer of a local activity's earlier attempt
        # running when it retries; one that fires after the worker shut down panics a core thread
        # and prints a Rust backtrace under this cell. Let them expire first
        # (docs/performance.md#measurements-behind-the-code).
        await asyncio.sleep(QUIET_BEFORE_SHUTDOWN)
        await self.workers.stop()
        for proc in self.processes:
            proc.wait(10)
        if self.server:
            self.server.stop()
        shutil.rmtree(self.home, ignore_errors=True)
        if _LIVE is self:
            _LIVE = None
        print(
            "stopped: workers, Temporal server and database of this kernel. "
            "Run the first code cell again to start afresh."
        )


_LIVE: KernelStack | None = None


async def _check_temporal(settings: Settings) -> None:
    """Fail at once, naming the address, if nothing or something other than Temporal answers."""
    address = settings.temporal_address
    try:
        async with asyncio.timeout(5):
            await Client.connect(
                **settings.client_connect_config(),
                runtime=order_client.runtime(),
                retry_config=RetryConfig(max_retries=0),
            )
    except (TimeoutError, RuntimeError, RPCError) as err:
        detail = " ".join(str(err).split())[:160] or "no answer within 5 s"
        raise StackError(
            f"no Temporal server answers at {address} (port {address.rpartition(':')[2]}): {detail}. "
            f"Start one there, or unset {TEMPORAL_ENV} to let this kernel start its own."
        ) from None


async def start_stack(temporal_address: str | None = None) -> KernelStack:
    """Start this kernel's stack, or return the one it already runs.

    Temporal: ``temporal_address`` (or ``$ORDERFLOW_NOTEBOOK_TEMPORAL``) if you name one, and
    then it must answer at once; otherwise a dev server of this kernel's own on free ports, which
    dies with the kernel. The database is SQLite in a temporary folder (removed by ``stop()``),
    and the task queues carry a per-kernel tag, so kernels never share or break each other's work.
    """
    global _LIVE
    if _LIVE is not None and not _LIVE.stopped:
        print("this kernel's stack is already running; using it")
        return _LIVE
    install_fault_counter()
    quiet_known_sdk_warnings()
    pd.set_option("display.max_colwidth", 200)  # refusals and reasons in full, not cut at 50 characters
    tag = os.urandom(3).hex()
    address = temporal_address or notebook_temporal_address()
    # A server you name is reached with your connection settings (profile, TLS, API key); the
    # kernel's own dev server with none of them. No metrics endpoint either way.
    base = replace(Settings.from_env(), metrics_address=None) if address else Settings()
    home = Path(tempfile.mkdtemp(prefix=f"orderflow-kernel-{tag}-"))
    atexit.register(shutil.rmtree, home, True)
    server = None
    try:
        if address:
            base = replace(base, temporal_address=address)
            await _check_temporal(base)
        else:
            server = await DevServer.on_free_ports(log_file=home / "temporal.log")
            base = replace(base, temporal_address=server.address)
        settings = replace(base, db_url=f"sqlite:///{home / 'orderflow.db'}").with_own_queues(f"nb-{tag}")
        migrate.upgrade(settings.db_url)
        client = await order_client.connect(settings)
    except BaseException:
        if server:
            server.stop()
        shutil.rmtree(home, ignore_errors=True)
        raise
    stack = KernelStack(settings, client, InProcessWorkers(client, settings).start(), home, server)
    _LIVE = stack
    return stack


def new_id(prefix: str) -> str:
    """A fresh order id such as ``quickstart-3f9a1c``."""
    return f"{prefix}-{os.urandom(3).hex()}"


def _reached(target: str | Callable[[OrderStatus], bool]) -> Callable[[OrderStatus], bool]:
    if callable(target):
        return target
    if target == "terminal":
        return lambda s: s.terminal
    wanted = OrderState(target)
    if wanted.terminal:
        return lambda s: s.terminal
    return lambda s: s.terminal or LIFECYCLE.index(s.state) >= LIFECYCLE.index(wanted)
