"""Payload encryption: the codec both ways, its configuration, a real encrypted order, the codec server.

The end-to-end test runs an order whose address must never reach Temporal in plain text (a PO
box, so the carrier's refusal quotes it in five failure messages too), then reads the raw
history: ciphertext only; it replays with the codec; without it, the replay fails.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from orderflow import cli, order_client, stubs
from orderflow.api.codec_server import create_app
from orderflow.bench.replay import replay_histories
from orderflow.codec import ENCODING, EncryptionCodec, Undecryptable, UnknownKeyId
from orderflow.config import ConfigError, Settings, format_codec_keys
from orderflow.devstack import DevServer, free_port, installed_binary, port_open
from orderflow.models import OrderState, PaymentState
from orderflow.worker import WORKFLOW_RUNNER, InProcessWorkers
from orderflow.workflows import OrderWorkflow, ShippingWorkflow
from tests.helpers import ScriptedRandom, Stack, new_id

K1 = ("k1", bytes(range(32)))
K2 = ("k2", bytes(range(100, 132)))
UI = "http://localhost:8233"
M = TypeVar("M", bound=Message)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def json_payload(value: object) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode())


# -- the codec -------------------------------------------------------------------------------------


async def test_a_payload_round_trips_and_is_ciphertext_in_between():
    codec = EncryptionCodec([K1])
    plain = json_payload({"address": "221B Baker Street"})
    (sealed,) = await codec.encode([plain])
    assert dict(sealed.metadata) == {"encoding": b"binary/encrypted", "encryption-key-id": b"k1"}
    assert b"Baker" not in sealed.data and b"json/plain" not in sealed.data  # the metadata is sealed too
    assert len(sealed.data) == 12 + len(plain.SerializeToString()) + 16  # nonce + ciphertext + GCM tag
    assert await codec.decode([sealed]) == [plain]
    (again,) = await codec.encode([plain])
    assert again.data[:12] != sealed.data[:12] and again.data != sealed.data  # a fresh nonce each time


async def test_payloads_that_are_not_encrypted_pass_through():
    """Histories written before encryption was turned on still read."""
    codec = EncryptionCodec([K1])
    old = [json_payload("before"), Payload(metadata={"encoding": b"binary/null"})]
    assert await codec.decode(old) == old


async def test_rotation_encodes_with_the_current_key_and_decodes_with_any_known_one():
    before = EncryptionCodec([K1])
    after = EncryptionCodec([K2, K1])  # k2 is current now; k1 stays for what was written under it
    plain = json_payload("order 42")
    (old,) = await before.encode([plain])
    (new,) = await after.encode([plain])
    assert (old.metadata["encryption-key-id"], new.metadata["encryption-key-id"]) == (b"k1", b"k2")
    assert await after.decode([old, new]) == [plain, plain]
    # A process that never got k2 cannot read what uses it, and says which key it lacks.
    with pytest.raises(UnknownKeyId) as err:
        await before.decode([new])
    assert str(err.value) == (
        "payload encrypted with key id 'k2', which is not configured (known: k1); add that key to ORDERFLOW_CODEC_KEYS"
    )


async def test_tampered_ciphertext_is_refused_not_misread():
    codec = EncryptionCodec([K1])
    (sealed,) = await codec.encode([json_payload({"amount": 3})])
    flipped = bytearray(sealed.data)
    flipped[20] ^= 0x01
    tampered = Payload(metadata=sealed.metadata, data=bytes(flipped))
    with pytest.raises(Undecryptable) as err:
        await codec.decode([tampered])
    assert "key id 'k1' failed authentication (InvalidTag)" in str(err.value) and "\n" not in str(err.value)
    # The same id bound to another key (a mistyped key) is caught the same way.
    with pytest.raises(Undecryptable, match="InvalidTag"):
        await EncryptionCodec([("k1", K2[1])]).decode([sealed])
    with pytest.raises(Undecryptable, match="too short"):
        await codec.decode([Payload(metadata=sealed.metadata, data=sealed.data[:20])])


async def test_the_data_converter_encrypts_only_when_configured():
    off = order_client.data_converter(Settings())
    assert off is order_client.DATA_CONVERTER and off.payload_codec is None  # the default: no encryption
    on = order_client.data_converter(Settings(codec_keys=(K1,)))
    (payload,) = await on.encode([{"address": "1 Main St"}])
    assert payload.metadata["encoding"] == ENCODING and b"Main" not in payload.data
    assert await on.decode([payload], [dict]) == [{"address": "1 Main St"}]
    with pytest.raises(KeyError, match="Unknown payload encoding binary/encrypted"):
        await off.decode([payload], [dict])


# -- configuration ---------------------------------------------------------------------------------

NO_FILE = {"TEMPORAL_CONFIG_FILE": os.devnull}


def test_keys_come_from_the_environment_current_first():
    env = NO_FILE | {"ORDERFLOW_CODEC_KEYS": f" k2:{b64(K2[1])} , k1:{b64(K1[1])} "}
    settings = Settings.from_env(env)
    assert settings.codec_keys == (K2, K1)
    assert "payloads encrypted with key k2" in settings.describe_temporal()
    assert b64(K1[1]) not in repr(settings)  # never in a log line
    assert Settings.from_env(NO_FILE).codec_keys == ()  # off by default
    # A child process gets the same keys; one started from settings without keys inherits none.
    assert Settings.from_env(settings.to_env()) == settings
    assert "ORDERFLOW_CODEC_KEYS" not in Settings().child_env(env)


def test_keys_can_come_from_a_file(tmp_path):
    path = tmp_path / "keys"
    # A comment may hold a comma (it was split at the comma before it was known as a comment).
    path.write_text(
        f"# current first, then the old one\nk2:{b64(K2[1])}\n  # rotated out, still read\nk1:{b64(K1[1])}\n"
    )
    assert Settings.from_env(NO_FILE | {"ORDERFLOW_CODEC_KEYS_FILE": str(path)}).codec_keys == (K2, K1)


BAD_KEYS = {
    "not base64": ({"ORDERFLOW_CODEC_KEYS": "k1:not*base64"}, "ORDERFLOW_CODEC_KEYS: key 'k1' is not valid base64"),
    "a 16-byte key": (
        {"ORDERFLOW_CODEC_KEYS": f"k1:{b64(bytes(16))}"},
        "ORDERFLOW_CODEC_KEYS: key 'k1' is 16 bytes; AES-256 needs 32",
    ),
    "no id": ({"ORDERFLOW_CODEC_KEYS": b64(K1[1])}, "ORDERFLOW_CODEC_KEYS: entry 1 is not id:base64key"),
    "an id twice": (
        {"ORDERFLOW_CODEC_KEYS": f"k1:{b64(K1[1])},k1:{b64(K2[1])}"},
        "ORDERFLOW_CODEC_KEYS: key id 'k1' is listed twice",
    ),
    "only separators": ({"ORDERFLOW_CODEC_KEYS": " , "}, "ORDERFLOW_CODEC_KEYS: no key in it"),
    "both sources": (
        {"ORDERFLOW_CODEC_KEYS": f"k1:{b64(K1[1])}", "ORDERFLOW_CODEC_KEYS_FILE": "/x"},
        "set ORDERFLOW_CODEC_KEYS or ORDERFLOW_CODEC_KEYS_FILE, not both",
    ),
    "a missing file": (
        {"ORDERFLOW_CODEC_KEYS_FILE": "/nonexistent/keys"},
        "ORDERFLOW_CODEC_KEYS_FILE=/nonexistent/keys: cannot read it (No such file or directory)",
    ),
}


@pytest.mark.parametrize("case", BAD_KEYS)
def test_a_bad_key_is_a_one_line_error_without_the_key(case):
    env, message = BAD_KEYS[case]
    with pytest.raises(ConfigError) as err:
        Settings.from_env(NO_FILE | env)
    assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)
    assert b64(K2[1]) not in str(err.value)


def test_the_cli_says_so_in_one_line(monkeypatch, capsys):
    root = logging.getLogger()  # cli.main points the logs at capsys's stderr; put them back afterwards
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setenv("ORDERFLOW_CODEC_KEYS", f"k1:{b64(bytes(16))}")
    assert cli.main(["codec-server"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "key 'k1' is 16 bytes; AES-256 needs 32" in err, err
    monkeypatch.delenv("ORDERFLOW_CODEC_KEYS")
    monkeypatch.delenv("ORDERFLOW_CODEC_KEYS_FILE", raising=False)
    assert cli.main(["codec-server", "--port", str(free_port())]) == 1  # no keys: nothing to serve
    assert "the codec server needs the keys: set ORDERFLOW_CODEC_KEYS" in capsys.readouterr().err


# -- a real order, encrypted -----------------------------------------------------------------------


@pytest.fixture(scope="module")
async def codec_stack(dev_server: DevServer, sqlite_url: str) -> AsyncIterator[Stack]:
    """Workers and a client whose data converter encrypts (k2 current, k1 still known)."""
    await dev_server.wait_ready()
    settings = Settings(temporal_address=dev_server.address, db_url=sqlite_url, codec_keys=(K2, K1))
    settings = settings.with_own_queues("codec")
    client = await order_client.connect(settings)
    async with InProcessWorkers(client, settings) as workers:
        yield Stack(client, settings, workers.repo)


def messages_in(message: Message, kind: type[M]) -> Iterator[M]:
    """Every ``kind`` message anywhere inside a protobuf message (nested, repeated, in maps)."""
    if isinstance(message, kind):
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
                yield from messages_in(item, kind)


# The SDK core records each local activity in a marker whose "data" detail is its own bookkeeping,
# written as plain JSON outside the codec: ids, type and times, no application data.
LOCAL_ACTIVITY_BOOKKEEPING = {
    "seq",
    "attempt",
    "activity_id",
    "activity_type",
    "complete_time",
    "backoff",
    "original_schedule_time",
    "activation_index",
}


def application_payloads(history: WorkflowHistory) -> list[Payload]:
    """Every payload of the history except the local-activity bookkeeping (checked to be only that)."""
    found: list[Payload] = []
    for event in history.events:
        marker = event.marker_recorded_event_attributes
        if event.HasField("marker_recorded_event_attributes") and "data" in marker.details:
            for bookkeeping in marker.details["data"].payloads:
                assert set(json.loads(bookkeeping.data)) <= LOCAL_ACTIVITY_BOOKKEEPING
            event = HistoryEvent.FromString(event.SerializeToString())  # a copy, without that detail
            del event.marker_recorded_event_attributes.details["data"]
        found += messages_in(event, Payload)
    return found


@pytest.fixture(scope="module")
async def encrypted_order(codec_stack: Stack) -> AsyncIterator[dict]:
    """One order to a PO box (the carrier refuses it five times, quoting the address), run once.

    No injected faults (every flaky_call draw succeeds), so the path is the carrier's refusal alone.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stubs, "random", ScriptedRandom())
        yield await _run_encrypted_order(codec_stack)


async def _run_encrypted_order(codec_stack: Stack) -> dict:
    secret = f"PO Box {new_id('secret')}"
    order_id = new_id("codec")
    req = order_client.new_order(order_id, f"pay-{order_id}", address=secret)
    handle = await order_client.start_order(codec_stack.client, req, codec_stack.settings)
    assert await order_client.approve_when_ready(handle)
    result = await handle.result()  # the codec client decrypts it
    assert (result.state, result.payment, result.shipping_attempts) == (OrderState.FAILED, PaymentState.REFUNDED, 5)
    order = await handle.fetch_history()
    shipments = [
        await codec_stack.client.get_workflow_handle(
            e.start_child_workflow_execution_initiated_event_attributes.workflow_id
        ).fetch_history()
        for e in order.events
        if e.HasField("start_child_workflow_execution_initiated_event_attributes")
    ]
    assert shipments
    return {"secret": secret, "histories": [order, *shipments], "result": result}


async def test_the_history_holds_only_ciphertext(encrypted_order):
    secret = encrypted_order["secret"].encode()
    codec = EncryptionCodec([K2, K1])
    for history in encrypted_order["histories"]:
        raw = b"".join(e.SerializeToString() for e in history.events)
        assert secret not in raw and secret not in history.to_json().encode()
        payloads = application_payloads(history)
        assert payloads and all(p.metadata["encoding"] == b"binary/encrypted" for p in payloads)
        assert {p.metadata["encryption-key-id"] for p in payloads} == {b"k2"}
        # The check can fail: decrypted, the same payloads do hold the address.
        assert any(secret in p.data for p in await codec.decode(payloads))
    # Failure messages went through the codec as well (the carrier's refusal quotes the address):
    # each one reads "Encoded failure", its real message and stack trace in encoded_attributes.
    failures = [f for h in encrypted_order["histories"] for e in h.events for f in messages_in(e, Failure)]
    assert len(failures) >= 5 and {f.message for f in failures} == {"Encoded failure"}
    assert all(f.HasField("encoded_attributes") for f in failures)


async def replay(history: WorkflowHistory, settings: Settings):
    replayer = Replayer(
        workflows=[OrderWorkflow, ShippingWorkflow],
        workflow_runner=WORKFLOW_RUNNER,
        data_converter=order_client.data_converter(settings),
    )
    return await replayer.replay_workflow(history, raise_on_replay_failure=False)


async def test_the_encrypted_history_replays_with_the_codec_only(encrypted_order, caplog):
    for history in encrypted_order["histories"]:
        with_codec = await replay(history, Settings(codec_keys=(K2, K1)))
        assert with_codec.replay_failure is None, f"{history.workflow_id}: {with_codec.replay_failure}"
        # Without the codec the SDK's converter meets an encoding it does not know.
        without = await replay(history, Settings())
        assert "Unknown payload encoding binary/encrypted" in str(without.replay_failure), without.replay_failure
        # With only the retired key, the codec names the key it lacks. The worker logs that; the
        # workflow task failure it reports reads "Encoded failure", since the failure converter
        # encrypts its message too (the codec server shows it).
        caplog.clear()
        old_key_only = await replay(history, Settings(codec_keys=(K1,)))
        assert 'message: "Encoded failure"' in str(old_key_only.replay_failure), old_key_only.replay_failure
        logged = [r.exc_info[1] for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], UnknownKeyId)]
        assert [str(err) for err in logged] == [
            "payload encrypted with key id 'k2', which is not configured (known: k1); add that key to ORDERFLOW_CODEC_KEYS"
        ]
    # The HTTP benchmark's replay check replays with the client's converter, so with the codec.
    checked = await replay_histories(
        encrypted_order["histories"], order_client.data_converter(Settings(codec_keys=(K2,)))
    )
    assert (checked["histories"], checked["failures"]) == (len(encrypted_order["histories"]), 0), checked


# -- the codec server ------------------------------------------------------------------------------


def ui_request(payloads: list[Payload]) -> dict:
    """The body the Web UI POSTs: proto3 JSON, every bytes field (data, metadata values) base64."""
    return {
        "payloads": [{"metadata": {k: b64(v) for k, v in p.metadata.items()}, "data": b64(p.data)} for p in payloads]
    }


@pytest.fixture
def codec_http() -> Iterator[TestClient]:
    with TestClient(create_app(EncryptionCodec([K2, K1]), "default", [UI])) as http:
        yield http


async def test_the_codec_server_decodes_a_real_history_payload_for_the_ui(encrypted_order, codec_http):
    started = encrypted_order["histories"][0].events[0].workflow_execution_started_event_attributes
    (sealed,) = started.input.payloads
    answer = codec_http.post(
        "/codec/decode",
        json=ui_request([sealed]),
        headers={"X-Namespace": "default", "Origin": UI},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == UI
    (decoded,) = answer.json()["payloads"]
    assert base64.b64decode(decoded["metadata"]["encoding"]) == b"json/plain"
    order_request = json.loads(base64.b64decode(decoded["data"]))
    assert order_request["address"] == encrypted_order["secret"]


def test_the_codec_server_encodes_what_it_decodes(codec_http):
    plain = json_payload({"sku": "ABC"})
    encoded = codec_http.post("/codec/encode", json=ui_request([plain])).json()["payloads"]
    assert base64.b64decode(encoded[0]["metadata"]["encryption-key-id"]) == b"k2"
    decoded = codec_http.post("/codec/decode", json={"payloads": encoded}).json()["payloads"]
    assert decoded == ui_request([plain])["payloads"]
    assert codec_http.post("/codec/decode", json={"payloads": []}).json() == {"payloads": []}


def test_the_browser_preflight_allows_the_ui_origin_only(codec_http):
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,x-namespace"}
    ok = codec_http.options("/codec/decode", headers=ask | {"Origin": UI})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == UI
    assert ok.headers["access-control-allow-credentials"] == "true"  # the UI's "include credentials" option
    assert "x-namespace" in ok.headers["access-control-allow-headers"].lower()
    other = codec_http.options("/codec/decode", headers=ask | {"Origin": "http://evil.example"})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers


async def test_the_codec_server_refuses_with_a_reason(codec_http):
    (unknown,) = await EncryptionCodec([("k9", bytes(32))]).encode([json_payload(1)])
    answer = codec_http.post("/codec/decode", json=ui_request([unknown]))
    assert answer.status_code == 422 and "key id 'k9', which is not configured" in answer.json()["detail"]
    (sealed,) = await EncryptionCodec([K2]).encode([json_payload(1)])
    tampered = Payload(metadata=sealed.metadata, data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1]))
    answer = codec_http.post("/codec/decode", json=ui_request([tampered]))
    assert answer.status_code == 422 and "InvalidTag" in answer.json()["detail"]
    answer = codec_http.post("/codec/decode", json=ui_request([sealed]), headers={"X-Namespace": "payments"})
    assert answer.status_code == 403 and "namespace 'default', not 'payments'" in answer.json()["detail"]
    answer = codec_http.post("/codec/decode", content=b'{"payloads": [{"data": "not base64!"}]}')
    assert answer.status_code == 400 and "not Temporal Payloads JSON" in answer.json()["detail"]


async def test_orderflow_codec_server_serves_the_ui_over_http(tmp_path):
    """The real command on a free port: preflight and decode as a browser would send them."""
    port = free_port()
    env = Settings(codec_keys=(K2, K1)).child_env()  # the keys travel as ORDERFLOW_CODEC_KEYS
    assert env["ORDERFLOW_CODEC_KEYS"] == format_codec_keys((K2, K1))
    with (tmp_path / "codec.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orderflow.cli", "codec-server", "--port", str(port), "--ui-origin", UI],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        async with asyncio.timeout(30):
            while not port_open("127.0.0.1", port):
                assert proc.poll() is None, (tmp_path / "codec.log").read_text()
                await asyncio.sleep(0.1)
        (sealed,) = await EncryptionCodec([K1]).encode([json_payload({"address": "1 Main St"})])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            preflight = await http.options(
                "/codec/decode",
                headers={
                    "Origin": UI,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type,x-namespace",
                },
            )
            assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == UI
            answer = await http.post(
                "/codec/decode",
                content=json.dumps(ui_request([sealed])),
                headers={"Content-Type": "application/json", "X-Namespace": "default", "Origin": UI},
            )
        assert answer.status_code == 200, answer.text
        (decoded,) = answer.json()["payloads"]
        assert json.loads(base64.b64decode(decoded["data"])) == {"address": "1 Main St"}
    finally:
        proc.terminate()
        assert proc.wait(10) == 0, (tmp_path / "codec.log").read_text()


def json_payloads(tree: object) -> tuple[set[bytes], list[bytes]]:
    """The encodings and the data of every payload in a proto3-JSON document (base64 decoded)."""
    encodings: set[bytes] = set()
    datas: list[bytes] = []
    if isinstance(tree, dict):
        if "metadata" in tree and "encoding" in tree["metadata"]:
            encodings.add(base64.b64decode(tree["metadata"]["encoding"]))
            datas.append(base64.b64decode(tree.get("data", "")))
        for value in tree.values():
            more = json_payloads(value)
            encodings |= more[0]
            datas += more[1]
    elif isinstance(tree, list):
        for value in tree:
            more = json_payloads(value)
            encodings |= more[0]
            datas += more[1]
    return encodings, datas


async def test_the_temporal_cli_shows_plaintext_through_the_codec_server(encrypted_order, dev_server):
    """Temporal's own client of the protocol: ``temporal workflow show --codec-endpoint`` (the Web UI
    sends the same requests from the browser). Without the endpoint it shows ciphertext only."""
    port = free_port()
    app = create_app(EncryptionCodec([K2, K1]), "default", [UI])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.05)
        show = [installed_binary("temporal"), "workflow", "show", "--address", dev_server.address, "-o", "json"]
        show += ["-w", encrypted_order["histories"][0].workflow_id]
        secret = encrypted_order["secret"]
        plain = await asyncio.to_thread(
            subprocess.run,
            [*show, "--codec-endpoint", f"http://127.0.0.1:{port}/codec"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert plain.returncode == 0, plain.stderr
        encodings, datas = json_payloads(json.loads(plain.stdout))
        assert b"binary/encrypted" not in encodings and any(secret.encode() in data for data in datas)
        sealed = await asyncio.to_thread(subprocess.run, show, capture_output=True, text=True, timeout=30)
        assert sealed.returncode == 0, sealed.stderr
        encodings, datas = json_payloads(json.loads(sealed.stdout))
        assert b"binary/encrypted" in encodings and not any(secret.encode() in data for data in datas)
    finally:
        server.should_exit = True
        await serving
