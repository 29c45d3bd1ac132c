"""A non-deterministic change, for the replay lesson (notebook 06)."""

from __future__ import annotations

import re

from temporalio import workflow

from orderflow.activities import OrderActivities
from orderflow.models import ORDER_WORKFLOW, OrderRequest, OrderResult, OrderState
from orderflow.workflows import OrderWorkflow


@workflow.defn(name=ORDER_WORKFLOW, sandboxed=False)
class ReorderedOrderWorkflow(OrderWorkflow):
    """OrderWorkflow with one edit that breaks running orders: it validates before it receives.
    Same workflow type name, so a replay of a real history runs it. (Only notebook 06 uses it,
    in a Replayer; no worker registers it.)"""

    @workflow.run
    async def run(self, req: OrderRequest) -> OrderResult:  # the SDK wants @workflow.run on the class
        return await super().run(req)

    async def _lifecycle(self) -> None:
        await self._step("validate", OrderActivities.validate_order, OrderState.VALIDATED)
        await super()._lifecycle()


def replay_failure_sentence(failure: BaseException | None) -> str:
    """The sentence that matters in a replay failure, e.g. "Nondeterminism error: Activity type of
    recorded marker 'ReceiveOrder' does not match ... 'ValidateOrder'". The SDK's text wraps it in
    a debug dump of the core's failure; the first quoted message is the sentence."""
    if failure is None:
        return "no replay failure"
    text = str(failure)
    found = re.search(r'message: "((?:[^"\\]|\\.)*)"', text)
    sentence = found.group(1).replace("\\'", "'").replace('\\"', '"') if found else text
    sentence = re.sub(r"^\[TMPRL\d+\]\s*", "", sentence)
    return f"{type(failure).__name__}: {sentence}"
