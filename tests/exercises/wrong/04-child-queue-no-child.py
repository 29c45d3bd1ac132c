# expect: started no child workflow
from temporalio import workflow


@workflow.defn(sandboxed=False)
class MyParent:
    @workflow.run
    async def run(self, packing_queue: str) -> str:
        return f"packed by the worker of task queue {packing_queue}"  # says so, but nothing ran there
