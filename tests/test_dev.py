"""`orderflow dev` as a user runs it: one command, each part in its own process, one log
stream, and nothing left behind after Ctrl-C (SIGINT) or after the command itself is killed."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from orderflow.cli import dev_settings
from orderflow.config import Settings
from orderflow.devstack import free_port

READY = "Ctrl-C stops everything."


@contextmanager
def running_dev(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Path, Path]]:
    """`orderflow dev` with its output in files; killed at the end if the test left it running."""
    env = {k: v for k, v in os.environ.items() if k not in ("ORDERFLOW_DB_URL", "TEMPORAL_ADDRESS")}
    env["ORDERFLOW_LOG_LEVEL"] = "INFO"
    out, err = tmp_path / "dev.out", tmp_path / "dev.err"
    command = [
        sys.executable,
        "-m",
        "orderflow.cli",
        "dev",
        "--state-dir",
        str(tmp_path / "state"),
        "--port",
        str(free_port()),
        "--ui-port",
        str(free_port()),
        "--api-port",
        str(free_port()),
    ]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env)
    try:
        yield proc, out, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


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
