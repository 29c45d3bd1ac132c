"""docker-compose.yml cannot run here (no Docker engine). What can be checked without one is:

* the file, resolved and validated by a real compose implementation (Debian's ``docker-compose``,
  which parses and validates without a daemon; make setup installs it);
* every app service runs a real ``orderflow`` command whose settings work;
* the cluster's shape: one-shot setup jobs before the services that need them, health checks,
  restart policies, workers that scale (no fixed names or ports), the 15-second dynamic config;
* the app database's init script, run against the real MariaDB: its least-privilege users are
  enough for migrations, workers and the API to carry a real order, and no more.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import yaml

from orderflow import cli
from orderflow.config import Settings
from orderflow.db import migrate
from orderflow.devstack import DEV_SERVER_CONFIG, ProcessStack, free_port
from tests.helpers import MYSQL_SERVER

ROOT = Path(__file__).parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SECRETS = {  # what .env would hold (deploy/env.example lists the same names)
    "TEMPORAL_DB_ROOT_PASSWORD": "t-root",
    "TEMPORAL_DB_PASSWORD": "t-pass",
    "APP_DB_ROOT_PASSWORD": "a-root",
    "APP_DB_MIGRATE_PASSWORD": "m-pass",
    "APP_DB_WORKER_PASSWORD": "w-pass",
    "APP_DB_API_PASSWORD": "r-pass",
    "ORDERFLOW_API_TOKEN": "tok",
}
APP_SERVICES = ("migrate", "orders-worker", "shipping-worker", "api")
ONE_SHOT = ("temporal-schema", "temporal-namespace", "migrate")
WORKERS = ("orders-worker", "shipping-worker")


def docker_compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: apt-get install -y docker-compose (make setup does)"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "ORDERFLOW_", "APP_DB_"))}
    return subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT), *args],
        env=base | (env or {}),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def resolved() -> dict:
    """The file as compose resolves it (anchors merged, variables interpolated), validated."""
    done = docker_compose("config", env=SECRETS)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_the_file_validates_with_a_real_compose_implementation():
    quiet = docker_compose("config", "-q", env=SECRETS)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


def test_passwords_and_the_api_token_are_required():
    for name in SECRETS:
        done = docker_compose("config", "-q", env={k: v for k, v in SECRETS.items() if k != name})
        assert done.returncode != 0 and f"set {name} in .env" in done.stderr, (name, done.stderr)


def test_env_example_names_every_required_variable():
    example = (ROOT / "deploy" / "env.example").read_text()
    assert {line.split("=")[0] for line in example.splitlines() if line and not line.startswith("#")} == set(SECRETS)


@pytest.mark.parametrize(
    "service, argv",
    [
        ("migrate", ["db", "upgrade"]),
        ("orders-worker", ["worker", "orders"]),
        ("shipping-worker", ["worker", "shipping"]),
        ("api", ["api", "--host", "0.0.0.0", "--port", "8000"]),
    ],
)
def test_each_service_runs_a_real_cli_command(resolved, service, argv):
    assert resolved["services"][service]["command"] == ["orderflow", *argv]
    with pytest.raises(SystemExit) as done:  # the command line parses: --help exits 0
        cli.main([*argv, "--help"])
    assert done.value.code == 0


@pytest.mark.parametrize(
    "service, db_user",
    [
        ("migrate", "orderflow_migrate"),
        ("orders-worker", "orderflow_worker"),
        ("shipping-worker", "orderflow_worker"),
        ("api", "orderflow_api"),
    ],
)
def test_each_services_environment_reaches_the_settings(resolved, service, db_user):
    env = {k: str(v) for k, v in resolved["services"][service]["environment"].items()}
    settings = Settings.from_env(env)
    assert settings.client_connect_config() == {"target_host": "temporal:7233", "namespace": "default"}
    url = sa.engine.make_url(settings.db_url)
    assert (url.username, url.host, url.database, url.get_backend_name()) == (db_user, "app-db", "orderflow", "mysql")
    assert (
        url.password
        == {"orderflow_migrate": "m-pass", "orderflow_worker": "w-pass", "orderflow_api": "r-pass"}[db_user]
    )
    if service in WORKERS:
        assert settings.metrics_address == "0.0.0.0:9464"
    assert (settings.api_token == "tok") == (service == "api")


def test_a_managed_service_is_configured_from_env_alone(tmp_path):
    """.env pointing at a cloud namespace: the same services, TLS and the API key, no file edits."""
    cloud = SECRETS | {
        "TEMPORAL_ADDRESS": "orders.a1b2c.tmprl.cloud:7233",
        "TEMPORAL_NAMESPACE": "orders.a1b2c",
        "TEMPORAL_API_KEY": "cloud-key",
    }
    done = docker_compose("config", env=cloud)
    assert done.returncode == 0, done.stderr
    env = {k: str(v) for k, v in yaml.safe_load(done.stdout)["services"]["orders-worker"]["environment"].items()}
    assert Settings.from_env(env).client_connect_config() == {
        "target_host": "orders.a1b2c.tmprl.cloud:7233",
        "namespace": "orders.a1b2c",
        "api_key": "cloud-key",
        "tls": True,
    }


def test_setup_runs_once_before_what_needs_it(resolved):
    services = resolved["services"]
    completed = {"condition": "service_completed_successfully"}
    assert services["temporal"]["depends_on"]["temporal-schema"] == completed
    for name in (*WORKERS, "api"):
        assert services[name]["depends_on"]["migrate"] == completed
        assert services[name]["depends_on"]["temporal-namespace"] == completed
    assert services["migrate"]["depends_on"]["app-db"] == {"condition": "service_healthy"}
    assert services["temporal-schema"]["depends_on"]["temporal-db"] == {"condition": "service_healthy"}
    schema = (ROOT / "deploy" / "temporal" / "setup-schema.sh").read_text()
    for db, folder in (("temporal", "temporal"), ("temporal_visibility", "visibility")):  # the official tool's steps
        assert f"--db {db} create" in schema and f"--db {db} setup-schema -v 0.0" in schema
        assert f'--db {db} update-schema -d "$SCHEMA/{folder}/versioned"' in schema
    assert services["temporal-schema"]["command"] == ["/deploy/setup-schema.sh"]


def test_long_running_services_restart_and_report_health(resolved):
    for name, service in resolved["services"].items():
        if name in ONE_SHOT:
            assert service["restart"] == "no", name
        else:
            assert service["restart"] == "unless-stopped", name
            if name not in ("temporal-ui", "prometheus"):
                assert service["healthcheck"]["test"], name


def test_workers_scale_with_no_fixed_name_or_port(resolved):
    for name in WORKERS:
        service = resolved["services"][name]
        assert "container_name" not in service and "ports" not in service, name
    assert not any("container_name" in s for s in resolved["services"].values())


def test_the_app_image_is_built_once_and_runs_as_a_user():
    compose = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    assert [name for name, s in compose.items() if "build" in s] == ["migrate"]
    assert {compose[name]["image"] for name in APP_SERVICES} == {"orderflow:local"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "\nUSER orderflow\n" in dockerfile and "pip install -r /tmp/runtime.txt" in dockerfile
    assert "pip install" not in " ".join(str(compose[name].get("command")) for name in APP_SERVICES)


def mount(volume: str | dict) -> tuple[str, str]:
    """(source, target) of a volume, in the short ("src:dst:ro") or the long syntax."""
    if isinstance(volume, dict):
        return volume["source"], volume["target"]
    source, target = volume.split(":")[:2]
    return source, target


def test_the_server_gets_the_dev_servers_dynamic_config(resolved):
    temporal = resolved["services"]["temporal"]
    target = temporal["environment"]["DYNAMIC_CONFIG_FILE_PATH"]
    (source,) = [src for src, dst in map(mount, temporal["volumes"]) if dst == target]
    config = yaml.safe_load(Path(source).read_text())
    for key, value in DEV_SERVER_CONFIG.items():
        assert config[key] == [{"value": yaml.safe_load(value), "constraints": {}}], key


def test_prometheus_scrapes_what_the_services_serve(resolved):
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    (workers,) = jobs["orderflow-workers"]["dns_sd_configs"]
    assert set(workers["names"]) == set(WORKERS) and f"0.0.0.0:{workers['port']}" == "0.0.0.0:9464"
    assert jobs["orderflow-api"]["dns_sd_configs"][0]["port"] == 8000
    assert jobs["temporal-server"]["static_configs"][0]["targets"] == [
        "temporal:" + resolved["services"]["temporal"]["environment"]["PROMETHEUS_ENDPOINT"].split(":")[1]
    ]


def test_the_shell_scripts_parse():
    for script in (ROOT / "deploy").rglob("*.sh"):
        assert subprocess.run(["sh", "-n", str(script)], capture_output=True).returncode == 0, script
        assert os.access(script, os.X_OK), f"{script} must be executable (the images run it directly)"


# --- The app database's init script, against the real MariaDB ------------------------------


@pytest.fixture(scope="module")
def app_db() -> Iterator[dict[str, str]]:
    """deploy/app-db/init-users.sh run against the local MariaDB with a prefix and database of
    its own; the URLs of its three users. Users and database are dropped afterwards."""
    server = sa.engine.make_url(MYSQL_SERVER)
    tag = uuid.uuid4().hex[:6]
    prefix, database = f"oft{tag}", f"orderflow_compose_{tag}"
    passwords = {"migrate": "m-" + tag, "worker": "w-" + tag, "api": "a-" + tag}
    client = f"mariadb --protocol=tcp -h {server.host} -P {server.port or 3306} -u {server.username}"
    env = os.environ | {
        "APP_DB_NAME": database,
        "APP_DB_USER_PREFIX": prefix,
        "APP_DB_INIT_CLIENT": client,
        "MYSQL_PWD": server.password or "",
        **{f"APP_DB_{role.upper()}_PASSWORD": pw for role, pw in passwords.items()},
    }
    script = ROOT / "deploy" / "app-db" / "init-users.sh"
    done = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)
    admin = sa.create_engine(server)
    try:
        assert done.returncode == 0, done.stderr
        yield {
            role: str(
                server.set(
                    username=f"{prefix}_{role}", password=pw, database=database, query={"charset": "utf8mb4"}
                ).render_as_string(hide_password=False)
            )
            for role, pw in passwords.items()
        }
    finally:
        with admin.begin() as conn:
            for role in passwords:
                conn.execute(sa.text(f"DROP USER IF EXISTS '{prefix}_{role}'@'%'"))
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{database}`"))
        admin.dispose()


def refused(url: str, statement: str) -> bool:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(statement))
        return False
    except sa.exc.OperationalError as err:
        return "denied" in str(err)
    finally:
        engine.dispose()


@pytest.mark.mysql
def test_the_least_privilege_users_carry_a_real_order_and_no_more(app_db, dev_server):
    migrate.upgrade(app_db["migrate"])  # Alembic, as the migrate service runs it
    assert refused(app_db["worker"], "CREATE TABLE nope (id INT)")
    assert refused(app_db["api"], "INSERT INTO orders (id) VALUES ('x')")
    assert refused(app_db["api"], "DELETE FROM orders")

    tag = uuid.uuid4().hex[:6]
    base = Settings(temporal_address=dev_server.address, log_level="WARNING").with_own_queues(f"c{tag}")
    # As docker-compose.yml runs them: each service with its own database user.
    worker_db = {"db_url": app_db["worker"]}
    stack = ProcessStack(
        replace(base, db_url=app_db["migrate"]),
        api_port=free_port(),
        overrides={"orders": worker_db, "shipping": worker_db, "api": {"db_url": app_db["api"]}},
    )
    try:
        asyncio.run(stack.start())
        with httpx.Client(base_url=stack.api_url or "", timeout=20) as http:
            order_id = f"compose-{tag}"
            assert http.post(f"/orders/{order_id}/start", params={"payment_id": f"p-{order_id}"}).status_code == 201
            end = time.monotonic() + 20
            while (body := http.get(f"/orders/{order_id}/status").json())["temporal_status"] == "RUNNING":
                if body["status"]["state"] == "awaiting_review":
                    http.post(f"/orders/{order_id}/signals/approve")
                assert time.monotonic() < end, body
                time.sleep(0.05)
            state = http.get(f"/orders/{order_id}/state").json()  # read by the SELECT-only user
            assert state["order"]["state"] == body["status"]["state"] in ("shipped", "failed", "cancelled")
            assert state["events"], "the worker user wrote the audit trail"
            metrics = http.get("/metrics").text
            assert 'orderflow_orders_ended_total{state="' + state["order"]["state"] + '"} 1.0' in metrics
    finally:
        stack.stop()


def test_init_script_refuses_passwords_it_cannot_quote():
    env = {
        "PATH": os.environ["PATH"],
        "APP_DB_MIGRATE_PASSWORD": "it's",
        "APP_DB_WORKER_PASSWORD": "w",
        "APP_DB_API_PASSWORD": "a",
        "APP_DB_INIT_CLIENT": f"{sys.executable} -c pass",
    }
    done = subprocess.run([str(ROOT / "deploy" / "app-db" / "init-users.sh")], env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "APP_DB_MIGRATE_PASSWORD" in done.stderr
