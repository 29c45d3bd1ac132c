"""Shared fixtures: one Temporal dev server and one set of workers per test session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import sqlalchemy as sa
from temporalio.client import Client

from orderflow import stubs
from orderflow.config import Settings
from orderflow.db import migrate
from orderflow.db.repository import Repository
from orderflow.devstack import DevServer, free_port
from orderflow.order_client import connect
from tests.helpers import MYSQL_SERVER, ScriptedRandom, Stack, running_stack


@pytest.fixture(scope="session")
def dev_server() -> Iterator[DevServer]:
    server = DevServer(port=free_port(), ui_port=None).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def client(dev_server: DevServer) -> Client:
    await dev_server.wait_ready()
    return await connect(Settings(temporal_address=dev_server.address))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'orderflow.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """A database of its own on the local MariaDB/MySQL, dropped at the end. Never skipped."""
    name = f"orderflow_test_{uuid.uuid4().hex[:8]}"
    url = f"{MYSQL_SERVER}/{name}?charset=utf8mb4"
    migrate.upgrade(url)
    yield url
    engine = sa.create_engine(MYSQL_SERVER)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "mysql"])
def repo(request) -> Iterator[Repository]:
    """A repository on each supported database (function scope: a fresh engine each test)."""
    url = request.getfixturevalue(f"{request.param}_url")
    repository = Repository.from_url(url)
    yield repository
    repository.engine.dispose()


@pytest.fixture(scope="session")
async def stack(client: Client, dev_server: DevServer, sqlite_url: str) -> AsyncIterator[Stack]:
    async with running_stack(client, dev_server.address, sqlite_url, "sqlite") as running:
        yield running


@pytest.fixture(scope="session")
async def mysql_stack(client: Client, dev_server: DevServer, mysql_url: str) -> AsyncIterator[Stack]:
    async with running_stack(client, dev_server.address, mysql_url, "mysql") as running:
        yield running


@pytest.fixture
def scripted(monkeypatch) -> ScriptedRandom:
    """Control flaky_call's draw per activity for a deterministic path (unit of one path only)."""
    fake = ScriptedRandom()
    monkeypatch.setattr(stubs, "random", fake)
    return fake
