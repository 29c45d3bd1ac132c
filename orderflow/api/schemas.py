"""What the HTTP API reads and answers: request bodies, answers and the order id path parameter."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, Field

from orderflow import order_client

ID_REGEX = order_client.ID_PATTERN.pattern


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
        description='"memo": the status the running workflow published with its last workflow task; '
        '"query": the running workflow answered (it had published nothing yet); "result": what the '
        'ended order recorded; "database": the last state the order persisted (its workflow could '
        "not answer, or is stuck: see note)"
    )
    note: str | None = None


class Health(BaseModel):
    temporal: bool
    database: bool


OrderId = Annotated[str, Path(pattern=ID_REGEX, description="1-64 letters, digits or _.:-")]
