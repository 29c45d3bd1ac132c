"""What both benchmarks and the storm share: settings for a run, CPU and memory sampling,
percentiles, the machine reference and the invariants line."""

from __future__ import annotations

import asyncio
import time

import psutil

from orderflow.config import Settings
from orderflow.devstack import ProcessStack, free_port

FLAKY_STEPS = ("receive", "validate", "charge", "prepare", "dispatch", "mark_shipped")
P_FAIL, P_HANG = 0.33, 0.34  # flaky_call: < 0.33 fails, < 0.67 hangs, else succeeds
PROCESS_LABELS = {"temporal": "dev server", "orders": "orders worker", "shipping": "shipping worker", "api": "API"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sample_rss(stack: ProcessStack, peaks: dict[str, float], stop: asyncio.Event) -> None:
    handles = {}
    for name, pid in stack.pids().items():
        try:
            handles[name] = psutil.Process(pid)
        except psutil.Error:
            pass
    while not stop.is_set():
        for name, proc in handles.items():
            try:
                peaks[name] = max(peaks.get(name, 0.0), proc.memory_info().rss / 2**20)
            except psutil.Error:
                pass
        await asyncio.sleep(0.2)


def bench_settings(db_url: str, **kw) -> Settings:
    """A fresh dev server port and task queues of their own for one benchmark run."""
    return Settings(
        temporal_address=f"127.0.0.1:{free_port()}", db_url=db_url, log_level="WARNING", **kw
    ).with_own_queues()


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


def machine_reference() -> float:
    """CPU-seconds of a fixed pure-Python workload (best of three), taken before a run.

    CPU per order depends on the machine as much as on the code
    (docs/performance.md#how-the-figures-were-measured): quote this figure with CPU numbers to compare them.
    """
    best = float("inf")
    for _ in range(3):
        began = time.process_time()
        total = 0
        for i in range(5_000_000):
            total += i
        best = min(best, time.process_time() - began)
    return round(best, 3)


def driver_cpu() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def invariants_line(violations: list[str]) -> str:
    """The report line both benchmarks end with: all hold, or the first few broken."""
    if not violations:
        return "invariants: all hold"
    return f"invariants: {len(violations)} broken: " + "; ".join(violations[:5])
