"""Structured logs: one JSON object a line, with order id, workflow id, step and attempt."""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from datetime import datetime, timezone

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def json_record(level: str, logger: str, msg: str, created: float | None = None) -> dict:
    """The fields every JSON log line starts with (``JsonFormatter``; ``orderflow dev``'s own lines)."""
    when = datetime.fromtimestamp(time.time() if created is None else created, timezone.utc)
    return {"ts": when.isoformat(timespec="milliseconds"), "level": level, "logger": logger, "msg": msg}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = json_record(record.levelname, record.name, record.getMessage(), record.created)
        for key, value in record.__dict__.items():
            if key in _STANDARD:
                continue
            if key == "orderflow":  # our own fields go to the top level
                out.update({k: v for k, v in value.items() if v is not None})
            elif key == "temporal_workflow":
                out["workflow_id"] = value.get("workflow_id")
                out["run_id"] = value.get("run_id")
                out["workflow_type"] = value.get("workflow_type")
            elif key == "temporal_activity":
                out["workflow_id"] = value.get("workflow_id")
                out["activity_type"] = value.get("activity_type")
                out["activity_attempt"] = value.get("attempt")
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def quiet_known_sdk_warnings() -> None:
    """Silence the SDK's "Cannot find activity to cancel" warning: the core asked to cancel a
    local activity that had already finished (a worker cut off from its server, an evicted
    workflow). Nothing is lost; the raw warning text only looked like a failure."""
    warnings.filterwarnings("ignore", message="Cannot find activity to cancel for token", category=UserWarning)


def configure_logging(level: str = "INFO", stream=None) -> None:
    """Send every log line to ``stream`` (stderr) as JSON; idempotent."""
    from temporalio import activity, workflow

    # The workflow/activity ids travel as JSON fields, not appended to the message text.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    quiet_known_sdk_warnings()
    for noisy in ("httpx", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The SDK logs every failed attempt with a traceback; the workflows log each one as a
    # structured attempt_failed / attempt_timed_out event instead.
    logging.getLogger("temporalio.activity").setLevel(logging.ERROR)
