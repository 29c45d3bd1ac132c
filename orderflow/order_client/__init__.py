"""Start and drive orders from any Python code: the API, notebooks, the benchmark, tests.

``from orderflow import order_client`` and then ``order_client.start_order(...)``: the package
is split by job, and every name a caller uses is re-exported here.

- ``runtime``: the SDK runtime, the data converter (with the encryption codec) and ``connect``.
- ``errors``: the errors callers see, and how a Temporal error becomes one of them.
- ``queries``: an order's handle, its execution status, its ``status()`` query, stuck or not.
- ``commands``: start an order, and the Updates (approve, wait_for_review, cancel, address).
- ``batch``: ``place_orders``, the one place a batch of orders is driven in-process.
"""

from orderflow.order_client.batch import PlacedOrder, place_orders
from orderflow.order_client.commands import (
    ACCEPT_TIMEOUT,
    BUSY_PAUSES,
    ID_PATTERN,
    NOT_READY_PAUSE,
    WORKFLOW_TASK_TIMEOUT,
    approve,
    approve_when_ready,
    cancel,
    check_order,
    new_order,
    result,
    send_update,
    start_order,
    start_order_for_review,
    update_address,
    wait_for_review,
)
from orderflow.order_client.errors import (
    CommandFailed,
    NoAnswer,
    OrderExists,
    Rejected,
    StatusUnavailable,
    Stuck,
    TemporalUnavailable,
    busy,
    temporal_error,
    workflow_not_ready,
)
from orderflow.order_client.queries import (
    STATUS_QUERY_TIMEOUT,
    StatusAnswer,
    describe,
    order_handle,
    order_status,
    order_workflow_id,
    published_status,
    status,
    stuck_reason,
)
from orderflow.order_client.runtime import (
    DATA_CONVERTER,
    EncodedQuietFailureConverter,
    connect,
    data_converter,
    runtime,
)

__all__ = [
    "ACCEPT_TIMEOUT",
    "BUSY_PAUSES",
    "DATA_CONVERTER",
    "ID_PATTERN",
    "NOT_READY_PAUSE",
    "STATUS_QUERY_TIMEOUT",
    "WORKFLOW_TASK_TIMEOUT",
    "CommandFailed",
    "EncodedQuietFailureConverter",
    "NoAnswer",
    "OrderExists",
    "PlacedOrder",
    "Rejected",
    "StatusAnswer",
    "StatusUnavailable",
    "Stuck",
    "TemporalUnavailable",
    "approve",
    "approve_when_ready",
    "busy",
    "cancel",
    "check_order",
    "connect",
    "data_converter",
    "describe",
    "new_order",
    "order_handle",
    "order_status",
    "published_status",
    "order_workflow_id",
    "place_orders",
    "result",
    "runtime",
    "send_update",
    "start_order",
    "start_order_for_review",
    "status",
    "stuck_reason",
    "temporal_error",
    "update_address",
    "wait_for_review",
    "workflow_not_ready",
]
