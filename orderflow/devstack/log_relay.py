"""Several child processes' output merged into one stream of JSON lines."""

from __future__ import annotations

import json
import threading
import time
from typing import IO, Any


class LogRelay:
    """Several child processes' output merged into one stream: a JSON object per line.

    Each child's own JSON log line is passed on with its name first (``{"proc": "api", ...}``);
    a line that is not JSON (a banner, a crash trace) becomes ``{"proc": ..., "msg": line}``.
    One thread per child reads its pipe; a lock keeps lines whole.
    """

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def follow(self, name: str, pipe: IO[bytes]) -> None:
        thread = threading.Thread(target=self._relay, args=(name, pipe), name=f"log-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _relay(self, name: str, pipe: IO[bytes]) -> None:
        with pipe:
            for raw in iter(pipe.readline, b""):
                if self.stream is None:
                    continue  # still drain the pipe, or the child blocks once it is full
                line = raw.decode(errors="replace").rstrip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                self.write({"proc": name, **record} if isinstance(record, dict) else {"proc": name, "msg": line})

    def write(self, record: dict[str, Any]) -> None:
        """One JSON line, whole: a child's, or the stack's own (a restart, a kill at shutdown)."""
        if self.stream is None:
            return
        with self._lock:
            try:
                self.stream.write(json.dumps(record, default=str) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # the terminal went away: keep draining
                pass

    def join(self, timeout: float = 5.0) -> None:
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
