"""uvicorn inside our own event loop: the caller owns Ctrl-C (the API and the codec server)."""

from __future__ import annotations

import asyncio
import contextlib

import uvicorn


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the caller owns Ctrl-C."""

    def capture_signals(self):
        return contextlib.nullcontext()


async def serve_until_cancelled(server: uvicorn.Server) -> None:
    """Run ``server``; when the caller is cancelled, let it stop gracefully, then re-raise."""
    task = asyncio.ensure_future(server.serve())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        await task
        raise
