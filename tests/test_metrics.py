"""Metrics endpoints answer with live numbers: two `orderflow worker` processes serving the Temporal
SDK's metrics (one configured by --metrics-port, one by ORDERFLOW_METRICS_ADDRESS) and an
`orderflow api` process serving /metrics, scraped before and after a few real orders."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from orderflow.config import Settings
from orderflow.devstack import ProcessStack, free_port

ORDERS = 3


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a Prometheus text page: (name, labels) -> value."""
    text = httpx.get(url, timeout=5).raise_for_status().text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum of ``name`` over the series whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def wait_until(check, what: str, timeout: float = 30.0):
    end = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except httpx.HTTPError:
            pass
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@dataclass
class Endpoints:
    api: str
    orders_worker: str
    shipping_worker: str
    orders_queue: str


@pytest.fixture(scope="module")
def endpoints(dev_server, tmp_path_factory) -> Iterator[Endpoints]:
    tag = uuid.uuid4().hex[:6]
    settings = Settings(
        temporal_address=dev_server.address,
        db_url=f"sqlite:///{tmp_path_factory.mktemp('metrics') / 'metrics.db'}",
        log_level="WARNING",
    ).with_own_queues(f"m{tag}")
    orders_port, shipping_port, api_port = free_port(), free_port(), free_port()
    # The orders worker is told its port by --metrics-port, the shipping worker by
    # ORDERFLOW_METRICS_ADDRESS (its Settings): both ways a deployment can say it.
    stack = ProcessStack(
        settings,
        api_port=api_port,
        extra_args={"orders": ("--metrics-port", str(orders_port))},
        overrides={"shipping": {"metrics_address": f"127.0.0.1:{shipping_port}"}},
    )
    found = Endpoints(
        stack.api_url or "",
        f"http://127.0.0.1:{orders_port}/metrics",
        f"http://127.0.0.1:{shipping_port}/metrics",
        settings.orders_task_queue,
    )
    try:
        asyncio.run(stack.start())  # migrates the database, waits for the API and both workers
        for url in (found.orders_worker, found.shipping_worker):
            wait_until(lambda url=url: httpx.get(url, timeout=1).status_code == 200, url)
        yield found
    finally:
        stack.stop()


def run_orders(http: httpx.Client, n: int) -> list[str]:
    """Start n orders, approve each when it awaits review, wait until all have ended; their final states."""
    ids = [f"metrics-{uuid.uuid4().hex[:8]}" for _ in range(n)]
    for order_id in ids:
        assert http.post(f"/orders/{order_id}/start", params={"payment_id": f"p-{order_id}"}).status_code == 201
    finals = []
    for order_id in ids:

        def status(order_id=order_id):
            return http.get(f"/orders/{order_id}/status").json()

        body = wait_until(
            lambda: status()["status"]["state"] in ("awaiting_review", "cancelled", "failed") and status(),
            f"{order_id} to await review",
            15,
        )
        if body["status"]["state"] == "awaiting_review":
            assert http.post(f"/orders/{order_id}/signals/approve").status_code in (202, 409)
        finals.append(
            wait_until(
                lambda: (b := status())["temporal_status"] != "RUNNING" and b["status"]["state"],
                f"{order_id} to end",
                20,
            )
        )
    return finals


def test_metrics_move_after_a_few_orders(endpoints):
    with httpx.Client(base_url=endpoints.api, timeout=20) as http:
        api0, orders0, shipping0 = (
            scrape(u) for u in (f"{endpoints.api}/metrics", endpoints.orders_worker, endpoints.shipping_worker)
        )
        finals = run_orders(http, ORDERS)
        assert http.get("/orders/never-started/status").status_code == 404
        api1 = scrape(f"{endpoints.api}/metrics")
    start = {"handler": "/orders/{order_id}/start", "method": "POST"}
    # Requests by route and exact status, and their latencies.
    assert (
        total(api1, "http_requests_total", **start, status="201")
        - total(api0, "http_requests_total", **start, status="201")
        == ORDERS
    )
    assert total(api1, "http_request_duration_seconds_count", **start, status="201") == total(
        api1, "http_requests_total", **start, status="201"
    )
    assert total(api1, "http_request_duration_seconds_sum", **start) > total(
        api0, "http_request_duration_seconds_sum", **start
    )
    assert total(api1, "http_requests_total", handler="/orders/{order_id}/status", method="GET", status="404") >= 1
    assert not [
        labels for (name, labels) in api1 if name == "http_requests_total" and ("handler", "/metrics") in labels
    ]
    # Orders started by this API process, and ended by final state (the database: this test's alone).
    assert total(api1, "orderflow_orders_started_total") - total(api0, "orderflow_orders_started_total") == ORDERS
    for state in ("shipped", "cancelled", "failed"):
        assert total(api1, "orderflow_orders_ended_total", state=state) == finals.count(state), state
    assert total(api1, "orderflow_orders_open") == 0 and total(api1, "orderflow_database_up") == 1
    assert total(api1, "orderflow_orders_refused_total") == 0  # nothing here sheds load
    assert "shipped" in finals  # a real fault injector: all three failing is about a one-in-a-billion event

    # The SDK's own metrics, from each worker process.
    orders1, shipping1 = scrape(endpoints.orders_worker), scrape(endpoints.shipping_worker)
    done = "temporal_workflow_completed_total"
    ours = {"workflow_type": "OrderWorkflow", "task_queue": endpoints.orders_queue}
    assert total(orders1, done, **ours) - total(orders0, done, **ours) == ORDERS
    assert total(shipping1, done, workflow_type="ShippingWorkflow") - total(
        shipping0, done, workflow_type="ShippingWorkflow"
    ) >= finals.count("shipped")
    for before, after in ((orders0, orders1), (shipping0, shipping1)):
        name = "temporal_workflow_task_execution_latency_seconds_count"
        assert total(after, name) > total(before, name)
        la = "temporal_local_activity_execution_latency_seconds_count"
        assert total(after, la) > total(before, la), sorted({n for n, _ in after})
