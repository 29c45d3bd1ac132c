"""steps (one idempotency record per step execution key); case-sensitive ids on MySQL

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")


def Key(length: int = 64) -> sa.types.TypeEngine:
    return sa.String(length).with_variant(mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin"), "mysql")


# (table, column, length, nullable): the id columns that must compare case-sensitively.
ID_COLUMNS = [
    ("orders", "id", 64, False),
    ("orders", "payment_id", 64, False),
    ("payments", "payment_id", 64, False),
    ("payments", "order_id", 64, False),
    ("shipments", "order_id", 64, False),
    ("events", "order_id", 64, False),
    ("events", "event_key", 255, False),
]


def upgrade() -> None:
    op.create_table(
        "steps",
        sa.Column("step_key", Key(255), primary_key=True),
        sa.Column("order_id", Key(), nullable=False),
        sa.Column("step", sa.String(48), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("result_json", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_index("ix_steps_order_id", "steps", ["order_id"])
    if op.get_bind().dialect.name == "mysql":
        for table, column, length, nullable in ID_COLUMNS:
            op.alter_column(
                table,
                column,
                existing_nullable=nullable,
                type_=mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin"),
            )
    else:  # SQLite compares text byte for byte already; only the longer event key is new
        with op.batch_alter_table("events") as batch:
            batch.alter_column("event_key", existing_nullable=False, type_=sa.String(255))


def downgrade() -> None:
    op.drop_index("ix_steps_order_id", "steps")
    op.drop_table("steps")
