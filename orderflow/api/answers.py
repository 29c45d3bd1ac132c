"""The answers of the user path: a start behind admission control, a status that is never a 5xx
because a workflow cannot be queried, and every order error mapped to 404/409/429/503/504."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from fastapi import HTTPException
from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import Client
from temporalio.exceptions import TemporalError

from orderflow import metrics, order_client
from orderflow.admission import Admission, Overloaded
from orderflow.api.schemas import OrderStatusOut
from orderflow.config import Settings
from orderflow.db.repository import Repository
from orderflow.errors import InvalidOrder, OrderNotFound

# Accepted within 10 s (order_client.ACCEPT_TIMEOUT), then the outcome, inside the order's budget.
COMMAND_TIMEOUT = 25.0
# Longer than the SDK's own retries of an unreachable server (about 10 s:
# docs/performance.md#measurements-behind-the-code), so a start against a Temporal that is down
# ends as an unambiguous "not started" 503.
START_TIMEOUT = 12.0


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

    Running: the status its workflow published in its memo (no worker involved). Ended: what it
    recorded (its result, from the close event; the state from the database if the workflow
    failed in Temporal). A stuck order says so; one that published nothing yet and whose query
    fails answers from the database (``source: "database"``).
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
