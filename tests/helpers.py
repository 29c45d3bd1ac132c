"""What the tests share besides fixtures: ids, scripted fault draws, an in-process stack, histories."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from temporalio import activity
from temporalio.client import Client, WorkflowHandle, WorkflowHistory

from orderflow.config import Settings
from orderflow.db.repository import Repository
from orderflow.worker import InProcessWorkers

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


@dataclass
class Stack:
    """A running set of workers with the settings and repository they use."""

    client: Client
    settings: Settings
    repo: Repository


@asynccontextmanager
async def running_stack(client: Client, address: str, db_url: str, suffix: str) -> AsyncIterator[Stack]:
    settings = Settings(temporal_address=address, db_url=db_url).with_own_queues(suffix)
    async with InProcessWorkers(client, settings) as workers:
        yield Stack(client, settings, workers.repo)


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


class CuttableProxy:
    """A TCP proxy to ``target`` (host, port), on a thread of its own, whose line can be cut:
    ``cut()`` closes every open connection and closes new ones at once (a database that went
    away), ``restore()`` lets them through again. For database outages without stopping the
    shared server. Its own thread and loop: the code under test may block its loop on a query."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.down = False
        self.writers: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> int:
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(10)
        return self.port

    def cut(self) -> None:
        self.loop.call_soon_threadsafe(self._cut)

    def restore(self) -> None:
        self.down = False

    def stop(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _listen(self) -> int:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return server.sockets[0].getsockname()[1]

    def _cut(self) -> None:
        self.down = True
        for writer in list(self.writers):
            writer.close()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.down:
            client_writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        self.writers |= {client_writer, upstream_writer}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()
                self.writers.discard(writer)

        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))
