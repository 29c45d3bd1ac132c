"""Temporal's event history as a table: one row per event."""

from __future__ import annotations

from typing import Any

import pandas as pd


def _event_name(event) -> str:
    from temporalio.api.enums.v1 import EventType

    words = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_").split("_")
    return "".join(w.capitalize() for w in words)


def history_frame(history) -> pd.DataFrame:
    """One row per event of a ``WorkflowHistory`` (from ``handle.fetch_history()``): its type,
    the signal / update / activity / child it concerns, and seconds since the first event."""
    rows = []
    first = None
    update_names: dict[str, str] = {}  # update id -> name, from the accepted event, for the completed one
    for e in history.events:
        ts = e.event_time.ToDatetime()
        first = first or ts
        name: str = ""
        workflow_id: str = ""
        kind = e.WhichOneof("attributes")
        attrs: Any = getattr(e, kind) if kind else None  # a protobuf message of the kind just named
        if kind == "workflow_execution_signaled_event_attributes":
            name = attrs.signal_name
        elif kind == "workflow_execution_update_accepted_event_attributes":
            name = update_names[attrs.accepted_request.meta.update_id] = attrs.accepted_request.input.name
        elif kind == "workflow_execution_update_completed_event_attributes":
            name = update_names.get(attrs.meta.update_id, attrs.meta.update_id)
        elif kind == "activity_task_scheduled_event_attributes":
            name = attrs.activity_type.name
        elif kind == "marker_recorded_event_attributes":
            name = attrs.marker_name
        elif kind == "timer_started_event_attributes":
            name = f"{attrs.start_to_fire_timeout.ToTimedelta().total_seconds():g} s"
        elif kind == "start_child_workflow_execution_initiated_event_attributes":
            name, workflow_id = f"{attrs.workflow_type.name} on {attrs.task_queue.name}", attrs.workflow_id
        elif kind in (
            "child_workflow_execution_started_event_attributes",
            "child_workflow_execution_completed_event_attributes",
        ):
            name, workflow_id = attrs.workflow_type.name, attrs.workflow_execution.workflow_id
        elif kind == "workflow_properties_modified_event_attributes":  # upsert_memo: the keys it set
            name = ", ".join(sorted(attrs.upserted_memo.fields))
        elif kind == "signal_external_workflow_execution_initiated_event_attributes":
            name, workflow_id = attrs.signal_name, attrs.workflow_execution.workflow_id
        rows.append(
            {
                "event_id": e.event_id,
                "seconds": round((ts - first).total_seconds(), 3),
                "type": _event_name(e),
                "name": name,
                "workflow_id": workflow_id,
            }
        )
    return pd.DataFrame(rows).set_index("event_id")
