"""A lab harness (not the user path): the seed's lifecycle run four ways, with and without a storm.

How orderflow chose its step model (docs/performance.md, "The step model candidates"). No
database, no HTTP: what each design costs Temporal, side by side, and whether an update storm
with status queries breaks its histories.

    .venv/bin/python experiments/step_models.py run --model MODEL [--storm] --rate 8 --duration 60 --out DIR

models: la (local activities; the address Update runs a local activity and waits: the shape
        the storm broke), anchored (local activities; Updates refused while a step runs, a 1 ms
        timer after steps before messages count: orderflow's gate), attempt (a regular activity
        per attempt, the server retries), step (one regular activity per step that retries
        flaky_call itself, with heartbeats). The dev server runs with eager activity execution on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker

ORDERS_Q, SHIP_Q = "m-orders", "m-ship"
ATTEMPT = 0.15
BACKOFF = RetryPolicy(
    initial_interval=timedelta(milliseconds=10), maximum_interval=timedelta(milliseconds=50), backoff_coefficient=1.5
)


async def flaky_call() -> None:  # the assignment's fault injector, unmodified
    r = random.random()
    if r < 0.33:
        raise RuntimeError("Forced failure for testing")
    if r < 0.67:
        await asyncio.sleep(300)


@activity.defn
async def attempt(name: str) -> str:  # one attempt: la, anchored, attempt
    await flaky_call()
    return name


@activity.defn
async def whole_step(name: str) -> dict:  # step: the activity retries flaky_call itself
    n = failures = timeouts = 0
    delay = 0.01
    while True:
        n += 1
        try:
            await asyncio.wait_for(flaky_call(), ATTEMPT)
            return {"step": name, "attempts": n, "failures": failures, "timeouts": timeouts}
        except asyncio.TimeoutError:
            timeouts += 1
        except RuntimeError:
            failures += 1
        activity.heartbeat(n)
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.05)


@activity.defn
async def flush(addr: str) -> str:
    return addr


def model() -> str:
    return os.environ["STEP_MODEL"]


async def run_step(name: str) -> None:
    m = model()
    if m in ("la", "anchored"):
        await workflow.execute_local_activity(
            attempt,
            name,
            start_to_close_timeout=timedelta(seconds=ATTEMPT),
            schedule_to_close_timeout=timedelta(seconds=10),
            retry_policy=BACKOFF,
        )
    elif m == "attempt":
        await workflow.execute_activity(
            attempt,
            name,
            start_to_close_timeout=timedelta(seconds=ATTEMPT),
            schedule_to_close_timeout=timedelta(seconds=10),
            retry_policy=BACKOFF,
        )
    else:
        await workflow.execute_activity(
            whole_step,
            name,
            start_to_close_timeout=timedelta(seconds=10),
            heartbeat_timeout=timedelta(seconds=1),
            retry_policy=BACKOFF,
        )


async def anchor() -> None:
    """Anchored model only: end the workflow task on a history event before reading messages."""
    if model() == "anchored":
        await workflow.sleep(timedelta(milliseconds=1))


@workflow.defn
class MShip:
    def __init__(self) -> None:
        self.address = ""

    @workflow.run
    async def run(self, address: str) -> str:
        self.address = address
        await run_step("prepare")
        await workflow.sleep(timedelta(milliseconds=1))  # take address changes before dispatch (all models)
        sent_to = self.address
        await run_step("dispatch")
        return sent_to

    @workflow.signal
    def update_address(self, address: str) -> None:
        self.address = address


@workflow.defn
class MOrder:
    def __init__(self) -> None:
        self.state = "received"
        self.address = ""
        self.approved = False
        self.cancel = False
        self.child = None
        self.told_child = ""
        self.dispatched_to: str | None = None

    @workflow.run
    async def run(self, order_id: str) -> str:
        for name in ("receive", "validate"):
            await run_step(name)
        await anchor()
        self.state = "awaiting_review"
        try:
            await workflow.wait_condition(lambda: self.approved or self.cancel, timeout=timedelta(seconds=10))
        except asyncio.TimeoutError:
            self.cancel = True
        if not self.cancel:
            self.state = "charging"
            await run_step("charge")
            await anchor()
        if not self.cancel:
            self.state = "shipping"
            self.told_child = self.address
            self.child = await workflow.start_child_workflow(
                MShip.run, self.address, id=f"ship-{order_id}", task_queue=SHIP_Q
            )
            while not self.child.done():
                await workflow.wait_condition(lambda: self.child.done() or self.address != self.told_child)
                if model() != "la" and not self.child.done() and self.address != self.told_child:
                    self.told_child = self.address
                    try:
                        await self.child.signal(MShip.update_address, self.address)
                    except Exception:
                        pass
            self.dispatched_to = await self.child
            self.state = "dispatched"
            self.address = self.dispatched_to
            await run_step("mark_shipped")
            self.state = "shipped"
        else:
            await run_step("refund")
            await anchor()
            self.state = "cancelled"
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.state

    @workflow.query
    def status(self) -> str:
        return f"{self.state} {self.address}"

    @workflow.update
    async def wait_for_review(self) -> str:
        await workflow.wait_condition(lambda: self.state != "received")
        return self.state

    @workflow.update
    def approve(self) -> str:
        self.approved = True
        return "approved"

    @approve.validator
    def _v_approve(self) -> None:
        if self.state != "awaiting_review" or self.approved or self.cancel:
            raise ApplicationError("not awaiting review")

    @workflow.update
    async def cancel_order(self) -> str:
        self.cancel = True
        await workflow.wait_condition(lambda: self.state in ("cancelled", "dispatched", "shipped"))
        if self.state == "cancelled":
            return "cancelled"
        raise ApplicationError("dispatched first")

    @cancel_order.validator
    def _v_cancel(self) -> None:
        if self.cancel or self.state in ("dispatched", "shipped", "cancelled"):
            raise ApplicationError("too late")

    @workflow.update
    async def update_address(self, address: str) -> str:
        self.address = address
        if model() == "la":  # today's shape: forward, flush through a local activity, then wait
            if self.child is not None and not self.child.done():
                try:
                    await self.child.signal(MShip.update_address, address)
                except Exception:
                    pass
            await workflow.execute_local_activity(flush, address, start_to_close_timeout=timedelta(seconds=5))
        if self.state != "shipping":
            return "address updated"
        await workflow.wait_condition(
            lambda: self.dispatched_to is not None or self.state == "cancelled" or self.address != address
        )
        if self.dispatched_to == address:
            return "dispatched to it"
        raise ApplicationError("too late or superseded")

    @update_address.validator
    def _v_addr(self, address: str) -> None:
        if self.state in ("dispatched", "shipped", "cancelled") or self.cancel:
            raise ApplicationError("too late")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def worker_main(kind: str, address: str) -> None:
    client = await Client.connect(address)
    common = dict(
        activities=[attempt, whole_step, flush],
        workflow_runner=UnsandboxedWorkflowRunner(),
        max_concurrent_local_activities=200,
        max_concurrent_activities=200,
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=1),
    )
    if kind == "orders":
        w = Worker(client, task_queue=ORDERS_Q, workflows=[MOrder], **common)
    else:
        w = Worker(client, task_queue=SHIP_Q, workflows=[MShip], **common)
    await w.run()


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    import psutil

    out = {}
    for name, pid in pids.items():
        t = psutil.Process(pid).cpu_times()
        out[name] = t.user + t.system + t.children_user + t.children_system
    return out


async def drive(address: str, rate: float, duration: float, storm: bool, pids: dict[str, int]) -> dict:
    client = await Client.connect(address)
    lat: list[float] = []
    outcomes: dict[str, int] = {}
    handles = []
    answers = {"ok": 0, "refused": 0, "error": 0}
    tag = f"{os.getpid()}-{random.randrange(10**6)}"

    async def upd(h, name, *args):
        try:
            await h.execute_update(name, *args) if args else await h.execute_update(name)
            answers["ok"] += 1
            return True
        except WorkflowUpdateFailedError:
            answers["refused"] += 1
        except Exception:
            answers["error"] += 1
        return False

    async def one(i: int) -> None:
        oid = f"{tag}-{i}"
        t0 = time.monotonic()
        h = await client.start_workflow(MOrder.run, oid, id=f"order-{oid}", task_queue=ORDERS_Q)
        handles.append(h)
        side = []
        if storm and random.random() < 0.6:

            async def queries():
                for _ in range(40):
                    try:
                        await h.query(MOrder.status)
                    except Exception:
                        pass
                    await asyncio.sleep(0.1)

            side.append(asyncio.create_task(queries()))
        if await h.execute_update(MOrder.wait_for_review) == "awaiting_review":
            if storm and random.random() < 0.15:  # approve and cancel at the same instant
                side.append(asyncio.create_task(upd(h, "cancel_order")))
            await upd(h, "approve")
        if side and storm:

            async def spam():
                ts = []
                for k in range(20):
                    ts.append(asyncio.create_task(upd(h, "update_address", f"addr {k}")))
                    await asyncio.sleep(random.uniform(0.05, 0.1))
                await asyncio.gather(*ts)

            side.append(asyncio.create_task(spam()))
        try:
            res = await asyncio.wait_for(h.result(), 40)
        except Exception as e:
            res = f"not ended ({type(e).__name__})"
        lat.append(time.monotonic() - t0)
        outcomes[res] = outcomes.get(res, 0) + 1
        for t in side:
            t.cancel()

    before = cpu_of(pids)
    tasks = []
    start = time.monotonic()
    n = int(rate * duration)
    for i in range(n):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(i)))
    done = await asyncio.gather(*tasks, return_exceptions=True)
    after = cpu_of(pids)
    errors = [repr(d) for d in done if isinstance(d, BaseException)]
    lat.sort()
    pct = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 3) if lat else None  # noqa: E731
    per = {k: round((after[k] - before[k]) / n, 4) for k in pids}
    per["all stack processes"] = round(sum(per.values()), 4)
    # replay every history (parents and children)
    failures, checked, kinds = 0, 0, {}
    rep = Replayer(workflows=[MOrder, MShip], workflow_runner=UnsandboxedWorkflowRunner())
    ids = [h.id for h in handles] + [h.id.replace("order-", "ship-") for h in handles]
    for wid in ids:
        try:
            hist = await client.get_workflow_handle(wid).fetch_history()
        except Exception:
            continue
        checked += 1
        r = await rep.replay_workflow(hist, raise_on_replay_failure=False)
        if r.replay_failure:
            failures += 1
            key = str(r.replay_failure)
            key = (
                "UpdateMachine"
                if "UpdateMachine" in key
                else ("Nondeterminism" if "ondeterminism" in key else key[:80])
            )
            kinds[key] = kinds.get(key, 0) + 1
    return dict(
        model=model(),
        storm=storm,
        rate=rate,
        duration=duration,
        orders=n,
        errors=len(errors),
        first_errors=errors[:3],
        p50=pct(0.5),
        p90=pct(0.9),
        p99=pct(0.99),
        max=lat[-1] if lat else None,
        within_15s=round(sum(1 for x in lat if x <= 15) / n, 4),
        outcomes=outcomes,
        update_answers=answers,
        cpu_seconds_per_order=per,
        replayed=checked,
        replay_failures=failures,
        failure_kinds=kinds,
    )


def run_main(m: str, storm: bool, rate: float, duration: float, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix="models-"))
    port = free_port()
    address = f"127.0.0.1:{port}"
    temporal = str(Path(sys.executable).with_name("temporal"))
    cmd = [
        temporal,
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--headless",
        "--log-level",
        "warn",
        "--db-filename",
        str(state / "t.db"),
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
        "--dynamic-config-value",
        'history.timerProcessorMaxTimeShift="1ms"',
        "--dynamic-config-value",
        "matching.numTaskqueueReadPartitions=1",
        "--dynamic-config-value",
        "matching.numTaskqueueWritePartitions=1",
        "--dynamic-config-value",
        "system.enableActivityEagerExecution=true",
    ]
    log = open(out / f"{m}-stack.log", "w")
    env = {**os.environ, "STEP_MODEL": m}
    procs = {"dev server": subprocess.Popen(cmd, stdout=log, stderr=log)}
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(1.0)
        for kind in ("orders", "shipping"):
            procs[f"{kind} worker"] = subprocess.Popen(
                [sys.executable, __file__, "worker", kind, "--address", address], stdout=log, stderr=log, env=env
            )
        time.sleep(3.0)
        os.environ["STEP_MODEL"] = m
        report = asyncio.run(drive(address, rate, duration, storm, {k: p.pid for k, p in procs.items()}))
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    (out / f"{m}-{'storm' if storm else 'plain'}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--model", required=True, choices=["la", "anchored", "attempt", "step"])
    r.add_argument("--storm", action="store_true")
    r.add_argument("--rate", type=float, default=8)
    r.add_argument("--duration", type=float, default=60)
    r.add_argument("--out", default="models-out")
    w = sub.add_parser("worker")
    w.add_argument("kind", choices=["orders", "shipping"])
    w.add_argument("--address", required=True)
    a = ap.parse_args()
    if a.cmd == "run":
        sys.exit(run_main(a.model, a.storm, a.rate, a.duration, Path(a.out)))
    asyncio.run(worker_main(a.kind, a.address))
