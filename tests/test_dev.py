"""`orderflow dev` as a user runs it: one command, each part in its own process, one log
stream, a dead part restarted, and nothing left behind after Ctrl-C (SIGINT), within 3 s, or
after the command itself is killed."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import psutil
import pytest

from orderflow.cli import dev_settings
from orderflow.config import Settings
from orderflow.devstack import RESTART_PAUSES, free_port, port_open

READY = "Ctrl-C stops everything."


@contextmanager
def running_dev(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Path, Path]]:
    """`orderflow dev` with its output in files; killed at the end if the test left it running."""
    env = {k: v for k, v in os.environ.items() if k not in ("ORDERFLOW_DB_URL", "TEMPORAL_ADDRESS")}
    env["ORDERFLOW_LOG_LEVEL"] = "INFO"
    out, err = tmp_path / "dev.out", tmp_path / "dev.err"
    ports = {"temporal": free_port(), "ui": free_port(), "api": free_port()}
    (tmp_path / "ports.json").write_text(json.dumps(ports))
    command = [
        sys.executable,
        "-m",
        "orderflow.cli",
        "dev",
        "--state-dir",
        str(tmp_path / "state"),
        "--port",
        str(ports["temporal"]),
        "--ui-port",
        str(ports["ui"]),
        "--api-port",
        str(ports["api"]),
    ]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env)
    try:
        yield proc, out, err
    finally:
        if proc.poll() is None:
            # Its children by SIGKILL too: one a test froze (SIGSTOP) would not heed its SIGTERM.
            children = psutil.Process(proc.pid).children(recursive=True)
            proc.kill()
            proc.wait()
            for child in children:
                with suppress(psutil.NoSuchProcess):
                    child.kill()


def wait_banner(proc: subprocess.Popen, out: Path, err: Path, timeout: float = 90.0) -> dict:
    """The banner's API URL, database URL and process ids, once `orderflow dev` says it is up."""
    end = time.monotonic() + timeout
    while READY not in out.read_text():
        assert proc.poll() is None, f"orderflow dev exited ({proc.returncode}): {err.read_text()[-2000:]}"
        assert time.monotonic() < end, f"no banner within {timeout} s: {out.read_text()} {err.read_text()[-2000:]}"
        time.sleep(0.2)
    banner = out.read_text()
    return {
        "api": re.search(r"HTTP API\s+(\S+)", banner).group(1),
        "db": re.search(r"database\s+(\S+)", banner).group(1),
        "pids": {name: int(pid) for name, pid in re.findall(r"(\w+) pid (\d+)", banner)},
    }


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids, timeout: float = 20.0) -> list[int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not all(gone(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if not gone(p)]


def records(err: Path) -> list[dict]:
    return [json.loads(line) for line in err.read_text().splitlines() if line.strip()]


def wait_record(err: Path, matches: Callable[[dict], bool], timeout: float = 30.0) -> dict:
    """The first log line that ``matches``, once `orderflow dev` has written it."""
    end = time.monotonic() + timeout
    while True:
        found = [r for r in records(err) if matches(r)]
        if found:
            return found[0]
        assert time.monotonic() < end, f"no such log line within {timeout} s: {err.read_text()[-3000:]}"
        time.sleep(0.1)


def event(proc: str, name: str) -> Callable[[dict], bool]:
    return lambda r: r.get("proc") == proc and r.get("event") == name


def wait_healthy(http: httpx.Client, timeout: float = 30.0) -> None:
    """The API answers and reaches Temporal and its database (after a restart of either)."""
    end = time.monotonic() + timeout
    while True:
        try:
            if http.get("/healthz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < end, f"the API was not healthy within {timeout} s"
        time.sleep(0.1)


def wait_state(http: httpx.Client, order_id: str, state: str, timeout: float = 20.0) -> dict:
    end = time.monotonic() + timeout
    while (body := http.get(f"/orders/{order_id}/status").json())["status"].get("state") != state:
        assert body["temporal_status"] == "RUNNING" and time.monotonic() < end, body
        time.sleep(0.05)
    return body


def ship(http: httpx.Client, order_id: str, started: bool = False) -> None:
    """Start the order (unless ``started``), approve it at review, and see it shipped."""
    if not started:
        assert http.post(f"/orders/{order_id}/start", params={"payment_id": f"pay-{order_id}"}).status_code == 201
    wait_state(http, order_id, "awaiting_review")
    assert http.post(f"/orders/{order_id}/signals/approve").status_code == 202
    end = time.monotonic() + 20
    while (body := http.get(f"/orders/{order_id}/status").json())["temporal_status"] == "RUNNING":
        assert time.monotonic() < end, body
        time.sleep(0.1)
    assert body["temporal_status"] == "COMPLETED" and body["status"]["state"] == "shipped", body


@contextmanager
def squatting(port: int, timeout: float = 0.5) -> Iterator[socket.socket]:
    """Listen on ``port`` as soon as it is free: a killed process's listener outlives it by a few ms."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        end = time.monotonic() + timeout
        while True:
            try:
                sock.bind(("127.0.0.1", port))
                break
            except OSError:
                assert time.monotonic() < end, f"port {port} still taken after {timeout} s"
                time.sleep(0.005)
        sock.listen()
        yield sock


def children_of(proc: subprocess.Popen) -> set[int]:
    return {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}


def test_dev_runs_each_part_in_its_own_process_and_ctrl_c_stops_them_all(tmp_path):
    with running_dev(tmp_path) as (proc, out, err):
        up = wait_banner(proc, out, err)
        pids = up["pids"]
        assert set(pids) == {"temporal", "api", "orders", "shipping"}
        assert len(set(pids.values())) == 4 and proc.pid not in pids.values()
        children = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        assert set(pids.values()) <= children

        # --state-dir holds the app database too (ORDERFLOW_DB_URL is not set).
        db_file = tmp_path / "state" / "orderflow.db"
        assert up["db"] == f"sqlite:///{db_file}"

        with httpx.Client(base_url=up["api"], timeout=20) as http:
            assert http.post("/orders/dev-1/start", params={"payment_id": "pay-dev-1"}).status_code == 201
            end = time.monotonic() + 15
            while (body := http.get("/orders/dev-1/status").json())["status"]["state"] != "awaiting_review":
                assert body["temporal_status"] == "RUNNING" and time.monotonic() < end, body
                time.sleep(0.05)
            assert http.post("/orders/dev-1/signals/approve").status_code == 202
            while (body := http.get("/orders/dev-1/status").json())["temporal_status"] == "RUNNING":
                assert time.monotonic() < end + 15, body
                time.sleep(0.1)
        assert body["temporal_status"] == "COMPLETED" and body["status"]["state"] == "shipped", body
        with sqlite3.connect(db_file) as conn:
            assert conn.execute("SELECT state FROM orders WHERE id = 'dev-1'").fetchone() == ("shipped",)

        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    assert wait_gone(pids.values()) == [], "a child of orderflow dev outlived it"
    assert "orderflow dev stopped" in out.read_text()

    # One stream: every line is JSON naming its process; all four speak in it.
    records = [json.loads(line) for line in err.read_text().splitlines() if line.strip()]
    assert records and all(isinstance(r.get("proc"), str) for r in records)
    assert {"temporal", "api", "orders", "shipping"} <= {r["proc"] for r in records}
    assert any(
        r["proc"] == "orders" and r.get("order_id") == "dev-1" and r.get("event") == "order_started" for r in records
    )


def test_children_die_even_when_orderflow_dev_is_killed(tmp_path):
    """SIGKILL gives `orderflow dev` no chance to clean up: the children end on their own."""
    with running_dev(tmp_path) as (proc, out, err):
        pids = wait_banner(proc, out, err)["pids"]
        proc.kill()
        proc.wait()
    assert wait_gone(pids.values()) == [], "a child outlived a killed orderflow dev"


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, "sqlite:///{state}/orderflow.db"),
        ({"ORDERFLOW_DB_URL": "mysql+pymysql://root@127.0.0.1:3306/x"}, "mysql+pymysql://root@127.0.0.1:3306/x"),
    ],
)
def test_state_dir_moves_the_app_database_unless_a_url_is_given(tmp_path, env, expected):
    args = argparse.Namespace(port=7999, state_dir=str(tmp_path))
    settings = dev_settings(args, Settings(db_url=env.get("ORDERFLOW_DB_URL", Settings.db_url)), env=env)
    assert settings.db_url == expected.format(state=tmp_path.resolve())
    assert settings.temporal_address == "127.0.0.1:7999"


def test_killed_workers_and_api_are_restarted_and_orders_still_ship(tmp_path):
    with running_dev(tmp_path) as (proc, out, err):
        up = wait_banner(proc, out, err)
        killed = {name: up["pids"][name] for name in ("orders", "shipping", "api")}
        for pid in killed.values():
            os.kill(pid, signal.SIGKILL)

        for name, old_pid in killed.items():
            line = wait_record(err, event(name, "restarted"))
            assert line["previous_pid"] == old_pid and line["signal"] == "SIGKILL" and line["exit_code"] == -9, line
            assert "SIGKILL" in line["msg"] and "restarted" in line["msg"], line
            assert line["pid"] != old_pid and line["pid"] in children_of(proc) and gone(old_pid), line
        with httpx.Client(base_url=up["api"], timeout=20) as http:
            wait_healthy(http)  # the API again, on the same port
            ship(http, "after-kill")
        assert proc.poll() is None
    lines = records(err)
    for name in killed:  # exactly one line each, and no restart of what was not killed
        assert len([r for r in lines if r["proc"] == name and r.get("event") == "restarted"]) == 1
    assert not [r for r in lines if r["proc"] == "temporal" and r.get("event") == "restarted"]


def test_a_killed_dev_server_restarts_on_its_state_file_and_orders_carry_on(tmp_path):
    """Hung first (SIGSTOP) until both workers say it went away, then killed (SIGKILL): a server
    restarted within half a second can pass between a worker's once-a-second checks."""
    with running_dev(tmp_path) as (proc, out, err):
        up = wait_banner(proc, out, err)
        old_pid = up["pids"]["temporal"]
        with httpx.Client(base_url=up["api"], timeout=20) as http:
            assert http.post("/orders/before/start", params={"payment_id": "pay-before"}).status_code == 201
            wait_state(http, "before", "awaiting_review")
            os.kill(old_pid, signal.SIGSTOP)
            for worker in ("orders", "shipping"):
                wait_record(err, event(worker, "temporal_away"), timeout=10)
            os.kill(old_pid, signal.SIGKILL)

            line = wait_record(err, event("temporal", "restarted"))
            assert line["previous_pid"] == old_pid and line["signal"] == "SIGKILL", line
            assert str(tmp_path / "state" / "temporal.db") in line["msg"], line
            assert line["pid"] in children_of(proc), line
            wait_healthy(http)
            # The order started before the kill is still known, where it was, and carries on.
            body = http.get("/orders/before/status").json()
            assert body["temporal_status"] == "RUNNING" and body["status"]["state"] == "awaiting_review", body
            ship(http, "before", started=True)
            ship(http, "after")
        for worker in ("orders", "shipping"):  # each said once that the server went away, then back
            wait_record(err, event(worker, "temporal_back"))
        assert proc.poll() is None
    lines = records(err)
    for worker in ("orders", "shipping"):
        # Above INFO, or not JSON at all (the SDK core's own output): only the one line.
        loud = [r for r in lines if r["proc"] == worker and r.get("level", "raw") not in ("INFO", "DEBUG")]
        assert [r.get("event") for r in loud] == ["temporal_away"], loud
        assert len([r for r in lines if r["proc"] == worker and r.get("event") == "temporal_back"]) == 1
    assert len([r for r in lines if r.get("event") == "restarted"]) == 1


def test_a_process_that_keeps_dying_is_given_up_on_with_one_line(tmp_path):
    """The API's port taken by someone else: each restart dies at once; after a few, give up."""
    with running_dev(tmp_path) as (proc, out, err):
        up = wait_banner(proc, out, err)
        port = int(up["api"].rsplit(":", 1)[1])
        os.kill(up["pids"]["api"], signal.SIGKILL)
        assert wait_gone([up["pids"]["api"]], timeout=5) == []
        with squatting(port):  # before the restarted API gets there (its imports take about a second)
            assert proc.wait(40) == 1
    lines = records(err)
    restarts = [r for r in lines if r.get("event") == "restarted"]
    gave_up = [r for r in lines if r.get("event") == "gave_up"]
    assert [r["proc"] for r in restarts] == ["api"] * len(RESTART_PAUSES), restarts
    assert len(gave_up) == 1 and gave_up[0]["proc"] == "api" and "gave up" in gave_up[0]["msg"], gave_up
    assert "gave up" in out.read_text().splitlines()[-1]  # the command's last word says why
    assert wait_gone(up["pids"].values()) == []


def test_ctrl_c_stops_everything_within_3_s_even_with_a_request_open(tmp_path):
    """A stuck worker (SIGSTOP) and a command waiting on it: the case that took 10-20 s."""
    with running_dev(tmp_path) as (proc, out, err):
        up = wait_banner(proc, out, err)
        ports = json.loads((tmp_path / "ports.json").read_text())
        os.kill(up["pids"]["orders"], signal.SIGSTOP)  # nobody accepts the review Update now
        answers: list[object] = []

        def review_long_poll() -> None:
            try:
                answers.append(httpx.get(f"{up['api']}/orders/held/review", timeout=30).status_code)
            except httpx.HTTPError as err:
                answers.append(err)

        with httpx.Client(base_url=up["api"], timeout=20) as http:
            assert http.post("/orders/held/start", params={"payment_id": "pay-held"}).status_code == 201
        poll = threading.Thread(target=review_long_poll)
        poll.start()
        time.sleep(1.0)
        assert answers == [], "the long poll should still be open"

        began = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(10)
        took = time.monotonic() - began
        poll.join(5)
    print(f"\norderflow dev stopped {took:.2f} s after SIGINT")
    assert code == 0 and took < 3.0, f"exit {code} after {took:.2f} s"
    assert [name for name, port in ports.items() if port_open("127.0.0.1", port)] == []
    assert wait_gone(up["pids"].values(), timeout=1) == []
    assert answers == [503], answers  # told to retry, not left hanging or given a bare 500
    killed = [r["proc"] for r in records(err) if r.get("event") == "killed"]
    assert "orders" in killed and "api" not in killed, killed  # the frozen worker needed SIGKILL, the API not


async def test_a_worker_waits_for_a_server_that_is_starting(monkeypatch, caplog):
    """A worker (re)started while its server restarts waits for it with one line, instead of
    exiting; a server that never comes is the command's error after WORKER_CONNECT_SECONDS."""
    from orderflow import cli

    monkeypatch.setattr(cli.asyncio, "sleep", _no_sleep)
    answers = [RuntimeError("Failed client connect: refused"), RuntimeError("Failed client connect: refused"), "client"]

    async def connect(settings):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    caplog.set_level(logging.INFO, logger="orderflow")
    assert await cli._connect_patiently(Settings(), connect) == "client"
    waits = [r for r in caplog.records if getattr(r, "orderflow", {}).get("event") == "temporal_wait"]
    assert len(waits) == 1 and "does not answer yet" in waits[0].getMessage()

    async def never(settings):
        raise RuntimeError("Failed client connect: refused")

    monkeypatch.setattr(cli, "WORKER_CONNECT_SECONDS", 0.0)
    with pytest.raises(RuntimeError, match="Failed client connect"):
        await cli._connect_patiently(Settings(), never)


async def _no_sleep(seconds: float) -> None:
    return None


def test_a_free_port_is_one_the_kernel_never_gives_an_outgoing_connection():
    """Chosen below the kernel's ephemeral range, so no client socket can take it between the
    choice and the server's bind (as one did to `bench --api`'s API port); and it is free."""
    from orderflow.devstack.processes import _ephemeral_low

    ports = {free_port() for _ in range(20)}
    assert all(20000 <= port < _ephemeral_low() for port in ports), ports
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
