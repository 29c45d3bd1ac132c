"""Focused unit tests of how orderflow.order_client sends an Update again.

Two answers are sent again: the server's "workflow not ready" (it dropped an Update not yet
accepted because the workflow task carrying it failed, which a signal arriving while the
order's last task runs causes without any fault), under the same id; and the workflow's Busy
refusal (a step was running: workflows/gate.py), under a new id. These tests script
the answers with a stand-in handle: the races cannot be scheduled on purpose against a real
server (tests/test_workflows_order.py has the Busy path for real).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from google.protobuf.any_pb2 import Any as AnyDetail
from temporalio.api.common.v1 import GrpcStatus
from temporalio.api.errordetails.v1 import WorkflowNotReadyFailure
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from orderflow import order_client
from orderflow.order_client import commands


def rpc_error(status: RPCStatusCode, message: str, detail: Any = None) -> RPCError:
    grpc_status = GrpcStatus(code=int(status), message=message)
    if detail is not None:
        packed = AnyDetail()
        packed.Pack(detail)
        grpc_status.details.append(packed)
    return RPCError(message, status, grpc_status.SerializeToString())


NOT_READY = rpc_error(
    RPCStatusCode.FAILED_PRECONDITION,
    "Unable to perform workflow execution update due to unexpected workflow task failure.",
    WorkflowNotReadyFailure(),
)


def busy() -> WorkflowUpdateFailedError:
    return WorkflowUpdateFailedError(ApplicationError("a step is running; send it again in a moment", type="Busy"))


class Outcome:
    """An accepted (or refused) Update's handle: ``result()`` gives the outcome or raises the refusal."""

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome

    async def result(self) -> Any:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


class ScriptedHandle:
    """Answers start_update from a script: an exception to raise, or an Outcome to return."""

    id = "order-scripted"

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    async def start_update(self, name: str, **kwargs: Any) -> Any:
        self.calls.append({"name": name, **kwargs})
        answer = self.answers.pop(0) if self.answers else self.answers_when_done()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def answers_when_done(self) -> Any:
        raise AssertionError("more calls than scripted")


def test_only_the_not_ready_answer_is_recognised():
    assert order_client.workflow_not_ready(NOT_READY)
    other_precondition = rpc_error(RPCStatusCode.FAILED_PRECONDITION, "something else")
    assert not order_client.workflow_not_ready(other_precondition)
    assert not order_client.workflow_not_ready(rpc_error(RPCStatusCode.UNAVAILABLE, "down", WorkflowNotReadyFailure()))


async def test_a_dropped_update_is_sent_again_under_the_same_id():
    handle = ScriptedHandle(NOT_READY, NOT_READY, Outcome("order cancelled"))
    answer = await order_client.send_update(handle, "cancel", "changed my mind")  # type: ignore[arg-type]
    assert answer == "order cancelled"
    assert len(handle.calls) == 3
    assert len({call["id"] for call in handle.calls}) == 1  # one Update, deduplicated by the server
    assert all(call["args"] == ["changed my mind"] for call in handle.calls)


async def test_a_busy_refusal_is_sent_again_as_a_new_update():
    handle = ScriptedHandle(Outcome(busy()), Outcome(busy()), Outcome("approved"))
    assert await order_client.send_update(handle, "approve") == "approved"  # type: ignore[arg-type]
    assert len({call["id"] for call in handle.calls}) == 3  # a refused Update is gone: each try is new


async def test_a_refusal_of_the_workflows_own_is_not_sent_again():
    refused = WorkflowUpdateFailedError(ApplicationError("order was already approved", type="Rejected"))
    handle = ScriptedHandle(Outcome(refused))
    with pytest.raises(WorkflowUpdateFailedError) as raised:
        await order_client.send_update(handle, "approve")  # type: ignore[arg-type]
    assert raised.value is refused and len(handle.calls) == 1


async def test_busy_until_the_deadline_says_the_order_was_in_a_step():
    handle = ScriptedHandle()
    handle.answers_when_done = lambda: Outcome(busy())  # type: ignore[method-assign]
    with pytest.raises(
        order_client.NoAnswer,
        match=r"not accepted within 0.3 s; the workflow answered Busy \d+ times \(a step was running\); nothing was changed$",
    ):
        await order_client.send_update(handle, "cancel", accept_within=timedelta(seconds=0.3))  # type: ignore[arg-type]


async def test_no_answer_at_all_says_the_try_may_still_take_effect():
    """The server holds an Update it admitted even when the caller gives up: no "nothing changed"."""

    class Silent(ScriptedHandle):
        async def start_update(self, name: str, **kwargs: Any) -> Any:
            await asyncio.sleep(10)

    with pytest.raises(order_client.NoAnswer) as raised:
        await order_client.send_update(Silent(), "cancel", accept_within=timedelta(seconds=0.2))  # type: ignore[arg-type]
    assert str(raised.value) == (
        "cancel for order-scripted: not accepted within 0.2 s; the last try got no answer: "
        "it may still take effect, the order's status will show it"
    )


async def test_a_start_cut_by_the_deadline_is_no_answer_not_a_crash():
    """The SDK turns the deadline's cancellation into WorkflowUpdateRPCTimeoutOrCancelledError."""
    from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError

    class CancelledInside(ScriptedHandle):
        async def start_update(self, name: str, **kwargs: Any) -> Any:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError as err:
                raise WorkflowUpdateRPCTimeoutOrCancelledError() from err

    with pytest.raises(order_client.NoAnswer, match="the last try got no answer: it may still take effect"):
        await order_client.send_update(CancelledInside(), "cancel", accept_within=timedelta(seconds=0.2))  # type: ignore[arg-type]


async def test_a_crowded_server_is_tried_again_then_said():
    crowded = rpc_error(
        RPCStatusCode.RESOURCE_EXHAUSTED, "limit on number of concurrent in-flight updates has been reached"
    )
    handle = ScriptedHandle(crowded, crowded, Outcome("address updated"))
    assert await order_client.send_update(handle, "update_address", "x") == "address updated"  # type: ignore[arg-type]
    assert len(handle.calls) == 3

    always = ScriptedHandle()
    always.answers_when_done = lambda: crowded  # type: ignore[method-assign]
    with pytest.raises(
        order_client.NoAnswer,
        match=r"Temporal turned it away \d+ times \(too many commands in flight for this order\); nothing was changed$",
    ):
        await order_client.send_update(always, "update_address", "x", accept_within=timedelta(seconds=0.5))  # type: ignore[arg-type]


async def test_an_aborted_update_is_sent_again_under_the_same_id():
    aborted = rpc_error(RPCStatusCode.UNAVAILABLE, "workflow update was aborted")
    handle = ScriptedHandle(aborted, Outcome("approved"))
    assert await order_client.send_update(handle, "approve") == "approved"  # type: ignore[arg-type]
    assert len({call["id"] for call in handle.calls}) == 1 and len(handle.calls) == 2


async def test_an_update_aborted_again_and_again_is_sent_less_and_less_often(monkeypatch):
    """A failing storm saw 3322 aborts in 10 s: a fixed 50 ms pause made each held Update 20 calls a
    second. The pauses double up to a second; the same id throughout."""
    aborted = rpc_error(RPCStatusCode.UNAVAILABLE, "workflow update was aborted")
    pauses: list[float] = []
    real_sleep = asyncio.sleep

    async def record(seconds: float) -> None:
        pauses.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(commands.asyncio, "sleep", record)
    handle = ScriptedHandle(*[aborted] * 7, Outcome("approved"))
    assert await order_client.send_update(handle, "approve") == "approved"  # type: ignore[arg-type]
    assert pauses == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert len({call["id"] for call in handle.calls}) == 1 and len(handle.calls) == 8


async def test_an_outcome_poll_aborted_is_polled_again():
    aborted = rpc_error(RPCStatusCode.UNAVAILABLE, "workflow update was aborted")

    class AbortedOnce(Outcome):
        polls = 0

        async def result(self) -> Any:
            self.polls += 1
            if self.polls == 1:
                raise aborted
            return await super().result()

    outcome = AbortedOnce("approved")
    assert await order_client.send_update(ScriptedHandle(outcome), "approve") == "approved"  # type: ignore[arg-type]
    assert outcome.polls == 2


async def test_other_errors_are_not_retried():
    closed = rpc_error(RPCStatusCode.NOT_FOUND, "workflow execution already completed")
    handle = ScriptedHandle(closed, "never reached")
    with pytest.raises(RPCError) as raised:
        await order_client.send_update(handle, "cancel")  # type: ignore[arg-type]
    assert raised.value is closed and len(handle.calls) == 1


async def test_each_command_is_its_own_update():
    handle = ScriptedHandle(Outcome("first"), Outcome("second"))
    await order_client.send_update(handle, "approve")  # type: ignore[arg-type]
    await order_client.send_update(handle, "approve")  # type: ignore[arg-type]
    assert handle.calls[0]["id"] != handle.calls[1]["id"]


async def test_an_update_the_server_says_no_worker_processed_is_sent_again():
    """Not the workflow's refusal: the task that carried it ended without handling it (a 409 said
    so in a MySQL storm). Nothing ran, so it is sent again, as a new Update."""
    unprocessed = WorkflowUpdateFailedError(
        ApplicationError(
            "Workflow Update is rejected because it wasn't processed by worker. Probably, Workflow Update "
            "is not supported by the worker."
        )
    )
    handle = ScriptedHandle(Outcome(unprocessed), Outcome("address updated"))
    assert await order_client.send_update(handle, "update_address", "x") == "address updated"  # type: ignore[arg-type]
    assert len({call["id"] for call in handle.calls}) == 2
