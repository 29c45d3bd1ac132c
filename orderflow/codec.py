"""Encrypt every payload before it reaches Temporal: an AES-256-GCM payload codec.

Temporal stores each workflow's inputs, results, signal and update arguments, activity results
and (with the failure converter below) failure messages in its event history. The Temporal
service never needs to read them: it only moves them between clients and workers. A *payload
codec* sits at the edge of every client and worker and turns each payload into another payload
on the way out (``encode``) and back on the way in (``decode``); here that is encryption, so
the service, its database, its backups and the Web UI (without a codec server) see ciphertext.

    your object --payload converter--> Payload(json) --codec.encode--> Payload(ciphertext) --> Temporal
    your object <--payload converter-- Payload(json) <--codec.decode-- Payload(ciphertext) <-- Temporal

Turned on by ``ORDERFLOW_CODEC_KEYS`` (orderflow/config.py); ``orderflow.order_client.data_converter``
puts it into every client the project makes, and ``orderflow codec-server`` lets the Web UI
and the ``temporal`` CLI show the plaintext (orderflow/api/codec_server.py).

What is not encrypted: workflow and activity ids and types, task queue names, timestamps,
search attributes (the service must index them) and headers. Keep secrets out of those.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

# A Payload is a protobuf message: ``metadata`` (a map of str -> bytes) plus ``data`` (bytes).
# The ``encoding`` metadata entry tells the next reader how to read ``data``: the SDK's payload
# converters write "json/plain", "binary/null", ...; this codec writes "binary/encrypted", so
# a client *without* the codec fails with "Unknown payload encoding binary/encrypted" instead
# of misreading ciphertext as JSON.
ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12  # 96 bits: the nonce size GCM is built for; random per payload, never reused with a key
TAG_BYTES = 16  # GCM's authentication tag, appended to the ciphertext
KEY_BYTES = 32  # AES-256


class CodecError(ValueError):
    """A payload cannot be decrypted; the message is one line that says which key and why."""


class UnknownKeyId(CodecError):
    """The payload names a key id this process was not given."""


class Undecryptable(CodecError):
    """The payload's ciphertext fails GCM authentication: it was altered, or the key is wrong."""


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM per payload, with key rotation.

    ``keys`` is ``[(key_id, 32-byte key), ...]``; the first is the *current* key: every new
    payload is encrypted with it, and its id travels in the payload's metadata. Decoding picks
    the key by that id, so a payload written under any key still listed decrypts. To rotate:
    put a new key first and keep the old ones after it until no history you still read uses
    them (running workflows replay their whole history, old payloads included). With random
    96-bit nonces a key should seal fewer than 2**32 payloads (NIST SP 800-38D): rotate well
    before that.
    """

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("EncryptionCodec needs at least one (key id, key)")
        for key_id, key in keys:
            if len(key) != KEY_BYTES:
                raise ValueError(f"key {key_id!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES}")
        self.current_id = keys[0][0]
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys}

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    # The SDK calls encode() with every batch of payloads leaving this process (workflow start
    # arguments, activity results, workflow commands the worker sends, ...), after the payload
    # converter made them. It must return payloads; it must not mutate the ones it is given.
    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._encrypt(p) for p in payloads]

    # decode() is the mirror image, called on every payload arriving from Temporal: activations
    # a worker runs, results a client awaits, and every event of a history a Replayer replays.
    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decrypt(p) for p in payloads]

    def _encrypt(self, payload: Payload) -> Payload:
        # The whole Payload message (its metadata too: "json/plain", the type) is the plaintext,
        # so decryption gives back exactly what the payload converter made.
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.current_id].encrypt(nonce, payload.SerializeToString(), None)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: self.current_id.encode()},
            data=nonce + sealed,  # the nonce is not secret; the GCM tag ends ``sealed``
        )

    def _decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before encryption was on (or by another codec's peer): as is
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownKeyId(
                f"payload encrypted with key id {key_id!r}, which is not configured "
                f"(known: {', '.join(self._ciphers)}); add that key to ORDERFLOW_CODEC_KEYS"
            )
        if len(payload.data) < NONCE_BYTES + TAG_BYTES:
            raise Undecryptable(
                f"payload encrypted with key id {key_id!r} is {len(payload.data)} bytes: "
                "too short to be a nonce and a GCM tag (truncated?)"
            )
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            return Payload.FromString(cipher.decrypt(nonce, sealed, None))
        except InvalidTag:  # GCM checks integrity: no silently wrong plaintext, ever
            raise Undecryptable(
                f"payload encrypted with key id {key_id!r} failed authentication (InvalidTag): "
                "its ciphertext was altered, or the key configured under that id is not the one that encrypted it"
            ) from None
