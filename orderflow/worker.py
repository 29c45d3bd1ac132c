"""Build the two workers: orders (OrderWorkflow + its activities) and shipping (the child)."""

from __future__ import annotations

import compileall
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from orderflow import models
from orderflow import workflows as workflows_package
from orderflow.activities import all_activities
from orderflow.config import Settings
from orderflow.db.repository import Repository
from orderflow.workflows import OrderWorkflow, ShippingWorkflow

WORKER_KINDS = ("orders", "shipping")
STICKY_TIMEOUT = timedelta(seconds=1)

# The sandbox re-imports workflow modules for every workflow run. The payload dataclasses
# are pure and immutable in use, so they are shared instead: this cut the worker's CPU per
# order by about a quarter (profiled with py-spy).
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("orderflow.models")
)


def compile_workflow_modules() -> None:
    """Write .pyc files for the modules the sandbox re-imports for every workflow run.

    With PYTHONDONTWRITEBYTECODE set (as on our machines) each run would otherwise
    compile them from source again: about a fifth of the worker's CPU under load.
    """
    for module in (workflows_package, models):
        try:
            compileall.compile_dir(Path(module.__file__).parent, maxlevels=0 if module is models else 1, quiet=2)
        except OSError:
            pass  # a read-only install: the sandbox still works, only slower


def build_workers(client: Client, db: Repository, settings: Settings, kinds=WORKER_KINDS) -> list[Worker]:
    """Workers for ``kinds``; run each with ``await worker.run()`` or ``async with worker``."""
    compile_workflow_modules()
    orders_acts, shipping_acts = all_activities(db)
    specs = {
        "orders": (settings.orders_task_queue, [OrderWorkflow], orders_acts),
        "shipping": (settings.shipping_task_queue, [ShippingWorkflow], shipping_acts),
    }
    return [
        Worker(
            client,
            task_queue=specs[kind][0],
            workflows=specs[kind][1],
            activities=specs[kind][2],
            workflow_runner=WORKFLOW_RUNNER,
            # A dead worker's cached workflows move to another worker after 1 s, not 10 s:
            # recovery has to fit in the order's 15-second budget.
            sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
            max_concurrent_local_activities=200,
            max_concurrent_activities=200,
        )
        for kind in kinds
    ]
