"""A few presses of the same button per order at a time: more get a 429 at once.

A user who presses "update address" every 50 ms for a few seconds sends dozens of commands
that each wait up to 10 s to be accepted. Temporal admits 10 Updates per workflow at a time and
turns the rest away; the API then sent each again every 200 ms, and under that load the server
aborted the Updates it held by the thousand (a failing command storm, 2026-12-03:
docs/reliability.md#the-command-storm). Answering the extra presses at once, with nothing sent
to Temporal, keeps one user's spam from slowing every order.

Three at a time, not one: during shipping an address change is answered only once the parcel
has left, and a second change meanwhile is legitimate ("since changed again").
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from fastapi import HTTPException

PRESSES_AT_A_TIME = 3


class Presses:
    """Counts each order's commands in flight in this API process, by command."""

    def __init__(self, limit: int = PRESSES_AT_A_TIME) -> None:
        self.limit = limit
        self._in_flight: Counter[tuple[str, str]] = Counter()

    @contextlib.contextmanager
    def press(self, order_id: str, command: str) -> Iterator[None]:
        """Hold one of the order's places for ``command`` while the request runs; 429 if none is free."""
        key = (order_id, command)
        if self._in_flight[key] >= self.limit:
            raise HTTPException(
                429,
                f"order {order_id}: {self.limit} {command} commands for it are still being answered; "
                "nothing was sent, try again when one is",
                headers={"Retry-After": "1"},
            )
        self._in_flight[key] += 1
        try:
            yield
        finally:
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]
