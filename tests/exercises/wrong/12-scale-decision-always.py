# expect: the idle queue had
from temporalio.api.workflowservice.v1 import DescribeTaskQueueResponse


def decide(answer: DescribeTaskQueueResponse) -> str:
    """'scale up' when tasks wait on the queue for a worker, 'ok' otherwise."""
    return "scale up"  # more is always better
