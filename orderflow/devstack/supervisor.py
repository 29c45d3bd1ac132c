"""``ProcessStack``: the one owner of "the stack as OS processes" (``orderflow dev``, the
benchmarks, the storm and the tests run it): start, watch, restart and stop each process."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from orderflow.devstack.dev_server import DevServer, DevServerError
from orderflow.devstack.log_relay import LogRelay
from orderflow.devstack.processes import port_open, spawn_orderflow, wait_until
from orderflow.logs import json_record

if TYPE_CHECKING:
    from orderflow.config import Settings


# Supervision (``ProcessStack.supervise``, what ``orderflow dev`` runs). A process that dies is
# restarted; one that dies again soon after each restart (a taken port, a bad setting) would
# restart forever, so it gets a growing pause and, after a few such deaths in a row, we give up.
STABLE_SECONDS = 10.0  # ran this long before dying: a healthy run, so restart it at once
RESTART_PAUSES = (0.0, 1.0, 2.0)  # before the 1st, 2nd, 3rd restart in a row of quick deaths; a 4th gives up

# Shutdown (``ProcessStack.stop``): everything gone within 3 s of Ctrl-C, however stuck a child is
# (how long each takes after SIGTERM: docs/performance.md#measurements-behind-the-code). The
# server is told last, after the workers or WORKERS_GRACE, whichever comes first, because a
# stopping worker still talks to it.
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
        assert process.stdout is not None  # output=PIPE
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
        ended = {name: code for name, p in self.processes.items() if (code := p.poll()) is not None}
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
        assert self.server.process is not None and self.server.process.stdout is not None  # launched with a pipe
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
        wait_until([p for name, p in children.items() if name != "api"], began + WORKERS_GRACE)
        if self.server and self.server.process and self.server.process.poll() is None:
            children["temporal"] = self.server.process
            self.server.process.terminate()
        wait_until(list(children.values()), began + STOP_DEADLINE)
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
