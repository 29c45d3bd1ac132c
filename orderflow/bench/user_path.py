"""The user-path benchmark (``orderflow bench --api``): the stack as ``orderflow dev`` runs it
(``devstack.ProcessStack``: dev server, API and each worker in its own process), orders
placed over HTTP in an **open loop** (``--rate`` arrivals a second on a fixed schedule, never
waiting for earlier orders), each approved by a reviewer who waits on ``GET /orders/{id}/review``
(a long poll that answers once the order awaits review) and then approves it.

An open loop shows what a closed loop hides: when orders arrive faster than the stack
finishes them, the queue grows, and only admission control (429) keeps admitted orders
inside their budget.

It reports, from Temporal's own timestamps (``describe()``: close time - start time), the
latency percentiles of admitted orders, the share within the budget and shipped, every HTTP
answer by status (429s, 5xx), CPU-seconds per admitted order by process, history events per
order, and the result of replaying every order's and shipment's history on today's code.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from temporalio.client import Client
from tqdm import tqdm

from orderflow import audit, order_client
from orderflow.bench.common import (
    PROCESS_LABELS,
    bench_settings,
    cpu_delta,
    driver_cpu,
    invariants_line,
    machine_reference,
    percentile,
    sample_rss,
)
from orderflow.bench.replay import histories_of, replay_histories, start_to_close, workflow_type
from orderflow.db.repository import Repository
from orderflow.devstack import ProcessStack, free_port
from orderflow.models import ORDER_WORKFLOW


@dataclass
class ApiOrder:
    order_id: str
    offset: float  # seconds after the first arrival when it was placed
    start_code: int | None  # HTTP status of the start (None: no answer at all)
    state: str | None = None  # terminal state, for admitted orders
    seconds: float | None = None  # workflow start -> close, from Temporal's own timestamps


@dataclass
class ApiReport:
    label: str
    mode: str
    rate: float
    duration: float
    max_in_flight: int
    db: str
    offered: int
    admitted: int
    refused_429: int
    http_5xx: int
    http_statuses: dict[str, int]
    transport_errors: int
    wall_seconds: float
    throughput_per_s: float
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None
    within_budget: float | None  # share of admitted orders that ended inside the budget
    shipped: float | None  # share of admitted orders that shipped
    outcomes: dict[str, float]
    cpu_seconds_per_order: dict[str, float]
    peak_rss_mb: dict[str, float]
    history_events_per_order: dict[str, float]
    machine_reference_cpu_s: float  # bench.common.machine_reference(): CPU figures scale with it
    replay: dict
    invariant_violations: list[str]
    notes: list[str] = field(default_factory=list)


class _Tally:
    """Every HTTP answer the clients got, by status code."""

    def __init__(self) -> None:
        self.codes: Counter[int] = Counter()
        self.transport_errors = 0

    async def call(self, request) -> httpx.Response | None:
        try:
            response = await request
        except httpx.HTTPError:
            self.transport_errors += 1
            return None
        self.codes[response.status_code] += 1
        return response


async def _customer_and_reviewer(
    http: httpx.AsyncClient, client: Client, tally: _Tally, order: ApiOrder, bar: tqdm
) -> None:
    """Place one order; if admitted, approve it once /status says awaiting_review; wait for its end."""
    try:
        answer = await tally.call(
            http.post(f"/orders/{order.order_id}/start", params={"payment_id": f"pay-{order.order_id}"})
        )
        order.start_code = answer.status_code if answer is not None else None
        if order.start_code != 201:
            return
        # The reviewer: a long poll that answers once the order awaits review, then the approval.
        answer = await tally.call(http.get(f"/orders/{order.order_id}/review"))
        if answer is not None and answer.status_code == 200 and answer.json()["awaiting_review"]:
            await tally.call(http.post(f"/orders/{order.order_id}/signals/approve"))
        handle = order_client.order_handle(client, order.order_id)
        try:  # the measurement, not the user: Temporal says when and how the order ended
            order.state = (await handle.result()).state.value
        except Exception:  # noqa: BLE001 - a failed or terminated workflow is an outcome to count
            order.state = "workflow_failed"
        # How long it took is read from its history after the run (run_api): a describe here
        # would add a server call per order inside the CPU measurement.
    finally:
        bar.update()


async def run_api(
    rate: float,
    duration: float,
    db_url: str | None,
    workdir: Path,
    budget: float,
    max_in_flight: int | None,
    progress: bool = True,
) -> tuple[ApiReport, list[ApiOrder]]:
    workdir.mkdir(parents=True, exist_ok=True)
    reference = machine_reference()
    db_url = db_url or f"sqlite:///{workdir / 'api.db'}"
    extra = {"max_in_flight": max_in_flight} if max_in_flight is not None else {}
    settings = bench_settings(db_url, **extra)
    suffix = settings.orders_task_queue.rsplit("-", 1)[-1]
    offered = max(1, round(rate * duration))
    runs = [ApiOrder(f"api-{suffix}-{i}", i / rate, None) for i in range(offered)]
    tally = _Tally()
    peaks: dict[str, float] = {}
    stop = asyncio.Event()
    with (workdir / "stack.log").open("w") as log:
        # The dev server keeps its state in a file, as `orderflow dev` does (not in memory).
        for stale in workdir.glob("temporal.db*"):
            stale.unlink()
        async with ProcessStack(settings, state_dir=workdir, api_port=free_port(), logs=log) as stack:
            client = await order_client.connect(settings)
            sampler = asyncio.create_task(sample_rss(stack, peaks, stop))
            bar = tqdm(total=offered, desc=f"{rate:g}/s over HTTP", unit="order", disable=not progress)
            assert stack.api_url is not None  # started with an api_port
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
            async with httpx.AsyncClient(base_url=stack.api_url, timeout=60, limits=limits) as http:
                cpu_before, driver_before = stack.cpu_seconds(), driver_cpu()
                began = time.monotonic()
                tasks = []
                for order in runs:  # the open loop: arrivals on a schedule, never gated on completions
                    await asyncio.sleep(max(0.0, began + order.offset - time.monotonic()))
                    tasks.append(asyncio.create_task(_customer_and_reviewer(http, client, tally, order, bar)))
                await asyncio.gather(*tasks)
                wall = time.monotonic() - began
                cpu = cpu_delta(cpu_before, stack.cpu_seconds())
                driver = driver_cpu() - driver_before
            bar.close()
            stop.set()
            await sampler
            admitted = [r.order_id for r in runs if r.start_code == 201]
            await asyncio.sleep(0.5)  # let visibility list the last shipments
            histories = await histories_of(client, stack, admitted)
            for order, history in zip([r for r in runs if r.start_code == 201], histories, strict=False):
                order.seconds = start_to_close(history)
    replay = await replay_histories(histories, client.data_converter)

    repo = Repository.from_url(db_url)
    violations = audit.check_invariants(repo, admitted)
    repo.engine.dispose()

    done = [r for r in runs if r.start_code == 201]
    seconds = [r.seconds for r in done if r.seconds is not None]
    n = len(done)
    order_type = ORDER_WORKFLOW
    order_events = [len(h.events) for h in histories if workflow_type(h) == order_type]
    child_events = sum(len(h.events) for h in histories if workflow_type(h) != order_type)
    per_order = {PROCESS_LABELS.get(k, k): round(v / n, 4) for k, v in cpu.items()} if n else {}
    if n:
        per_order["all stack processes"] = round(sum(cpu.values()) / n, 4)
        per_order["bench driver (not in the stack)"] = round(driver / n, 4)

    def share(predicate) -> float | None:
        return round(sum(1 for r in done if predicate(r)) / n, 4) if n else None

    def pct(q: float) -> float | None:
        return round(percentile(seconds, q), 3) if seconds else None

    report = ApiReport(
        label="orderflow over HTTP",
        mode="api",
        rate=rate,
        duration=duration,
        max_in_flight=settings.max_in_flight,
        db=db_url.split(":")[0],
        offered=offered,
        admitted=n,
        refused_429=tally.codes[429],
        http_5xx=sum(c for code, c in tally.codes.items() if code >= 500),
        http_statuses={str(code): c for code, c in sorted(tally.codes.items())},
        transport_errors=tally.transport_errors,
        wall_seconds=round(wall, 2),
        throughput_per_s=round(n / wall, 2),
        p50=pct(0.5),
        p90=pct(0.9),
        p99=pct(0.99),
        max=round(max(seconds), 3) if seconds else None,
        within_budget=share(lambda r: r.seconds is not None and r.seconds < budget),
        shipped=share(lambda r: r.state == "shipped"),
        outcomes={s: round(sum(r.state == s for r in done) / n, 4) for s in sorted({r.state for r in done if r.state})},
        cpu_seconds_per_order=per_order,
        peak_rss_mb={PROCESS_LABELS.get(k, k): round(v, 1) for k, v in peaks.items()},
        history_events_per_order={
            "order": round(sum(order_events) / len(order_events), 1) if order_events else 0.0,
            "shipping (all shipments of an order)": round(child_events / n, 1) if n else 0.0,
        },
        machine_reference_cpu_s=reference,
        replay=replay,
        invariant_violations=violations,
        notes=[
            "CPU is measured from the first arrival to the last order's end, divided by admitted orders; "
            "the reviewer's long poll (GET /orders/{id}/review) and approval are part of the API's share.",
            f"stack logs: {workdir / 'stack.log'}",
        ],
    )
    return report, runs


def render_api(report: ApiReport, budget: float) -> str:
    def s(value) -> str:
        return "n/a" if value is None else f"{value} s"

    def pct(value) -> str:
        return "n/a" if value is None else f"{value:.1%}"

    return "\n".join(
        [
            f"== {report.label}: open loop, {report.rate:g} orders/s for {report.duration:g} s "
            f"(max in flight {report.max_in_flight}), {report.db}",
            f"offered {report.offered}, admitted {report.admitted}, refused 429: {report.refused_429}, "
            f"HTTP 5xx: {report.http_5xx}, no answer: {report.transport_errors}",
            f"admitted, workflow start -> close: p50 {s(report.p50)}  p90 {s(report.p90)}  p99 {s(report.p99)}  "
            f"max {s(report.max)}",
            f"within {budget:g} s: {pct(report.within_budget)}   shipped: {pct(report.shipped)}   outcomes: "
            + ", ".join(f"{k} {v:.1%}" for k, v in report.outcomes.items()),
            f"throughput: {report.throughput_per_s} admitted orders/s over {report.wall_seconds} s",
            "CPU-seconds per order: " + ", ".join(f"{k} {v}" for k, v in report.cpu_seconds_per_order.items()),
            f"machine reference: {report.machine_reference_cpu_s} CPU-s for a fixed Python loop "
            "(CPU figures scale with it; see bench.common.machine_reference)",
            "history events per order: " + ", ".join(f"{k} {v}" for k, v in report.history_events_per_order.items()),
            f"replay: {report.replay['failures']} failures in {report.replay['histories']} histories",
            invariants_line(report.invariant_violations),
        ]
    )


def plot_api(report: ApiReport, runs: list[ApiOrder], budget: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in runs if r.seconds is not None]
    refused = [r for r in runs if r.start_code == 429]
    fig, (hist, timeline) = plt.subplots(1, 2, figsize=(12, 4))
    times = [r.seconds for r in done if r.seconds is not None]
    top = max([budget, *times]) * 1.05
    hist.hist(
        times,
        bins=[top * i / 60 for i in range(61)],
        alpha=0.7,
        label=f"admitted (p99 {report.p99} s)",
    )
    hist.axvline(budget, color="red", linestyle="--", label=f"{budget:g} s budget")
    hist.set_xlabel("seconds from start to terminal state")
    hist.set_ylabel("orders")
    hist.legend()
    for state in sorted({r.state for r in done if r.state is not None}):
        mine = [r for r in done if r.state == state]
        timeline.scatter([r.offset for r in mine], [r.seconds for r in mine], s=8, label=state)
    if refused:
        timeline.scatter(
            [r.offset for r in refused], [0] * len(refused), marker="|", color="black", label=f"429 ({len(refused)})"
        )
    timeline.axhline(budget, color="red", linestyle="--")
    timeline.set_xlabel(f"arrival (s), {report.rate:g} orders/s")
    timeline.set_ylabel("seconds to terminal state")
    timeline.legend(fontsize="small")
    fig.suptitle(
        f"orderflow over HTTP: offered {report.offered}, admitted {report.admitted}, HTTP 5xx {report.http_5xx}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main_api(
    rate: float,
    duration: float,
    db_url: str | None,
    out: Path,
    budget: float,
    max_in_flight: int | None,
    progress: bool,
) -> int:
    report, runs = asyncio.run(run_api(rate, duration, db_url, out, budget, max_in_flight, progress))
    print(render_api(report, budget), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps([asdict(report)], indent=2))
    plot_api(report, runs, budget, out / "bench.png")
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
    healthy = not report.invariant_violations and report.http_5xx == 0 and report.replay["failures"] == 0
    return 0 if healthy else 1
