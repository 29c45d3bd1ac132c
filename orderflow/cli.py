"""The ``orderflow`` command: dev | worker orders|shipping | api | codec-server | db upgrade | bench."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from orderflow.config import DEFAULT_STATE_DIR, ConfigError, Settings, db_url_named
from orderflow.logs import configure_logging

log = logging.getLogger("orderflow")


async def _run_until_stopped(*coros) -> None:
    """Run ``coros`` until one ends or Ctrl-C / SIGTERM; then cancel the rest."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.ensure_future(c) for c in coros]
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    for task in [*tasks, stopper]:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for task in done:
        if task is not stopper and not task.cancelled() and task.exception():
            raise task.exception()


async def _workers(settings: Settings, kinds) -> list:
    from orderflow.db.repository import Repository
    from orderflow.order_client import connect
    from orderflow.worker import build_workers

    client = await _connect_patiently(settings, connect)
    return build_workers(client, Repository.from_url(settings.db_url), settings, kinds)


WORKER_CONNECT_SECONDS = 30.0


async def _connect_patiently(settings: Settings, connect):
    """A worker started while its server (re)starts waits for it, saying so once, instead of
    exiting (seen under load: a worker restarted during a dev-server restart exited and its
    orders waited for good). After WORKER_CONNECT_SECONDS the error is the command's."""
    deadline = time.monotonic() + WORKER_CONNECT_SECONDS
    said = False
    while True:
        try:
            return await connect(settings)
        except RuntimeError as err:  # the SDK's "Failed client connect: ..."
            if time.monotonic() > deadline:
                raise
            if not said:
                log.warning(
                    f"Temporal server at {settings.temporal_address} does not answer yet; "
                    f"the worker tries again for {WORKER_CONNECT_SECONDS:g} s",
                    extra={"orderflow": {"event": "temporal_wait", "error": str(err).splitlines()[0][:200]}},
                )
                said = True
            await asyncio.sleep(1)


def _with_metrics_port(settings: Settings, port: int | None) -> Settings:
    """``--metrics-port P``: the SDK's Prometheus endpoint on P (host from ORDERFLOW_METRICS_ADDRESS,
    else 127.0.0.1)."""
    if port is None:
        return settings
    if not 0 < port < 65536:
        raise ConfigError(f"--metrics-port must be 1-65535 (got {port})")
    host = settings.metrics_address.rpartition(":")[0] if settings.metrics_address else "127.0.0.1"
    return replace(settings, metrics_address=f"{host}:{port}")


def _scrape_url(address: str) -> str:
    host, _, port = address.rpartition(":")
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/metrics"


def dev_settings(args: argparse.Namespace, settings: Settings, env=None) -> Settings:
    """``orderflow dev``'s settings: ``--port`` picks the Temporal port, and ``--state-dir``
    holds the app database too unless ORDERFLOW_DB_URL names one explicitly."""
    if args.port is not None:
        settings = replace(settings, temporal_address=f"127.0.0.1:{args.port}")
    if not db_url_named(env):
        settings = replace(settings, db_url=f"sqlite:///{Path(args.state_dir).resolve() / 'orderflow.db'}")
    return settings


async def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    """The whole stack, each part in its own OS process (see devstack.ProcessStack).

    The dev server, the API and each worker use their own core; their logs arrive here as
    one stream of JSON lines on stderr, each with a ``proc`` field naming its process. A
    process that dies is restarted (``ProcessStack.supervise``); one that keeps dying ends
    the command with exit code 1. Ctrl-C or SIGTERM stops everything within 3 s.
    """
    from orderflow.devstack import ProcessStack

    settings = dev_settings(args, settings)
    stack = ProcessStack(
        settings,
        state_dir=Path(args.state_dir),
        ui_port=args.ui_port,
        api_host=args.api_host,
        api_port=args.api_port,
        logs=sys.stderr,
    )
    outcome: list[str] = []

    async def run() -> None:
        await stack.start()
        pids = stack.pids()
        print(
            "orderflow dev is up\n"
            f"  Temporal      {settings.temporal_address}"
            + ("  (started here)" if stack.server else "  (already running; reused)")
            + (f"\n  Web UI        {stack.ui_url}" if stack.ui_url else "")
            + f"\n  HTTP API      {stack.api_url}  (docs at {stack.api_url}/docs)\n"
            f"  database      {settings.db_url}\n"
            f"  task queues   {settings.orders_task_queue}, {settings.shipping_task_queue}\n"
            f"  processes     " + ", ".join(f"{name} pid {pid}" for name, pid in pids.items()) + "\n"
            f"  metrics       API {stack.api_url}/metrics"
            + "".join(
                f", {kind} worker {_scrape_url(address)}"
                for kind in stack.workers
                if (address := stack.metrics_address(kind))
            )
            + ("" if settings.metrics_address else "  (worker metrics: --metrics-port)")
            + "\n"
            f'Logs: one JSON line per event on stderr; "proc" names the process.\n'
            f"Try: curl -X POST '{stack.api_url}/orders/123/start?payment_id=abc123'\n"
            f"A process that dies is restarted (one log line each). Ctrl-C stops everything.",
            flush=True,
        )
        outcome.append(await stack.supervise())  # returns only when it gives up

    try:
        await _run_until_stopped(run())
    finally:
        stack.stop()
        print("orderflow dev stopped" + (f": {outcome[0]}" if outcome else ""), flush=True)
    return 1 if outcome else 0


def tune_gc() -> None:
    """For a long-running worker or API process, once its modules are loaded.

    ``freeze`` moves what start-up loaded (the SDK, SQLAlchemy, FastAPI) out of the collector's
    sight, and the thresholds make young-generation passes rarer (default: every 700
    allocations). About 6 % less CPU per order (docs/performance.md#what-an-order-costs).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)


# How often a worker asks whether its Temporal server still answers (a gRPC health check, under
# 0.1 % of a core at one a second: docs/performance.md#measurements-behind-the-code), and how long
# one check may take. A server that went away refuses at once; the longer timeout keeps a busy
# second on a loaded machine from counting.
SERVER_CHECK_SECONDS = 1.0
SERVER_CHECK_TIMEOUT = timedelta(seconds=3)


async def _server_answers(client) -> tuple[bool, str]:
    """Whether the Temporal server answers a health check, and if not, why (one short line)."""
    try:
        return await client.service_client.check_health(timeout=SERVER_CHECK_TIMEOUT), ""
    except Exception as err:  # noqa: BLE001 - RPCError: refused, unavailable, timed out; any reason is reported
        return False, (str(err).splitlines() or [type(err).__name__])[0][:200]


async def _report_server_outages(client, address: str) -> None:
    """One log line when the Temporal server stops answering, one when it answers again.

    The SDK needs no help to survive an outage: its pollers retry on their own
    (docs/performance.md#measurements-behind-the-code). But it says nothing while it retries
    (config.core_log_level keeps the core's per-poll warnings out), so without these lines a
    worker cut off from its server looks idle.
    """
    down_since: float | None = None
    while True:
        await asyncio.sleep(SERVER_CHECK_SECONDS)
        asked = time.monotonic()
        answered, error = await _server_answers(client)
        if not answered and down_since is None:  # said once per outage, however long it lasts
            down_since = asked
            log.warning(
                f"Temporal server at {address} went away; the worker keeps retrying and resumes when it is back",
                extra={"orderflow": {"event": "temporal_away", "error": error}},
            )
        elif answered and down_since is not None:
            log.info(
                f"Temporal server at {address} answers again; the worker's polls resume on their own",
                extra={
                    "orderflow": {"event": "temporal_back", "down_seconds": round(time.monotonic() - down_since, 1)}
                },
            )
            down_since = None


async def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    (worker,) = await _workers(settings, (args.kind,))
    tune_gc()
    log.info(
        "worker started",
        extra={
            "orderflow": {
                "task_queue": worker.task_queue,
                "temporal": settings.describe_temporal(),
                "metrics": settings.metrics_address,
            }
        },
    )
    await _run_until_stopped(worker.run(), _report_server_outages(worker.client, settings.temporal_address))


async def cmd_api(args: argparse.Namespace, settings: Settings) -> None:
    from orderflow.api import serve

    tune_gc()
    await _run_until_stopped(serve(settings, args.host, args.port))


async def cmd_codec_server(args: argparse.Namespace, settings: Settings) -> None:
    from orderflow.api import codec_server

    await _run_until_stopped(
        codec_server.serve(settings, args.host, args.port, args.ui_origin or codec_server.DEFAULT_UI_ORIGINS)
    )


def cmd_db(args: argparse.Namespace, settings: Settings) -> None:
    from orderflow.db import migrate

    migrate.upgrade(settings.db_url)
    print(f"database at {settings.db_url} is at the latest schema")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orderflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser(
        "dev", help="start the embedded stack: Temporal dev server, database, workers, API (each in its own process)"
    )
    dev.add_argument(
        "--state-dir",
        default=str(DEFAULT_STATE_DIR),
        help="where the SQLite files live: Temporal's and the app database (unless ORDERFLOW_DB_URL is set)",
    )
    dev.add_argument(
        "--port", type=int, default=None, help="Temporal frontend port (default: the port of TEMPORAL_ADDRESS, 7233)"
    )
    dev.add_argument("--ui-port", type=int, default=8233)
    dev.add_argument("--api-host", default="127.0.0.1")
    dev.add_argument("--api-port", type=int, default=8000)

    worker = sub.add_parser("worker", help="run one worker process (scale out by starting more)")
    worker.add_argument("kind", choices=["orders", "shipping"])
    for command in (dev, worker):
        command.add_argument(
            "--metrics-port",
            type=int,
            default=None,
            help="serve the Temporal SDK's metrics (Prometheus) on this port; "
            "host from ORDERFLOW_METRICS_ADDRESS, else 127.0.0.1 (default: off)",
        )

    api = sub.add_parser("api", help="serve the HTTP API only")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)

    codec = sub.add_parser("codec-server", help="decrypt payloads for the Web UI and CLI (needs ORDERFLOW_CODEC_KEYS)")
    codec.add_argument("--host", default="127.0.0.1")
    codec.add_argument("--port", type=int, default=8081)
    codec.add_argument(
        "--ui-origin",
        action="append",
        help="a Web UI origin allowed to call it (repeat for more; default http://localhost:8233 and http://127.0.0.1:8233)",
    )

    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade"])

    sub.add_parser("bench", help="the 15-second benchmark (see orderflow bench --help)", add_help=False)

    storm_cmd = sub.add_parser(
        "storm", help="the command storm: address spam, approve+cancel races, duplicate starts; then checks everything"
    )
    storm_cmd.add_argument("--orders", type=int, default=80)
    storm_cmd.add_argument("--rate", type=float, default=5.0, help="orders started per second (default 5)")
    storm_cmd.add_argument("--db", default=None, help="database URL (default: a fresh SQLite file under --out)")
    storm_cmd.add_argument("--out", default="storm-results")
    storm_cmd.add_argument("--max-spam", type=int, default=60, help="address changes per spammed order (default 60)")
    storm_cmd.add_argument("--seed", type=int, default=17, help="which plan each order gets (the faults stay random)")
    storm_cmd.add_argument(
        "--kill-worker",
        action="store_true",
        help="kill the orders worker mid-storm; afterwards query every order from a fresh worker (API and CLI)",
    )
    storm_cmd.add_argument(
        "--starve-worker",
        action="store_true",
        help="pause the orders worker (SIGSTOP) 1.5 s of every 2.5 s while the customers press: a CPU-starved worker",
    )
    storm_cmd.add_argument(
        "--freeze-server",
        action="store_true",
        help="pause the Temporal dev server (SIGSTOP) for 6 s mid-storm: a stalled server",
    )

    argv = sys.argv[1:] if argv is None else argv
    try:
        settings = Settings.from_env()
    except ConfigError as err:  # a bad profile or variable: one line, no traceback
        print(f"orderflow: {err}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if argv[:1] == ["bench"]:  # its options are its own
        from orderflow import bench

        return bench.main(argv[1:])
    args = parser.parse_args(argv)
    try:
        if args.command in ("dev", "worker"):
            settings = _with_metrics_port(settings, args.metrics_port)
        if args.command == "dev":
            return asyncio.run(cmd_dev(args, settings))
        elif args.command == "worker":
            asyncio.run(cmd_worker(args, settings))
        elif args.command == "api":
            asyncio.run(cmd_api(args, settings))
        elif args.command == "codec-server":
            asyncio.run(cmd_codec_server(args, settings))
        elif args.command == "db":
            cmd_db(args, settings)
        elif args.command == "storm":
            from orderflow.bench import storm

            return storm.main(
                args.orders,
                args.rate,
                args.db,
                Path(args.out),
                args.max_spam,
                args.seed,
                args.kill_worker,
                args.starve_worker,
                args.freeze_server,
            )
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001 - a clear one-line error for the user, not a stack trace
        print(f"orderflow {args.command}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """The ``orderflow`` console script: main(), then exit without interpreter teardown.

    The SDK's Rust threads can abort CPython's finalization ("Fatal Python error:
    PyGILState_Release", temporalio/sdk-python#300): seen here about one exit in three after a
    failed connect with a metrics runtime. Output is flushed first; nothing of ours needs atexit.
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
