"""The 15-second benchmark: N orders at concurrency C with the unmodified fault injector.
(``--api``: the user path instead, over HTTP in an open loop; see ``orderflow.bench.user_path``.)

Starts its own Temporal dev server and worker processes (as ``orderflow worker`` runs
them), approves each order the moment it awaits review, and reports latency, the
share within 15 s, throughput, attempts and timeouts per step, worker memory and the
database invariants. ``--baseline`` also runs the same orders with the policies a
typical implementation uses, on a dev server with default settings, for comparison.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from orderflow import audit, order_client
from orderflow.bench.common import (
    P_FAIL,
    P_HANG,
    PROCESS_LABELS,
    bench_settings,
    cpu_delta,
    driver_cpu,
    invariants_line,
    percentile,
    sample_rss,
)
from orderflow.db.repository import Repository
from orderflow.devstack import ProcessStack
from orderflow.models import StepPolicy


@dataclass
class OrderRun:
    order_id: str
    state: str
    seconds: float  # workflow start to close, from Temporal's own timestamps
    client_seconds: float  # start request to result, as the caller sees it


@dataclass
class Report:
    label: str
    orders: int
    concurrency: int
    policy: dict
    fast_timers: bool
    db: str
    wall_seconds: float
    throughput_per_s: float
    p50: float
    p90: float
    p99: float
    max: float
    within_budget: float
    outcomes: dict[str, float]
    steps: dict[str, dict[str, int]]
    worker_peak_rss_mb: dict[str, float]
    cpu_ms_per_order: dict[str, float]
    invariant_violations: list[str]
    floor: dict[str, float] = field(default_factory=dict)


def timeout_floor(policy: StepPolicy, samples: int = 20_000, seed: int = 7) -> dict[str, float]:
    """Seconds an order must spend waiting out hung attempts alone (Monte Carlo of the fault model).

    Each hung attempt costs the attempt timeout; failures and successes cost ~0 here, as do
    Temporal, the database and the reviewer. The gap to the measurement is that overhead.
    """
    rng = random.Random(seed)

    def hangs_until_success(max_attempts: int | None = None) -> tuple[int, bool]:
        hung = attempts = 0
        while max_attempts is None or attempts < max_attempts:
            attempts += 1
            draw = rng.random()
            if draw >= P_FAIL + P_HANG:
                return hung, True
            hung += draw >= P_FAIL
        return hung, False

    totals = []
    for _ in range(samples):
        hung = sum(hangs_until_success()[0] for _ in ("receive", "validate", "charge", "mark_shipped"))
        for _shipment in range(policy.shipping_attempts):
            hung += hangs_until_success()[0]  # prepare
            more, ok = hangs_until_success(policy.dispatch_attempts)
            hung += more
            if ok:
                break
        totals.append(hung * policy.attempt_timeout_seconds)
    return {"mean": statistics.fmean(totals), "p50": percentile(totals, 0.5), "p99": percentile(totals, 0.99)}


async def run(
    label: str,
    n: int,
    concurrency: int,
    policy: StepPolicy,
    fast_timers: bool,
    db_url: str | None,
    workdir: Path,
    budget: float,
    progress: bool = True,
) -> tuple[Report, list[OrderRun]]:
    """The closed loop: ``n`` orders through the Temporal client, at most ``concurrency`` at once."""
    workdir.mkdir(parents=True, exist_ok=True)
    db_url = db_url or f"sqlite:///{workdir / f'{label}.db'}"
    settings = bench_settings(db_url)
    suffix = settings.orders_task_queue.rsplit("-", 1)[-1]
    peaks: dict[str, float] = {}
    stop = asyncio.Event()
    # Worker processes as `orderflow worker` runs them; no API in this mode.
    async with ProcessStack(settings, fast_timers=fast_timers) as stack:
        client = await order_client.connect(settings)
        sampler = asyncio.create_task(sample_rss(stack, peaks, stop))
        bar = tqdm(total=n, desc=label, unit="order", disable=not progress)
        requests = [
            replace(
                order_client.new_order(f"bench-{suffix}-{i}", f"pay-bench-{suffix}-{i}"),
                policy=policy,
                budget_seconds=budget,
            )
            for i in range(n)
        ]
        cpu_before, driver_before = stack.cpu_seconds(), driver_cpu()
        began = time.monotonic()
        placed = await order_client.place_orders(
            client, requests, settings, concurrency=concurrency, on_done=lambda _: bar.update()
        )
        runs = [OrderRun(p.order_id, p.state, p.seconds, p.client_seconds) for p in placed]
        wall = time.monotonic() - began
        cpu = cpu_delta(cpu_before, stack.cpu_seconds())
        cpu["bench driver"] = driver_cpu() - driver_before
        bar.close()
        stop.set()
        await sampler

    repo = Repository.from_url(db_url)
    ids = [r.order_id for r in runs]
    stats = audit.retry_stats(repo, ids)
    violations = audit.check_invariants(repo, ids)
    repo.engine.dispose()
    seconds = [r.seconds for r in runs]
    report = Report(
        label=label,
        orders=n,
        concurrency=concurrency,
        policy=asdict(policy),
        fast_timers=fast_timers,
        db=db_url.split(":")[0],
        wall_seconds=round(wall, 2),
        throughput_per_s=round(n / wall, 2),
        p50=round(percentile(seconds, 0.5), 3),
        p90=round(percentile(seconds, 0.9), 3),
        p99=round(percentile(seconds, 0.99), 3),
        max=round(max(seconds), 3),
        within_budget=round(sum(s < budget for s in seconds) / n, 4),
        outcomes={
            state: round(sum(r.state == state for r in runs) / n, 4) for state in sorted({r.state for r in runs})
        },
        steps={step: {k: int(v) for k, v in row.items()} for step, row in stats.to_dict("index").items()},
        worker_peak_rss_mb={PROCESS_LABELS.get(k, k): round(v, 1) for k, v in peaks.items()},
        cpu_ms_per_order={PROCESS_LABELS.get(k, k): round(1000 * v / n, 1) for k, v in cpu.items()},
        invariant_violations=violations,
        floor={k: round(v, 3) for k, v in timeout_floor(policy).items()},
    )
    return report, runs


def render(report: Report, budget: float) -> str:
    lines = [
        f"== {report.label}: {report.orders} orders, concurrency {report.concurrency}, "
        f"{'local' if report.policy['local_activities'] else 'regular'} activities, "
        f"attempt timeout {report.policy['attempt_timeout_seconds']} s, fast timers {report.fast_timers}, {report.db}",
        f"end to end (workflow start -> close): p50 {report.p50} s  p90 {report.p90} s  p99 {report.p99} s  max {report.max} s",
        f"within {budget:g} s: {report.within_budget:.1%}   outcomes: "
        + ", ".join(f"{k} {v:.1%}" for k, v in report.outcomes.items()),
        f"throughput: {report.throughput_per_s} orders/s over {report.wall_seconds} s",
        f"floor from hung attempts alone: mean {report.floor['mean']} s, p50 {report.floor['p50']} s, "
        f"p99 {report.floor['p99']} s",
        "attempt failures / timeouts per step: "
        + ", ".join(f"{s} {v['failures']}/{v['timeouts']}" for s, v in report.steps.items()),
        "worker peak RSS: " + ", ".join(f"{k} {v} MB" for k, v in report.worker_peak_rss_mb.items()),
        "CPU per order: " + ", ".join(f"{k} {v} ms" for k, v in report.cpu_ms_per_order.items()),
        invariants_line(report.invariant_violations),
    ]
    return "\n".join(lines)


def plot(results: list[tuple[Report, list[OrderRun]]], budget: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for report, runs in results:
        ax.hist([r.seconds for r in runs], bins=40, alpha=0.6, label=f"{report.label} (p99 {report.p99} s)")
    ax.axvline(budget, color="red", linestyle="--", label=f"{budget:g} s budget")
    ax.set_xlabel("seconds from start to terminal state")
    ax.set_ylabel("orders")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
