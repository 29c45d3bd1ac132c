"""Notebook 11's helpers: workers and a client that encrypt (beside the kernel's plain ones), the
payloads of a history as a table, and the codec server on a free port; and the small workflow
exercise 11 runs the learner's codec on.

The kernel's stack runs without a codec. ``start_encrypted`` starts a second pair of workers on
task queues of their own, with a client whose data converter has the package's codec
(``data_converter``: what ``ORDERFLOW_CODEC_KEYS`` turns on), sharing the kernel's Temporal
server and database.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from types import ModuleType
from typing import Any

import pandas as pd
from google.protobuf.message import Message
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.converter import DataConverter, PayloadCodec

from orderflow import order_client
from orderflow.config import Settings
from orderflow.devstack import free_port
from orderflow.worker import InProcessWorkers


def _module(*names: str) -> ModuleType:
    """The first of ``names`` that imports: a module the package's reorganisation moves."""
    for name in names:
        with contextlib.suppress(ImportError):
            return importlib.import_module(name)
    raise ImportError(f"none of {names} imports")


codec_server = _module("orderflow.api.codec_server", "orderflow.codec_server")


@dataclass
class EncryptedStack:
    """A client and both workers with the codec, on task queues of their own."""

    settings: Settings
    client: Client
    workers: InProcessWorkers

    async def stop(self) -> None:
        await self.workers.stop()


async def start_encrypted(stack: Any, keys: Sequence[tuple[str, bytes]], tag: str) -> EncryptedStack:
    """Workers and a client that encrypt with ``keys`` (the first is current), beside the kernel's."""
    settings = replace(stack.settings, codec_keys=tuple(keys)).with_own_queues(tag)
    client = await order_client.connect(settings)
    return EncryptedStack(settings, client, InProcessWorkers(client, settings).start())


def with_codec(client: Client, codec: PayloadCodec | None) -> Client:
    """The same connection with ``codec`` in its data converter (None: the SDK's default converter)."""
    config = client.config()
    config["data_converter"] = DataConverter(payload_codec=codec) if codec else DataConverter.default
    return Client(**config)


# -- reading a history's payloads ---------------------------------------------------------------


def payloads_in(message: Message) -> Iterator[Payload]:
    """Every Payload anywhere inside a protobuf message (nested, repeated, in maps)."""
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            values = list(value.values())
        elif field.is_repeated:
            values = list(value)
        else:
            values = [value]
        for item in values:
            if isinstance(item, Message):
                yield from payloads_in(item)


def _local_activity_bookkeeping(payload: Payload) -> bool:
    """The SDK core's own marker detail (ids, times; no application data), outside the codec."""
    try:
        return {"seq", "activity_type"} <= set(json.loads(payload.data))
    except (ValueError, TypeError):
        return False


def history_payloads(history: Any) -> list[tuple[str, Payload]]:
    """(event type, payload) for every payload of a history but the core's local-activity bookkeeping."""
    from orderflow.notebook import history_frame

    kinds = list(history_frame(history)["type"])
    found = []
    for kind, event in zip(kinds, history.events, strict=True):
        found += [(kind, p) for p in payloads_in(event) if not _local_activity_bookkeeping(p)]
    return found


def _shown(data: bytes, width: int = 16) -> str:
    """The first bytes in hex, and as text where they are printable (JSON reads as itself)."""
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in data[:width])
    return f"{data[:width].hex(' ')}{' …' if len(data) > width else ''}  |{text}|"


def payload_table(history: Any) -> pd.DataFrame:
    """One row per payload of a history: the event, its encoding and key id, its first bytes."""
    rows = [
        {
            "event": kind,
            "encoding": p.metadata.get("encoding", b"").decode(errors="replace"),
            "key id": p.metadata.get("encryption-key-id", b"").decode(errors="replace"),
            "bytes": len(p.data),
            "data (first bytes)": _shown(p.data),
        }
        for kind, p in history_payloads(history)
    ]
    return pd.DataFrame(rows)


def readable(history: Any, text: str) -> bool:
    """Whether ``text`` appears anywhere in the history's bytes, as Temporal stores them."""
    raw = b"".join(e.SerializeToString() for e in history.events)
    return text.encode() in raw


# -- the codec server on a free port -----------------------------------------------------------


@dataclass
class CodecServer:
    endpoint: str
    task: asyncio.Task

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def serve_codec(settings: Settings, ui_url: str | None) -> CodecServer:
    """``orderflow codec-server`` in this kernel, on a free port, allowing the kernel's Web UI."""
    port = free_port()
    origins = [ui_url.rstrip("/")] if ui_url else list(codec_server.DEFAULT_UI_ORIGINS)
    task = asyncio.ensure_future(codec_server.serve(settings, port=port, ui_origins=origins))
    for _ in range(100):
        await asyncio.sleep(0.05)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            continue
        writer.close()
        break
    return CodecServer(f"http://127.0.0.1:{port}{codec_server.PREFIX}", task)


def ui_request(payloads: Sequence[Payload]) -> dict:
    """The body the Web UI POSTs to ``{endpoint}/decode``: proto3 JSON, bytes as base64."""
    from google.protobuf import json_format

    return {"payloads": [json_format.MessageToDict(p) for p in payloads]}


# -- exercise 11: a note sealed on its way through Temporal ------------------------------------------

NOTE_STEP = timedelta(seconds=5)


@activity.defn(name="ExerciseDeliverNote")
async def deliver_note(note: str) -> str:
    return f"delivered: {note}"


@workflow.defn(name="ExerciseSealedNote", sandboxed=False)
class SealedNote:
    """Takes a note, hands it to an activity and returns the activity's answer: four payloads."""

    @workflow.run
    async def run(self, note: str) -> str:
        return await workflow.execute_activity(deliver_note, note, start_to_close_timeout=NOTE_STEP)
