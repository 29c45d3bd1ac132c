"""Tables of the app database (SQLite by default, MySQL/MariaDB through PyMySQL)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

metadata = sa.MetaData()

# MySQL's DATETIME keeps whole seconds unless asked for microseconds.
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")


def Key(length: int = 64) -> sa.types.TypeEngine:
    """An identifier column. Ids are case-sensitive everywhere: on MySQL/MariaDB the default
    utf8mb4 collation would make order ``ABC`` and order ``abc`` the same row."""
    return sa.String(length).with_variant(mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin"), "mysql")


orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", Key(), primary_key=True),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("payment_id", Key(), nullable=False),
    sa.Column("items_json", sa.JSON, nullable=False),
    sa.Column("address", sa.Text, nullable=False),
    sa.Column("validated", sa.Boolean, nullable=False, default=False),
    sa.Column("reason", sa.Text),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

payments = sa.Table(
    "payments",
    metadata,
    sa.Column("payment_id", Key(), primary_key=True),
    sa.Column("order_id", Key(), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("amount", sa.Integer, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

shipments = sa.Table(
    "shipments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("order_id", Key(), nullable=False),
    sa.Column("shipment_no", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("address", sa.Text, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.UniqueConstraint("order_id", "shipment_no", name="uq_shipments_order_attempt"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_key", Key(255), nullable=False, unique=True),
    sa.Column("order_id", Key(), nullable=False, index=True),
    sa.Column("type", sa.String(48), nullable=False),
    sa.Column("step", sa.String(48)),
    sa.Column("attempt", sa.Integer),
    sa.Column("payload_json", sa.JSON, nullable=False),
    sa.Column("ts", Timestamp, nullable=False),
)

# One row per step execution key (workflow id / run id / step): the step's idempotency record.
# Every attempt increments ``attempts`` before it calls the stub; the first outcome recorded
# (succeeded, failed, abandoned) is final, and a later execution of the same key answers with it.
steps = sa.Table(
    "steps",
    metadata,
    sa.Column("step_key", Key(255), primary_key=True),
    sa.Column("order_id", Key(), nullable=False, index=True),
    sa.Column("step", sa.String(48), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("result_json", sa.JSON),
    sa.Column("error", sa.Text),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)
