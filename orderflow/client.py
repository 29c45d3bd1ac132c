"""Start and drive orders from any Python code: the API, notebooks, the benchmark, tests."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from typing import Any

from temporalio.api.errordetails.v1 import WorkflowNotReadyFailure
from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateHandle,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError, TemporalError, WorkflowAlreadyStartedError
from temporalio.runtime import LoggingConfig, PrometheusConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError, RPCStatusCode

from orderflow.activities import QuietFailureConverter
from orderflow.codec import EncryptionCodec
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


class CommandFailed(Rejected):
    """The workflow refused the command with an error of its own (not a validator's "Rejected")."""


class TemporalUnavailable(OrderflowError):
    """Temporal could not be reached, or refused the call for a reason of its own: retry later."""


class NoAnswer(OrderflowError):
    """Temporal or the order's workers did not answer in time (the outcome may be unknown)."""


class StatusUnavailable(OrderflowError):
    """A running order's workflow could not answer its status query (no worker, a failing replay).

    ``stuck``: its workflow task fails on every attempt, so the order cannot move (the reason
    says why); else ``timed_out`` tells a missing worker from another failure."""

    def __init__(self, message: str, timed_out: bool, stuck: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out
        self.stuck = stuck


class Stuck(OrderflowError):
    """The order's workflow task fails on every attempt: no command can reach it until one succeeds."""


STATUS_QUERY_TIMEOUT = timedelta(seconds=5)
ACCEPT_TIMEOUT = timedelta(seconds=10)


def temporal_error(err: TemporalError, what: str) -> OrderflowError:
    """Map an error from a Temporal call about an order to one of ours (the API's 409/503/504).

    Never returns OrderNotFound: a NOT_FOUND needs a describe() to tell "unknown order" from
    "closed workflow" (see ``_update``).
    """
    if isinstance(err, WorkflowUpdateFailedError):
        cause = err.cause
        if isinstance(cause, ApplicationError):  # the workflow's own refusal, with its message
            return Rejected(cause.message) if cause.type == "Rejected" else CommandFailed(cause.message)
        return TemporalUnavailable(f"{what}: the workflow could not complete it ({cause or err})")
    if isinstance(err, RPCTimeoutOrCancelledError):  # incl. WorkflowUpdateRPCTimeoutOrCancelledError
        return NoAnswer(
            f"{what}: no answer from Temporal in the time allowed; it may still take effect (see the order's status)"
        )
    if isinstance(err, RPCError):
        if err.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
            return NoAnswer(f"{what}: no answer in time ({err.message}); is a worker running?")
        return TemporalUnavailable(f"{what}: Temporal error {err.status.name if err.status else ''}: {err.message}")
    return TemporalUnavailable(f"{what}: {type(err).__name__}: {err}")


_runtimes: dict[str | None, Runtime] = {}


def core_log_level() -> str:
    """The SDK core's log level: ERROR, or ``ORDERFLOW_CORE_LOG`` (DEBUG prints every activation,
    command and local-activity attempt: how the task-guard and stuck-step defects were found)."""
    return os.environ.get("ORDERFLOW_CORE_LOG", "ERROR").upper()


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
            metrics = PrometheusConfig(
                bind_address=metrics_address, counters_total_suffix=True, unit_suffix=True, durations_as_seconds=True
            )
        try:
            _runtimes[metrics_address] = Runtime(
                telemetry=TelemetryConfig(
                    logging=LoggingConfig(filter=TelemetryFilter(core_log_level(), "ERROR")), metrics=metrics
                )
            )
        except Exception as err:  # the port is taken or not ours to bind
            raise ConfigError(f"cannot serve Temporal SDK metrics on {metrics_address}: {err}") from err
    return _runtimes[metrics_address]


# The SDK's converter, except that expected faults cross without a stack trace (activities.py).
DATA_CONVERTER = dataclasses.replace(DataConverter.default, failure_converter_class=QuietFailureConverter)


class EncodedQuietFailureConverter(QuietFailureConverter):
    """With encryption on, a failure's message and stack trace go through the codec as well.

    By default Temporal keeps them as plain text in the history (the service and the Web UI show
    them); ``encode_common_attributes`` moves both into the failure's ``encoded_attributes``
    payload, which the codec encrypts, and leaves the message "Encoded failure" in their place.
    """

    def __init__(self) -> None:
        super().__init__(encode_common_attributes=True)


def data_converter(settings: Settings) -> DataConverter:
    """DATA_CONVERTER, plus the encryption codec when ``settings`` has keys (ORDERFLOW_CODEC_KEYS).

    A DataConverter has three stages: the payload converter (objects <-> JSON payloads), the
    failure converter (exceptions <-> failures) and the optional payload codec (payloads <->
    payloads, here encrypted). Clients, workers and Replayers must agree on the codec and its
    keys, or what one wrote the other cannot read.
    """
    if not settings.codec_keys:
        return DATA_CONVERTER
    return dataclasses.replace(
        DATA_CONVERTER,
        payload_codec=EncryptionCodec(settings.codec_keys),
        failure_converter_class=EncodedQuietFailureConverter,
    )


async def connect(settings: Settings | None = None) -> Client:
    """A Temporal client for ``settings`` (default: from the environment and the profile file).

    The one place every client of the project comes from: workers, the API, the benchmark,
    notebooks and tests. Address, namespace, TLS, API key and gRPC metadata come from
    ``temporalio.envconfig`` (see orderflow/config.py), so the same worker reaches the embedded
    dev server, a self-hosted cluster or a managed service by configuration alone. Its data
    converter (``data_converter``) encrypts payloads when ORDERFLOW_CODEC_KEYS is set; a worker
    built on this client uses the client's converter.
    """
    settings = settings or Settings.from_env()
    return await Client.connect(
        **settings.client_connect_config(),
        runtime=runtime(settings.metrics_address),
        data_converter=data_converter(settings),
    )


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


def _start_options(req: OrderRequest, settings: Settings) -> dict[str, Any]:
    return dict(
        id=order_workflow_id(req.order_id),
        task_queue=settings.orders_task_queue,
        task_timeout=WORKFLOW_TASK_TIMEOUT,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
    )


async def start_order(client: Client, req: OrderRequest, settings: Settings | None = None) -> WorkflowHandle:
    """Start OrderWorkflow; raises InvalidOrder, or OrderExists for a reused order id."""
    settings = settings or Settings.from_env()
    check_order(req)
    req = replace(req, shipping_task_queue=settings.shipping_task_queue)
    try:
        return await client.start_workflow(OrderWorkflow.run, req, **_start_options(req, settings))
    except WorkflowAlreadyStartedError as err:
        raise OrderExists(f"order {req.order_id} already exists") from err
    except RPCError as err:  # e.g. Temporal went down after the first connect
        raise temporal_error(err, f"starting order {req.order_id}") from err


async def start_order_for_review(
    client: Client, req: OrderRequest, settings: Settings | None = None
) -> tuple[WorkflowHandle, WorkflowUpdateHandle[Any]]:
    """Start OrderWorkflow and, in the same request, a reviewer's ``wait_for_review`` Update
    (update-with-start): it reaches the workflow's first task, before any step runs, so it is
    never refused as Busy. Returns the order's handle and the Update's (its result: the state
    once the order awaits review or has moved past it)."""
    settings = settings or Settings.from_env()
    check_order(req)
    req = replace(req, shipping_task_queue=settings.shipping_task_queue)
    start = WithStartWorkflowOperation(OrderWorkflow.run, req, **_start_options(req, settings))
    try:
        review = await client.start_update_with_start_workflow(
            OrderWorkflow.wait_for_review, wait_for_stage=WorkflowUpdateStage.ACCEPTED, start_workflow_operation=start
        )
        return await start.workflow_handle(), review
    except WorkflowAlreadyStartedError as err:
        raise OrderExists(f"order {req.order_id} already exists") from err
    except RPCError as err:
        raise temporal_error(err, f"starting order {req.order_id}") from err


def order_handle(client: Client, order_id: str) -> WorkflowHandle:
    return client.get_workflow_handle_for(OrderWorkflow.run, order_workflow_id(order_id))


async def describe(client: Client, order_id: str) -> WorkflowExecutionStatus:
    """Temporal's view of the order's workflow; OrderNotFound if it never started."""
    try:
        desc = await order_handle(client, order_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise OrderNotFound(f"order {order_id} not found") from err
        raise temporal_error(err, f"describing order {order_id}") from err
    assert desc.status is not None  # every described execution has a status
    return desc.status


async def status(client: Client, order_id: str) -> OrderStatus:
    """The workflow's ``status()`` query: its live view (a worker answers it, replaying if needed)."""
    try:
        return await order_handle(client, order_id).query(OrderWorkflow.status)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise OrderNotFound(f"order {order_id} not found") from err
        raise temporal_error(err, f"status of order {order_id}") from err


@dataclass
class StatusAnswer:
    """What ``order_status`` found: Temporal's execution status, the order's status and its source.

    ``source`` is "query" (a running order's live ``status()``) or "result" (an ended order:
    what its workflow returned, read from the close event; no worker and no replay needed).
    """

    temporal_status: str
    status: dict[str, Any]
    source: str


async def order_status(client: Client, order_id: str, query_timeout: timedelta = STATUS_QUERY_TIMEOUT) -> StatusAnswer:
    """Status that does not depend on a worker for an order that has ended.

    Querying a closed workflow makes a worker replay its whole history: slow, impossible
    with no worker, and broken for good if the replay fails. An ended order answers from
    its recorded result instead. A running order is queried; if that fails,
    StatusUnavailable says why (the caller may fall back to the database).
    """
    handle = order_handle(client, order_id)
    execution = await describe(client, order_id)
    if execution == WorkflowExecutionStatus.RUNNING:
        try:
            current = await handle.query(OrderWorkflow.status, rpc_timeout=query_timeout)
            return StatusAnswer(execution.name, asdict(current), "query")
        except (RPCError, RPCTimeoutOrCancelledError, WorkflowQueryFailedError, WorkflowQueryRejectedError) as err:
            execution = await describe(client, order_id)
            stuck = await stuck_reason(client, order_id) if execution == WorkflowExecutionStatus.RUNNING else None
            if stuck is not None:
                raise StatusUnavailable(stuck, timed_out=False, stuck=True) from err
            if execution == WorkflowExecutionStatus.RUNNING:  # not a race with the close: a real failure
                # The server's "query timed out" is DEADLINE_EXCEEDED; our own rpc_timeout
                # expiring first is CANCELLED "Timeout expired" (both seen here).
                timed_out = isinstance(err, RPCTimeoutOrCancelledError) or (
                    isinstance(err, RPCError)
                    and err.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED)
                )
                detail = (
                    (
                        "no worker answered the status query within "
                        f"{query_timeout.total_seconds():g} s; is the orders worker running?"
                    )
                    if timed_out
                    else (f"the workflow could not answer its status query ({type(err).__name__}: {err})")
                )
                raise StatusUnavailable(detail, timed_out) from err
    return StatusAnswer(execution.name, await _recorded_result(handle, order_id), "result")


async def stuck_reason(client: Client, order_id: str) -> str | None:
    """Why a running order cannot move, or None: its workflow task has failed again and again
    (a nondeterminism error, a fatal error in the SDK core, a bug), with the last failure's words."""
    handle = order_handle(client, order_id)
    try:
        described = await handle.describe()
    except RPCError:
        return None
    raw = described.raw_description
    if described.status != WorkflowExecutionStatus.RUNNING or not raw.HasField("pending_workflow_task"):
        return None
    attempt = raw.pending_workflow_task.attempt
    if attempt < 2:
        return None
    last = ""
    async for event in handle.fetch_history_events():
        if event.HasField("workflow_task_failed_event_attributes"):
            last = event.workflow_task_failed_event_attributes.failure.message
    return f"the order is stuck: its workflow task has failed {attempt - 1} times in a row, last: {last.splitlines()[0] if last else 'no message'}"


async def _recorded_result(handle: WorkflowHandle, order_id: str) -> dict[str, Any]:
    """An ended order's outcome from its close event: the OrderResult, or why the workflow failed."""
    try:
        ended: OrderResult = await handle.result(follow_runs=False, rpc_timeout=STATUS_QUERY_TIMEOUT)
        return asdict(ended)
    except WorkflowFailureError as err:  # failed, cancelled, terminated or timed out in Temporal
        return {"order_id": order_id, "state": None, "reason": str(err.cause or err)}
    except RPCError as err:
        raise temporal_error(err, f"result of order {order_id}") from err


def workflow_not_ready(err: BaseException) -> bool:
    """The server dropped an Update that was not yet accepted because the workflow task it rode on failed.

    Happens without any fault: a signal or Update that arrives while the task that ends the
    order runs makes the server refuse that task (UnhandledCommand), and since server 1.27 it
    then aborts the Updates it carried with FAILED_PRECONDITION + WorkflowNotReadyFailure
    (temporalio/temporal#7296; seen in CI: a cancel sent while marking shipped retried). Nothing
    ran, so sending the same Update again is safe.
    """
    return (
        isinstance(err, RPCError)
        and err.status == RPCStatusCode.FAILED_PRECONDITION
        and any(detail.Is(WorkflowNotReadyFailure.DESCRIPTOR) for detail in err.grpc_status.details)
    )


NOT_READY_PAUSE = 0.05  # the retried workflow task is usually scheduled within a few ms
# A command that arrives while a step runs is refused as Busy (workflows/steps.py, Gate) and
# sent again after these pauses (then every BUSY_PAUSES[-1] s); the caller bounds the whole wait.
BUSY_PAUSES = (0.02, 0.05, 0.1, 0.2)


def busy(err: BaseException) -> bool:
    """The workflow refused the Update only because a step was running: send it again."""
    return (
        isinstance(err, WorkflowUpdateFailedError)
        and isinstance(err.cause, ApplicationError)
        and err.cause.type == "Busy"
    )


def update_aborted(err: BaseException) -> bool:
    """The server aborted an Update it held because it reloaded the workflow's state (seen
    under CPU starvation). Sending it again under the same id either finds the Update already
    accepted (the server dedupes by id) or delivers it anew."""
    return isinstance(err, RPCError) and err.status == RPCStatusCode.UNAVAILABLE and "update was aborted" in err.message


def crowded(err: BaseException) -> bool:
    """The server refused to admit the Update: too many Updates in flight for this workflow
    (10 by default) or a rate limit. Nothing was admitted; try again in a moment."""
    return isinstance(err, RPCError) and err.status == RPCStatusCode.RESOURCE_EXHAUSTED


async def _start_update(handle: WorkflowHandle, name: str, args: list[Any], result_type: type) -> WorkflowUpdateHandle:
    """Send the Update once, and again under the same id while the server answers "workflow
    not ready" or "aborted" (see ``workflow_not_ready``, ``update_aborted``)."""
    update_id = str(uuid.uuid4())
    while True:
        try:
            return await handle.start_update(
                name, args=args, id=update_id, wait_for_stage=WorkflowUpdateStage.ACCEPTED, result_type=result_type
            )
        except RPCError as err:
            if not (workflow_not_ready(err) or update_aborted(err)):
                raise
        await asyncio.sleep(NOT_READY_PAUSE)


async def _outcome(update: WorkflowUpdateHandle) -> Any:
    """An accepted (or refused) Update's outcome, polled again while the server says "aborted"."""
    while True:
        try:
            return await update.result()
        except RPCError as err:
            if not update_aborted(err):
                raise
        await asyncio.sleep(NOT_READY_PAUSE)


async def send_update(
    handle: WorkflowHandle,
    name: str,
    *args: Any,
    result_type: type = str,
    accept_within: timedelta = ACCEPT_TIMEOUT,
) -> Any:
    """Send an Update until the workflow accepts it or refuses it for a reason of its own, and
    return its outcome (raises WorkflowUpdateFailedError with the workflow's refusal).

    A Busy refusal (a step was running, nothing was changed) or a crowded server is tried again
    after BUSY_PAUSES. NoAnswer if it was not accepted within ``accept_within``, saying what
    happened meanwhile, and whether the last try may still take effect (it was sent and no
    answer came). Once accepted, the caller bounds the wait.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + accept_within.total_seconds()
    refusals = crowding = 0

    def not_accepted(in_flight: bool) -> NoAnswer:
        seen = []
        if refusals:
            seen.append(f"the workflow answered Busy {refusals} times (a step was running)")
        if crowding:
            seen.append(f"Temporal turned it away {crowding} times (too many commands in flight for this order)")
        if in_flight:
            seen.append("the last try got no answer: it may still take effect, the order's status will show it")
        else:
            seen.append("nothing was changed")
        return NoAnswer(
            f"{name} for {handle.id}: not accepted within {accept_within.total_seconds():g} s; " + "; ".join(seen)
        )

    while True:
        if loop.time() >= deadline:
            raise not_accepted(in_flight=False)
        try:
            update = await asyncio.wait_for(
                _start_update(handle, name, list(args), result_type), deadline - loop.time()
            )
        # A start cut by the deadline: the SDK turns the cancellation into RPCTimeoutOrCancelledError.
        except (asyncio.TimeoutError, RPCTimeoutOrCancelledError):
            raise not_accepted(in_flight=True) from None
        except RPCError as err:
            if not crowded(err):
                raise
            crowding += 1
            await asyncio.sleep(BUSY_PAUSES[-1])
            continue
        try:
            # A refusal comes back at once; an accepted Update answers when its outcome is known.
            return await _outcome(update)
        except WorkflowUpdateFailedError as err:
            if not busy(err):
                raise
        await asyncio.sleep(BUSY_PAUSES[min(refusals, len(BUSY_PAUSES) - 1)])
        refusals += 1


async def workers_polling(client: Client, order_id: str) -> str:
    """Whether a worker polls the order's task queue: what a command that got no answer needs
    to say ("no orders worker is polling" vs "the worker did not get to it in time")."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    try:
        queue = (await order_handle(client, order_id).describe()).task_queue
        answer = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            ),
            timeout=timedelta(seconds=2),
        )
    except RPCError:
        return "Temporal could not say whether an orders worker is running"
    if not answer.pollers:
        return f"no orders worker is polling task queue {queue!r}; is one running?"
    return f"{len(answer.pollers)} orders worker(s) poll {queue!r}, but none ran the order's workflow task in time (overloaded?)"


async def _update(client: Client, order_id: str, name: str, *args: str, result_type: type = str) -> Any:
    """Run a validated Workflow Update; Rejected carries the workflow's reason.

    Every Temporal error becomes one of ours: Rejected / CommandFailed (409), OrderNotFound
    (404), TemporalUnavailable (503) or NoAnswer (504).
    """
    handle = order_handle(client, order_id)
    what = f"{name} for order {order_id}"
    try:
        return await send_update(handle, name, *args, result_type=result_type)
    except NoAnswer as err:
        stuck = await stuck_reason(client, order_id)
        if stuck is not None:  # not a missing worker: the order's own task keeps failing
            raise Stuck(f"{what}: not accepted, nothing was changed: {stuck}") from err
        raise NoAnswer(f"{err}; {await workers_polling(client, order_id)}") from err
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:  # unknown order, or its workflow has closed
            if await describe(client, order_id) != WorkflowExecutionStatus.RUNNING:
                raise Rejected("it has already ended") from err
        raise temporal_error(err, what) from err
    except TemporalError as err:
        raise temporal_error(err, what) from err


async def approve(client: Client, order_id: str) -> str:
    return await _update(client, order_id, Update.APPROVE)


async def wait_for_review(client: Client, order_id: str) -> OrderState:
    """A reviewer's long poll: the order's state once it awaits review or has moved past it.

    One Update instead of a status query every fraction of a second (measured: polling /status
    every 0.2 s was a fifth of an order's CPU across API, server and worker).
    """
    return await _update(client, order_id, Update.WAIT_FOR_REVIEW, result_type=OrderState)


async def cancel(client: Client, order_id: str, reason: str = "") -> str:
    return await _update(client, order_id, Update.CANCEL, reason)


async def update_address(client: Client, order_id: str, new_address: str) -> str:
    return await _update(client, order_id, Update.UPDATE_ADDRESS, new_address)


async def approve_when_ready(handle: WorkflowHandle) -> bool:
    """The reviewer bot: wait until the order awaits review, then approve it at once.

    False when the order never awaited review or left it first (cancelled, review deadline).
    """
    try:
        if await send_update(handle, Update.WAIT_FOR_REVIEW, result_type=OrderState) != OrderState.AWAITING_REVIEW:
            return False
        await send_update(handle, Update.APPROVE)
    except (WorkflowUpdateFailedError, RPCError):  # refused, or the workflow closed meanwhile
        return False
    return True


@dataclass
class PlacedOrder:
    """One order of a batch, as ``place_orders`` saw it end."""

    order_id: str
    state: str  # the final state, or "workflow_failed" (failed, cancelled or terminated in Temporal)
    seconds: float  # workflow start -> close, from Temporal's own timestamps
    client_seconds: float  # start request -> result, as the caller saw it
    result: OrderResult | None = None


async def place_orders(
    client: Client,
    requests: list[OrderRequest],
    settings: Settings,
    *,
    concurrency: int = 10,
    approve: bool = True,
    on_done: Any = None,
) -> list[PlacedOrder]:
    """Start each order, approve it the moment it awaits review (the reviewer bot), await its end.

    At most ``concurrency`` at once (a closed loop). The one place a batch of orders is driven
    in-process: the closed-loop benchmark, the notebooks and the tests call it; ``on_done`` is
    called with each PlacedOrder (a progress bar).
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(req: OrderRequest) -> PlacedOrder:
        async with gate:
            began = time.monotonic()
            if approve:  # the reviewer's long poll rides on the start (see start_order_for_review)
                handle, review = await start_order_for_review(client, req, settings)
                if await review.result() == OrderState.AWAITING_REVIEW:
                    with contextlib.suppress(WorkflowUpdateFailedError, RPCError):  # refused: cancelled or ended first
                        await send_update(handle, Update.APPROVE)
            else:
                handle = await start_order(client, req, settings)
            ended: OrderResult | None = None
            try:
                ended = await handle.result()
                state = ended.state.value
            except WorkflowFailureError:
                state = "workflow_failed"
            client_seconds = time.monotonic() - began
            desc = await handle.describe()
            placed = PlacedOrder(
                req.order_id,
                state,
                ((desc.close_time or desc.start_time) - desc.start_time).total_seconds(),
                client_seconds,
                ended,
            )
            if on_done is not None:
                on_done(placed)
            return placed

    return list(await asyncio.gather(*(one(req) for req in requests)))


async def result(handle: WorkflowHandle) -> OrderResult:
    return await handle.result()


def new_order(
    order_id: str, payment_id: str, *, items: list[Item] | None = None, address: str = "", **kw
) -> OrderRequest:
    """An OrderRequest with the default item (sku ABC, qty 1) unless items are given."""
    req = OrderRequest(order_id=order_id, payment_id=payment_id, address=address, **kw)
    if items is not None:
        req.items = items
    return req
