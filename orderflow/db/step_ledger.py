"""The step ledger: the ``steps`` table, one idempotency record per step execution key.

An attempt is counted by the database, so its number stays unique when a discarded workflow
task runs the step again; the first outcome recorded wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from orderflow.db.audit_events import event_row
from orderflow.db.engine import utcnow
from orderflow.db.orders import advance
from orderflow.db.schema import events, steps
from orderflow.db.statements import insert_ignore, starts_with
from orderflow.models import AuditEvent, OrderState

# Bind names are never column names: an UPDATE would take such a parameter as one more SET.
_STEP = sa.select(steps).where(steps.c.step_key == sa.bindparam("key"))
_RUNNING_STEP = steps.c.step_key == sa.bindparam("key"), steps.c.status == "running"
_COUNT_ATTEMPT = (
    sa.update(steps).where(*_RUNNING_STEP).values(attempts=steps.c.attempts + 1, updated_at=sa.bindparam("now"))
)
_COUNT_FAILURE = (
    sa.update(steps)
    .where(steps.c.step_key == sa.bindparam("key"))
    .values(failures=steps.c.failures + 1, updated_at=sa.bindparam("now"))
)
_CLOSE_STEP = (
    sa.update(steps)
    .where(*_RUNNING_STEP)
    .values(
        status=sa.bindparam("new_status"),
        result_json=sa.bindparam("result", type_=steps.c.result_json.type),
        error=sa.bindparam("new_error"),
        updated_at=sa.bindparam("now"),
    )
)


@dataclass
class StepRecord:
    """A row of ``steps``: the idempotency record of one step execution key."""

    key: str
    status: str  # running | succeeded | failed | abandoned
    attempts: int
    failures: int
    result: Any = None
    error: str | None = None
    attempt_errors: list[str] | None = None  # filled by close_step: each failed / timed-out attempt, in order

    @property
    def final(self) -> bool:
        return self.status != "running"

    @property
    def timeouts(self) -> int:
        """Attempts that neither failed nor succeeded: cut by the attempt timeout (or a crash)."""
        done = 1 if self.status == "succeeded" else 0
        in_flight = 1 if self.status == "running" and self.attempts else 0
        return max(self.attempts - self.failures - done - in_flight, 0)


def _step_record(row: Any) -> StepRecord:
    return StepRecord(row.step_key, row.status, row.attempts, row.failures, row.result_json, row.error)


def _step_row(key: str, order_id: str, step: str, status: str, now: datetime, attempts: int = 0) -> dict[str, Any]:
    return dict(
        step_key=key,
        order_id=order_id,
        step=step,
        status=status,
        attempts=attempts,
        failures=0,
        created_at=now,
        updated_at=now,
    )


class StepLedger:
    """Count attempts, record their audit events, close a step with its outcome."""

    engine: Engine

    def begin_attempt(self, key: str, order_id: str, step: str, first: bool = True) -> tuple[int, StepRecord]:
        """Count a new attempt of step ``key``; returns (its number, the record).

        A step that already has an outcome is not counted: the caller answers with the
        recorded outcome. Numbers come from the database, so they stay unique when a
        discarded workflow task runs the step again. ``first``: the first attempt of this
        execution, which usually creates the row (later ones usually find it).
        """
        now = utcnow()
        row = _step_row(key, order_id, step, "running", now, attempts=1)
        with self.engine.begin() as conn:
            # The usual case, one statement: the first attempt of a new step creates its row.
            if first and insert_ignore(conn, steps, [row]):
                return 1, StepRecord(key, "running", 1, 0)
            counted = conn.execute(_COUNT_ATTEMPT, {"key": key, "now": now}).rowcount
            # No row yet although this is a later attempt: the earlier ones never reached the
            # database (it was down). Without this, every later attempt failed on the missing
            # row and the core retried it forever (found by the database-cut soak).
            if not counted and insert_ignore(conn, steps, [row]):
                return 1, StepRecord(key, "running", 1, 0)
            record = self._step(conn, key)
        return record.attempts, record

    def record_attempt(self, key: str, event: AuditEvent, failed: bool) -> None:
        """Write one attempt's audit event; a failed attempt also counts as a failure."""
        with self.engine.begin() as conn:
            if insert_ignore(conn, events, [event_row(event)]) and failed:
                conn.execute(_COUNT_FAILURE, {"key": key, "now": utcnow()})

    def close_step(
        self,
        key: str,
        status: str,
        *,
        result: Any = None,
        error: str | None = None,
        order_state: OrderState | None = None,
        order_id: str | None = None,
        address: str | None = None,
        timeout_event: AuditEvent | None = None,
    ) -> StepRecord:
        """Record the step's outcome unless one is recorded already; return the final record.

        The first outcome wins (an attempt that succeeded late cannot undo an abandonment,
        nor a settlement a success), and ``order_state`` (with the order's current ``address``)
        is persisted only with a success.
        Attempts that left no event (cut by the attempt timeout) get their ``attempt_timed_out``
        event here, numbered, so the trail has one event per failed or timed-out attempt.
        """
        with self.engine.begin() as conn:
            values = {"key": key, "new_status": status, "result": result, "new_error": error, "now": utcnow()}
            closed = conn.execute(_CLOSE_STEP, values).rowcount
            record = self._step(conn, key)
            if closed and status == "succeeded" and order_state is not None and order_id is not None:
                advance(conn, order_id, order_state, address=address)
            last = record.attempts - (1 if status == "succeeded" else 0)
            if closed and timeout_event is not None and last == 0:
                record.attempt_errors = []  # a first attempt that succeeded: no earlier attempt to account for
            elif closed and timeout_event is not None:
                prefix = f"step:{key}#"
                have = {
                    k: (t, p)
                    for k, t, p in conn.execute(
                        sa.select(events.c.event_key, events.c.type, events.c.payload_json).where(
                            events.c.order_id == timeout_event.order_id, starts_with(events.c.event_key, prefix)
                        )
                    )
                }
                missing = [
                    event_row(
                        AuditEvent(
                            key=f"{prefix}{n}",
                            order_id=timeout_event.order_id,
                            type="attempt_timed_out",
                            ts=timeout_event.ts,
                            step=timeout_event.step,
                            attempt=n,
                            detail=timeout_event.detail,
                        )
                    )
                    for n in range(1, last + 1)
                    if f"{prefix}{n}" not in have
                ]
                insert_ignore(conn, events, missing)
                record.attempt_errors = []
                for n in range(1, last + 1):
                    type_, payload = have.get(f"{prefix}{n}", ("attempt_timed_out", {}))
                    record.attempt_errors.append(
                        f"{timeout_event.step}: {(payload or {}).get('error') or 'timed out'}"
                        if type_ != "attempt_timed_out"
                        else f"{timeout_event.step}: attempt {n} timed out"
                    )
        return record

    def settle_step(self, key: str, order_id: str, step: str) -> StepRecord:
        """Close a step the workflow gave up on (``abandoned``) unless it has an outcome; return it."""
        now = utcnow()
        with self.engine.begin() as conn:
            insert_ignore(conn, steps, [_step_row(key, order_id, step, "abandoned", now)])
            conn.execute(
                sa.update(steps)
                .where(steps.c.step_key == key, steps.c.status == "running")
                .values(status="abandoned", error="abandoned at the order's deadline", updated_at=now)
            )
            return self._step(conn, key)

    def step_record(self, key: str) -> StepRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(_STEP, {"key": key}).first()
        return _step_record(row) if row else None

    @staticmethod
    def _step(conn: Connection, key: str) -> StepRecord:
        return _step_record(conn.execute(_STEP, {"key": key}).one())
