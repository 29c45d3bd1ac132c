"""Notebook 11's exercise: a payload codec that encrypts, with the key id in the metadata."""

from __future__ import annotations

import json
import uuid
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, PayloadCodec
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from orderflow.lessons import harness
from orderflow.lessons.encryption import SealedNote, deliver_note, history_payloads, readable, with_codec
from orderflow.lessons.exercise import Verdict, Wrong, exercise, learner, one_line

EXERCISE = "11-payload-codec"
ENCRYPTED = b"binary/encrypted"
KEY_ID_FIELD = "encryption-key-id"


def _json(value: object) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode())


def _meta(p: Payload) -> dict[str, bytes]:
    return dict(p.metadata)


@exercise(EXERCISE, title="A payload codec that encrypts", notebook="11")
async def check_payload_codec(stack, ns: dict) -> Verdict:
    codec_class = learner(ns, "MyCodec", "the codec class")
    key_id = learner(ns, "KEY_ID", "the key's id")
    if not isinstance(codec_class, type) or not issubclass(codec_class, PayloadCodec):
        raise Wrong("`MyCodec` must be a class that subclasses temporalio.converter.PayloadCodec.")
    codec = codec_class()
    secret = f"PO Box {uuid.uuid4().hex[:8]}, the secret address"
    await _judge_payloads(codec, str(key_id), secret)
    with harness.quiet_worker_logs():
        return await _judge_run(stack, codec_class, str(key_id), secret)


async def _judge_payloads(codec: PayloadCodec, key_id: str, secret: str) -> None:
    originals = [_json({"address": secret}), Payload(metadata={"encoding": b"binary/null"})]
    encoded = await codec.encode(originals)
    if not isinstance(encoded, list | tuple) or len(encoded) != len(originals):
        raise Wrong(f"encode() must return one payload per payload given: 2 in, {encoded!r} out.")
    if any(secret.encode() in p.data or secret.encode() in p.SerializeToString() for p in encoded):
        raise Wrong(
            "encode() left the payload readable: the address is there in plain text, so Temporal's history, its "
            "database and the Web UI would show it. Encrypt each payload (self.cipher.encrypt)."
        )
    for p in encoded:
        if p.metadata.get("encoding") != ENCRYPTED:
            raise Wrong(
                f"an encoded payload says encoding {p.metadata.get('encoding')!r}, not {ENCRYPTED!r}: the next "
                "reader learns from it how to read the data (a client without the codec must not take ciphertext "
                "for JSON)."
            )
        if p.metadata.get(KEY_ID_FIELD) != key_id.encode():
            raise Wrong(
                f"an encoded payload's metadata is {_meta(p)}: it must name the key, "
                f"{KEY_ID_FIELD!r}: {key_id.encode()!r}, so a reader (after a key rotation) knows which key opens it."
            )
    decoded = await codec.decode(list(encoded))
    for before, after in zip(originals, decoded, strict=False):
        if after.data != before.data:
            raise Wrong("decode(encode(payload)) did not give back the payload's data: decrypt what encode sealed.")
        if _meta(after) != _meta(before):
            raise Wrong(
                f"decode(encode(payload)) lost the metadata: {_meta(before)} came back as {_meta(after)}. Without "
                '"encoding" the SDK cannot read the data. Encrypt the whole payload (payload.SerializeToString()) '
                "and give back Payload.FromString(plaintext)."
            )
    plain = _json("not encrypted")
    passed_through = await codec.decode([plain])
    if list(passed_through) != [plain]:
        raise Wrong(
            "decode() changed a payload that was not encrypted (encoding json/plain): hand those back as they are "
            "(histories written before encryption was on still have them)."
        )
    again = await codec.encode([originals[0]])
    if again[0].data == encoded[0].data:
        raise Wrong(
            "the same payload encrypted twice gave the same bytes: the nonce is not fresh. With AES-GCM a nonce "
            "used twice under one key gives the key's secrets away: take os.urandom(12) for every payload."
        )


async def _judge_run(stack, codec_class: Any, key_id: str, secret: str) -> Verdict:
    queue = harness.task_queue(EXERCISE)
    sealed = with_codec(stack.client, codec_class())
    async with harness.worker(sealed, queue, [SealedNote], [deliver_note]):
        handle = await harness.start(sealed, SealedNote.run, secret, queue=queue, exercise_id=EXERCISE)
        answer = await handle.result()
    if answer != f"delivered: {secret}":
        raise Wrong(f"the workflow, run with your codec on client and worker, answered {answer!r}")
    # The history as Temporal stores it: fetched by the kernel's client, which has no codec.
    history = await stack.client.get_workflow_handle(handle.id).fetch_history()
    if readable(history, secret):
        raise Wrong("the address is readable in the workflow's history as Temporal stores it: encode every payload.")
    stored = [p for _, p in history_payloads(history)]
    if not stored or any(p.metadata.get("encoding") != ENCRYPTED for p in stored):
        raise Wrong("some payloads of the history are not encrypted (their encoding is not binary/encrypted).")
    opened = await codec_class().decode(stored)
    if not any(secret.encode() in p.data for p in opened):
        raise Wrong("your codec's decode() did not give the address back from the history's payloads.")
    replayer = Replayer(
        workflows=[SealedNote],
        workflow_runner=UnsandboxedWorkflowRunner(),
        data_converter=DataConverter(payload_codec=codec_class()),
    )
    replay = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    if replay.replay_failure is not None:
        raise Wrong(f"the history does not replay with your codec: {one_line(replay.replay_failure)}")
    return Verdict(
        "passed",
        f"Temporal ran a workflow with your codec on client and worker: its {len(stored)} payloads are stored as "
        f"binary/encrypted under key id {key_id!r}, the address appears nowhere in the history, your decode() "
        "reads it back, and the history replays with your codec.",
    )
