"""The console's HTML: an order's status panel and the labelled answers to button presses."""

from __future__ import annotations

import html
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from enum import Enum

import pandas as pd

from orderflow.models import OrderRequest, OrderResult, OrderState, OrderStatus

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


def as_table(record) -> pd.DataFrame:
    """A dataclass (an ``OrderResult``, an ``OrderStatus``'s scalars) as a field / value table:
    easier to read than its one-line repr, which the browser wraps mid-word."""
    rows = []
    for f in fields(record):
        value = getattr(record, f.name)
        if isinstance(value, Enum):
            value = value.value
        if isinstance(value, (str, int, float, bool)) or value is None:
            rows.append((f.name, value))
    return pd.DataFrame(rows, columns=["field", "value"]).set_index("field")


def reply_line(reply: Reply) -> str:
    """One answer in words: "✓ address updated", "refused: it has already ended"."""
    if reply.ok:
        return f"✓ {reply.text}"
    return f"{'refused' if reply.refused else 'error'}: {reply.text}"


def render_disabled(reasons: dict[str, str]) -> str:
    """Why the greyed-out buttons are greyed out (a disabled button cannot answer a click)."""
    if not reasons:
        return ""
    parts = "; ".join(f"<b>{html.escape(name)}</b>: {html.escape(why)}" for name, why in reasons.items())
    return f"<div class='orderflow-disabled' style='color:#555'>greyed out: {parts}</div>"


def render_replies(replies: list[Reply]) -> str:
    lines = []
    for r in replies[-8:]:
        color = "#1a7f37" if r.ok else "#a15c00" if r.refused else "#c62828"
        lines.append(
            f"<div class='orderflow-reply' style='color:{color}'><b>{html.escape(r.button)}</b> "
            f"({html.escape(r.order_id)}) {html.escape(reply_line(r))}</div>"
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
    # Every error the workflow keeps (its last ten, the shipping child's included), newest last.
    errors = "<br>".join(html.escape(e) for e in status.recent_errors) or "none"
    return (
        f"<b>{html.escape(status.order_id)}</b>: <b class='orderflow-state'>{state}</b> (step {html.escape(status.step)}), "
        f"payment {status.payment.value}, {html.escape(status.shipping)}<br>{clock}"
        f"<br>address: {html.escape(status.address or '-')}"
        f"<table><tr><th>step</th><th>state</th><th>attempts</th><th>failures</th><th>timeouts</th></tr>{rows}</table>"
        f"recent attempt errors (injected faults, retried): {errors}"
    )
