"""Schema migrations with Alembic, run from code (``orderflow db upgrade``)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from orderflow.db.engine import make_engine

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def ensure_database(url: str) -> None:
    """Create the MySQL/MariaDB database named in ``url`` if the server lacks it."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "mysql" or not parsed.database:
        return
    # Same connect/read timeouts as the app's engine: a black-holed server is an error, not a hang.
    server = make_engine(parsed.set(database="").render_as_string(hide_password=False))
    with server.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS `{parsed.database}` CHARACTER SET utf8mb4"))
    server.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    ensure_database(url)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()
