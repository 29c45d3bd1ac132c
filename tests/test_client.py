"""Focused unit tests of orderflow.client's retry of Updates the server dropped as "workflow not ready".

The server answers so when the workflow task carrying a not-yet-accepted Update fails, which a
signal arriving while the order's last task runs causes without any fault (seen once in CI in
test_cancel_after_dispatch_is_rejected). These tests script the server's answers with a stand-in
handle: the race itself cannot be scheduled on purpose against a real server.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.any_pb2 import Any as AnyDetail
from temporalio.api.common.v1 import GrpcStatus
from temporalio.api.errordetails.v1 import WorkflowNotReadyFailure
from temporalio.service import RPCError, RPCStatusCode

from orderflow import client as order_client


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


class ScriptedHandle:
    """Answers start_update from a script: an exception to raise, or a value to return."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    async def start_update(self, name: str, **kwargs: Any) -> Any:
        self.calls.append({"name": name, **kwargs})
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def test_only_the_not_ready_answer_is_recognised():
    assert order_client.workflow_not_ready(NOT_READY)
    other_precondition = rpc_error(RPCStatusCode.FAILED_PRECONDITION, "something else")
    assert not order_client.workflow_not_ready(other_precondition)
    assert not order_client.workflow_not_ready(rpc_error(RPCStatusCode.UNAVAILABLE, "down", WorkflowNotReadyFailure()))


async def test_a_dropped_update_is_sent_again_under_the_same_id():
    handle = ScriptedHandle(NOT_READY, NOT_READY, "accepted")
    answer = await order_client.start_update(handle, "cancel", "changed my mind")  # type: ignore[arg-type]
    assert answer == "accepted"
    assert len(handle.calls) == 3
    assert len({call["id"] for call in handle.calls}) == 1  # one Update, deduplicated by the server
    assert all(call["args"] == ["changed my mind"] for call in handle.calls)


async def test_other_errors_are_not_retried():
    closed = rpc_error(RPCStatusCode.NOT_FOUND, "workflow execution already completed")
    handle = ScriptedHandle(closed, "never reached")
    with pytest.raises(RPCError) as raised:
        await order_client.start_update(handle, "cancel")  # type: ignore[arg-type]
    assert raised.value is closed and len(handle.calls) == 1


async def test_each_command_is_its_own_update():
    handle = ScriptedHandle("first", "second")
    await order_client.start_update(handle, "approve")  # type: ignore[arg-type]
    await order_client.start_update(handle, "approve")  # type: ignore[arg-type]
    assert handle.calls[0]["id"] != handle.calls[1]["id"]
