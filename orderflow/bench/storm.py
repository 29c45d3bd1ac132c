"""The command storm (``orderflow storm``): what users do when the buttons invite it, all at once.

The stack as ``orderflow dev`` runs it (``devstack.ProcessStack``, API token set), orders
placed over HTTP at ``rate`` a second with the unmodified fault injector, and for each order
one plan, chosen at random:

* ``spam`` (most): right after approval, ``update-address`` every 50-100 ms without waiting for
  the answers (at most ``max_spam``), while ``GET /status`` polls every 100 ms;
* ``approve_and_cancel``: approve and cancel sent at the same instant;
* ``cancel_after_approve``: cancel right after the approval;
* ``duplicate_start``: the same start sent twice at once;
* ``plain``: approve and wait.

A share of the orders start without an address. Afterwards, for every order:

* it ended (none stuck), within the budget;
* its history and its shipments' replay on today's code (the sandboxed runner);
* the database, Temporal's history and ``status()`` agree (``audit.check_against_temporal``);
* every 2xx and 409 answer it got is true of how the order ended (``untrue_answers``);
* no answer was a 5xx.

With ``kill_worker`` the orders worker is killed (SIGKILL) and started again while orders run,
and once all have ended it is restarted cold and every order is queried from it twice: through
the API's ``/status`` and with ``temporal workflow query`` (as the Web UI does); each query
makes the fresh worker replay the order's whole history, and every one must answer.

With ``freeze_server`` the Temporal dev server is paused (SIGSTOP) for FREEZE_SECONDS while
orders run, as a stalled disk or a long garbage collection would: workflow tasks time out,
Updates and queries wait, timers fire late (the MySQL storm that left a history a query task
split had such a stall, docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from orderflow import audit, order_client
from orderflow.bench.common import bench_settings
from orderflow.bench.replay import histories_of, replay_histories
from orderflow.bench.storm_checks import Answer, StormReport, detail, outcomes, render, untrue_answers
from orderflow.db.repository import Repository
from orderflow.devstack import ProcessStack, free_port, installed_binary

# Each plan and the share of orders that get it; the rest are "plain".
PLANS: dict[str, float] = {"spam": 0.6, "approve_and_cancel": 0.1, "cancel_after_approve": 0.1, "duplicate_start": 0.1}
TOKEN = "storm-token"


def _line(err: BaseException) -> str:
    return (str(err).splitlines() or [""])[0][:300]


async def _customer(
    http: httpx.AsyncClient, order_id: str, plan: str, address: str, offset: float, max_spam: int, log: list[Answer]
) -> None:
    await asyncio.sleep(offset)
    rng = random.Random(order_id)

    async def ask(command: str, method: str, path: str, sent: str = "", **kw: Any) -> Answer | None:
        for _ in range(20):  # a client retries 503/504 (nothing happened); never a 5xx in this run
            try:
                response = await http.request(method, path, **kw)
            except httpx.HTTPError:
                await asyncio.sleep(0.2)
                continue
            body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
            answer = Answer(order_id, command, sent, response.status_code, body)
            log.append(answer)
            if response.status_code not in (503, 504):
                return answer
            await asyncio.sleep(0.2)
        return None

    async def start() -> Answer | None:
        path = f"/orders/{order_id}/start"
        return await ask("start", "POST", path, params={"payment_id": f"pay-{order_id}"}, json={"address": address})

    if plan == "duplicate_start":
        await asyncio.gather(start(), start())
    else:
        await start()
    review = await ask("review", "GET", f"/orders/{order_id}/review")
    if review is None or review.status != 200 or not review.body.get("awaiting_review"):
        return
    approve = ("approve", "POST", f"/orders/{order_id}/signals/approve")
    cancel = ("cancel", "POST", f"/orders/{order_id}/signals/cancel")
    if plan == "approve_and_cancel":
        await asyncio.gather(ask(*approve), ask(*cancel, json={"reason": "storm"}))
        return
    await ask(*approve)
    if plan == "cancel_after_approve":
        await ask(*cancel, json={"reason": "storm"})
    if plan != "spam":
        return
    changes: list[asyncio.Task] = []

    async def poll_status() -> None:
        while True:
            await ask("status", "GET", f"/orders/{order_id}/status")
            await asyncio.sleep(0.1)

    poller = asyncio.create_task(poll_status())
    try:
        for n in range(max_spam):
            new = f"{order_id} spam addr #{n}"
            path = f"/orders/{order_id}/signals/update-address"
            changes.append(asyncio.create_task(ask("address", "POST", path, new, json={"new_address": new})))
            await asyncio.sleep(rng.uniform(0.05, 0.1))
            done = [t.result() for t in changes if t.done()]
            if any(a is not None and "ended" in detail(a) for a in done):
                break  # a user stops pressing once told the order has ended
        await asyncio.gather(*changes)
    finally:
        poller.cancel()


async def run_storm(
    orders: int = 80,
    rate: float = 5.0,
    db_url: str | None = None,
    workdir: Path = Path("storm-results"),
    max_spam: int = 60,
    no_address_share: float = 0.3,
    budget: float = 15.0,
    seed: int = 17,
    kill_worker: bool = False,
    starve_worker: bool = False,
    freeze_server: bool = False,
) -> StormReport:
    workdir.mkdir(parents=True, exist_ok=True)
    db_url = db_url or f"sqlite:///{workdir / 'storm.db'}"
    settings = bench_settings(db_url, api_token=TOKEN, max_in_flight=0)
    suffix = settings.orders_task_queue.rsplit("-", 1)[-1]
    rng = random.Random(seed)
    plans: dict[str, str] = {}
    addresses: dict[str, str] = {}
    for i in range(orders):
        order_id = f"storm-{suffix}-{i}"
        plans[order_id] = _pick(rng.random())
        addresses[order_id] = "" if rng.random() < no_address_share else f"{i} First Street"
    log: list[Answer] = []
    faults: list[str] = []
    queries_failed: list[str] = []
    with (workdir / "stack.log").open("w") as stack_log:
        for stale in workdir.glob("temporal.db*"):
            stale.unlink()
        async with ProcessStack(settings, state_dir=workdir, api_port=free_port(), logs=stack_log) as stack:
            client = await order_client.connect(settings)
            headers = {"Authorization": f"Bearer {TOKEN}"}
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=400)
            assert stack.api_url is not None  # the stack runs its own API
            async with httpx.AsyncClient(base_url=stack.api_url, timeout=60, headers=headers, limits=limits) as http:
                killer = (
                    asyncio.create_task(_kill_orders_worker(stack, 0.4 * orders / rate, faults))
                    if kill_worker
                    else None
                )
                starver = asyncio.create_task(_starve_orders_worker(stack, faults)) if starve_worker else None
                freezer = (
                    asyncio.create_task(_freeze_server(stack, 0.4 * orders / rate, faults)) if freeze_server else None
                )
                await asyncio.gather(
                    *(
                        _customer(http, order_id, plans[order_id], addresses[order_id], i / rate, max_spam, log)
                        for i, order_id in enumerate(plans)
                    )
                )
                if killer is not None:
                    await killer
                if freezer is not None:
                    await freezer
                if starver is not None:
                    starver.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await starver
            started = sorted({a.order_id for a in log if a.command == "start" and a.status == 201})
            stuck, seconds, results = [], {}, {}
            for order_id in started:
                handle = order_client.order_handle(client, order_id)
                try:
                    results[order_id] = await asyncio.wait_for(handle.result(), 30)
                except Exception:  # noqa: BLE001 - not ended (or failed in Temporal): counted, shown below
                    stuck.append(order_id)
                desc = await handle.describe()
                if desc.close_time is not None:
                    seconds[order_id] = (desc.close_time - desc.start_time).total_seconds()
            if kill_worker:
                async with httpx.AsyncClient(base_url=stack.api_url, timeout=60, headers=headers) as http:
                    queries_failed = await _query_from_a_fresh_worker(stack, http, started, faults)
            await asyncio.sleep(0.5)  # let visibility list the last shipments
            histories = await histories_of(client, stack, started)
            replay = await replay_histories(histories, client.data_converter)
            repo = Repository.from_url(db_url)
            try:
                disagreements = []
                for order_id in started:  # one by one: an order whose status() query fails is one finding
                    try:
                        disagreements += await audit.check_against_temporal(repo, client, [order_id])
                    except Exception as err:  # noqa: BLE001 - e.g. a history that no longer replays
                        disagreements.append(f"{order_id}: cannot be checked: {type(err).__name__}: {_line(err)}")
                outcome = outcomes(repo, started, results, log)
            finally:
                repo.engine.dispose()
    codes = Counter(a.status for a in log)
    report = StormReport(
        orders=orders,
        rate=rate,
        db=db_url.split(":")[0],
        plans=dict(Counter(plans.values())),
        http_statuses={str(c): n for c, n in sorted(codes.items())},
        answers=len(log),
        stuck=stuck,
        over_budget=sorted(o for o, s in seconds.items() if s > budget),
        replay=replay,
        disagreements=disagreements,
        untrue_answers=untrue_answers([a for a in log if a.order_id in outcome], outcome),
        http_5xx=sum(n for c, n in codes.items() if c >= 500),
        seconds=seconds,
        queries_failed=queries_failed,
        faults=faults,
    )
    (workdir / "storm.json").write_text(json.dumps(asdict(report), indent=1, default=str))
    (workdir / "answers.json").write_text(json.dumps([asdict(a) for a in log], default=str))
    return report


async def _kill_orders_worker(stack: ProcessStack, after: float, faults: list[str]) -> None:
    await asyncio.sleep(after)
    stack.kill("orders")
    await asyncio.sleep(0.5)
    stack.respawn("orders")
    faults.append(f"orders worker killed (SIGKILL) {after:.1f} s in, a new one started 0.5 s later")


async def _pause(pid: int, seconds: float) -> None:
    """Stop a process (SIGSTOP) for ``seconds``; it always runs on afterwards."""
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


async def _freeze_server(stack: ProcessStack, after: float, faults: list[str]) -> None:
    await asyncio.sleep(after)
    await _pause(stack.pids()["temporal"], FREEZE_SECONDS)
    faults.append(f"Temporal dev server paused (SIGSTOP) for {FREEZE_SECONDS:g} s, {after:.1f} s in")


FREEZE_SECONDS = 6.0  # longer than the 5 s workflow task timeout
STARVE_STOP, STARVE_RUN = 1.5, 1.0  # seconds the orders worker is paused, then let run


async def _starve_orders_worker(stack: ProcessStack, faults: list[str]) -> None:
    """A worker starved of CPU: paused (SIGSTOP) for STARVE_STOP s, then let run for STARVE_RUN
    s, over and over while the customers press; longer than the 1 s sticky timeout, so workflow
    tasks (and the Updates riding on them) time out on the worker's sticky queue."""
    pid = stack.pids()["orders"]
    pauses = 0
    try:
        while True:
            await asyncio.sleep(STARVE_RUN)
            pauses += 1
            await _pause(pid, STARVE_STOP)
    finally:
        faults.append(f"orders worker paused {pauses} times for {STARVE_STOP:g} s (SIGSTOP), {STARVE_RUN:g} s apart")


async def _query_from_a_fresh_worker(
    stack: ProcessStack, http: httpx.AsyncClient, order_ids: list[str], faults: list[str]
) -> list[str]:
    """Restart the orders worker cold, then ask every order for its status twice: the API's
    ``/status`` and the Temporal CLI's ``workflow query`` (what the Web UI's query does). Both
    make the fresh worker replay the whole history; both must answer."""
    stack.kill("orders")
    stack.respawn("orders")
    faults.append("after the storm: the orders worker restarted cold, every order queried from it")
    temporal = installed_binary("temporal")
    failed: list[str] = []
    for order_id in order_ids:
        answer = await http.get(f"/orders/{order_id}/status")
        body = answer.json()
        if answer.status_code != 200 or body.get("status", {}).get("state") == "stuck":
            failed.append(f"{order_id}: /status answered {answer.status_code} {body}")
        command = [
            temporal,
            "workflow",
            "query",
            "--address",
            stack.settings.temporal_address,
            "--output",
            "json",
            "--workflow-id",
            order_client.order_workflow_id(order_id),
            "--type",
            "status",
        ]
        try:
            done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=10)
        except subprocess.TimeoutExpired:
            failed.append(f"{order_id}: temporal workflow query had no answer within 10 s")
            continue
        if done.returncode != 0:
            failed.append(
                f"{order_id}: temporal workflow query failed: {_line(RuntimeError(done.stderr or done.stdout))}"
            )
    return failed


def _pick(roll: float) -> str:
    """The plan a roll in [0, 1) falls on, by the shares in PLANS."""
    edge = 0.0
    for plan, share in PLANS.items():
        edge += share
        if roll < edge:
            return plan
    return "plain"


def main(
    orders: int,
    rate: float,
    db_url: str | None,
    out: Path,
    max_spam: int,
    seed: int,
    kill_worker: bool = False,
    starve_worker: bool = False,
    freeze_server: bool = False,
) -> int:
    began = time.monotonic()
    report = asyncio.run(
        run_storm(
            orders,
            rate,
            db_url,
            out,
            max_spam=max_spam,
            seed=seed,
            kill_worker=kill_worker,
            starve_worker=starve_worker,
            freeze_server=freeze_server,
        )
    )
    print(render(report) + f"\n({time.monotonic() - began:.0f} s; details in {out}/storm.json)", flush=True)
    return 0 if report.ok else 1
