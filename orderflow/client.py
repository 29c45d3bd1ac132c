"""Start and drive orders from any Python code: the API, notebooks, the benchmark, tests."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.runtime import LoggingConfig, PrometheusConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError, RPCStatusCode

from orderflow.config import ConfigError, Settings
from orderflow.errors import InvalidOrder, OrderflowError, OrderNotFound
from orderflow.models import Item, OrderRequest, OrderResult, OrderState, OrderStatus, Update
from orderflow.workflows import OrderWorkflow

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
WORKFLOW_TASK_TIMEOUT = timedelta(seconds=5)


class OrderExists(OrderflowError):
    """An order with this id was already started (it may have ended)."""


class Rejected(OrderflowError):
    """The order's current state does not allow this command."""


_runtimes: dict[str | None, Runtime] = {}


def runtime(metrics_address: str | None = None) -> Runtime:
    """The SDK runtime of this process (one per metrics address), its core's log lines limited to errors.

    At WARN the core prints a line for every local-activity attempt it timed out ("Tried to
    complete untracked local activity"): noise under a fault injector that hangs a third of
    all attempts. The workflows log each timeout as a structured event instead.

    With ``metrics_address`` the core serves the SDK's own metrics (workflow task latency,
    activity and local-activity results, sticky cache, poller and request counts) in Prometheus
    format on that host:port, named as Temporal's Grafana SDK dashboard expects
    (``temporal_workflow_completed_total``, ``temporal_workflow_task_execution_latency_seconds``).
    The port is bound when the runtime is built, so there is one runtime per address.
    """
    if metrics_address not in _runtimes:
        metrics = None
        if metrics_address:
            metrics = PrometheusConfig(bind_address=metrics_address, counters_total_suffix=True,
                                       unit_suffix=True, durations_as_seconds=True)
        try:
            _runtimes[metrics_address] = Runtime(telemetry=TelemetryConfig(
                logging=LoggingConfig(filter=TelemetryFilter("ERROR", "ERROR")), metrics=metrics))
        except Exception as err:  # the port is taken or not ours to bind
            raise ConfigError(f"cannot serve Temporal SDK metrics on {metrics_address}: {err}") from err
    return _runtimes[metrics_address]


async def connect(settings: Settings | None = None) -> Client:
    """A Temporal client for ``settings`` (default: from the environment and the profile file).

    The one place every client of the project comes from: workers, the API, the benchmark,
    notebooks and tests. Address, namespace, TLS, API key and gRPC metadata come from
    ``temporalio.envconfig`` (see orderflow/config.py), so the same worker reaches the embedded
    dev server, a self-hosted cluster or a managed service by configuration alone.
    """
    settings = settings or Settings.from_env()
    return await Client.connect(**settings.client_connect_config(), runtime=runtime(settings.metrics_address))


def order_workflow_id(order_id: str) -> str:
    return f"order-{order_id}"


def check_order(req: OrderRequest) -> None:
    """Raise InvalidOrder for input no workflow should see."""
    for name, value in (("order id", req.order_id), ("payment id", req.payment_id)):
        if not isinstance(value, str) or not ID_PATTERN.match(value):
            raise InvalidOrder(f"{name} must be 1-64 letters, digits or _.:- (got {value!r})")
    for item in req.items:
        if not item.sku or not isinstance(item.qty, int) or item.qty < 1 or item.qty > 10_000:
            raise InvalidOrder(f"each item needs a sku and a quantity from 1 to 10000 (got {item!r})")
    if not 1 <= req.budget_seconds <= 3600:
        raise InvalidOrder("budget_seconds must be between 1 and 3600")


async def start_order(client: Client, req: OrderRequest, settings: Settings | None = None) -> WorkflowHandle:
    """Start OrderWorkflow; raises InvalidOrder, or OrderExists for a reused order id."""
    settings = settings or Settings.from_env()
    check_order(req)
    req = replace(req, shipping_task_queue=settings.shipping_task_queue)
    try:
        return await client.start_workflow(
            OrderWorkflow.run,
            req,
            id=order_workflow_id(req.order_id),
            task_queue=settings.orders_task_queue,
            task_timeout=WORKFLOW_TASK_TIMEOUT,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
    except WorkflowAlreadyStartedError as err:
        raise OrderExists(f"order {req.order_id} already exists") from err


def order_handle(client: Client, order_id: str) -> WorkflowHandle:
    return client.get_workflow_handle_for(OrderWorkflow.run, order_workflow_id(order_id))


async def describe(client: Client, order_id: str) -> WorkflowExecutionStatus:
    """Temporal's view of the order's workflow; OrderNotFound if it never started."""
    try:
        desc = await order_handle(client, order_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise OrderNotFound(f"order {order_id} not found") from err
        raise
    return desc.status


async def status(client: Client, order_id: str) -> OrderStatus:
    try:
        return await order_handle(client, order_id).query(OrderWorkflow.status)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise OrderNotFound(f"order {order_id} not found") from err
        raise


async def _update(client: Client, order_id: str, name: str, *args: str) -> str:
    """Run a validated Workflow Update; Rejected carries the workflow's reason."""
    handle = order_handle(client, order_id)
    try:
        return await handle.execute_update(name, args=list(args), result_type=str)
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.type == "Rejected":
            raise Rejected(cause.message) from err
        raise
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            if await describe(client, order_id) != WorkflowExecutionStatus.RUNNING:
                raise Rejected("it has already ended") from err
        raise


async def approve(client: Client, order_id: str) -> str:
    return await _update(client, order_id, Update.APPROVE)


async def cancel(client: Client, order_id: str, reason: str = "") -> str:
    return await _update(client, order_id, Update.CANCEL, reason)


async def update_address(client: Client, order_id: str, new_address: str) -> str:
    return await _update(client, order_id, Update.UPDATE_ADDRESS, new_address)


async def approve_when_ready(handle: WorkflowHandle) -> bool:
    """The reviewer bot: wait until the order awaits review, then approve it at once.

    False when the order never awaited review or left it first (cancelled, review deadline).
    """
    try:
        state = await handle.execute_update(Update.WAIT_FOR_REVIEW, result_type=OrderState)
        if state != OrderState.AWAITING_REVIEW:
            return False
        await handle.execute_update(Update.APPROVE, result_type=str)
    except (WorkflowUpdateFailedError, RPCError):  # refused, or the workflow closed meanwhile
        return False
    return True


async def result(handle: WorkflowHandle) -> OrderResult:
    return await handle.result()


def new_order(order_id: str, payment_id: str, *, items: list[Item] | None = None, address: str = "", **kw) -> OrderRequest:
    """An OrderRequest with the default item (sku ABC, qty 1) unless items are given."""
    req = OrderRequest(order_id=order_id, payment_id=payment_id, address=address, **kw)
    if items is not None:
        req.items = items
    return req
