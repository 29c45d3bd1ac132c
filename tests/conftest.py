"""Shared fixtures: one Temporal dev server and one set of workers per test session."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from temporalio import activity
from temporalio.client import Client, WorkflowHandle, WorkflowHistory

from orderflow import stubs
from orderflow.client import connect
from orderflow.config import Settings
from orderflow.db import migrate
from orderflow.db.repository import Repository
from orderflow.devstack import DevServer, free_port
from orderflow.worker import build_workers

MYSQL_SERVER = os.environ.get("ORDERFLOW_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306")
HISTORIES = Path(__file__).with_name("histories")


class ScriptedRandom:
    """Stands in for ``random`` inside the stubs: scripted draws per activity, else success.

    Only for tests that take one path on purpose; they say so. 0.1 fails, 0.5 hangs, 0.9 succeeds.
    """

    def __init__(self) -> None:
        self.script: dict[str, list[float]] = {}

    def random(self) -> float:
        queue = self.script.get(activity.info().activity_type)
        return queue.pop(0) if queue else 0.9

    def set(self, **draws: list[float]) -> None:
        self.script = {name: list(values) for name, values in draws.items()}


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


@dataclass
class Stack:
    """A running set of workers with the settings and repository they use."""

    client: Client
    settings: Settings
    repo: Repository


@asynccontextmanager
async def running_stack(client: Client, address: str, db_url: str, suffix: str) -> AsyncIterator[Stack]:
    settings = Settings(
        temporal_address=address,
        db_url=db_url,
        orders_task_queue=f"orders-tq-{suffix}",
        shipping_task_queue=f"shipping-tq-{suffix}",
    )
    repository = Repository.from_url(db_url)
    workers = build_workers(client, repository, settings)
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield Stack(client, settings, repository)
    finally:
        for worker in workers:
            await worker.shutdown()
        for task in tasks:
            await task
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


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def save_history(handle: WorkflowHandle, name: str) -> None:
    """With ORDERFLOW_RECORD_HISTORIES=1, keep this run's history for the replay tests."""
    if os.environ.get("ORDERFLOW_RECORD_HISTORIES") == "1":
        history = await handle.fetch_history()
        record = {"workflow_id": handle.id, "history": json.loads(history.to_json())}
        (HISTORIES / f"{name}.json").write_text(json.dumps(record))


def load_history(path: Path) -> WorkflowHistory:
    record = json.loads(path.read_text())
    return WorkflowHistory.from_json(record["workflow_id"], record["history"])
