"""A small run of the benchmark so it cannot rot. It checks what it reports, not how fast."""

import json

from orderflow import bench
from orderflow.models import StepPolicy


def test_bench_smoke_run(tmp_path, capsys):
    assert bench.main(["-n", "12", "-c", "6", "--no-progress", "--out", str(tmp_path)]) == 0
    (report,) = json.loads((tmp_path / "bench.json").read_text())
    assert report["orders"] == 12 and report["invariant_violations"] == []
    assert abs(sum(report["outcomes"].values()) - 1) < 1e-6
    assert report["p50"] <= report["p99"] <= report["max"]
    assert report["worker_peak_rss_mb"]["orders worker"] > 0
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert "end to end (workflow start -> close)" in capsys.readouterr().out


def test_bench_over_http_smoke_run(tmp_path, capsys):
    """The user path: `orderflow dev`'s process layout, an open loop over HTTP, a polling reviewer."""
    assert bench.main(["--api", "--rate", "2", "--duration", "4", "--no-progress", "--out", str(tmp_path)]) == 0
    (report,) = json.loads((tmp_path / "bench.json").read_text())
    assert report["mode"] == "api" and report["offered"] == 8
    assert report["http_5xx"] == 0 and report["transport_errors"] == 0
    assert report["admitted"] + report["refused_429"] == report["offered"]
    assert (
        report["http_statuses"]["201"] == report["admitted"]
        and report["http_statuses"].get("429", 0) == report["refused_429"]
    )
    assert report["p50"] <= report["p90"] <= report["p99"] <= report["max"]
    assert 0 <= report["within_budget"] <= 1 and 0 <= report["shipped"] <= 1
    assert abs(sum(report["outcomes"].values()) - 1) < 1e-6
    cpu = report["cpu_seconds_per_order"]
    assert all(cpu[name] > 0 for name in ("dev server", "API", "orders worker", "shipping worker"))
    assert cpu["all stack processes"] >= cpu["orders worker"] + cpu["dev server"]
    assert (
        report["history_events_per_order"]["order"] > 10
        and report["history_events_per_order"]["shipping (all shipments of an order)"] > 0
    )
    assert (
        report["replay"]["failures"] == 0
        and report["replay"]["histories"] >= 2 * report["admitted"] * report["shipped"]
    )
    assert report["invariant_violations"] == []
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert "open loop, 2 orders/s for 4 s" in capsys.readouterr().out


def test_timeout_floor_matches_the_fault_model():
    """Expected hung attempts per flaky step are 0.34/0.33 ~ 1.03, so six steps at 0.15 s cost ~0.93 s."""
    floor = bench.timeout_floor(StepPolicy(attempt_timeout_seconds=0.15), samples=20_000)
    assert 0.85 < floor["mean"] < 1.05
    assert floor["p50"] < floor["mean"] < floor["p99"]
