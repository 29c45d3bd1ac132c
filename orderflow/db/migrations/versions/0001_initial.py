"""orders, payments, shipments and the events audit trail

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("payment_id", sa.String(64), nullable=False),
        sa.Column("items_json", sa.JSON, nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("validated", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_table(
        "payments",
        sa.Column("payment_id", sa.String(64), primary_key=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("amount", sa.Integer, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_index("ix_payments_order_id", "payments", ["order_id"])
    op.create_table(
        "shipments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("shipment_no", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.UniqueConstraint("order_id", "shipment_no", name="uq_shipments_order_attempt"),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_key", sa.String(160), nullable=False, unique=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(48), nullable=False),
        sa.Column("step", sa.String(48)),
        sa.Column("attempt", sa.Integer),
        sa.Column("payload_json", sa.JSON, nullable=False),
        sa.Column("ts", Timestamp, nullable=False),
    )
    op.create_index("ix_events_order_id", "events", ["order_id"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("shipments")
    op.drop_index("ix_payments_order_id", "payments")
    op.drop_table("payments")
    op.drop_table("orders")
