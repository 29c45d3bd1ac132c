"""Idempotent writes on SQLite and MySQL: duplicates and concurrent duplicates change nothing."""

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from orderflow.errors import PaymentClosed, PaymentConflict, ShipmentClosed
from orderflow.models import AuditEvent, Item, OrderState, PaymentState


def fresh_order(repo, state: OrderState | None = None) -> tuple[str, str]:
    order_id = f"o-{uuid.uuid4().hex[:10]}"
    payment_id = f"p-{order_id}"
    repo.insert_order(order_id, payment_id, [Item("ABC", 2)], "addr")
    if state:
        repo.advance_state(order_id, state)
    return order_id, payment_id


def test_insert_order_twice_keeps_the_first(repo):
    order_id, payment_id = fresh_order(repo)
    repo.insert_order(order_id, "other", [Item("ZZZ", 9)], "elsewhere")
    row = repo.get_order(order_id)
    assert (row["payment_id"], row["items_json"], row["address"]) == (payment_id, [{"sku": "ABC", "qty": 2}], "addr")


def test_concurrent_charges_charge_once(repo):
    order_id, payment_id = fresh_order(repo)
    with ThreadPoolExecutor(8) as pool:
        amounts = list(pool.map(lambda _: repo.charge_payment(payment_id, order_id, 2), range(16)))
    assert amounts == [2] * 16
    payments = repo.order_view(order_id)["payments"]
    assert [(p["status"], p["amount"]) for p in payments] == [("charged", 2)]


def test_a_payment_id_belongs_to_one_order(repo):
    first, payment_id = fresh_order(repo)
    second, _ = fresh_order(repo)
    repo.charge_payment(payment_id, first, 2)
    with pytest.raises(PaymentConflict):
        repo.charge_payment(payment_id, second, 2)
    assert repo.refund_payment(payment_id, second) == PaymentState.NONE
    assert repo.order_view(first)["payments"][0]["status"] == "charged"


def test_refund_is_idempotent_and_final(repo):
    order_id, payment_id = fresh_order(repo)
    repo.charge_payment(payment_id, order_id, 2)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: repo.refund_payment(payment_id, order_id), range(8)))
    assert set(results) == {PaymentState.REFUNDED}
    with pytest.raises(PaymentClosed):
        repo.charge_payment(payment_id, order_id, 2)


def test_refund_before_charge_voids_the_payment_id(repo):
    order_id, payment_id = fresh_order(repo)
    assert repo.refund_payment(payment_id, order_id) == PaymentState.VOIDED
    with pytest.raises(PaymentClosed):
        repo.charge_payment(payment_id, order_id, 2)


def test_state_only_moves_forward(repo):
    order_id, _ = fresh_order(repo, OrderState.CHARGED)
    assert not repo.advance_state(order_id, OrderState.VALIDATED)  # a late write of an earlier step
    assert repo.advance_state(order_id, OrderState.SHIPPED)
    assert not repo.advance_state(order_id, OrderState.CANCELLED)  # terminal is final
    assert repo.get_order(order_id)["state"] == "shipped"


def test_shipments_are_idempotent(repo):
    order_id, _ = fresh_order(repo, OrderState.SHIPPING)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: repo.prepare_shipment(order_id, 1, "a"), range(8)))
        list(pool.map(lambda _: repo.dispatch_shipment(order_id, 1, "b"), range(8)))
    assert repo.settle_shipment(order_id, 1, "failed") == "dispatched"  # a dispatched shipment stays so
    ships = repo.order_view(order_id)["shipments"]
    assert [(s["shipment_no"], s["status"], s["address"]) for s in ships] == [(1, "dispatched", "b")]
    assert repo.get_order(order_id)["state"] == "shipping"  # the workflow decides states, not the repository


def test_workflow_events_are_kept_once_per_key_and_a_rewrite_wins(repo):
    """A re-run of a discarded task writes its own version of the same sequence numbers."""
    order_id, _ = fresh_order(repo)

    def batch(version: str) -> list[AuditEvent]:
        return [
            AuditEvent(
                key=f"wf:{order_id}/run/{n}",
                order_id=order_id,
                type="state_changed",
                ts="2026-11-25T10:00:00.123456+00:00",
                detail={"n": n, "version": version},
            )
            for n in range(3)
        ]

    repo.write_progress(order_id, batch("discarded"))
    repo.write_progress(order_id, batch("committed")[1:])
    events = repo.order_view(order_id)["events"]
    assert [e["payload_json"] for e in events] == [
        {"n": 0, "version": "discarded"},
        {"n": 1, "version": "committed"},
        {"n": 2, "version": "committed"},
    ]
    assert events[0]["ts"].microsecond == 123456


def test_an_order_that_ends_before_it_was_received_still_gets_its_row(repo):
    order_id = f"o-{uuid.uuid4().hex[:10]}"
    repo.insert_order(order_id, "p", [Item("ABC")], "", OrderState.FAILED)
    repo.insert_order(order_id, "p", [Item("ABC")], "", OrderState.RECEIVED)  # a late ReceiveOrder: ignored
    assert repo.get_order(order_id)["state"] == "failed"


def test_settling_a_shipment_fences_off_a_late_dispatch(repo):
    """A dispatch attempt that timed out may write after the workflow gave up: settle decides."""
    order_id, _ = fresh_order(repo, OrderState.SHIPPING)
    repo.prepare_shipment(order_id, 1, "a")
    assert repo.settle_shipment(order_id, 1, "failed") == "failed"
    with pytest.raises(ShipmentClosed):  # the late write is refused: no success for a write not made
        repo.dispatch_shipment(order_id, 1, "a")
    assert [s["status"] for s in repo.order_view(order_id)["shipments"]] == ["failed"]
    repo.prepare_shipment(order_id, 2, "a")
    assert repo.dispatch_shipment(order_id, 2, "a") == "a"  # this time the late write came first
    assert repo.settle_shipment(order_id, 2, "cancelled") == "dispatched"
    assert repo.settle_shipment(order_id, 3, "failed") == "failed"  # never prepared: a tombstone row
    repo.prepare_shipment(order_id, 3, "a")  # a late prepare finds it
    with pytest.raises(ShipmentClosed):
        repo.dispatch_shipment(order_id, 3, "a")


def _key() -> str:
    return f"order-{uuid.uuid4().hex[:8]}/run/charge"


def test_a_step_counts_attempts_and_its_first_outcome_is_final(repo):
    order_id, _ = fresh_order(repo)
    key = _key()
    assert repo.begin_attempt(key, order_id, "charge")[0] == 1
    event = AuditEvent(
        key=f"step:{key}#1",
        order_id=order_id,
        type="attempt_failed",
        ts="2026-11-26T00:00:00+00:00",
        step="charge",
        attempt=1,
        detail={"error": "Forced failure for testing"},
    )
    repo.record_attempt(key, event, failed=True)
    repo.record_attempt(key, event, failed=True)  # the same attempt reported twice counts once
    assert repo.begin_attempt(key, order_id, "charge")[0] == 2
    assert repo.begin_attempt(key, order_id, "charge")[0] == 3
    timeout = AuditEvent(
        key="", order_id=order_id, type="attempt_timed_out", ts="2026-11-26T00:00:01+00:00", step="charge"
    )
    done = repo.close_step(
        key, "succeeded", result={"value": 1}, order_state=OrderState.CHARGED, order_id=order_id, timeout_event=timeout
    )
    assert (done.status, done.attempts, done.failures, done.timeouts) == ("succeeded", 3, 1, 1)
    assert done.attempt_errors == ["charge: Forced failure for testing", "charge: attempt 2 timed out"]
    assert repo.get_order(order_id)["state"] == "charged"
    # A late attempt, a settlement and a second outcome change nothing.
    n, again = repo.begin_attempt(key, order_id, "charge")
    assert (n, again.status, again.result) == (3, "succeeded", {"value": 1})
    assert repo.close_step(key, "failed", error="late").status == "succeeded"
    assert repo.settle_step(key, order_id, "charge").status == "succeeded"
    trail = [(e["type"], e["attempt"]) for e in repo.order_view(order_id)["events"] if e["step"] == "charge"]
    assert sorted(trail, key=lambda t: t[1]) == [("attempt_failed", 1), ("attempt_timed_out", 2)]


def test_a_later_attempt_creates_the_step_when_the_earlier_ones_never_reached_the_database(repo):
    """The database was down for attempt 1 (it never wrote the row): attempt 2 must start the
    step, not fail on the missing row forever (the stuck orders of the database-cut soak)."""
    order_id, _ = fresh_order(repo)
    key = _key()
    n, record = repo.begin_attempt(key, order_id, "charge", first=False)
    assert (n, record.status) == (1, "running")
    assert repo.step_record(key).attempts == 1
    assert repo.begin_attempt(key, order_id, "charge", first=False)[0] == 2
    assert repo.close_step(key, "succeeded", result={"value": 1}).status == "succeeded"
    n, final = repo.begin_attempt(key, order_id, "charge", first=False)  # a late one answers the outcome
    assert (n, final.status, final.result) == (2, "succeeded", {"value": 1})


def test_a_settled_step_answers_abandoned_to_a_late_attempt(repo):
    order_id, _ = fresh_order(repo)
    key = _key()
    repo.begin_attempt(key, order_id, "charge")
    assert repo.settle_step(key, order_id, "charge").status == "abandoned"
    late = repo.close_step(key, "succeeded", result={"value": 1}, order_state=OrderState.CHARGED, order_id=order_id)
    assert late.status == "abandoned"
    assert repo.get_order(order_id)["state"] == "received"  # the late success persisted no state
    assert repo.settle_step(_key(), order_id, "validate").status == "abandoned"  # never started


def test_the_final_progress_write_leaves_exactly_the_committed_events(repo):
    """A discarded workflow task wrote events 1-4; the committed run decided differently (1-3)."""
    order_id, _ = fresh_order(repo)
    prefix = f"wf:order-{order_id}/run-1/"

    def batch(types):
        return [
            AuditEvent(key=f"{prefix}{n}", order_id=order_id, type=t, ts="2026-11-26T00:00:00+00:00")
            for n, t in enumerate(types, 1)
        ]

    repo.write_progress(order_id, batch(["order_started", "step_abandoned", "compensation_started", "order_failed"]))
    repo.write_progress(
        order_id,
        batch(["order_started", "state_changed", "order_shipped"]),
        state=OrderState.SHIPPED,
        address="new",
        complete_prefix=prefix,
    )
    assert [e["type"] for e in repo.order_view(order_id)["events"]] == [
        "order_started",
        "state_changed",
        "order_shipped",
    ]
    assert (repo.get_order(order_id)["state"], repo.get_order(order_id)["address"]) == ("shipped", "new")


@pytest.mark.mysql
def test_ids_are_case_sensitive_on_mysql(mysql_url):
    """utf8mb4's default collation would make order ABC write into order abc's rows."""
    from orderflow.db.repository import Repository

    repo = Repository.from_url(mysql_url)
    try:
        tag = uuid.uuid4().hex[:8]
        lower, upper = f"abc-{tag}", f"ABC-{tag}"
        repo.insert_order(lower, f"pay-{lower}", [Item("ABC")], "a")
        repo.insert_order(upper, f"pay-{upper}", [Item("ABC")], "b")
        assert repo.get_order(lower)["address"] == "a" and repo.get_order(upper)["address"] == "b"
        repo.charge_payment(f"pay-{lower}", lower, 1)
        assert repo.charge_payment(f"PAY-{lower}", upper, 1) == 1  # another payment id, not a conflict
        assert repo.refund_payment(f"pay-{lower}", upper) == PaymentState.NONE  # cannot refund abc's payment
        assert repo.order_view(lower)["payments"][0]["status"] == "charged"
    finally:
        repo.engine.dispose()


@pytest.mark.mysql
def test_a_refund_racing_a_late_charge_never_leaves_it_charged_on_mysql(mysql_url):
    """Real concurrent connections: a charge attempt that timed out commits while the refund runs.

    Before the fix the refund's UPDATE matched nothing, the charge committed, and the refund's
    INSERT IGNORE skipped the charged row: the order ended cancelled with its payment charged.
    """
    from threading import Barrier

    from orderflow.db.repository import Repository

    repo = Repository.from_url(mysql_url)
    try:
        outcomes = []
        for _ in range(40):
            order_id, payment_id = fresh_order(repo)
            barrier = Barrier(2)

            def charge(payment_id=payment_id, order_id=order_id, barrier=barrier):
                barrier.wait()
                try:
                    repo.charge_payment(payment_id, order_id, 1)
                except PaymentClosed:
                    pass

            def refund(payment_id=payment_id, order_id=order_id, barrier=barrier):
                barrier.wait()
                return repo.refund_payment(payment_id, order_id)

            with ThreadPoolExecutor(2) as pool:
                late = pool.submit(charge)
                answer = pool.submit(refund).result()
                late.result()
            stored = repo.order_view(order_id)["payments"][0]["status"]
            assert answer in (PaymentState.REFUNDED, PaymentState.VOIDED), answer
            assert stored == answer.value, (answer, stored)
            outcomes.append(answer)
        assert PaymentState.REFUNDED in outcomes or PaymentState.VOIDED in outcomes
    finally:
        repo.engine.dispose()


def test_a_black_holed_mysql_fails_fast_instead_of_hanging():
    """A server that accepts the connection and never answers: ping() says False within the
    connect timeout (3 s), it does not hang the caller (before: /healthz hung, then said healthy)."""
    import socket
    import time

    from orderflow.db.repository import Repository

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)  # accepts into the backlog, never reads or writes
    try:
        repo = Repository.from_url(f"mysql+pymysql://root@127.0.0.1:{hole.getsockname()[1]}/orderflow")
        began = time.monotonic()
        assert repo.ping() is False
        assert time.monotonic() - began < 8
        repo.engine.dispose()
    finally:
        hole.close()


def test_prebuilt_statements_bind_no_name_that_is_also_a_column():
    """The statements built once bind parameters by name; a name that is also a column of the
    updated table would be taken as one more SET by SQLAlchemy and write that column."""
    from sqlalchemy.sql import visitors
    from sqlalchemy.sql.elements import BindParameter

    from orderflow.db import orders, step_ledger

    updates = [step_ledger._COUNT_ATTEMPT, step_ledger._COUNT_FAILURE, step_ledger._CLOSE_STEP]
    updates += [
        orders._advance_statement(state, reason, address)
        for state in OrderState
        for reason in (True, False)
        for address in (True, False)
    ]
    for statement in updates:
        named = {b.key for b in visitors.iterate(statement) if isinstance(b, BindParameter) and not b.unique}
        columns = {c.name for c in statement.table.columns}
        assert named and not named & columns, (str(statement), named & columns)


def test_an_order_advances_with_and_without_a_reason(repo):
    order_id, _ = fresh_order(repo)
    assert repo.advance_state(order_id, OrderState.VALIDATED)
    assert not repo.advance_state(order_id, OrderState.RECEIVED)  # never backwards
    assert repo.advance_state(order_id, OrderState.CANCELLED, reason="customer asked")
    row = repo.get_order(order_id)
    assert (row["state"], row["reason"]) == ("cancelled", "customer asked")
