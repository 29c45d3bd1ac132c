"""Prometheus metrics of the HTTP API, served at ``GET /metrics``.

Three sources, each the truthful owner of its number:

* **Requests** by route template, method and exact status code, and their latency, from
  ``prometheus-fastapi-instrumentator`` (``http_requests_total``, ``http_request_duration_seconds``).
  Route templates (``/orders/{order_id}/status``), not paths, so order ids add no series.
* **Orders started / refused**: counters this API process increments when it answers 201 to a
  start, or refuses one with 429 (load shedding calls ``ORDERS_REFUSED.inc()``). Per process:
  sum them over API replicas.
* **Orders ended, by final state**: read from the app database at scrape time
  (``SELECT state, COUNT(*) FROM orders GROUP BY state``). The orders table is the business
  record the workflows write, and a terminal state is final, so the count only grows: it is a
  counter whatever restarts, whichever replica scraped, and whether or not anyone ever asked
  for an order's status. Every replica reports the same global number: use ``max``, not ``sum``.
  (Counting terminal states the API happens to observe would miss orders nobody queried and
  double-count across replicas; a Temporal visibility count tells Completed/Failed, not
  shipped/cancelled/failed.) Orders still in flight are a gauge by state beside it.

The workers' metrics are the Temporal SDK's own, served by the SDK core on
``ORDERFLOW_METRICS_ADDRESS`` / ``orderflow worker --metrics-port`` (see ``client.runtime``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as http_metrics

from orderflow.db.schema import orders
from orderflow.models import TERMINAL_STATES, OrderState

if TYPE_CHECKING:
    from fastapi import FastAPI

    from orderflow.db.repository import Repository

# Not registered anywhere yet: each app's registry registers them (see instrument_api), so the
# API can be built more than once in a process (tests) without "duplicated timeseries".
ORDERS_STARTED = Counter(
    "orderflow_orders_started", "Orders this API process started (201 from POST /orders/{id}/start).", registry=None
)
ORDERS_REFUSED = Counter(
    "orderflow_orders_refused", "Order starts this API process refused with 429 (load shedding).", registry=None
)

# Seconds; the top buckets cover the 10 s a command may wait for a worker (then 504).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class OrdersByState(Collector):
    """``orderflow_orders_ended_total{state}`` and ``orderflow_orders_open{state}`` from the app database."""

    def __init__(self, repo: Callable[[], Repository | None]) -> None:
        self.repo = repo

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("orderflow_database_up", "1 if the last scrape could count orders in the app database.")
        repo = self.repo()
        try:
            if repo is None:
                raise sa.exc.OperationalError("no repository yet", None, Exception("API not started"))
            with repo.engine.connect() as conn:
                counts: dict[str, int] = dict(
                    conn.execute(sa.select(orders.c.state, sa.func.count()).group_by(orders.c.state)).all()
                )
        except sa.exc.SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        ended = CounterMetricFamily(
            "orderflow_orders_ended", "Orders in a final state, by state (app database).", labels=["state"]
        )
        for state in sorted(s.value for s in TERMINAL_STATES):
            ended.add_metric([state], counts.get(state, 0))
        yield ended
        in_flight = GaugeMetricFamily(
            "orderflow_orders_open", "Orders not yet in a final state, by state (app database).", labels=["state"]
        )
        for state in OrderState:
            if not state.terminal:
                in_flight.add_metric([state.value], counts.get(state.value, 0))
        yield in_flight


def instrument_api(app: FastAPI, repo: Callable[[], Repository | None]) -> CollectorRegistry:
    """Add request metrics to ``app`` and serve everything above at ``GET /metrics`` (no auth:
    counts, no personal data)."""
    registry = CollectorRegistry()
    for collector in (ORDERS_STARTED, ORDERS_REFUSED, OrdersByState(repo)):
        registry.register(collector)
    instrumentator = Instrumentator(
        should_group_status_codes=False,  # 404, 409 and 429 mean different things here
        excluded_handlers=["/metrics"],
        registry=registry,
    )
    instrumentator.add(
        http_metrics.requests(registry=registry),
        http_metrics.latency(buckets=LATENCY_BUCKETS, registry=registry),
    )
    instrumentator.instrument(app).expose(app, include_in_schema=False)
    return registry
