"""The log filter of a kernel: the SDK's warnings for the faults we inject are counted, not printed."""

from __future__ import annotations

import asyncio
import html
import logging
from collections import Counter
from contextlib import contextmanager

from temporalio.exceptions import ApplicationError, CancelledError

from orderflow.errors import OrderflowError


class FaultCounter(logging.Filter):
    """Counts the SDK's "Completing activity as failed" warnings for the faults we inject.

    The SDK logs every failed activity attempt at WARNING with its traceback. In a kernel no
    logging is configured, so Python prints each one in red under the running cell: hundreds
    per batch, which read as failures and slow the browser down. Expected faults are counted
    here instead:

    - "failed": the injected ``RuntimeError("Forced failure for testing")`` (our activities
      pass it on as a retryable ``ApplicationError`` with the same message);
    - "timed out": an attempt cut short by its start-to-close timeout (``CancelledError``);
    - "refused": a step's final, non-retryable failure (a business rule such as the carrier's
      PO-box refusal, or its attempts used up), which the workflow handles.

    Every other record passes through and stays visible: a database error, a bug, a failure
    outside an activity.
    """

    INJECTED = "Forced failure for testing"

    def __init__(self) -> None:
        super().__init__("orderflow-expected-faults")
        self.counts: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()

    @classmethod
    def kind(cls, err: BaseException | None) -> str | None:
        if isinstance(err, (asyncio.CancelledError, CancelledError)):
            return "timed out"
        if isinstance(err, RuntimeError) and str(err) == cls.INJECTED:
            return "failed"
        if isinstance(err, ApplicationError):
            if err.message == cls.INJECTED and not err.non_retryable:
                return "failed"
            business = isinstance(err.__cause__, (OrderflowError, ValueError)) or err.type == "StepFailed"
            if err.non_retryable and business:
                return "refused"
        return None

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or not record.getMessage().startswith("Completing activity as failed"):
            return True
        err = record.exc_info[1]
        kind = self.kind(err)
        if kind is None:
            return True  # a real error: printed as usual
        self.counts[kind] += 1
        if kind == "refused":
            self.refusals[str(err)] += 1
        return False

    @contextmanager
    def expecting(self, what: str):
        """Within the block, what the SDK's worker loggers report is the lesson (a replay that
        must fail): counted under ``what``, not printed. Any other time they print as usual."""

        def hold(record: logging.LogRecord) -> bool:
            self.counts[what] += 1
            return False

        loggers = [
            logging.getLogger(name)
            for name in list(logging.Logger.manager.loggerDict)
            if name.startswith("temporalio.worker")
        ] + [logging.getLogger("temporalio.worker")]
        for each in loggers:
            each.addFilter(hold)
        try:
            yield self
        finally:
            for each in loggers:
                each.removeFilter(hold)

    def summary(self) -> str:
        c = self.counts
        line = (
            f"expected faults in this kernel's workers so far: {c['failed']} attempts failed (flaky_call), "
            f"{c['timed out']} cut short by their timeout, {c['refused']} steps failed for good (a business rule, or attempts used up)"
        )
        if self.refusals:
            line += " (" + "; ".join(f"{n}x {text}" for text, n in self.refusals.most_common(3)) + ")"
        lessons = {k: n for k, n in c.items() if k not in ("failed", "timed out", "refused")}
        if lessons:
            line += "; expected by a lesson: " + ", ".join(f"{n} log lines from {k}" for k, n in lessons.items())
        return line + ". Counted, not printed; any other error is printed as usual."

    def _repr_html_(self) -> str:
        return f"<span style='color:#555'>{html.escape(self.summary())}</span>"

    def __repr__(self) -> str:
        return self.summary()


FAULTS = FaultCounter()


def _install_fault_counter() -> None:
    target = logging.getLogger("temporalio.activity")
    if FAULTS not in target.filters:
        target.addFilter(FAULTS)


FAULTS = FaultCounter()


def install_fault_counter() -> None:
    target = logging.getLogger("temporalio.activity")
    if FAULTS not in target.filters:
        target.addFilter(FAULTS)
