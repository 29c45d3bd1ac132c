"""A non-deterministic change, for the replay lesson (notebook 06)."""

from __future__ import annotations

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
