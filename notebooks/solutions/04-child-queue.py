from temporalio import workflow

from orderflow.lessons.playground import PackingWorkflow


@workflow.defn(sandboxed=False)
class MyParent:
    @workflow.run
    async def run(self, packing_queue: str) -> str:
        return await workflow.execute_child_workflow(
            PackingWorkflow.run,
            id=f"{workflow.info().workflow_id}-packing",
            task_queue=packing_queue,  # only the packing worker polls it
        )
