"""The FastAPI application: its state, its routers, its error handlers, and ``serve``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orderflow import metrics
from orderflow.admission import Admission
from orderflow.api.presses import Presses
from orderflow.api.review_watch import ReviewWatch
from orderflow.api.routes import error_response, health_router, orders_router
from orderflow.api.server import EmbeddedServer, serve_until_cancelled
from orderflow.config import Settings
from orderflow.db.repository import Repository


async def _invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
    detail = [{"loc": e.get("loc"), "msg": e.get("msg")} for e in err.errors()]
    return error_response(422, "invalid request", detail)


async def _http(_request: Request, err: StarletteHTTPException) -> JSONResponse:
    response = error_response(err.status_code, str(err.detail))
    response.headers.update(err.headers or {})  # e.g. Retry-After on a 429
    return response


async def _database(_request: Request, err: SQLAlchemyError) -> JSONResponse:
    return error_response(
        503, f"database unavailable ({type(err).__name__}); is it up and migrated (orderflow db upgrade)?"
    )


async def _unexpected(_request: Request, err: Exception) -> JSONResponse:
    return error_response(500, f"internal error ({type(err).__name__}); see the server log")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.repo = Repository.from_url(settings.db_url)
        app.state.client = None
        app.state.admission = Admission(settings)
        app.state.review_watch = ReviewWatch(app.state.repo.order_states)
        app.state.presses = Presses()
        yield
        app.state.repo.engine.dispose()

    app = FastAPI(
        title="orderflow",
        version="0.1.0",
        lifespan=lifespan,
        description="Start, approve, cancel and inspect orders running on Temporal.",
    )
    app.state.settings = settings
    metrics.instrument_api(app, lambda: getattr(app.state, "repo", None))  # GET /metrics
    app.include_router(orders_router)
    app.include_router(health_router)
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(SQLAlchemyError, _database)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
    return app


# How long a stopping API lets requests in flight finish; then uvicorn cancels them. Its
# default waits for every one, and a review long-poll or a command can take COMMAND_TIMEOUT:
# `orderflow dev` took 10-20 s to stop, refusing connections all along. Other requests take
# milliseconds, so a second loses none of them.
GRACEFUL_SHUTDOWN = 1  # seconds (uvicorn takes whole ones)


def _stopping_answers_503(app: ASGIApp) -> ASGIApp:
    """The app, except that a request uvicorn cancels at shutdown is answered 503 (retry).

    Without this its client gets a bare "500 Internal Server Error" and the log a traceback,
    for what is only the API stopping or restarting.
    """

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await app(scope, receive, send_noting_start)
        except asyncio.CancelledError:
            if scope["type"] != "http" or started:
                raise
            # The task ends here, answered: uvicorn cancelled it only to end it.
            body = b'{"error": "the API is stopping; retry in a moment"}'
            headers = [(b"content-type", b"application/json"), (b"retry-after", b"1")]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})

    return guarded


async def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    config = uvicorn.Config(
        _stopping_answers_503(create_app(settings)),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )
    await serve_until_cancelled(EmbeddedServer(config))
