# expect: insure belongs between pack and ship
from temporalio import workflow

from orderflow.lessons.playground import STEP, insure, pack, ship


@workflow.defn(name="ExerciseShipment", sandboxed=False)
class ShipmentV2:
    @workflow.run
    async def run(self, order_id: str) -> str:
        await workflow.execute_activity(pack, order_id, start_to_close_timeout=STEP)
        shipped = await workflow.execute_activity(ship, order_id, start_to_close_timeout=STEP)
        if workflow.patched("insure"):
            await workflow.execute_activity(insure, order_id, start_to_close_timeout=STEP)
        return shipped
