"""Child processes of the stack: spawned as ``orderflow ARGS``, dying with their parent, stopped
gracefully then killed; free ports and open ports."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import time
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from orderflow.config import Settings

if sys.platform.startswith("linux"):
    import ctypes

    # Resolved here, in the parent: a child between fork and exec must not import anything
    # (another thread of the parent may hold the import lock at fork time).
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
else:  # pragma: no cover - the project runs on Linux
    _prctl = None
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Child-process hook (Linux): end this process when its parent dies, even by SIGKILL.

    Without it a dev server or worker started by a killed benchmark or kernel lives on.
    The signal is tied to the parent *thread* that forked: spawn from a thread that lives
    as long as the stack (the main thread), never from a short-lived worker thread.
    """
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn_orderflow(
    *args: str, settings: "Settings", output: IO | int | None = None, own_session: bool = False
) -> subprocess.Popen:
    """Run ``orderflow ARGS`` (a worker, the API) in a child process configured by ``settings``.

    ``output``: where its stdout and stderr go (default: discarded; ``subprocess.PIPE`` to
    relay them). ``own_session`` keeps a terminal's Ctrl-C away from it, so the parent
    decides when and in which order its children stop.
    """
    target = subprocess.DEVNULL if output is None else output
    return subprocess.Popen(
        [sys.executable, "-m", "orderflow.cli", *args],
        env=settings.child_env(),
        stdin=subprocess.DEVNULL,
        stdout=target,
        stderr=subprocess.STDOUT if output is not None else target,
        start_new_session=own_session,
        preexec_fn=die_with_parent,
    )


# Ports the kernel never hands out on its own (Linux's default ephemeral range starts at 32768).
_LISTEN_PORTS = range(20000, 32768)


def _ephemeral_low(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> int:
    try:
        with open(path) as ranges:
            return int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port free now, for a server of ours to listen on, chosen below the kernel's ephemeral
    range: a port the kernel picked (bind to 0) is one it may give the next outgoing connection
    too, and once that happened between choosing the API's port and uvicorn binding it
    ("[Errno 98] address already in use", `orderflow bench --api`, 2026-12-03)."""
    low = _ephemeral_low()
    candidates = [port for port in _LISTEN_PORTS if port < low] or list(_LISTEN_PORTS)
    for port in random.sample(candidates, 50):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a crowded range: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM (graceful), then SIGKILL after ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until(processes: list[subprocess.Popen], deadline: float) -> None:
    """Wait for each process to end, but not past ``deadline`` (time.monotonic())."""
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
