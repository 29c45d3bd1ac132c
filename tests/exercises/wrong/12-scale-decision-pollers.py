# expect: Pollers say workers are there, not that they keep up
from temporalio.api.workflowservice.v1 import DescribeTaskQueueResponse


def decide(answer: DescribeTaskQueueResponse) -> str:
    """'scale up' when tasks wait on the queue for a worker, 'ok' otherwise."""
    return "ok" if answer.pollers else "scale up"  # workers are there: all is well
