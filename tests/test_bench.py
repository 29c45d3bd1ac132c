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


def test_timeout_floor_matches_the_fault_model():
    """Expected hung attempts per flaky step are 0.34/0.33 ~ 1.03, so six steps at 0.15 s cost ~0.93 s."""
    floor = bench.timeout_floor(StepPolicy(attempt_timeout_seconds=0.15), samples=20_000)
    assert 0.85 < floor["mean"] < 1.05
    assert floor["p50"] < floor["mean"] < floor["p99"]
