"""Helpers for the teaching notebooks: the stack inside a Jupyter kernel, the order console
widget, the package's own source on screen, DataFrames and plots.

Notebooks import from here and define nothing themselves: the workflows they teach live in
``orderflow.workflows`` and are shown with :func:`show_source`; the helpers here only do the
boring parts (starting things, tables, plots, the widget).

In a kernel an event loop already runs: cells use top-level ``await``; the workers run as
background tasks and make progress while a cell awaits.
"""

from __future__ import annotations

import asyncio
import atexit
import html
import inspect
import logging
import os
import shutil
import subprocess
import tempfile
import textwrap
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import ipywidgets as widgets
import pandas as pd
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.service import RetryConfig, RPCError

from orderflow import audit
from orderflow import client as order_client
from orderflow.activities import OrderActivities
from orderflow.config import Settings
from orderflow.db import migrate
from orderflow.db.repository import Repository
from orderflow.devstack import DevServer, spawn_orderflow
from orderflow.errors import OrderflowError
from orderflow.logs import quiet_known_sdk_warnings
from orderflow.models import LIFECYCLE, OrderRequest, OrderResult, OrderState, OrderStatus
from orderflow.worker import InProcessWorkers
from orderflow.workflows import OrderWorkflow

__all__ = [
    "KernelStack",
    "OrderConsole",
    "start_stack",
    "run_batch",
    "show_source",
    "history_frame",
    "new_id",
    "plot_timeline",
    "plot_durations",
    "ReorderedOrderWorkflow",
    "strip_notebook",
]

# Point every kernel at one Temporal server you run yourself (host:port); unset, each kernel
# starts a dev server of its own, so no notebook depends on a server another kernel may stop.
TEMPORAL_ENV = "ORDERFLOW_NOTEBOOK_TEMPORAL"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
QUIET_BEFORE_SHUTDOWN = 0.5  # seconds; > the 0.15 s attempt timeout (see KernelStack.stop)


class StackError(OrderflowError):
    """The kernel's stack cannot start, or was stopped: a one-line reason for the reader."""


# -- expected faults: counted, not printed ---------------------------------------------------


class FaultCounter(logging.Filter):
    """Counts the SDK's "Completing activity as failed" warnings for the faults we inject.

    The SDK logs every failed activity attempt at WARNING with its traceback. In a kernel no
    logging is configured, so Python prints each one in red under the running cell: hundreds
    per batch, which read as failures and slow the browser down. Expected faults are counted
    here instead:

    - "failed": the injected ``RuntimeError("Forced failure for testing")`` (our activities
      pass it on as a retryable ``ApplicationError`` with the same message);
    - "timed out": an attempt cut short by its start-to-close timeout (``CancelledError``);
    - "refused": a step's final, non-retryable failure (a business rule such as the carrier's
      PO-box refusal, or its attempts used up), which the workflow handles.

    Every other record passes through and stays visible: a database error, a bug, a failure
    outside an activity.
    """

    INJECTED = "Forced failure for testing"

    def __init__(self) -> None:
        super().__init__("orderflow-expected-faults")
        self.counts: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()

    @classmethod
    def kind(cls, err: BaseException | None) -> str | None:
        if isinstance(err, (asyncio.CancelledError, CancelledError)):
            return "timed out"
        if isinstance(err, RuntimeError) and str(err) == cls.INJECTED:
            return "failed"
        if isinstance(err, ApplicationError):
            if err.message == cls.INJECTED and not err.non_retryable:
                return "failed"
            business = isinstance(err.__cause__, (OrderflowError, ValueError)) or err.type == "StepFailed"
            if err.non_retryable and business:
                return "refused"
        return None

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or not record.getMessage().startswith("Completing activity as failed"):
            return True
        err = record.exc_info[1]
        kind = self.kind(err)
        if kind is None:
            return True  # a real error: printed as usual
        self.counts[kind] += 1
        if kind == "refused":
            self.refusals[str(err)] += 1
        return False

    @contextmanager
    def expecting(self, what: str):
        """Within the block, what the SDK's worker loggers report is the lesson (a replay that
        must fail): counted under ``what``, not printed. Any other time they print as usual."""

        def hold(record: logging.LogRecord) -> bool:
            self.counts[what] += 1
            return False

        loggers = [
            logging.getLogger(name)
            for name in list(logging.Logger.manager.loggerDict)
            if name.startswith("temporalio.worker")
        ] + [logging.getLogger("temporalio.worker")]
        for each in loggers:
            each.addFilter(hold)
        try:
            yield self
        finally:
            for each in loggers:
                each.removeFilter(hold)

    def summary(self) -> str:
        c = self.counts
        line = (
            f"expected faults in this kernel's workers so far: {c['failed']} attempts failed (flaky_call), "
            f"{c['timed out']} cut short by their timeout, {c['refused']} steps failed for good (a business rule, or attempts used up)"
        )
        if self.refusals:
            line += " (" + "; ".join(f"{n}x {text}" for text, n in self.refusals.most_common(3)) + ")"
        lessons = {k: n for k, n in c.items() if k not in ("failed", "timed out", "refused")}
        if lessons:
            line += "; expected by a lesson: " + ", ".join(f"{n} log lines from {k}" for k, n in lessons.items())
        return line + ". Counted, not printed; any other error is printed as usual."

    def _repr_html_(self) -> str:
        return f"<span style='color:#555'>{html.escape(self.summary())}</span>"

    def __repr__(self) -> str:
        return self.summary()


FAULTS = FaultCounter()


def _install_fault_counter() -> None:
    target = logging.getLogger("temporalio.activity")
    if FAULTS not in target.filters:
        target.addFilter(FAULTS)


# -- the kernel's stack -------------------------------------------------------------------------


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
    consoles: list["OrderConsole"] = field(default_factory=list)
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
        return await order_client.status(self.client, order_id)

    async def wait_for(
        self, order_id: str, target: str | Callable[[OrderStatus], bool] = "terminal", timeout: float = 20.0
    ) -> OrderStatus:
        """Poll status() until the order reaches ``target``: a state name (reached or passed),
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
        # running when it retries (it is replaced, not aborted); one that fires after the worker
        # shut down panics a core thread, which prints a Rust backtrace under this cell (seen in
        # 1 of 6 stops right after a batch, 0 of 8 with this wait). Let them expire first.
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
    _install_fault_counter()
    quiet_known_sdk_warnings()
    tag = os.urandom(3).hex()
    address = temporal_address or os.environ.get(TEMPORAL_ENV)
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


async def run_batch(
    stack: KernelStack,
    n: int,
    concurrency: int = 10,
    prefix: str = "batch",
    approve: bool = True,
    progress: bool = True,
    **order_fields,
) -> pd.DataFrame:
    """``n`` orders through ``orderflow.client.place_orders`` (approved the moment they await
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


# -- the package's own source, on screen -----------------------------------------------------------


@dataclass
class SourceView:
    """Source of objects from the package, with file and line, rendered as highlighted code."""

    parts: list[tuple[str, str, int, str]]  # (qualified name, file, first line, source)

    def _repr_markdown_(self) -> str:
        return "\n\n".join(
            f"`{name}` — `{path}`, line {line}\n\n```python\n{source.rstrip()}\n```"
            for name, path, line, source in self.parts
        )

    def __repr__(self) -> str:
        return "\n\n".join(
            f"# {name} ({path}, line {line})\n{source.rstrip()}" for name, path, line, source in self.parts
        )

    @property
    def text(self) -> str:
        return "\n".join(source for *_, source in self.parts)


def show_source(*objects) -> SourceView:
    """The real source of functions, methods or classes from the package (``inspect.getsource``)."""
    parts = []
    for obj in objects:
        lines, first = inspect.getsourcelines(obj)
        path = Path(inspect.getsourcefile(obj)).resolve()
        try:
            path = path.relative_to(PACKAGE_ROOT)
        except ValueError:
            pass
        name = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}".lstrip(".")
        parts.append((name, str(path), first, textwrap.dedent("".join(lines))))
    return SourceView(parts)


# -- Temporal's event history as a table ----------------------------------------------------------


def _event_name(event) -> str:
    from temporalio.api.enums.v1 import EventType

    words = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_").split("_")
    return "".join(w.capitalize() for w in words)


def history_frame(history) -> pd.DataFrame:
    """One row per event of a ``WorkflowHistory`` (from ``handle.fetch_history()``): its type,
    the signal / update / activity / child it concerns, and seconds since the first event."""
    rows = []
    first = None
    update_names = {}  # update id -> name, from the accepted event, for the completed one
    for e in history.events:
        ts = e.event_time.ToDatetime()
        first = first or ts
        name = workflow_id = ""
        kind = e.WhichOneof("attributes")
        attrs = getattr(e, kind) if kind else None
        if kind == "workflow_execution_signaled_event_attributes":
            name = attrs.signal_name
        elif kind == "workflow_execution_update_accepted_event_attributes":
            name = update_names[attrs.accepted_request.meta.update_id] = attrs.accepted_request.input.name
        elif kind == "workflow_execution_update_completed_event_attributes":
            name = update_names.get(attrs.meta.update_id, attrs.meta.update_id)
        elif kind == "activity_task_scheduled_event_attributes":
            name = attrs.activity_type.name
        elif kind == "marker_recorded_event_attributes":
            name = attrs.marker_name
        elif kind == "timer_started_event_attributes":
            name = f"{attrs.start_to_fire_timeout.ToTimedelta().total_seconds():g} s"
        elif kind == "start_child_workflow_execution_initiated_event_attributes":
            name, workflow_id = f"{attrs.workflow_type.name} on {attrs.task_queue.name}", attrs.workflow_id
        elif kind in (
            "child_workflow_execution_started_event_attributes",
            "child_workflow_execution_completed_event_attributes",
        ):
            name, workflow_id = attrs.workflow_type.name, attrs.workflow_execution.workflow_id
        elif kind == "signal_external_workflow_execution_initiated_event_attributes":
            name, workflow_id = attrs.signal_name, attrs.workflow_execution.workflow_id
        rows.append(
            {
                "event_id": e.event_id,
                "seconds": round((ts - first).total_seconds(), 3),
                "type": _event_name(e),
                "name": name,
                "workflow_id": workflow_id,
            }
        )
    return pd.DataFrame(rows).set_index("event_id")


# -- a non-deterministic change, for the replay lesson ---------------------------------------------


@workflow.defn(name="OrderWorkflow", sandboxed=False)
class ReorderedOrderWorkflow(OrderWorkflow):
    """OrderWorkflow with one edit that breaks running orders: it validates before it receives.
    Same workflow type name, so a replay of a real history runs it. (Only notebook 06 uses it,
    in a Replayer; no worker registers it.)"""

    @workflow.run
    async def run(self, req: OrderRequest) -> OrderResult:  # the SDK wants @workflow.run on the class
        return await super().run(req)

    async def _lifecycle(self) -> None:
        await self._step("validate", OrderActivities.validate_order, OrderState.VALIDATED)
        await super()._lifecycle()


# -- the order console -----------------------------------------------------------------------------

# The order in which steps run; the status query's dict may come back in another order.
STEP_ORDER = ["receive", "validate", "review", "charge", "prepare", "dispatch", "shipping", "mark_shipped", "refund"]


@dataclass
class Reply:
    """What one button press got back, labelled with the button."""

    button: str
    order_id: str
    ok: bool
    text: str
    refused: bool = False


class OrderConsole:
    """Start, approve, cancel and re-address one order with buttons; a live status panel.

    Each button sends its command through ``orderflow.client`` (the same functions the HTTP API
    uses) and shows the answer, labelled, under the buttons. Buttons are enabled only when
    pressing them makes sense: Start until the order is started, Approve while it awaits review,
    Cancel and Update address until it ends. A new order id gets a new payment id.

    From a cell, ``await console.press(console.start)`` clicks a button exactly as a mouse does
    (``Button.click()`` runs the same handler) and waits for the answer; a disabled button is
    not pressed (you may have pressed it yourself), so re-running a cell is harmless.
    """

    def __init__(self, stack: KernelStack, prefix: str = "order", address: str = "742 Evergreen Terrace"):
        self.stack = stack
        order_id = new_id(prefix)
        self.order_id = widgets.Text(value=order_id, description="order id")
        self.payment_id = widgets.Text(value=f"pay-{order_id}", description="payment id")
        self.address = widgets.Text(value=address, description="address")
        self.start = widgets.Button(description="Start", button_style="primary")
        self.approve = widgets.Button(description="Approve", button_style="success")
        self.cancel = widgets.Button(description="Cancel", button_style="danger")
        self.update_address = widgets.Button(description="Update address")
        self.panel = widgets.HTML()
        self.log = widgets.HTML()
        self.replies: list[Reply] = []
        self.last_task: asyncio.Task | None = None
        self.handle: WorkflowHandle | None = None
        self.request: OrderRequest | None = None
        self.status: OrderStatus | None = None
        self.result: OrderResult | None = None
        self._refresher: asyncio.Task | None = None
        self._busy: set[str] = set()
        self._notes: list[str] = []
        self.start.on_click(lambda _: self._command("Start", self._start))
        self.approve.on_click(
            lambda _: self._command("Approve", lambda: order_client.approve(stack.client, self.current_id))
        )
        self.cancel.on_click(
            lambda _: self._command(
                "Cancel", lambda: order_client.cancel(stack.client, self.current_id, "cancelled from the console")
            )
        )
        self.update_address.on_click(
            lambda _: self._command(
                "Update address", lambda: order_client.update_address(stack.client, self.current_id, self.address.value)
            )
        )
        self.order_id.observe(self._order_id_changed, names="value")
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.order_id, self.payment_id]),
                widgets.HBox([self.start, self.approve, self.cancel]),
                widgets.HBox([self.address, self.update_address]),
                self.panel,
                self.log,
            ]
        )
        stack.consoles.append(self)
        self._render()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # -- what a cell uses ---------------------------------------------------------------------
    @property
    def current_id(self) -> str:
        return self.handle.id.removeprefix("order-") if self.handle else self.order_id.value

    @property
    def workflow_id(self) -> str:
        return order_client.order_workflow_id(self.current_id)

    @property
    def started(self) -> bool:
        return self.handle is not None

    @property
    def ended(self) -> bool:
        return self.status is not None and self.status.terminal

    def accepted(self, button: widgets.Button) -> bool:
        """Whether a press of ``button`` was accepted for the current order."""
        return any(r.ok and r.button == button.description and r.order_id == self.current_id for r in self.replies)

    async def press(self, button: widgets.Button) -> Reply | None:
        """Click ``button`` as a person does and wait for its answer; skip it if it is disabled."""
        await self.refresh()
        if button.disabled:
            print(f"{button.description}: not pressed, the button is disabled ({self._why_disabled(button)})")
            return None
        button.click()
        await self.last_task
        return self.replies[-1]

    async def wait_for(
        self, target: str | Callable[[OrderStatus], bool] = "terminal", timeout: float = 20.0
    ) -> OrderStatus:
        """Wait until the order reaches ``target`` (a state, reached or passed; "terminal"; a predicate)."""
        if not self.started:
            raise StackError(f"order {self.current_id} is not started: press Start first")
        current = await self.stack.wait_for(self.current_id, target, timeout)
        await self.refresh()
        return current

    def last_reply(self, button: widgets.Button) -> Reply | None:
        """The latest answer to ``button`` for the current order (whoever pressed it)."""
        own = [r for r in self.replies if r.button == button.description and r.order_id == self.current_id]
        return own[-1] if own else None

    def renew_if_missed_review(self) -> bool:
        """If the current order ended before anyone approved it (its review deadline passed while
        you read, say), take a new order id, and with it a new payment id. True if it did."""
        if self.ended and not self.status.approved:
            print(
                f"order {self.current_id} ended {self.status.state.value} before approval "
                f"({self.status.reason}); using a new order id"
            )
            self.new_order()
            return True
        return False

    def new_order(self) -> None:
        """A new order id (and with it a new payment id); Start is enabled again."""
        self.order_id.value = new_id(self.order_id.value.rsplit("-", 1)[0])

    # -- buttons -------------------------------------------------------------------------------
    def _command(self, label: str, command: Callable[[], Awaitable[str]]) -> None:
        button = self._buttons()[label]
        button.disabled = True  # no double press while the command is on its way
        self._busy.add(label)
        order_id = self.current_id

        async def run() -> None:
            try:
                self.stack.check_running()
                text = await command()
                self.replies.append(Reply(label, order_id, True, text))
            except (order_client.Rejected, order_client.OrderExists, OrderflowError) as err:
                refused = isinstance(err, (order_client.Rejected, order_client.OrderExists))
                self.replies.append(Reply(label, order_id, False, str(err), refused=refused))
            except WorkflowUpdateFailedError as err:
                cause = err.cause
                text = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
                self.replies.append(Reply(label, order_id, False, text, refused=True))
            except Exception as err:  # noqa: BLE001 - shown, labelled, to the person who pressed
                self.replies.append(Reply(label, order_id, False, f"{type(err).__name__}: {err}"))
            finally:
                self._busy.discard(label)
            await self.refresh()

        self.last_task = asyncio.ensure_future(run())

    async def _start(self) -> str:
        order_id = self.order_id.value.strip()
        req = order_client.new_order(order_id, self.payment_id.value.strip(), address=self.address.value)
        handle = await order_client.start_order(self.stack.client, req, self.stack.settings)
        self.handle, self.request, self.status, self.result = handle, req, None, None
        self._refresher = asyncio.ensure_future(self._refresh_until_done())
        return f"started {handle.id} (payment id {req.payment_id})"

    def _order_id_changed(self, change) -> None:
        if self.handle is not None and change["new"] == self.current_id:
            return
        self.payment_id.value = f"pay-{change['new']}"
        self.handle = self.request = self.status = self.result = None
        self._render()

    def _stack_stopped(self) -> None:
        if self._refresher and not self._refresher.done():
            self._refresher.cancel()
        self._notes.append("this kernel's stack was stopped: run the notebook's first code cell to start it again")
        self._render()

    def _buttons(self) -> dict[str, widgets.Button]:
        return {b.description: b for b in (self.start, self.approve, self.cancel, self.update_address)}

    def _why_disabled(self, button: widgets.Button) -> str:
        if button.description in self._busy:
            return "its command is on its way"
        if button is self.start:
            return f"order {self.current_id} was started already"
        if not self.started:
            return "the order is not started"
        if self.ended:
            return f"the order has ended: {self.status.state.value}"
        return "the order is not awaiting review" if button is self.approve else "not available now"

    def _sync_buttons(self) -> None:
        s = self.status
        running = self.started and not self.ended
        self.start.disabled = self.started or "Start" in self._busy
        awaiting = s is not None and s.state == OrderState.AWAITING_REVIEW and not s.approved and not s.cancel_requested
        self.approve.disabled = not (running and awaiting) or "Approve" in self._busy
        self.cancel.disabled = not running or "Cancel" in self._busy
        self.update_address.disabled = not running or "Update address" in self._busy

    # -- the panel -----------------------------------------------------------------------------
    async def refresh(self) -> OrderStatus | None:
        if self.handle is not None and not self.stack.stopped:
            try:
                self.status = await order_client.status(self.stack.client, self.current_id)
            except Exception as err:  # noqa: BLE001 - shown in the panel, the loop goes on
                self._notes = [f"status query failed: {type(err).__name__}: {err}"]
            if self.status is not None and self.status.terminal and self.result is None:
                try:
                    self.result = await self.handle.result()
                except Exception:  # noqa: BLE001 - cancelled through Temporal: no result value
                    pass
        self._render()
        return self.status

    async def _refresh_until_done(self) -> None:
        handle = self.handle
        while not self.stack.stopped and self.handle is handle:  # a new order id ends this loop
            current = await self.refresh()
            if current is not None and current.terminal:
                return
            await asyncio.sleep(0.25)

    def _render(self) -> None:
        self._sync_buttons()
        if self.status is None:
            body = f"<i>order {html.escape(self.order_id.value)}: not started</i>"
        else:
            body = render_status(self.status, self.request, self.result, self.replies)
        notes = "".join(f"<div style='color:#a15c00'>{html.escape(n)}</div>" for n in self._notes[-2:])
        self.panel.value = f"<div class='orderflow-status'>{body}{notes}<div style='color:#555'>{html.escape(FAULTS.summary())}</div></div>"
        self.log.value = render_replies(self.replies)


def render_replies(replies: list[Reply]) -> str:
    lines = []
    for r in replies[-8:]:
        if r.ok:
            mark, color = "✓", "#1a7f37"
        elif r.refused:
            mark, color = "refused:", "#a15c00"
        else:
            mark, color = "error:", "#c62828"
        lines.append(
            f"<div class='orderflow-reply' style='color:{color}'><b>{html.escape(r.button)}</b> "
            f"({html.escape(r.order_id)}) {mark} {html.escape(r.text)}</div>"
        )
    return "".join(lines)


def _step_rank(name: str) -> int:
    return STEP_ORDER.index(name) if name in STEP_ORDER else len(STEP_ORDER)


def review_deadline(status: OrderStatus, req: OrderRequest | None) -> datetime | None:
    """When the reviewer's time runs out: the status's own field if it has one, else derived
    from the order's deadline and its policy exactly as OrderWorkflow derives it."""
    explicit = getattr(status, "review_deadline", None)
    if explicit:
        return datetime.fromisoformat(explicit)
    if req is None:
        return None
    policy = req.policy
    return datetime.fromisoformat(status.deadline) - timedelta(
        seconds=policy.refund_reserve_seconds + policy.post_review_reserve_seconds
    )


def render_status(
    status: OrderStatus,
    req: OrderRequest | None = None,
    result: OrderResult | None = None,
    replies: list[Reply] | None = None,
) -> str:
    now = datetime.now(timezone.utc)
    state = status.state.value
    if status.terminal:
        took = f" after {result.elapsed_seconds:.1f} s" if result else ""
        clock = f"<b>ended {state}</b>{took}" + (f": {html.escape(status.reason)}" if status.reason else "")
        if (
            status.state == OrderState.SHIPPED
            and replies
            and any(r.button == "Cancel" and r.ok for r in replies if r.order_id == status.order_id)
        ):
            overtaken = [s.detail for s in status.signals if s.name == "CancelOrder" and not s.accepted]
            clock += f" (your Cancel came too late: {html.escape(overtaken[-1] if overtaken else 'the parcel was dispatched')})"
    elif status.state == OrderState.AWAITING_REVIEW and not status.approved:
        due = review_deadline(status, req)
        left = max((due - now).total_seconds(), 0.0) if due else status.seconds_left
        clock = (
            f"awaiting review: <b>{left:.1f} s</b> left to approve "
            f"(then it is cancelled, at {due.astimezone():%H:%M:%S})"
            if due
            else f"{left:.1f} s left"
        )
    else:
        left = max((datetime.fromisoformat(status.deadline) - now).total_seconds(), 0.0)
        clock = f"{left:.1f} s left of the order's 15 s budget"
    steps = sorted(status.steps.items(), key=lambda kv: _step_rank(kv[0]))
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{s.state}</td><td>{s.attempts}</td><td>{s.failures}</td><td>{s.timeouts}</td></tr>"
        for name, s in steps
    )
    errors = "<br>".join(html.escape(e) for e in status.recent_errors[-3:]) or "none"
    return (
        f"<b>{html.escape(status.order_id)}</b>: <b class='orderflow-state'>{state}</b> (step {html.escape(status.step)}), "
        f"payment {status.payment.value}, {html.escape(status.shipping)}<br>{clock}"
        f"<br>address: {html.escape(status.address or '-')}"
        f"<table><tr><th>step</th><th>state</th><th>attempts</th><th>failures</th><th>timeouts</th></tr>{rows}</table>"
        f"recent attempt errors (injected faults, retried): {errors}"
    )


# -- plots -------------------------------------------------------------------------------------


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


# -- committed notebooks stay clean -----------------------------------------------------------------

KEPT_CELL_METADATA = ("tags",)


def stripped(text: str) -> str:
    """A notebook's JSON without outputs, execution counts, saved widget state or per-cell run
    metadata (JupyterLab's "scrolled", "collapsed", "execution" timings), in one canonical layout."""
    import json

    nb = json.loads(text)
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb["cells"]:
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in KEPT_CELL_METADATA}
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def strip_notebook(path: Path) -> bool:
    """Rewrite ``path`` stripped; True if that changed it."""
    raw = path.read_text()
    clean = stripped(raw)
    if clean != raw:
        path.write_text(clean)
    return clean != raw


def main(args: list[str]) -> None:
    """``python -m orderflow.notebook notebooks/*.ipynb`` strips files in place;
    ``python -m orderflow.notebook -`` strips stdin to stdout (a git "clean" filter)."""
    import sys

    if args == ["-"]:
        sys.stdout.write(stripped(sys.stdin.read()))
        return
    changed = [p for p in map(Path, args) if strip_notebook(p)]
    print("stripped:", ", ".join(map(str, changed)) or "nothing to strip")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
