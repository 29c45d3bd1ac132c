"""Notebook 12's helpers: a task queue's backlog and pollers (``DescribeTaskQueue``), the workers'
own Prometheus metrics scraped live, an orders worker you can stop and start, a timeline of
both; and what exercise 12's check builds (a queue with a real backlog, and an idle one).

What the dev server (``temporal`` CLI 1.9.1, Server 1.32) answers, measured:

* ``report_stats=True`` fills ``stats`` (``approximate_backlog_count``, ``approximate_backlog_age``,
  ``tasks_add_rate``, ``tasks_dispatch_rate``); the server caches them for about 5 s per queue.
* ``include_task_queue_status=True`` (the older API, deprecated) fills ``task_queue_status``,
  whose ``backlog_count_hint`` follows the queue within a second or two.
* ``pollers`` lists the workers that polled the queue lately, with the time of their last poll.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import httpx
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families
from temporalio import activity, workflow
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest, DescribeTaskQueueResponse
from temporalio.client import Client

from orderflow import order_client
from orderflow.config import Settings
from orderflow.devstack import free_port
from orderflow.worker import InProcessWorkers

WORKFLOW = TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
ACTIVITY = TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY


async def describe_task_queue(
    client: Client, queue: str, kind: TaskQueueType.ValueType = WORKFLOW
) -> DescribeTaskQueueResponse:
    """The server's view of one task queue: its backlog (both ways above) and its pollers."""
    return await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=kind,
            report_stats=True,
            include_task_queue_status=True,
        )
    )


def queue_row(answer: DescribeTaskQueueResponse) -> dict[str, Any]:
    """The numbers of a describe_task_queue answer that say whether workers keep up."""
    return {
        "backlog (live hint)": answer.task_queue_status.backlog_count_hint,
        "backlog (stats)": answer.stats.approximate_backlog_count,
        "oldest task waits (s)": round(answer.stats.approximate_backlog_age.ToTimedelta().total_seconds(), 2),
        "tasks added /s": round(answer.stats.tasks_add_rate, 2),
        "tasks dispatched /s": round(answer.stats.tasks_dispatch_rate, 2),
        "pollers": len(answer.pollers),
    }


def pollers_frame(answer: DescribeTaskQueueResponse) -> pd.DataFrame:
    now = time.time()
    return pd.DataFrame(
        [
            # when its last poll reached the server (a long poll: it may then wait up to a minute)
            {"identity": p.identity, "last poll began (s ago)": round(now - p.last_access_time.ToSeconds(), 1)}
            for p in answer.pollers
        ]
    )


# -- the workers' own metrics ---------------------------------------------------------------------


async def scrape(address: str) -> dict[str, float]:
    """One scrape of the SDK's Prometheus endpoint: sample name (with its labels) -> value."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"http://{address}/metrics")).text
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k in ("task_queue", "le"))
            key = f"{s.name}{{{labels}}}" if labels else s.name
            samples[key] = samples.get(key, 0.0) + s.value
    return samples


def metric(samples: dict[str, float], name: str, queue: str | None = None) -> float:
    """The sum of a metric's samples (of one task queue, if named), buckets left out."""
    return sum(
        v
        for k, v in samples.items()
        if k.split("{")[0] == name and "le=" not in k and (queue is None or f"task_queue={queue}" in k)
    )


def metric_names(samples: dict[str, float], prefix: str = "temporal_") -> list[str]:
    return sorted({k.split("{")[0] for k in samples if k.startswith(prefix)})


# -- an orders worker to stop and start, with its metrics ----------------------------------------


@dataclass
class MeteredStack:
    """Both workers on task queues of their own, on a client whose SDK runtime serves Prometheus
    metrics at ``metrics_address``; the orders worker can be stopped and started again."""

    settings: Settings
    client: Client
    shipping: InProcessWorkers
    orders: InProcessWorkers | None = None
    timeline: list[dict[str, Any]] = field(default_factory=list)
    began: float = field(default_factory=time.monotonic)

    @property
    def metrics_address(self) -> str:
        assert self.settings.metrics_address
        return self.settings.metrics_address

    @property
    def queue(self) -> str:
        return self.settings.orders_task_queue

    def start_orders_worker(self) -> None:
        if self.orders is None:
            self.orders = InProcessWorkers(self.client, self.settings, kinds=("orders",)).start()
            self.mark("orders worker started")

    async def stop_orders_worker(self) -> None:
        if self.orders is not None:
            workers, self.orders = self.orders, None
            await workers.stop()
            self.mark("orders worker stopped")

    def mark(self, what: str) -> None:
        self.timeline.append({"seconds": round(time.monotonic() - self.began, 2), "event": what})

    async def sample(self) -> dict[str, Any]:
        """One row: the queue as the server sees it, and the workers' metrics as they report them."""
        answer = await describe_task_queue(self.client, self.queue)
        samples = await scrape(self.metrics_address)
        row = {"seconds": round(time.monotonic() - self.began, 2), **queue_row(answer)}
        for name in SCHEDULE_TO_START:
            row[f"{name}_sum"] = metric(samples, f"{name}_sum", self.queue)
            row[f"{name}_count"] = metric(samples, f"{name}_count", self.queue)
        row["worker running"] = self.orders is not None
        return row

    async def watch(self, seconds: float, every: float = 0.5) -> list[dict[str, Any]]:
        rows = []
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while loop.time() < until:
            rows.append(await self.sample())
            await asyncio.sleep(every)
        return rows

    async def stop(self) -> None:
        await self.stop_orders_worker()
        await self.shipping.stop()


SCHEDULE_TO_START = ("temporal_workflow_task_schedule_to_start_latency_seconds",)


async def start_metered(stack: Any, tag: str = "ops") -> MeteredStack:
    """Both workers for the lesson, on their own queues, metrics on a free port of this host."""
    settings = replace(stack.settings, metrics_address=f"127.0.0.1:{free_port()}").with_own_queues(tag)
    client = await order_client.connect(settings)
    metered = MeteredStack(settings, client, InProcessWorkers(client, settings, kinds=("shipping",)).start())
    metered.start_orders_worker()
    return metered


def timeline_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The samples as a frame, with the mean schedule-to-start latency of the tasks started
    between one sample and the next (from the histogram's running sum and count)."""
    frame = pd.DataFrame(rows)
    name = SCHEDULE_TO_START[0]
    started = frame[f"{name}_count"].diff()
    waited = frame[f"{name}_sum"].diff()
    frame["task waited (s, mean)"] = (waited / started.where(started > 0)).round(3)
    return frame.drop(columns=[f"{name}_sum", f"{name}_count"])


def plot_backlog(frame: pd.DataFrame, timeline: Sequence[dict[str, Any]]):
    """Backlog (live hint and cached stats) and the workflow tasks' schedule-to-start latency."""
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    top.step(frame["seconds"], frame["backlog (live hint)"], where="post", label="backlog_count_hint (live)")
    top.step(frame["seconds"], frame["backlog (stats)"], where="post", label="stats.approximate_backlog_count")
    top.set_ylabel("workflow tasks waiting")
    top.legend(loc="center right", fontsize=8)
    bottom.plot(frame["seconds"], frame["task waited (s, mean)"], "o-", color="tab:red")
    bottom.set_ylabel("schedule-to-start (s)")
    bottom.set_xlabel("seconds")
    for mark in timeline:
        for ax in (top, bottom):
            ax.axvline(mark["seconds"], color="grey", linestyle=":")
        top.annotate(mark["event"], (mark["seconds"], top.get_ylim()[1]), fontsize=8, va="top", rotation=90)
    fig.tight_layout()
    plt.close(fig)
    return fig


# -- exercise 12: a queue with a backlog, and an idle one ---------------------------------------

HOLD = timedelta(seconds=30)
PACKERS: dict[str, asyncio.Event] = {}  # workflow id -> released by the check


@activity.defn(name="ExercisePackParcel")
async def pack_parcel(n: int) -> int:
    """Packs one parcel: held until the check lets it go (or a moment, outside a check)."""
    release = PACKERS.get(activity.info().workflow_id or "")
    if release is None:
        await asyncio.sleep(0.1)
    else:
        await release.wait()
    return n


@workflow.defn(name="ExercisePackingRun", sandboxed=False)
class PackingRun:
    """Packs ``parcels`` parcels at once: one activity each."""

    @workflow.run
    async def run(self, parcels: int) -> int:
        packed = await asyncio.gather(
            *(workflow.execute_activity(pack_parcel, n, start_to_close_timeout=HOLD) for n in range(parcels))
        )
        return len(packed)
