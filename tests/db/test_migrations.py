"""Alembic migrations build exactly the schema the code uses."""

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from orderflow.db import migrate
from orderflow.db.engine import make_engine
from orderflow.db.schema import metadata


def test_upgrade_creates_the_schema_the_code_expects(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    migrate.upgrade(url)
    migrate.upgrade(url)  # a second upgrade is a no-op
    engine = make_engine(url)
    with engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) >= {"orders", "payments", "shipments", "events"}
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


def test_mysql_schema_matches_too(mysql_url):
    engine = make_engine(mysql_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert [d for d in diff if d[0] != "modify_nullable"] == []
