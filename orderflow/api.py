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
from datetime import timedelta
from typing import Annotated, Any, TypeVar

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import TemporalError

from orderflow import client as order_client
from orderflow import metrics
from orderflow.admission import Admission, Overloaded
from orderflow.config import Settings
from orderflow.db.repository import Repository
from orderflow.errors import InvalidOrder, OrderNotFound
from orderflow.models import Item, OrderState

ID_REGEX = order_client.ID_PATTERN.pattern
COMMAND_TIMEOUT = 25.0  # accepted within 10 s (client.ACCEPT_TIMEOUT), then the outcome, inside the order's budget
# Longer than the SDK's own retries of an unreachable server (about 10 s, measured), so a
# start against a Temporal that is down ends as an unambiguous "not started" 503.
START_TIMEOUT = 12.0
T = TypeVar("T")


class ItemIn(BaseModel):
    sku: str = Field(min_length=1, max_length=64)
    qty: int = Field(default=1, ge=1, le=10_000)


class StartBody(BaseModel):
    items: list[ItemIn] | None = Field(
        default=None, min_length=1, max_length=100, description="default: one item, sku ABC; an empty list is a 422"
    )
    address: str = Field(default="", max_length=500)


class AddressBody(BaseModel):
    new_address: str = Field(min_length=1, max_length=500)


class CancelBody(BaseModel):
    reason: str = Field(default="", max_length=200)


class Started(BaseModel):
    order_id: str
    workflow_id: str
    run_id: str | None


class Review(BaseModel):
    order_id: str
    state: str
    awaiting_review: bool


class Accepted(BaseModel):
    order_id: str
    result: str


class OrderStatusOut(BaseModel):
    order_id: str
    temporal_status: str
    status: dict[str, Any]
    source: str = Field(
        description='"query": the running workflow answered; "result": what the ended order '
        'recorded; "database": the last state the order persisted (its workflow '
        "could not answer, see note)"
    )
    note: str | None = None


class Health(BaseModel):
    temporal: bool
    database: bool


OrderId = Annotated[str, Path(pattern=ID_REGEX, description="1-64 letters, digits or _.:-")]


def _error(status: int, message: str, detail: Any = None) -> JSONResponse:
    body = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(status_code=status, content=jsonable_encoder(body))


# -- dependencies: what each route needs, from the app's state -----------------------------------


def app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def temporal(request: Request) -> Client:
    """The Temporal client, connected on first use (and again after a failed connect)."""
    state = request.app.state
    if state.client is None:
        try:
            state.client = await asyncio.wait_for(order_client.connect(state.settings), 5)
        except Exception as err:
            raise HTTPException(503, f"Temporal is unreachable at {state.settings.temporal_address}: {err}") from err
    return state.client


def repo(request: Request) -> Repository:
    return request.app.state.repo


def authorize(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """With ORDERFLOW_API_TOKEN set, every order endpoint (commands and reads: they answer
    with addresses and payment ids) needs the bearer token; /healthz and /metrics do not."""
    token = request.app.state.settings.api_token
    if token is None:
        return
    if authorization is None or not secrets.compare_digest(authorization, f"Bearer {token}"):
        raise HTTPException(401, "missing or wrong bearer token (ORDERFLOW_API_TOKEN is set)")


async def command(call: Awaitable[T], order_id: str) -> T:
    try:
        return await asyncio.wait_for(call, COMMAND_TIMEOUT)
    except Exception as err:
        raise http_error(err, order_id) from err


TemporalClient = Annotated[Client, Depends(temporal)]
Database = Annotated[Repository, Depends(repo)]

# -- the order routes ------------------------------------------------------------------------------
orders_router = APIRouter(prefix="/orders", dependencies=[Depends(authorize)])


@orders_router.post(
    "/{order_id}/start", status_code=201, response_model=Started, responses={409: {}, 422: {}, 429: {}, 503: {}}
)
async def start(
    request: Request,
    order_id: OrderId,
    payment_id: Annotated[str, Query(pattern=ID_REGEX)],
    client: TemporalClient,
    db: Database,
    body: StartBody | None = None,
) -> Started:
    body = body or StartBody()
    items = [Item(sku=i.sku, qty=i.qty) for i in body.items] if body.items is not None else None
    req = order_client.new_order(order_id, payment_id, items=items, address=body.address)
    handle = await admit_and_start(client, db, request.app.state.admission, req, request.app.state.settings)
    metrics.ORDERS_STARTED.inc()
    return Started(order_id=order_id, workflow_id=handle.id, run_id=handle.result_run_id)


@orders_router.post(
    "/{order_id}/signals/approve", status_code=202, response_model=Accepted, responses={404: {}, 409: {}}
)
async def approve(order_id: OrderId, client: TemporalClient) -> Accepted:
    return Accepted(order_id=order_id, result=await command(order_client.approve(client, order_id), order_id))


@orders_router.get("/{order_id}/review", response_model=Review, responses={404: {}, 409: {}, 504: {}})
async def review(order_id: OrderId, client: TemporalClient, db: Database) -> Review:
    """A reviewer's long poll: answers once the order awaits review (approve it now) or has
    moved past it (approved, cancelled, ended), within the order's budget."""
    state = await reviewed_state(client, db, order_id)
    return Review(order_id=order_id, state=state.value, awaiting_review=state == OrderState.AWAITING_REVIEW)


BEFORE_REVIEW = {OrderState.STARTED.value, OrderState.RECEIVED.value, OrderState.VALIDATED.value}
REVIEW_POLL_SECONDS = 0.05


async def reviewed_state(client: Client, db: Repository, order_id: str) -> OrderState:
    """The order's state once it is past validation, read from the database: the validate step
    persists ``awaiting_review`` with its success. Polling the database costs no workflow task;
    an Update sent while a step runs is refused Busy and sent again, a workflow task on the
    server and the worker each time (docs/performance.md#the-reviewers-long-poll)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + COMMAND_TIMEOUT
    polls = 0
    while True:
        try:
            row = await asyncio.to_thread(db.get_order, order_id)
        except OrderNotFound:
            row = None  # the receive step writes the row; an order can be a moment older than it
        except SQLAlchemyError as err:
            raise HTTPException(503, f"order {order_id}: the app database is unreachable") from err
        if row is not None and row["state"] not in BEFORE_REVIEW:
            return OrderState(row["state"])
        if polls % 20 == 0:  # at first, then once a second: is there such an order, still running?
            running = await command(order_client.describe(client, order_id), order_id)  # 404 if never started
            if running != WorkflowExecutionStatus.RUNNING:
                raise HTTPException(409, f"order {order_id}: it has ended without reaching review")
        if loop.time() > deadline:
            raise HTTPException(504, f"order {order_id}: not past validation within {COMMAND_TIMEOUT:g} s")
        polls += 1
        await asyncio.sleep(REVIEW_POLL_SECONDS)


@orders_router.post(
    "/{order_id}/signals/cancel", status_code=202, response_model=Accepted, responses={404: {}, 409: {}}
)
async def cancel(order_id: OrderId, client: TemporalClient, body: CancelBody | None = None) -> Accepted:
    """Answers once the outcome is known: cancelled (and refunded), or 409 if the parcel left first."""
    reason = body.reason if body else ""
    return Accepted(order_id=order_id, result=await command(order_client.cancel(client, order_id, reason), order_id))


@orders_router.post(
    "/{order_id}/signals/update-address", status_code=202, response_model=Accepted, responses={404: {}, 409: {}}
)
async def update_address(order_id: OrderId, body: AddressBody, client: TemporalClient) -> Accepted:
    """Before shipping: adopted at once. During shipping: answers once the parcel was dispatched to
    the new address, or 409 if it went to the old one first."""
    result = await command(order_client.update_address(client, order_id, body.new_address), order_id)
    return Accepted(order_id=order_id, result=result)


@orders_router.get("/{order_id}/status", response_model=OrderStatusOut, responses={404: {}, 503: {}, 504: {}})
async def status(order_id: OrderId, client: TemporalClient, db: Database) -> OrderStatusOut:
    return await order_status(client, db, order_id)


@orders_router.get("/{order_id}/state", responses={404: {}})
async def state(order_id: OrderId, db: Database, events: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    try:
        view = await asyncio.to_thread(db.order_view, order_id, events)
    except OrderNotFound as err:
        raise HTTPException(404, f"order {order_id} has no persisted record (yet)") from err
    return jsonable_encoder(view)


@orders_router.get("")
async def list_orders(
    db: Database, limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0
) -> dict[str, Any]:
    rows = await asyncio.to_thread(db.list_orders, limit, offset)
    return jsonable_encoder({"limit": limit, "offset": offset, "orders": rows})


# -- health, and the app ---------------------------------------------------------------------------
health_router = APIRouter()


@health_router.get("/healthz", response_model=Health)
async def healthz(request: Request, db: Database) -> JSONResponse:
    try:
        temporal_ok = await temporal_reachable(await temporal(request))
    except HTTPException:
        temporal_ok = False
    database_ok = await asyncio.to_thread(db.ping)
    code = 200 if temporal_ok and database_ok else 503
    return JSONResponse(status_code=code, content={"temporal": temporal_ok, "database": database_ok})


async def _invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
    detail = [{"loc": e.get("loc"), "msg": e.get("msg")} for e in err.errors()]
    return _error(422, "invalid request", detail)


async def _http(_request: Request, err: StarletteHTTPException) -> JSONResponse:
    response = _error(err.status_code, str(err.detail))
    response.headers.update(err.headers or {})  # e.g. Retry-After on a 429
    return response


async def _database(_request: Request, err: SQLAlchemyError) -> JSONResponse:
    return _error(503, f"database unavailable ({type(err).__name__}); is it up and migrated (orderflow db upgrade)?")


async def _unexpected(_request: Request, err: Exception) -> JSONResponse:
    return _error(500, f"internal error ({type(err).__name__}); see the server log")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.repo = Repository.from_url(settings.db_url)
        app.state.client = None
        app.state.admission = Admission(settings)
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


# -- answers to the user path: start with admission, status without 5xx, error mapping ------


def http_error(err: Exception, order_id: str) -> HTTPException:
    """The HTTP answer for an error from a command on an order: 404/409/503/504, never a 500."""
    if isinstance(err, HTTPException):
        return err
    if isinstance(err, OrderNotFound):
        return HTTPException(404, str(err))
    if isinstance(err, order_client.Rejected):  # incl. CommandFailed: the workflow's own message
        return HTTPException(409, f"order {order_id}: {err}")
    if isinstance(err, order_client.Stuck):
        return HTTPException(503, f"order {order_id}: {err}")
    if isinstance(err, (order_client.NoAnswer, asyncio.TimeoutError)):
        return HTTPException(504, str(err) or "the order's workers did not answer in time; is a worker running?")
    if isinstance(err, order_client.TemporalUnavailable):
        return HTTPException(503, str(err))
    if isinstance(err, TemporalError):  # anything else from the SDK (incl. a raw RPCError)
        return HTTPException(503, str(order_client.temporal_error(err, f"order {order_id}")))
    raise err  # not a Temporal or order error: a bug, let the 500 handler log it


async def temporal_reachable(client: Client) -> bool:
    """One health-check RPC, not retried: a connected client says nothing about the server now."""
    try:
        return await asyncio.wait_for(client.service_client.check_health(timeout=timedelta(seconds=2)), 3)
    except (TemporalError, asyncio.TimeoutError):
        return False


async def admit_and_start(client: Client, db: Repository, admission: Admission, req, settings: Settings):
    """Start an order only if it can be served: valid, database up, Temporal up, capacity free.

    Each check runs before anything is started or written, so a refused request leaves no
    trace: 422 (bad input), 503 (database or Temporal unreachable), 429 + Retry-After
    (too many orders in flight), 409 (the id was used).
    """
    try:
        order_client.check_order(req)
    except InvalidOrder as err:
        raise HTTPException(422, str(err)) from err
    if not await asyncio.to_thread(db.ping):
        raise HTTPException(503, "the app database is unreachable; nothing was started")
    try:
        ticket = await admission.admit(client)
    except Overloaded as err:
        metrics.ORDERS_REFUSED.inc()
        raise HTTPException(429, str(err), headers={"Retry-After": str(err.retry_after)}) from err
    except order_client.TemporalUnavailable as err:
        raise HTTPException(503, str(err)) from err
    try:
        return await asyncio.wait_for(order_client.start_order(client, req, settings), START_TIMEOUT)
    except order_client.OrderExists as err:
        admission.release(ticket)
        raise HTTPException(409, str(err)) from err
    except asyncio.TimeoutError as err:  # the start may or may not have reached Temporal
        raise HTTPException(
            504,
            f"Temporal did not confirm the start within {START_TIMEOUT:g} s; repeat the "
            "same request: 409 means the order was started",
        ) from err
    except (order_client.TemporalUnavailable, order_client.NoAnswer, TemporalError) as err:
        admission.release(ticket)
        raise http_error(err, req.order_id) from err


async def order_status(client: Client, db: Repository, order_id: str) -> OrderStatusOut:
    """An existing order's status is never a 5xx because its workflow cannot be queried.

    Running: the workflow's live status() query. Ended: what it recorded (its result, from
    the close event; the state from the database if the workflow failed in Temporal).
    A running order whose query fails answers from the database (``source: "database"``).
    Only Temporal itself being unreachable or silent is a 503/504.
    """
    try:
        answer = await asyncio.wait_for(order_client.order_status(client, order_id), COMMAND_TIMEOUT)
    except order_client.StatusUnavailable as err:
        persisted = await _persisted(db, order_id)
        if err.stuck:  # never the row's last state as if all were well: the order cannot move
            status = {"order_id": order_id, **(persisted or {}), "state": "stuck"}
            status["persisted_state"] = (persisted or {}).get("state")
            return OrderStatusOut(
                order_id=order_id, temporal_status="RUNNING", status=status, source="database", note=str(err)
            )
        if persisted is None:
            raise HTTPException(
                504 if err.timed_out else 503, f"order {order_id}: {err}; it has persisted no state yet"
            ) from err
        return OrderStatusOut(
            order_id=order_id, temporal_status="RUNNING", status=persisted, source="database", note=str(err)
        )
    except Exception as err:
        raise http_error(err, order_id) from err
    status = answer.status
    if answer.source == "result" and status.get("state") is None:  # failed/terminated in Temporal
        persisted = await _persisted(db, order_id) or {}
        status = {**status, "state": persisted.get("state")}
    return OrderStatusOut(
        order_id=order_id, temporal_status=answer.temporal_status, status=status, source=answer.source
    )


async def _persisted(db: Repository, order_id: str) -> dict[str, Any] | None:
    """The order's row as the status fields it shares, or None (no row, or the database is down)."""
    try:
        row = await asyncio.to_thread(db.get_order, order_id)
    except (OrderNotFound, SQLAlchemyError):
        return None
    return {
        "order_id": row["id"],
        "state": row["state"],
        "address": row["address"],
        "reason": row["reason"],
        "updated_at": row["updated_at"],
    }


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the caller owns Ctrl-C."""

    def capture_signals(self):
        return contextlib.nullcontext()


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
    server = _EmbeddedServer(config)
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
