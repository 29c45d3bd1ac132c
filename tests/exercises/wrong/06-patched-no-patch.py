# expect: nondeterminism:
from temporalio import workflow

from orderflow.lessons.playground import STEP, insure, pack, ship


@workflow.defn(name="ExerciseShipment", sandboxed=False)
class ShipmentV2:
    @workflow.run
    async def run(self, order_id: str) -> str:
        await workflow.execute_activity(pack, order_id, start_to_close_timeout=STEP)
        await workflow.execute_activity(insure, order_id, start_to_close_timeout=STEP)  # for every run, old or new
        return await workflow.execute_activity(ship, order_id, start_to_close_timeout=STEP)
