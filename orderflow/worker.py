"""Build the two workers: orders (OrderWorkflow + its activities) and shipping (the child)."""

from __future__ import annotations

import asyncio
import compileall
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from orderflow import models
from orderflow import workflows as workflows_package
from orderflow.activities import all_activities
from orderflow.config import Settings, workflow_sandbox
from orderflow.db.repository import Repository
from orderflow.task_guard import TaskGuardRunner
from orderflow.workflows import OrderWorkflow, ShippingWorkflow

WORKER_KINDS = ("orders", "shipping")
STICKY_TIMEOUT = timedelta(seconds=1)

# Two runners, one job each:
# - WORKFLOW_RUNNER, the sandbox, is what every replay uses (tests, the benchmark's replay check,
#   notebook 06): it re-imports the workflow modules and refuses non-deterministic calls
#   (clocks, random, I/O), so a workflow that used one fails its replay test.
# - The workers run the same code unsandboxed: re-importing the modules for every workflow run
#   costs CPU (docs/performance.md#what-an-order-costs). ORDERFLOW_WORKFLOW_SANDBOX=1 turns
#   the sandbox back on in the workers too.
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("orderflow.models")
)


def worker_runner() -> WorkflowRunner:
    """The live workers' runner, guarded against running history outside a workflow task (task_guard.py)."""
    if workflow_sandbox():
        compile_workflow_modules()
        return TaskGuardRunner(WORKFLOW_RUNNER)
    return TaskGuardRunner(UnsandboxedWorkflowRunner())


def compile_workflow_modules() -> None:
    """Write .pyc files for the modules the sandbox re-imports for every workflow run.

    With PYTHONDONTWRITEBYTECODE set each run would otherwise compile them from source again
    (docs/performance.md#measurements-behind-the-code).
    """
    for module in (workflows_package, models):
        try:
            compileall.compile_dir(Path(module.__file__ or ".").parent, maxlevels=0 if module is models else 1, quiet=2)
        except OSError:
            pass  # a read-only install: the sandbox still works, only slower


class InProcessWorkers:
    """Both workers (or ``kinds``) running as tasks of this event loop, with the repository
    they write through: the notebooks' kernel stack and the tests' stack. ``async with`` it, or
    ``await start()`` and ``await stop()`` when it lives across notebook cells."""

    def __init__(self, client: Client, settings: Settings, kinds=WORKER_KINDS) -> None:
        self.repo = Repository.from_url(settings.db_url)
        self.workers = build_workers(client, self.repo, settings, kinds)
        self.tasks: list[asyncio.Task] = []

    def start(self) -> InProcessWorkers:
        self.tasks = [asyncio.create_task(worker.run()) for worker in self.workers]
        return self

    async def stop(self) -> None:
        for worker in self.workers:
            await worker.shutdown()
        for task in self.tasks:
            await task
        self.repo.engine.dispose()

    async def __aenter__(self) -> InProcessWorkers:
        return self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def build_workers(client: Client, db: Repository, settings: Settings, kinds=WORKER_KINDS) -> list[Worker]:
    """Workers for ``kinds``; run each with ``await worker.run()`` or ``async with worker``."""
    orders_acts, shipping_acts = all_activities(db)
    runner = worker_runner()
    specs: dict[str, tuple[str, list[type], list]] = {
        "orders": (settings.orders_task_queue, [OrderWorkflow], orders_acts),
        "shipping": (settings.shipping_task_queue, [ShippingWorkflow], shipping_acts),
    }
    return [
        Worker(
            client,
            task_queue=specs[kind][0],
            workflows=specs[kind][1],
            activities=specs[kind][2],
            workflow_runner=runner,
            # A dead worker's cached workflows move to another worker after 1 s, not 10 s:
            # recovery has to fit in the order's 15-second budget.
            sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
            max_concurrent_local_activities=200,
            max_concurrent_activities=200,
        )
        for kind in kinds
    ]
