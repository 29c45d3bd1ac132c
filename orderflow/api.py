"""The HTTP API (FastAPI): the assignment's endpoints, answered truthfully.

Commands go to the workflow as Workflow Updates whose validators check the
order's state inside the workflow, so a 202 means the workflow accepted the
command and a 409 carries the workflow's own reason; no query-then-signal race.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable
from dataclasses import asdict
from typing import Annotated, Any, TypeVar

import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import Client
from temporalio.service import RPCError

from orderflow import client as orders
from orderflow import metrics
from orderflow.config import Settings
from orderflow.db.repository import Repository
from orderflow.errors import InvalidOrder, OrderNotFound
from orderflow.models import Item

ID_REGEX = orders.ID_PATTERN.pattern
COMMAND_TIMEOUT = 10.0
T = TypeVar("T")


class ItemIn(BaseModel):
    sku: str = Field(min_length=1, max_length=64)
    qty: int = Field(default=1, ge=1, le=10_000)


class StartBody(BaseModel):
    items: list[ItemIn] | None = Field(default=None, max_length=100, description="default: one item, sku ABC")
    address: str = Field(default="", max_length=500)


class AddressBody(BaseModel):
    new_address: str = Field(min_length=1, max_length=500)


class CancelBody(BaseModel):
    reason: str = Field(default="", max_length=200)


class Started(BaseModel):
    order_id: str
    workflow_id: str
    run_id: str | None


class Accepted(BaseModel):
    order_id: str
    result: str


class OrderStatusOut(BaseModel):
    order_id: str
    temporal_status: str
    status: dict[str, Any]


class Health(BaseModel):
    temporal: bool
    database: bool


OrderId = Annotated[str, Path(pattern=ID_REGEX, description="1-64 letters, digits or _.:-")]


def _error(status: int, message: str, detail: Any = None) -> JSONResponse:
    body = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(status_code=status, content=jsonable_encoder(body))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.repo = Repository.from_url(settings.db_url)
        app.state.client = None
        yield
        app.state.repo.engine.dispose()

    app = FastAPI(
        title="orderflow",
        version="0.1.0",
        description="Start, approve, cancel and inspect orders running on Temporal.",
        lifespan=lifespan,
    )
    metrics.instrument_api(app, lambda: getattr(app.state, "repo", None))  # GET /metrics

    async def temporal(request: Request) -> Client:
        """The Temporal client, connected on first use (and again after a failed connect)."""
        if request.app.state.client is None:
            try:
                request.app.state.client = await asyncio.wait_for(orders.connect(settings), 5)
            except Exception as err:
                raise HTTPException(503, f"Temporal is unreachable at {settings.temporal_address}: {err}") from err
        return request.app.state.client

    def repo(request: Request) -> Repository:
        return request.app.state.repo

    def authorize(authorization: Annotated[str | None, Header()] = None) -> None:
        """With ORDERFLOW_API_TOKEN set, every order endpoint (commands and reads: they answer
        with addresses and payment ids) needs the bearer token; /healthz and /metrics do not."""
        if settings.api_token is None:
            return
        expected = f"Bearer {settings.api_token}"
        if authorization is None or not secrets.compare_digest(authorization, expected):
            raise HTTPException(401, "missing or wrong bearer token (ORDERFLOW_API_TOKEN is set)")

    async def command(call: Awaitable[T], order_id: str) -> T:
        try:
            return await asyncio.wait_for(call, COMMAND_TIMEOUT)
        except OrderNotFound as err:
            raise HTTPException(404, str(err)) from err
        except orders.Rejected as err:
            raise HTTPException(409, f"order {order_id}: {err}") from err
        except asyncio.TimeoutError as err:
            raise HTTPException(504, "the order's workers did not answer in time; is a worker running?") from err
        except RPCError as err:
            raise HTTPException(503, f"Temporal error: {err.message}") from err

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        detail = [{"loc": e.get("loc"), "msg": e.get("msg")} for e in err.errors()]
        return _error(422, "invalid request", detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail))

    @app.exception_handler(SQLAlchemyError)
    async def _database(_request: Request, err: SQLAlchemyError) -> JSONResponse:
        return _error(503, f"database unavailable ({type(err).__name__}); is it up and migrated (orderflow db upgrade)?")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, err: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(err).__name__}); see the server log")

    @app.post("/orders/{order_id}/start", status_code=201, response_model=Started,
              dependencies=[Depends(authorize)], responses={409: {}, 422: {}})
    async def start(
        order_id: OrderId,
        payment_id: Annotated[str, Query(pattern=ID_REGEX)],
        body: StartBody | None = None,
        client: Client = Depends(temporal),
    ) -> Started:
        body = body or StartBody()
        items = [Item(sku=i.sku, qty=i.qty) for i in body.items] if body.items is not None else None
        req = orders.new_order(order_id, payment_id, items=items, address=body.address)
        try:
            handle = await orders.start_order(client, req, settings)
        except orders.OrderExists as err:
            raise HTTPException(409, str(err)) from err
        except InvalidOrder as err:
            raise HTTPException(422, str(err)) from err
        metrics.ORDERS_STARTED.inc()
        return Started(order_id=order_id, workflow_id=handle.id, run_id=handle.result_run_id)

    @app.post("/orders/{order_id}/signals/approve", status_code=202, response_model=Accepted,
              dependencies=[Depends(authorize)], responses={404: {}, 409: {}})
    async def approve(order_id: OrderId, client: Client = Depends(temporal)) -> Accepted:
        return Accepted(order_id=order_id, result=await command(orders.approve(client, order_id), order_id))

    @app.post("/orders/{order_id}/signals/cancel", status_code=202, response_model=Accepted,
              dependencies=[Depends(authorize)], responses={404: {}, 409: {}})
    async def cancel(order_id: OrderId, body: CancelBody | None = None, client: Client = Depends(temporal)) -> Accepted:
        reason = body.reason if body else ""
        return Accepted(order_id=order_id, result=await command(orders.cancel(client, order_id, reason), order_id))

    @app.post("/orders/{order_id}/signals/update-address", status_code=202, response_model=Accepted,
              dependencies=[Depends(authorize)], responses={404: {}, 409: {}})
    async def update_address(order_id: OrderId, body: AddressBody, client: Client = Depends(temporal)) -> Accepted:
        result = await command(orders.update_address(client, order_id, body.new_address), order_id)
        return Accepted(order_id=order_id, result=result)

    @app.get("/orders/{order_id}/status", response_model=OrderStatusOut, dependencies=[Depends(authorize)],
             responses={404: {}})
    async def status(order_id: OrderId, client: Client = Depends(temporal)) -> OrderStatusOut:
        execution = await command(orders.describe(client, order_id), order_id)
        current = await command(orders.status(client, order_id), order_id)
        return OrderStatusOut(order_id=order_id, temporal_status=execution.name, status=asdict(current))

    @app.get("/orders/{order_id}/state", dependencies=[Depends(authorize)], responses={404: {}})
    async def state(order_id: OrderId, db: Repository = Depends(repo),
                    events: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        try:
            view = await asyncio.to_thread(db.order_view, order_id, events)
        except OrderNotFound as err:
            raise HTTPException(404, f"order {order_id} has no persisted record (yet)") from err
        return jsonable_encoder(view)

    @app.get("/orders", dependencies=[Depends(authorize)])
    async def list_orders(
        db: Repository = Depends(repo),
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> dict[str, Any]:
        rows = await asyncio.to_thread(db.list_orders, limit, offset)
        return jsonable_encoder({"limit": limit, "offset": offset, "orders": rows})

    @app.get("/healthz", response_model=Health)
    async def healthz(request: Request, db: Repository = Depends(repo)) -> JSONResponse:
        try:
            await temporal(request)
            temporal_ok = True
        except HTTPException:
            temporal_ok = False
        database_ok = await asyncio.to_thread(db.ping)
        code = 200 if temporal_ok and database_ok else 503
        return JSONResponse(status_code=code, content={"temporal": temporal_ok, "database": database_ok})

    return app


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the caller owns Ctrl-C."""

    def capture_signals(self):
        return contextlib.nullcontext()


async def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    server = _EmbeddedServer(uvicorn.Config(create_app(settings), host=host, port=port, log_config=None,
                                            access_log=False))
    task = asyncio.ensure_future(server.serve())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        await task
        raise


def __getattr__(name: str) -> FastAPI:
    """``uvicorn orderflow.api:app`` builds the app from the environment on first access."""
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)
