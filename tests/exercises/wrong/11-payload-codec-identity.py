# expect: readable
from collections.abc import Sequence

from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

KEY_ID = "lesson-key-1"
KEY = bytes(range(32))  # a lesson's key: a real one comes from configuration, never from code


class MyCodec(PayloadCodec):
    """Encrypts every payload with AES-GCM under KEY, and says which key in its metadata."""

    def __init__(self) -> None:
        self.key = KEY

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)  # "encrypted" later, maybe

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)
