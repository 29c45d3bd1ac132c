"""The command storm (orderflow/bench/storm.py), smaller than `orderflow storm`'s default, on both databases.

What it found before the gate (orderflow/workflows/gate.py): orders stuck for good on a fatal
error in the SDK core's Update state machine, histories that no longer replay, shipments
dispatched to an address every other record contradicted, and 409s that came true. Each
assertion below is one of those. The full storm: `orderflow storm` (80 orders at 5/s,
60 address changes per spammed order; add `--db` for MySQL).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from orderflow.bench.storm import render, run_storm
from orderflow.bench.storm_checks import Answer, untrue_answers


@pytest.mark.parametrize("database", ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
async def test_a_command_storm_leaves_every_order_consistent(tmp_path, request, database):
    db_url = request.getfixturevalue("mysql_url") if database == "mysql" else None
    report = await run_storm(orders=30, rate=5.0, db_url=db_url, workdir=tmp_path, max_spam=30)
    print("\n" + render(report))
    assert report.stuck == []
    assert report.replay["failures"] == 0, report.replay["first_failures"]
    assert report.disagreements == []
    assert report.untrue_answers == []
    assert report.http_5xx == 0
    assert report.over_budget == []
    assert report.plans.keys() == {"spam", "approve_and_cancel", "cancel_after_approve", "duplicate_start", "plain"}
    assert int(report.http_statuses.get("409", 0)) > 0  # the storm did press where the buttons refuse


def test_a_late_approval_refusal_is_true_only_of_an_unapproved_order_cancelled_after_its_deadline():
    """The storm's checker: "the manual review deadline passed at T" (a 409) is true when the
    order was not approved, ended cancelled, and T is before the answer came."""
    deadline = datetime(2026, 12, 3, 22, 18, 51, tzinfo=timezone.utc)
    words = {"error": f"order o-1: the manual review deadline passed at {deadline.isoformat()}"}
    ended = {"state": "cancelled", "approved": False}

    def untrue(answered_at: datetime, **outcome) -> list[str]:
        answer = Answer("o-1", "approve", "", 409, words, at=answered_at)
        return untrue_answers([answer], {"o-1": {**ended, **outcome}})

    assert untrue(deadline + timedelta(seconds=1)) == []
    assert untrue(deadline + timedelta(seconds=1), approved=True) != []
    assert untrue(deadline + timedelta(seconds=1), state="shipped") != []
    assert untrue(deadline - timedelta(seconds=1)) != []
