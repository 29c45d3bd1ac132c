"""Idempotent writes both databases (SQLite, MySQL/MariaDB) understand: INSERT that skips
duplicates, INSERT-or-overwrite by key, and a prefix match without LIKE."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection


# Statements are built once per dialect and table: a step attempt runs several, and building
# them per call cost a measurable share of the workers' CPU (docs/performance.md#what-an-order-costs).
@functools.cache
def _insert_ignore_statement(dialect: str, table: sa.Table) -> sa.Insert:
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert

        return insert(table).on_conflict_do_nothing()
    return sa.insert(table).prefix_with("IGNORE")


def insert_ignore(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> int:
    """INSERT that skips rows whose unique key already exists; returns how many it inserted."""
    if not rows:
        return 0
    return conn.execute(_insert_ignore_statement(conn.dialect.name, table), list(rows)).rowcount


@functools.cache
def _upsert_statement(dialect: str, table: sa.Table, columns: tuple[str, ...], key: str) -> sa.Insert:
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table)
        return stmt.on_conflict_do_update(index_elements=[key], set_={c: stmt.excluded[c] for c in columns if c != key})
    from sqlalchemy.dialects.mysql import insert as mysql_insert

    mysql_stmt = mysql_insert(table)
    return mysql_stmt.on_duplicate_key_update({c: mysql_stmt.inserted[c] for c in columns if c != key})


def upsert(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]], key: str) -> None:
    """INSERT, or overwrite the row with the same ``key`` (the last writer wins)."""
    if not rows:
        return
    conn.execute(_upsert_statement(conn.dialect.name, table, tuple(rows[0]), key), list(rows))


def starts_with(column: sa.ColumnElement, prefix: str) -> sa.ColumnElement:
    """``column`` begins with ``prefix`` (no LIKE, so ids with ``_`` or ``%`` need no escaping)."""
    return sa.func.substr(column, 1, len(prefix)) == prefix
