# expect: same bytes
from collections.abc import Sequence

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

KEY_ID = "lesson-key-1"
KEY = bytes(range(32))  # a lesson's key: a real one comes from configuration, never from code


class MyCodec(PayloadCodec):
    """Encrypts every payload with AES-GCM under KEY, and says which key in its metadata."""

    def __init__(self) -> None:
        self.cipher = AESGCM(KEY)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        sealed = []
        for payload in payloads:
            nonce = bytes(12)  # the same nonce every time
            ciphertext = self.cipher.encrypt(nonce, payload.SerializeToString(), None)  # its metadata too
            sealed.append(
                Payload(
                    metadata={"encoding": b"binary/encrypted", "encryption-key-id": KEY_ID.encode()},
                    data=nonce + ciphertext,
                )
            )
        return sealed

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        opened = []
        for payload in payloads:
            if payload.metadata.get("encoding") != b"binary/encrypted":
                opened.append(payload)  # not ours: as it is
                continue
            nonce, ciphertext = payload.data[:12], payload.data[12:]
            opened.append(Payload.FromString(self.cipher.decrypt(nonce, ciphertext, None)))
        return opened
