from temporalio.api.workflowservice.v1 import DescribeTaskQueueResponse


def decide(answer: DescribeTaskQueueResponse) -> str:
    """'scale up' when tasks wait on the queue for a worker, 'ok' otherwise."""
    waiting = max(answer.stats.approximate_backlog_count, answer.task_queue_status.backlog_count_hint)
    oldest = answer.stats.approximate_backlog_age.ToTimedelta().total_seconds()
    # Tasks pile up, or the oldest has waited a while: the workers do not keep up.
    return "scale up" if waiting > 0 or oldest > 1.0 else "ok"
