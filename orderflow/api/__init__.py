"""The HTTP tools around the core: the orders API (FastAPI) and the codec server for the Web UI.

- ``schemas``: request bodies and answers.
- ``answers``: start behind admission control, status without 5xx, errors mapped to HTTP codes.
- ``routes``: dependencies, the order endpoints and /healthz.
- ``app``: ``create_app`` (state, routers, error handlers) and ``serve``.
- ``server``: uvicorn inside our own event loop (shared with the codec server).
- ``codec_server``: decodes encrypted payloads for the Temporal Web UI and CLI.
"""

from __future__ import annotations

from fastapi import FastAPI

from orderflow.api.answers import admit_and_start, http_error, order_status
from orderflow.api.app import create_app, serve

__all__ = ["admit_and_start", "create_app", "http_error", "order_status", "serve"]


def __getattr__(name: str) -> FastAPI:
    """``uvicorn orderflow.api:app`` builds the app from the environment on first access."""
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)
