"""The ``orderflow`` command: dev | worker orders|shipping | api | db upgrade | bench."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

from orderflow.config import DEFAULT_STATE_DIR, ConfigError, Settings
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
    from orderflow.client import connect
    from orderflow.db.repository import Repository
    from orderflow.worker import build_workers

    client = await connect(settings)
    return build_workers(client, Repository.from_url(settings.db_url), settings, kinds)


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


async def cmd_dev(args: argparse.Namespace, settings: Settings) -> None:
    from orderflow.api import serve
    from orderflow.db import migrate
    from orderflow.devstack import DevServer, port_open

    host, _, port = settings.temporal_address.rpartition(":")
    server = None
    local = host in ("", "127.0.0.1", "localhost") and not settings.tls_enabled
    if not local or port_open(host or "127.0.0.1", int(port)):  # a cluster, or a server already up
        log.info("using the Temporal service at %s", settings.describe_temporal())
    else:
        server = DevServer(port=int(port), ui_port=args.ui_port, db_file=Path(args.state_dir) / "temporal.db",
                           log_file=Path(args.state_dir) / "temporal.log")
        server.start()
        await server.wait_ready()
    try:
        migrate.upgrade(settings.db_url)
        workers = await _workers(settings, ("orders", "shipping"))
        print(
            f"orderflow dev is up\n"
            f"  Temporal      {settings.describe_temporal()}"
            + (f"   Web UI {server.ui_url}" if server and server.ui_url else "")
            + f"\n  database      {settings.db_url}\n"
            f"  workers       {settings.orders_task_queue}, {settings.shipping_task_queue}\n"
            f"  HTTP API      http://{args.api_host}:{args.api_port}  (docs at /docs)\n"
            f"  metrics       API: {_scrape_url(f'{args.api_host}:{args.api_port}')}   workers (SDK): "
            + (_scrape_url(settings.metrics_address) if settings.metrics_address else "off (--metrics-port)")
            + "\n"
            f"Try: curl -X POST 'http://127.0.0.1:{args.api_port}/orders/123/start?payment_id=abc123'\n"
            f"Ctrl-C stops everything.",
            flush=True,
        )
        await _run_until_stopped(*(w.run() for w in workers), serve(settings, args.api_host, args.api_port))
    finally:
        if server:
            server.stop()
        print("orderflow dev stopped", flush=True)


async def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    (worker,) = await _workers(settings, (args.kind,))
    log.info("worker started", extra={"orderflow": {"task_queue": worker.task_queue, "temporal": settings.describe_temporal(),
                                                    "metrics": settings.metrics_address}})
    await _run_until_stopped(worker.run())


async def cmd_api(args: argparse.Namespace, settings: Settings) -> None:
    from orderflow.api import serve

    await _run_until_stopped(serve(settings, args.host, args.port))


def cmd_db(args: argparse.Namespace, settings: Settings) -> None:
    from orderflow.db import migrate

    migrate.upgrade(settings.db_url)
    print(f"database at {settings.db_url} is at the latest schema")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orderflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="start the embedded stack: Temporal dev server, database, workers, API")
    dev.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR), help="where the SQLite files live")
    dev.add_argument("--ui-port", type=int, default=8233)
    dev.add_argument("--api-host", default="127.0.0.1")
    dev.add_argument("--api-port", type=int, default=8000)

    worker = sub.add_parser("worker", help="run one worker process (scale out by starting more)")
    worker.add_argument("kind", choices=["orders", "shipping"])
    for command in (dev, worker):
        command.add_argument("--metrics-port", type=int, default=None,
                             help="serve the Temporal SDK's metrics (Prometheus) on this port; "
                                  "host from ORDERFLOW_METRICS_ADDRESS, else 127.0.0.1 (default: off)")

    api = sub.add_parser("api", help="serve the HTTP API only")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)

    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade"])

    sub.add_parser("bench", help="the 15-second benchmark (see orderflow bench --help)", add_help=False)

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
            asyncio.run(cmd_dev(args, settings))
        elif args.command == "worker":
            asyncio.run(cmd_worker(args, settings))
        elif args.command == "api":
            asyncio.run(cmd_api(args, settings))
        elif args.command == "db":
            cmd_db(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # a clear one-line error for the user, not a stack trace
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
