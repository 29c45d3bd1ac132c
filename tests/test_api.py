"""The HTTP API over real HTTP: an `orderflow api` process and two `orderflow worker` processes
against the session's dev server, exactly as they run in production."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from orderflow import order_client
from orderflow.config import Settings
from orderflow.db import migrate
from orderflow.devstack import ProcessStack, free_port, spawn_orderflow

TOKEN = "s3cret-token"


def wait_healthy(base: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"API at {base} did not become healthy")


@pytest.fixture(scope="session")
def api_settings(dev_server, tmp_path_factory) -> Settings:
    db_url = f"sqlite:///{tmp_path_factory.mktemp('api') / 'api.db'}"
    migrate.upgrade(db_url)
    return Settings(
        temporal_address=dev_server.address,
        db_url=db_url,
        log_level="WARNING",
        orders_task_queue="orders-tq-api",
        shipping_task_queue="shipping-tq-api",
    )


@pytest.fixture(scope="session")
async def api(api_settings) -> AsyncIterator[str]:
    """Base URL of an API with its workers, no token: the stack as `orderflow dev` runs it
    (devstack.ProcessStack), on the session's dev server."""
    async with ProcessStack(api_settings, api_port=free_port()) as stack:
        yield stack.api_url


@pytest.fixture(scope="session")
def secured_api(api_settings, api) -> Iterator[str]:
    """A second API process with ORDERFLOW_API_TOKEN set (the first one's workers serve it)."""
    port = free_port()
    proc = spawn_orderflow("api", "--port", str(port), settings=replace(api_settings, api_token=TOKEN))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def http(api) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api, timeout=20) as client:
        yield client


def new_order_id() -> str:
    return f"api-{uuid.uuid4().hex[:10]}"


def wait_status(http: httpx.Client, order_id: str, predicate, timeout: float = 15.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        body = http.get(f"/orders/{order_id}/status").json()
        if predicate(body):
            return body
        time.sleep(0.05)
    raise AssertionError(f"status of {order_id} never matched; last: {body}")


def awaiting_review(body: dict) -> bool:
    return body["status"]["state"] == "awaiting_review"


def closed(body: dict) -> bool:
    return body["temporal_status"] != "RUNNING"


def test_the_assignments_curl_flow(http):
    """start 123/abc123, update the address, approve, query status and state until terminal."""
    started = http.post("/orders/123/start?payment_id=abc123")
    assert started.status_code == 201, started.text
    assert started.json()["workflow_id"] == "order-123"
    wait_status(http, "123", awaiting_review)
    moved = http.post("/orders/123/signals/update-address", json={"new_address": "742 Evergreen Terrace"})
    assert moved.status_code == 202 and moved.json()["result"] == "address updated"
    assert http.post("/orders/123/signals/approve").status_code == 202
    final = wait_status(http, "123", closed)
    assert final["temporal_status"] == "COMPLETED" and final["status"]["state"] == "shipped"
    assert final["source"] == "result" and final["status"]["payment"] == "charged"  # what the ended order recorded
    state = http.get("/orders/123/state").json()
    assert state["order"]["address"] == "742 Evergreen Terrace"
    assert [p["status"] for p in state["payments"]] == ["charged"]
    assert state["events"][-1]["type"] == "order_shipped"
    again = http.post("/orders/123/start?payment_id=abc123")
    assert again.status_code == 409 and "already exists" in again.json()["error"]
    late = http.post("/orders/123/signals/cancel")
    assert late.status_code == 409 and "ended" in late.json()["error"]


def test_the_cancel_flow(http):
    order_id = new_order_id()
    assert http.post(f"/orders/{order_id}/start", params={"payment_id": "pay-" + order_id}).status_code == 201
    wait_status(http, order_id, awaiting_review)
    cancelled = http.post(f"/orders/{order_id}/signals/cancel", json={"reason": "customer asked"})
    assert cancelled.status_code == 202, cancelled.text
    final = wait_status(http, order_id, closed)
    assert final["status"]["state"] == "cancelled" and final["status"]["reason"] == "customer asked"
    assert http.post(f"/orders/{order_id}/signals/approve").status_code == 409
    assert http.post(f"/orders/{order_id}/signals/update-address", json={"new_address": "x"}).status_code == 409


def test_start_with_items_and_address(http):
    order_id = new_order_id()
    body = {"items": [{"sku": "ABC", "qty": 2}, {"sku": "XYZ", "qty": 3}], "address": "1 Main St"}
    assert http.post(f"/orders/{order_id}/start?payment_id=p-{order_id}", json=body).status_code == 201
    wait_status(http, order_id, awaiting_review)
    assert http.post(f"/orders/{order_id}/signals/approve").status_code == 202
    again = http.post(f"/orders/{order_id}/signals/approve")
    assert again.status_code == 409 and "approved" in again.json()["error"] or "review" in again.json()["error"]
    wait_status(http, order_id, closed)
    state = http.get(f"/orders/{order_id}/state").json()
    assert state["payments"][0]["amount"] == 5 and state["order"]["address"] == "1 Main St"


def test_approve_before_review_is_refused(http):
    order_id = new_order_id()
    http.post(f"/orders/{order_id}/start?payment_id=p-{order_id}")
    body = http.get(f"/orders/{order_id}/status").json()
    answer = http.post(f"/orders/{order_id}/signals/approve")
    if body["status"]["state"] != "awaiting_review" and answer.status_code == 409:
        assert "not awaiting review" in answer.json()["error"]
    else:  # the order reached review between the two calls
        assert answer.status_code == 202
    http.post(f"/orders/{order_id}/signals/cancel")


@pytest.mark.parametrize(
    "method, path, kwargs",
    [
        ("post", "/orders/bad%20id/start?payment_id=p", {}),
        ("post", "/orders/ok-id/start", {}),  # payment_id missing
        ("post", "/orders/ok-id/start?payment_id=p", {"json": {"items": [{"sku": "A", "qty": 0}]}}),
        ("post", "/orders/ok-id/start?payment_id=p", {"json": {"items": []}}),  # README: no items is a 422
        (
            "post",
            "/orders/ok-id/start?payment_id=p",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
        ),
        ("post", "/orders/ok-id/signals/update-address", {"json": {"new_address": ""}}),
        ("post", "/orders/ok-id/signals/update-address", {"json": {}}),
        ("get", "/orders?limit=0", {}),
    ],
)
def test_bad_input_is_a_422_with_a_message(http, method, path, kwargs):
    response = getattr(http, method)(path, **kwargs)
    assert response.status_code == 422, response.text
    assert response.json()["error"]


@pytest.mark.parametrize(
    "method, path",
    [
        ("post", "/signals/approve"),
        ("post", "/signals/cancel"),
        ("get", "/status"),
        ("get", "/state"),
    ],
)
def test_unknown_orders_are_404(http, method, path):
    response = getattr(http, method)(f"/orders/{new_order_id()}{path}")
    assert response.status_code == 404 and response.json()["error"]


def test_update_address_of_unknown_order_is_404(http):
    response = http.post(f"/orders/{new_order_id()}/signals/update-address", json={"new_address": "x"})
    assert response.status_code == 404


def test_orders_list_and_health(http):
    order_id = new_order_id()
    http.post(f"/orders/{order_id}/start?payment_id=p-{order_id}")
    wait_status(http, order_id, awaiting_review)
    listed = http.get("/orders", params={"limit": 500}).json()
    assert order_id in {o["id"] for o in listed["orders"]} and listed["limit"] == 500
    assert http.get("/healthz").json() == {"temporal": True, "database": True}
    http.post(f"/orders/{order_id}/signals/cancel")


def test_openapi_docs_are_served(http):
    assert http.get("/docs").status_code == 200
    paths = http.get("/openapi.json").json()["paths"]
    assert "/orders/{order_id}/signals/update-address" in paths


def test_a_token_guards_every_order_endpoint(secured_api):
    """Commands and reads alike (reads answer with addresses and payment ids); health and metrics stay open."""
    order_id = new_order_id()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=secured_api, timeout=20) as http:
        for path in ("start?payment_id=p", "signals/approve", "signals/cancel"):
            response = http.post(f"/orders/{order_id}/{path}")
            assert response.status_code == 401 and "token" in response.json()["error"]
        assert (
            http.post(f"/orders/{order_id}/start?payment_id=p", headers={"Authorization": "Bearer wrong"}).status_code
            == 401
        )
        assert http.post(f"/orders/{order_id}/start?payment_id=p-{order_id}", headers=auth).status_code == 201
        for path in (f"/orders/{order_id}/status", f"/orders/{order_id}/state", "/orders"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                denied = http.get(path, headers=headers)
                assert denied.status_code == 401 and "token" in denied.json()["error"], (path, headers)
                assert order_id not in denied.text
        assert http.get(f"/orders/{order_id}/status", headers=auth).json()["order_id"] == order_id
        assert http.get("/healthz").status_code == 200 and http.get("/metrics").status_code == 200
        assert http.post(f"/orders/{order_id}/signals/cancel", headers=auth).status_code == 202
        end = time.monotonic() + 15  # the order's row exists by the time the cancelled order has ended
        while (
            state := http.get(f"/orders/{order_id}/state", headers=auth)
        ).status_code == 404 and time.monotonic() < end:
            time.sleep(0.1)
        assert state.status_code == 200 and state.json()["order"]["id"] == order_id
        assert order_id in {o["id"] for o in http.get("/orders", params={"limit": 500}, headers=auth).json()["orders"]}


def test_no_generated_input_makes_the_api_fail(api):
    """Schemathesis generates requests for every operation from our own OpenAPI schema
    (8 operations x 50 examples): never a 5xx, and every error answer is JSON with a message."""
    schema = schemathesis.openapi.from_url(f"{api}/openapi.json")
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            nonlocal calls
            calls += 1
            response = case.call(timeout=20)
            label = f"{case.method} {case.formatted_path}"
            assert response.status_code < 500, f"{label}: {response.status_code} {response.text}"
            if response.status_code >= 400:
                assert response.json()["error"], label

        check()
    assert calls >= 300


def test_an_unmigrated_database_is_a_503_not_a_500(tmp_path):
    """A server-side misconfiguration gets a clear answer, not an internal error."""
    from fastapi.testclient import TestClient

    from orderflow.api import create_app

    app = create_app(Settings(db_url=f"sqlite:///{tmp_path / 'empty.db'}"))
    with TestClient(app) as http:
        response = http.get("/orders/abc/state")
        assert response.status_code == 503 and "orderflow db upgrade" in response.json()["error"]
        assert http.get("/orders").status_code == 503


def test_the_review_long_poll_answers_from_the_database_without_an_update(http, api_settings):
    """The reviewer's /review is answered from the row the validate step writes: it sends the
    workflow nothing (no wait_for_review Update in the history), unlike the Update it replaced."""
    import asyncio

    from orderflow.order_client import connect, order_handle

    order_id = new_order_id()
    assert http.post(f"/orders/{order_id}/start", params={"payment_id": "pay-" + order_id}).status_code == 201
    answer = http.get(f"/orders/{order_id}/review")
    assert answer.status_code == 200 and answer.json() == {
        "order_id": order_id,
        "state": "awaiting_review",
        "awaiting_review": True,
    }, answer.text
    assert http.post(f"/orders/{order_id}/signals/approve").status_code == 202
    wait_status(http, order_id, closed)
    after = http.get(f"/orders/{order_id}/review")
    assert after.status_code == 200 and after.json()["awaiting_review"] is False and after.json()["state"] == "shipped"

    async def updates_in_history() -> list[str]:
        handle = order_handle(await connect(api_settings), order_id)
        return [
            e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
            async for e in handle.fetch_history_events()
            if e.HasField("workflow_execution_update_accepted_event_attributes")
        ]

    assert asyncio.run(updates_in_history()) == ["approve"]


def test_review_of_an_unknown_order_is_404(http):
    answer = http.get("/orders/never-started-1/review")
    assert answer.status_code == 404 and "not found" in answer.json()["error"], answer.text


async def test_a_fourth_press_of_the_same_button_is_a_429_and_sends_nothing(tmp_path, monkeypatch):
    """Three address changes of one order may wait for their answers at once (during shipping a
    second change is legitimate); a fourth is answered 429 at once, with nothing sent to Temporal.
    Other orders and other buttons are not affected. Temporal is scripted: each change waits."""
    import asyncio

    from orderflow.api import create_app
    from orderflow.api.routes import temporal

    sent: list[tuple[str, str]] = []
    release = asyncio.Event()

    async def slow_update_address(_client, order_id: str, new_address: str) -> str:
        sent.append((order_id, new_address))
        await release.wait()
        return "address updated"

    async def quick_cancel(_client, order_id: str, _reason: str = "") -> str:
        sent.append((order_id, "cancel"))
        return "order cancelled"

    monkeypatch.setattr(order_client, "update_address", slow_update_address)
    monkeypatch.setattr(order_client, "cancel", quick_cancel)
    db_url = f"sqlite:///{tmp_path / 'presses.db'}"
    migrate.upgrade(db_url)
    app = create_app(Settings(db_url=db_url))
    app.dependency_overrides[temporal] = lambda: None
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:

            def change(order_id: str, n: int):
                body = {"new_address": f"{n} Spam Road"}
                return asyncio.create_task(http.post(f"/orders/{order_id}/signals/update-address", json=body))

            waiting = [change("o1", n) for n in range(3)]
            while len(sent) < 3:
                await asyncio.sleep(0.01)
            fourth = await http.post("/orders/o1/signals/update-address", json={"new_address": "4 Spam Road"})
            assert fourth.status_code == 429 and fourth.headers["retry-after"] == "1", fourth.text
            assert "3 update-address commands for it are still being answered; nothing was sent" in fourth.text
            assert ("o1", "4 Spam Road") not in sent
            other_order = change("o2", 9)  # another order's place is its own
            cancel = await http.post("/orders/o1/signals/cancel", json={"reason": "x"})  # another button
            assert cancel.status_code == 202, cancel.text
            release.set()
            answers = await asyncio.gather(*waiting, other_order)
            assert [a.status_code for a in answers] == [202] * 4
            again = await http.post("/orders/o1/signals/update-address", json={"new_address": "5 Spam Road"})
            assert again.status_code == 202, again.text  # the places were given back
