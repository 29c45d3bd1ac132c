# expect: where no worker runs PackingWorkflow
from temporalio import workflow

from orderflow.lessons.playground import PackingWorkflow


@workflow.defn(sandboxed=False)
class MyParent:
    @workflow.run
    async def run(self, packing_queue: str) -> str:
        # no task_queue: the child goes to the parent's queue, where nobody runs PackingWorkflow
        return await workflow.execute_child_workflow(PackingWorkflow.run, id=f"{workflow.info().workflow_id}-packing")
