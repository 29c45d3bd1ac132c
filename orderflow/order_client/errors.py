"""The errors a caller of this package sees, and how a Temporal error about an order becomes one.

The API maps them to HTTP answers: Rejected/CommandFailed 409, TemporalUnavailable 503, NoAnswer 504.
"""

from __future__ import annotations

from temporalio.api.errordetails.v1 import WorkflowNotReadyFailure
from temporalio.client import RPCTimeoutOrCancelledError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError, TemporalError
from temporalio.service import RPCError, RPCStatusCode

from orderflow.errors import OrderflowError


class OrderExists(OrderflowError):
    """An order with this id was already started (it may have ended)."""


class Rejected(OrderflowError):
    """The order's current state does not allow this command."""


class CommandFailed(Rejected):
    """The workflow refused the command with an error of its own (not a validator's "Rejected")."""


class TemporalUnavailable(OrderflowError):
    """Temporal could not be reached, or refused the call for a reason of its own: retry later."""


class NoAnswer(OrderflowError):
    """Temporal or the order's workers did not answer in time (the outcome may be unknown)."""


class StatusUnavailable(OrderflowError):
    """A running order's workflow could not answer its status query (no worker, a failing replay).

    ``stuck``: its workflow task fails on every attempt, so the order cannot move (the reason
    says why); else ``timed_out`` tells a missing worker from another failure."""

    def __init__(self, message: str, timed_out: bool, stuck: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out
        self.stuck = stuck


class Stuck(OrderflowError):
    """The order's workflow task fails on every attempt: no command can reach it until one succeeds."""


def temporal_error(err: TemporalError, what: str) -> OrderflowError:
    """Map an error from a Temporal call about an order to one of ours (the API's 409/503/504).

    Never returns OrderNotFound: a NOT_FOUND needs a describe() to tell "unknown order" from
    "closed workflow" (see ``_update``).
    """
    if isinstance(err, WorkflowUpdateFailedError):
        cause = err.cause
        if isinstance(cause, ApplicationError):  # the workflow's own refusal, with its message
            return Rejected(cause.message) if cause.type == "Rejected" else CommandFailed(cause.message)
        return TemporalUnavailable(f"{what}: the workflow could not complete it ({cause or err})")
    if isinstance(err, RPCTimeoutOrCancelledError):  # incl. WorkflowUpdateRPCTimeoutOrCancelledError
        return NoAnswer(
            f"{what}: no answer from Temporal in the time allowed; it may still take effect (see the order's status)"
        )
    if isinstance(err, RPCError):
        if err.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
            return NoAnswer(f"{what}: no answer in time ({err.message}); is a worker running?")
        return TemporalUnavailable(f"{what}: Temporal error {err.status.name if err.status else ''}: {err.message}")
    return TemporalUnavailable(f"{what}: {type(err).__name__}: {err}")


def workflow_not_ready(err: BaseException) -> bool:
    """The server dropped an Update that was not yet accepted because the workflow task it rode on failed.

    Happens without any fault: a signal or Update that arrives while the task that ends the
    order runs makes the server refuse that task (UnhandledCommand), and since server 1.27 it
    then aborts the Updates it carried with FAILED_PRECONDITION + WorkflowNotReadyFailure
    (temporalio/temporal#7296; seen in CI: a cancel sent while marking shipped retried). Nothing
    ran, so sending the same Update again is safe.
    """
    return (
        isinstance(err, RPCError)
        and err.status == RPCStatusCode.FAILED_PRECONDITION
        and any(detail.Is(WorkflowNotReadyFailure.DESCRIPTOR) for detail in err.grpc_status.details)
    )


def busy(err: BaseException) -> bool:
    """The workflow refused the Update only because a step was running: send it again."""
    return (
        isinstance(err, WorkflowUpdateFailedError)
        and isinstance(err.cause, ApplicationError)
        and err.cause.type == "Busy"
    )
