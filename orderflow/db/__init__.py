"""Persistence: the schema, its Alembic migrations and the idempotent repository."""
