"""The routes: what each needs from the app's state (dependencies), the order endpoints and /healthz.

Commands go to the workflow as Workflow Updates whose validators check the order's state inside
the workflow, so a 202 means the workflow accepted the command and a 409 carries the workflow's
own reason.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import Client, WorkflowExecutionStatus

from orderflow import metrics, order_client
from orderflow.api.answers import COMMAND_TIMEOUT, admit_and_start, http_error, order_status, temporal_reachable
from orderflow.api.presses import Presses
from orderflow.api.review_watch import ReviewWatch
from orderflow.api.schemas import (
    ID_REGEX,
    Accepted,
    AddressBody,
    CancelBody,
    Health,
    OrderId,
    OrderStatusOut,
    Review,
    StartBody,
    Started,
)
from orderflow.config import Settings
from orderflow.db.repository import Repository
from orderflow.errors import OrderNotFound
from orderflow.models import Item, OrderState

T = TypeVar("T")


def error_response(status: int, message: str, detail: Any = None) -> JSONResponse:
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


def presses(request: Request) -> Presses:
    """The API process's count of commands in flight per order (api/presses.py)."""
    return request.app.state.presses


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
    "/{order_id}/signals/approve", status_code=202, response_model=Accepted, responses={404: {}, 409: {}, 429: {}}
)
async def approve(order_id: OrderId, request: Request, client: TemporalClient) -> Accepted:
    with presses(request).press(order_id, "approve"):
        return Accepted(order_id=order_id, result=await command(order_client.approve(client, order_id), order_id))


@orders_router.get("/{order_id}/review", response_model=Review, responses={404: {}, 409: {}, 504: {}})
async def review(order_id: OrderId, request: Request, client: TemporalClient) -> Review:
    """A reviewer's long poll: answers once the order awaits review (approve it now) or has
    moved past it (approved, cancelled, ended), within the order's budget."""
    state = await reviewed_state(client, request.app.state.review_watch, order_id)
    return Review(order_id=order_id, state=state.value, awaiting_review=state == OrderState.AWAITING_REVIEW)


BEFORE_REVIEW = {OrderState.STARTED.value, OrderState.RECEIVED.value, OrderState.VALIDATED.value}
DESCRIBE_EVERY = 20  # reads (REVIEW_POLL_SECONDS each): once a second, is the order still running?


async def reviewed_state(client: Client, watch: ReviewWatch, order_id: str) -> OrderState:
    """The order's state once it is past validation, read from the database: the validate step
    persists ``awaiting_review`` with its success. Polling the database costs no workflow task;
    an Update sent while a step runs is refused Busy and sent again, a workflow task on the
    server and the worker each time (docs/performance.md#the-reviewers-long-poll)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + COMMAND_TIMEOUT
    polls = 0
    while True:
        try:
            state = await watch.next_state(order_id)  # None: the receive step has not written the row yet
        except SQLAlchemyError as err:
            raise HTTPException(503, f"order {order_id}: the app database is unreachable") from err
        if state is not None and state not in BEFORE_REVIEW:
            return OrderState(state)
        # With no row yet, is there such an order (404 if not)? Then once a second: still running?
        if (polls == 0 and state is None) or (polls and polls % DESCRIBE_EVERY == 0):
            running = await command(order_client.describe(client, order_id), order_id)
            if running != WorkflowExecutionStatus.RUNNING:
                raise HTTPException(409, f"order {order_id}: it has ended without reaching review")
        if loop.time() > deadline:
            raise HTTPException(504, f"order {order_id}: not past validation within {COMMAND_TIMEOUT:g} s")
        polls += 1


@orders_router.post(
    "/{order_id}/signals/cancel", status_code=202, response_model=Accepted, responses={404: {}, 409: {}, 429: {}}
)
async def cancel(
    order_id: OrderId, request: Request, client: TemporalClient, body: CancelBody | None = None
) -> Accepted:
    """Answers once the outcome is known: cancelled (and refunded), or 409 if the parcel left first."""
    reason = body.reason if body else ""
    with presses(request).press(order_id, "cancel"):
        return Accepted(
            order_id=order_id, result=await command(order_client.cancel(client, order_id, reason), order_id)
        )


@orders_router.post(
    "/{order_id}/signals/update-address",
    status_code=202,
    response_model=Accepted,
    responses={404: {}, 409: {}, 429: {}},
)
async def update_address(order_id: OrderId, body: AddressBody, request: Request, client: TemporalClient) -> Accepted:
    """Before shipping: adopted at once. During shipping: answers once the parcel was dispatched to
    the new address, or 409 if it went to the old one first."""
    with presses(request).press(order_id, "update-address"):
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
