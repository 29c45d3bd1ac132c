"""Payloads that cross the Temporal boundary: dataclasses and enums only.

Workflow modules import this file inside the sandbox, so it must stay free of
side effects and heavy imports.
"""

# No ``from __future__ import annotations`` here: the data converter calls get_type_hints()
# on every decode, and string annotations would be evaluated again each time
# (docs/performance.md#measurements-behind-the-code).
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

# The workflow type names: what histories record and what visibility queries filter on. Never
# change them: every recorded history and running order is bound to its type's name.
ORDER_WORKFLOW = "OrderWorkflow"
SHIPPING_WORKFLOW = "ShippingWorkflow"

# The task queues' names (config.Settings may give them a suffix of their own, per test or run).
ORDERS_TASK_QUEUE = "orders-tq"
SHIPPING_TASK_QUEUE = "shipping-tq"


class OrderState(str, Enum):
    """Where an order is. The order of the members is the order of the lifecycle."""

    STARTED = "started"
    RECEIVED = "received"
    VALIDATED = "validated"
    AWAITING_REVIEW = "awaiting_review"
    APPROVED = "approved"
    CHARGED = "charged"
    SHIPPING = "shipping"
    DISPATCHED = "dispatched"
    SHIPPED = "shipped"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({OrderState.SHIPPED, OrderState.CANCELLED, OrderState.FAILED})
# The same, as the strings the database and the audit trail store.
TERMINAL = tuple(s.value for s in OrderState if s in TERMINAL_STATES)
LIFECYCLE = [s for s in OrderState if s not in TERMINAL_STATES] + [OrderState.SHIPPED]


class PaymentState(str, Enum):
    NONE = "none"
    CHARGING = "charging"
    CHARGED = "charged"
    REFUNDING = "refunding"
    REFUNDED = "refunded"
    VOIDED = "voided"  # a refund found nothing charged and blocked any late charge


class Activity:
    """Registered activity names (what the event history and the Web UI show)."""

    RECEIVE_ORDER = "ReceiveOrder"
    VALIDATE_ORDER = "ValidateOrder"
    CHARGE_PAYMENT = "ChargePayment"
    REFUND_PAYMENT = "RefundPayment"
    MARK_SHIPPED = "MarkOrderShipped"
    PREPARE_PACKAGE = "PreparePackage"
    DISPATCH_CARRIER = "DispatchCarrier"
    SETTLE_STEP = "SettleStep"
    RECORD_PROGRESS = "RecordProgress"
    CLOSE_PAYMENT = "ClosePayment"


class Signal:
    """Signal names, as the assignment spells them."""

    APPROVE = "ApproveOrder"
    CANCEL = "CancelOrder"
    UPDATE_ADDRESS = "UpdateAddress"
    DISPATCH_FAILED = "DispatchFailed"
    CANCEL_SHIPMENT = "CancelShipment"  # parent -> ShippingWorkflow


class Update:
    """Workflow Update names: the same commands, answered synchronously with a validator."""

    APPROVE = "approve"
    CANCEL = "cancel"
    UPDATE_ADDRESS = "update_address"
    WAIT_FOR_REVIEW = "wait_for_review"


@dataclass
class Item:
    sku: str
    qty: int = 1


def default_items() -> list[Item]:
    return [Item(sku="ABC", qty=1)]


@dataclass
class StepPolicy:
    """How each flaky step is run and retried; chosen from measurements (docs/performance.md).

    Each step is ONE activity call with a RetryPolicy: the SDK core retries the attempts
    (start-to-close ``attempt_timeout_seconds`` each) inside the worker, and the activity
    records every attempt in the database under the step's key. ``schedule_to_close`` is
    the time left until the order's work deadline, so a step can never outlive the order.
    """

    local_activities: bool = True
    attempt_timeout_seconds: float = 0.15
    # Failures are retried after 10, 15, 22, 34, then 50 ms. Every retry stays inside the worker,
    # in the same workflow task (the backoffs are far below the core's local retry threshold), which
    # is cheaper and faster than server timers (docs/performance.md#figures-that-depend-on-the-step-model).
    # The price: a signal or Update that arrives while a step retries waits for the step's end.
    retry_initial_seconds: float = 0.01
    retry_max_seconds: float = 0.05
    retry_backoff: float = 1.5
    # Ten, not five: with the seed's faults an attempt succeeds 1 time in 3, so five failed in a row
    # for 13 % of shipments, and each second shipment costs a whole child and three parent workflow
    # tasks; ten fail for 1.7 % (docs/performance.md#dispatch-attempts). Notebook 04 sets 3 to show
    # DispatchFailed under real faults.
    dispatch_attempts: int = 10
    shipping_attempts: int = 5
    refund_reserve_seconds: float = 3.0
    post_review_reserve_seconds: float = 3.0

    @classmethod
    def baseline(cls) -> "StepPolicy":
        """What a typical implementation uses: regular activities, 2 s timeouts, 1 s backoff."""
        return cls(
            local_activities=False,
            attempt_timeout_seconds=2.0,
            retry_initial_seconds=1.0,
            retry_max_seconds=1.0,
            retry_backoff=1.0,
        )


@dataclass
class OrderRequest:
    """The input of OrderWorkflow."""

    order_id: str
    payment_id: str
    items: list[Item] = field(default_factory=default_items)
    address: str = ""
    budget_seconds: float = 15.0
    review_timeout_seconds: float | None = None
    shipping_task_queue: str = SHIPPING_TASK_QUEUE
    policy: StepPolicy = field(default_factory=StepPolicy)
    # Versioning by input: orders started since the status memo (OrderWorkflow._publish_status) say
    # so here (order_client.new_order sets it). Older histories have no such field, so they replay
    # with False and without memo commands. workflow.patched() would have cost each order a marker
    # and a search-attribute upsert (TemporalChangeVersion): two events and a visibility write.
    publish_status: bool = False


@dataclass
class StepStats:
    attempts: int = 0
    failures: int = 0
    timeouts: int = 0
    state: str = "pending"  # pending | running | done | failed | abandoned


@dataclass
class SignalRecord:
    name: str
    accepted: bool
    detail: str
    at: str


@dataclass
class OrderStatus:
    """What OrderWorkflow.status() answers."""

    order_id: str
    state: OrderState
    step: str
    address: str
    payment: PaymentState
    shipping: str
    shipping_attempts: int
    approved: bool
    cancel_requested: bool
    reason: str | None
    deadline: str
    seconds_left: float
    review_deadline: str | None = None
    steps: dict[str, StepStats] = field(default_factory=dict)
    recent_errors: list[str] = field(default_factory=list)
    signals: list[SignalRecord] = field(default_factory=list)
    dispatch_failures: list[str] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.state.terminal


@dataclass
class OrderResult:
    """What OrderWorkflow returns when it ends."""

    order_id: str
    state: OrderState
    payment: PaymentState
    reason: str | None
    shipping_attempts: int
    elapsed_seconds: float
    address: str = ""
    audit_events: int = 0  # workflow events this run wrote to the trail (the checker compares)


@dataclass
class AuditEvent:
    """One row of the append-only events table; ``key`` makes the write idempotent.

    Workflow events are keyed ``wf:<workflow id>/<run id>/<seq>``; attempt events written by
    the activities ``step:<step key>#<attempt>``, where the attempt number comes from the
    step's counter in the database (so an attempt re-run by a discarded task gets a new one).
    """

    key: str
    order_id: str
    type: str
    ts: str
    step: str | None = None
    attempt: int | None = None
    detail: dict = field(default_factory=dict)


@dataclass
class StepRequest:
    """The input of every flaky step activity, order side and shipping side.

    ``step`` names the step inside its workflow; with the workflow's id and run id it is the
    step's idempotency key. ``state`` is the order state the step's success establishes
    (persisted with its outcome). The core retries the step with this same input.
    """

    order_id: str
    step: str
    payment_id: str = ""
    items: list[Item] = field(default_factory=list)
    address: str = ""
    shipment_no: int = 0
    max_attempts: int = 0  # 0: until the schedule-to-close timeout
    state: OrderState | None = None


@dataclass
class StepResult:
    """What a step recorded: the stub's answer plus the attempt statistics of the step key.

    A step that already has an outcome answers with the recorded one, so a step executed
    again (a discarded workflow task re-runs its local activities) yields the same result.
    """

    value: Any
    attempts: int
    failures: int
    timeouts: int
    detail: dict = field(default_factory=dict)  # e.g. the amount charged, the address dispatched to
    errors: list[str] = field(default_factory=list)  # what each failed or timed-out attempt said

    def stats(self, state: str = "done") -> StepStats:
        return StepStats(self.attempts, self.failures, self.timeouts, state)


@dataclass
class SettleRequest:
    """Close a step the workflow gives up on; for a dispatch also its shipment."""

    order_id: str
    step: str
    workflow_id: str
    run_id: str
    shipment_no: int = 0
    shipment_status: str = ""  # "failed" or "cancelled" for a dispatch step


@dataclass
class Settled:
    """The step's final record: ``status`` is succeeded (a late attempt got through),
    failed or abandoned; for a dispatch ``shipment`` is the shipment row's final status."""

    status: str
    attempts: int
    failures: int
    timeouts: int
    error: str | None = None
    result: StepResult | None = None
    shipment: str | None = None
    address: str | None = None  # where a dispatched shipment went


@dataclass
class ProgressRecord:
    """Workflow audit events and optionally a new order state or address to persist.

    ``complete`` marks the final write of the order: the workflow's events of this run
    are then exactly ``events`` (any written by a discarded task and not repeated are removed).
    """

    order_id: str
    events: list[AuditEvent] = field(default_factory=list)
    state: OrderState | None = None
    reason: str | None = None
    address: str | None = None
    order: StepRequest | None = None  # with a terminal state: the row to create if ReceiveOrder never ran
    complete: bool = False
    workflow_prefix: str = ""  # ``wf:<workflow id>/<run id>/`` of the writer, for ``complete``


@dataclass
class ShippingRequest:
    """The input of ShippingWorkflow."""

    order_id: str
    shipment_no: int
    address: str
    items: list[Item]
    deadline: str  # ISO-8601; the child stops retrying at this instant
    parent_workflow_id: str
    policy: StepPolicy = field(default_factory=StepPolicy)


@dataclass
class ShippingResult:
    """What one ShippingWorkflow reports to its parent. ``address`` is where the parcel went
    (from the shipment row) when ``dispatched``; ``events`` are the child's audit events,
    which the parent writes with its own, so only committed history reaches the trail."""

    shipment_no: int
    dispatched: bool
    address: str
    reason: str | None = None
    steps: dict[str, StepStats] = field(default_factory=dict)
    events: list[AuditEvent] = field(default_factory=list)
    out_of_time: bool = False  # it stopped at the order's work deadline: no further shipment fits
    errors: list[str] = field(default_factory=list)  # its recent attempt errors, for the order's status
