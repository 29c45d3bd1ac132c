"""Tables of the app database (SQLite by default, MySQL/MariaDB through PyMySQL)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

metadata = sa.MetaData()

# MySQL's DATETIME keeps whole seconds unless asked for microseconds.
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("payment_id", sa.String(64), nullable=False),
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
    sa.Column("payment_id", sa.String(64), primary_key=True),
    sa.Column("order_id", sa.String(64), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("amount", sa.Integer, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

shipments = sa.Table(
    "shipments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.String(64), nullable=False),
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
    sa.Column("event_key", sa.String(160), nullable=False, unique=True),
    sa.Column("order_id", sa.String(64), nullable=False, index=True),
    sa.Column("type", sa.String(48), nullable=False),
    sa.Column("step", sa.String(48)),
    sa.Column("attempt", sa.Integer),
    sa.Column("payload_json", sa.JSON, nullable=False),
    sa.Column("ts", Timestamp, nullable=False),
)
