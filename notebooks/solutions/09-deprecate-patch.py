from temporalio import workflow

from orderflow.lessons.playground import STEP, insure, pack, ship
from orderflow.lessons.versioning import PATCH, DeliveryV1


@workflow.defn(name="ExerciseDelivery", sandboxed=False)
class DeliveryV3(DeliveryV1):
    """Every delivery is insured; the patch is deprecated."""

    @workflow.run
    async def run(self, order_id: str) -> str:
        await workflow.execute_activity(pack, order_id, start_to_close_timeout=STEP)
        workflow.deprecate_patch(PATCH)  # histories with the marker still replay; no run takes the old path
        await workflow.execute_activity(insure, order_id, start_to_close_timeout=STEP)
        await workflow.wait_condition(lambda: self.picked_up)
        return await workflow.execute_activity(ship, order_id, start_to_close_timeout=STEP)
