"""docker-compose.yml cannot run here (no Docker engine); check what can be checked without one."""

from pathlib import Path

import pytest
import yaml

from orderflow import cli
from orderflow.config import Settings

COMPOSE = yaml.safe_load(Path(__file__).parents[1].joinpath("docker-compose.yml").read_text())


@pytest.mark.parametrize("service, argv", [
    ("migrate", ["db", "upgrade"]),
    ("orders-worker", ["worker", "orders"]),
    ("shipping-worker", ["worker", "shipping"]),
    ("api", ["api", "--host", "0.0.0.0"]),
])
def test_each_service_runs_a_real_cli_command(service, argv, capsys):
    assert "orderflow " + " ".join(argv) in COMPOSE["services"][service]["command"]
    with pytest.raises(SystemExit) as done:  # the command line parses: --help exits 0
        cli.main([*argv, "--help"])
    assert done.value.code == 0


def test_compose_environment_reaches_the_settings(monkeypatch):
    env = COMPOSE["x-app"]["environment"]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert (settings.temporal_address, settings.db_url) == ("temporal:7233", env["ORDERFLOW_DB_URL"])
    assert "timerProcessorMaxTimeShift" in " ".join(COMPOSE["services"]["temporal"]["command"])
