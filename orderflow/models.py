"""Payloads that cross the Temporal boundary: dataclasses and enums only.

Workflow modules import this file inside the sandbox, so it must stay free of
side effects and heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


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
    SETTLE_SHIPMENT = "SettleShipment"
    RECORD_PROGRESS = "RecordProgress"


class Signal:
    """Signal names, as the assignment spells them."""

    APPROVE = "ApproveOrder"
    CANCEL = "CancelOrder"
    UPDATE_ADDRESS = "UpdateAddress"
    DISPATCH_FAILED = "DispatchFailed"


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
    """How each flaky step is run and retried; chosen from measurements (see README).

    The workflow drives retries itself (one activity attempt per call) so that
    status() shows attempts, failures and timeouts live, and so it can stop
    retrying before the order's deadline.
    """

    local_activities: bool = True
    attempt_timeout_seconds: float = 0.15
    retry_pause_seconds: float = 0.001
    attempts_per_task: int = 3  # local activities: pause after every 3rd failed attempt of a step
    dispatch_attempts: int = 5
    shipping_attempts: int = 5
    refund_reserve_seconds: float = 3.0
    post_review_reserve_seconds: float = 3.0

    @classmethod
    def baseline(cls) -> "StepPolicy":
        """What a typical implementation uses: regular activities, 2 s timeouts, 1 s backoff."""
        return cls(
            local_activities=False,
            attempt_timeout_seconds=2.0,
            retry_pause_seconds=1.0,
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
    shipping_task_queue: str = "shipping-tq"
    policy: StepPolicy = field(default_factory=StepPolicy)


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


@dataclass
class StepRequest:
    """The input of every order-side activity. ``attempt`` is the workflow's try number."""

    order_id: str
    payment_id: str = ""
    items: list[Item] = field(default_factory=list)
    address: str = ""
    attempt: int = 1


@dataclass
class ShipmentRequest:
    """The input of the shipping activities."""

    order_id: str
    shipment_no: int
    address: str
    items: list[Item] = field(default_factory=list)
    attempt: int = 1


@dataclass
class SettleRequest:
    """Close a shipment as ``status`` ("failed" or "cancelled") unless it was dispatched."""

    order_id: str
    shipment_no: int
    status: str


@dataclass
class AuditEvent:
    """One row of the append-only events table; ``key`` makes the insert idempotent."""

    key: str
    order_id: str
    type: str
    ts: str
    step: str | None = None
    attempt: int | None = None
    detail: dict = field(default_factory=dict)


@dataclass
class ProgressRecord:
    """Audit events to append, and optionally a new order state or address to persist."""

    order_id: str
    events: list[AuditEvent] = field(default_factory=list)
    state: OrderState | None = None
    reason: str | None = None
    address: str | None = None
    order: StepRequest | None = None  # with a terminal state: the row to create if ReceiveOrder never ran


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
    shipment_no: int
    dispatched: bool
    address: str
    reason: str | None = None
    steps: dict[str, StepStats] = field(default_factory=dict)
