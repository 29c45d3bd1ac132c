"""What the command storm checks afterwards, and its report: every 2xx and 409 answer must be
true of how its order ended; the outcome of each order is read from its rows and its result."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from orderflow import order_client
from orderflow.db.repository import Repository


@dataclass
class Answer:
    """One HTTP answer an order got: what was asked, and what came back."""

    order_id: str
    command: str  # start | review | approve | cancel | address | status
    sent: str  # the address sent, for an address change
    status: int
    body: dict[str, Any]
    at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))  # when the answer came


@dataclass
class StormReport:
    orders: int
    rate: float
    db: str
    plans: dict[str, int]
    http_statuses: dict[str, int]
    answers: int
    stuck: list[str]
    over_budget: list[str]
    replay: dict
    disagreements: list[str]
    untrue_answers: list[str]
    http_5xx: int
    seconds: dict[str, float] = field(default_factory=dict)
    queries_failed: list[str] = field(default_factory=list)  # with kill_worker: queries a fresh worker could not answer
    faults: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        # A killed worker's orders wait for its task to time out (5 s) before another worker
        # takes them: ending after the budget is that known cost (docs/reliability.md), reported.
        late = self.over_budget if not self.faults else []
        return not (
            self.stuck
            or late
            or self.replay["failures"]
            or self.disagreements
            or self.untrue_answers
            or self.http_5xx
            or self.queries_failed
        )


def detail(answer: Answer) -> str:
    """The workflow's words in an answer: a 2xx ``result``, or a 409's reason after "order X: "."""
    if answer.status < 300:
        return str(answer.body.get("result", ""))
    return str(answer.body.get("error", "")).split(": ", 1)[-1]


def untrue_answers(answers: list[Answer], outcome: dict[str, dict[str, Any]]) -> list[str]:
    """Every 2xx or 409 whose words are not true of how its order ended, as sentences.

    ``outcome[order_id]``: ``state``, ``payment``, ``address`` (the order's final address),
    ``dispatched_to`` (the dispatched shipment's address, or None), ``adopted`` (the addresses
    the workflow adopted, in its order, from the audit trail). An answer whose words match no rule is reported too: each kind of
    answer the API gives must have a rule here.
    """
    wrong: list[str] = []
    for a in answers:
        if a.command in ("status", "review") or not (a.status < 300 or a.status == 409):
            continue
        o = outcome[a.order_id]
        words = detail(a)

        def check(ok: bool, a: Answer = a, words: str = words, o: dict = o) -> None:
            if not ok:
                wrong.append(f"{a.order_id}: {a.command} {a.sent!r} answered {a.status} {words!r}, but it ended {o}")

        if a.command == "start":
            check(a.status in (201, 409))  # 409: the id was used (the duplicate of a start that went through)
            continue
        if words == "approved":
            check(o["approved"])
        elif words == "address updated":
            check(a.sent in o["adopted"])
        elif words == "address updated; the parcel was dispatched to it":
            check(o["dispatched_to"] == a.sent)
        elif (m := re.fullmatch(r"too late: the parcel was dispatched to (.*)", words)) is not None:
            check(o["dispatched_to"] == unquote(m[1]) != a.sent)
        elif m := re.fullmatch(r"address updated; since changed again to (.*)", words):
            later = o["adopted"][o["adopted"].index(a.sent) + 1 :] if a.sent in o["adopted"] else []
            check(a.sent in o["adopted"] and unquote(m[1]) in later)
        elif (m := re.fullmatch(r"address updated; the order then ended (\w+) before dispatch: .*", words)) is not None:
            check(o["state"] == m[1] and o["dispatched_to"] is None and o["address"] == a.sent)
        elif (m := re.fullmatch(r"order already ended \((\w+)\)", words)) is not None:
            check(o["state"] == m[1])
        elif words == "it has already ended":
            check(o["state"] in ("shipped", "cancelled", "failed"))
        elif (m := re.fullmatch(r"order was already dispatched to (.*)", words)) is not None:
            check(o["dispatched_to"] == unquote(m[1]))
        elif m := re.fullmatch(r"the parcel was dispatched to (.*) before the cancellation took effect", words):
            check(o["state"] == "shipped" and o["dispatched_to"] == unquote(m[1]))
        elif words == "order cancelled; the payment was refunded":
            check(o["state"] == "cancelled" and o["payment"] == "refunded")
        elif words == "order cancelled; nothing had been charged (payment voided)":
            check(o["state"] == "cancelled" and o["payment"] == "voided")
        elif words in ("order is already being cancelled", "order is being cancelled"):
            check(o["cancel_requested"])
        elif words == "order was already approved":
            check(o["approved"])
        elif (m := re.fullmatch(r"the manual review deadline passed at (\S+)", words)) is not None:
            check(not o["approved"] and o["state"] == "cancelled" and datetime.fromisoformat(m[1]) <= a.at)
        elif (m := re.fullmatch(r"order is not awaiting review \(state (\w+)\)", words)) is not None:
            # About the moment it was asked: the state named is one the order went through.
            check(m[1] in {"started", "received", "validated", "approved", "charged", "shipping", "dispatched"})
        elif words.startswith("order is ending: "):
            check(o["state"] in ("cancelled", "failed"))
        elif (m := re.fullmatch(r"order ended (\w+): .*", words)) is not None:
            check(o["state"] == m[1])
        else:
            wrong.append(f"{a.order_id}: {a.command} answered {a.status} {words!r}: no rule says when that is true")
    return wrong


def unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text


def outcomes(repo: Repository, order_ids: list[str], results: dict, log: list[Answer]) -> dict[str, dict[str, Any]]:
    """How each order ended, from its result and its rows, and what was asked of it."""
    outcome: dict[str, dict[str, Any]] = {}
    for order_id in order_ids:
        result = results.get(order_id)
        view = repo.order_view(order_id, event_limit=2000)
        dispatched = [s["address"] for s in view["shipments"] if s["status"] == "dispatched"]
        own = f"wf:{order_client.order_workflow_id(order_id)}/"  # the order's events, not its shipments'
        accepted = [e for e in view["events"] if e["type"] == "signal_accepted" and e["event_key"].startswith(own)]
        accepted.sort(key=lambda e: int(e["event_key"].rsplit("/", 1)[1]))  # the workflow's own order
        outcome[order_id] = {
            "state": view["order"]["state"],
            "payment": result.payment.value if result is not None else None,
            "address": view["order"]["address"],
            "dispatched_to": dispatched[0] if dispatched else None,
            "approved": any((e["payload_json"] or {}).get("name") == "ApproveOrder" for e in accepted),
            "cancel_requested": any((e["payload_json"] or {}).get("name") == "CancelOrder" for e in accepted),
            "adopted": [
                (e["payload_json"] or {}).get("detail")
                for e in accepted
                if (e["payload_json"] or {}).get("name") == "UpdateAddress"
            ],
        }
    return outcome


def render(report: StormReport) -> str:
    late = [f"{o} {report.seconds[o]:.1f} s" for o in report.over_budget]
    lines = [
        f"== command storm: {report.orders} orders at {report.rate:g}/s over HTTP, {report.db}; plans {report.plans}",
        f"HTTP answers ({report.answers}): {report.http_statuses}",
        f"stuck (not ended 30 s after the storm): {len(report.stuck)} {report.stuck[:5]}",
        f"ended after the budget: {len(report.over_budget)} {late[:5]}",
        f"replay: {report.replay['failures']} failures in {report.replay['histories']} histories "
        f"{report.replay['first_failures'][:2]}",
        f"disagreements between the database, Temporal and status(): {len(report.disagreements)} "
        f"{report.disagreements[:3]}",
        f"untrue 2xx/409 answers: {len(report.untrue_answers)} {report.untrue_answers[:3]}",
        f"HTTP 5xx: {report.http_5xx}",
        *(
            [
                f"faults: {'; '.join(report.faults)}",
                f"queries a fresh worker could not answer: {len(report.queries_failed)} {report.queries_failed[:3]}",
            ]
            if report.faults
            else []
        ),
        "verdict: " + ("all hold" if report.ok else "FAILED"),
    ]
    return "\n".join(lines)
