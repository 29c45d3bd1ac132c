# expect: nondeterminism:
from temporalio import workflow

from orderflow.lessons.playground import STEP, pack, ship
from orderflow.lessons.versioning import PATCH, DeliveryV1


@workflow.defn(name="ExerciseDelivery", sandboxed=False)
class DeliveryV3(DeliveryV1):
    @workflow.run
    async def run(self, order_id: str) -> str:
        await workflow.execute_activity(pack, order_id, start_to_close_timeout=STEP)
        workflow.deprecate_patch(PATCH)  # deprecated, and the insurance dropped with it
        await workflow.wait_condition(lambda: self.picked_up)
        return await workflow.execute_activity(ship, order_id, start_to_close_timeout=STEP)
