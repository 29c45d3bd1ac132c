"""The Temporal connection comes from ``temporalio.envconfig``: a TOML profile and the TEMPORAL_*
variables reach the client's connect options and, where a local server can show it, the wire;
a bad profile is a one-line error from the ``orderflow`` command.

The certificates under tests/certs are test-only (see make-certs.sh there)."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import hpack
import pytest
from temporalio.envconfig import ClientConfigTLS
from temporalio.service import RPCError, TLSConfig

from orderflow import cli
from orderflow.config import ConfigError, Settings
from orderflow.order_client import connect

CERTS = Path(__file__).with_name("certs")
NO_FILE = {"TEMPORAL_CONFIG_FILE": os.devnull}  # never the developer's ~/.config/temporalio/temporal.toml

PROFILE = f"""
[profile.default]
address = "127.0.0.1:7233"

[profile.prod]
address = "orders.example.tmprl.cloud:7233"
namespace = "orders.acct1"
api_key = "from-the-profile"

[profile.prod.tls]
server_name = "orderflow-test"
server_ca_cert_path = "{CERTS / "ca.pem"}"
client_cert_path = "{CERTS / "client.pem"}"
client_key_path = "{CERTS / "client.key"}"

[profile.prod.grpc_meta]
x-tenant = "acme"
"""


@pytest.fixture
def profile_file(tmp_path) -> Path:
    path = tmp_path / "temporal.toml"
    path.write_text(PROFILE)
    return path


def test_nothing_set_means_the_embedded_dev_server():
    settings = Settings.from_env(NO_FILE)
    assert settings.client_connect_config() == {"target_host": "127.0.0.1:7233", "namespace": "default"}
    assert not settings.tls_enabled
    # Empty variables (compose's `${TEMPORAL_TLS:-}` pass-through) are unset, not "TLS on".
    blank = {
        name: ""
        for name in (
            "TEMPORAL_ADDRESS",
            "TEMPORAL_API_KEY",
            "TEMPORAL_TLS",
            "TEMPORAL_TLS_SERVER_NAME",
            "TEMPORAL_PROFILE",
            "TEMPORAL_NAMESPACE",
        )
    }
    assert Settings.from_env(NO_FILE | blank) == settings


def test_a_profile_reaches_the_connect_options(profile_file):
    settings = Settings.from_env({"TEMPORAL_CONFIG_FILE": str(profile_file), "TEMPORAL_PROFILE": "prod"})
    options = settings.client_connect_config()
    assert options["target_host"] == "orders.example.tmprl.cloud:7233"
    assert options["namespace"] == "orders.acct1"
    assert options["api_key"] == "from-the-profile"
    assert options["rpc_metadata"] == {"x-tenant": "acme"}
    tls = options["tls"]
    assert isinstance(tls, TLSConfig) and tls.domain == "orderflow-test"
    assert tls.server_root_ca_cert == (CERTS / "ca.pem").read_bytes()
    assert tls.client_cert == (CERTS / "client.pem").read_bytes()
    assert tls.client_private_key == (CERTS / "client.key").read_bytes()
    assert "API key" in settings.describe_temporal() and "from-the-profile" not in repr(settings)


def test_the_environment_overrides_the_profile(profile_file):
    env = {
        "TEMPORAL_CONFIG_FILE": str(profile_file),
        "TEMPORAL_PROFILE": "prod",
        "TEMPORAL_ADDRESS": "temporal.internal:7233",
        "TEMPORAL_NAMESPACE": "staging",
        "TEMPORAL_API_KEY": "from-the-env",
        "TEMPORAL_TLS_SERVER_NAME": "temporal.internal",
    }
    options = Settings.from_env(env).client_connect_config()
    assert (options["target_host"], options["namespace"], options["api_key"]) == (
        "temporal.internal:7233",
        "staging",
        "from-the-env",
    )
    assert options["tls"].domain == "temporal.internal"
    assert options["tls"].client_cert == (CERTS / "client.pem").read_bytes()  # the rest of the profile stays


def test_the_environment_alone_configures_a_managed_service():
    """Address, namespace and API key: TLS goes on by itself (the SDK's rule); TEMPORAL_TLS=false turns it off."""
    env = NO_FILE | {
        "TEMPORAL_ADDRESS": "orders.acct1.tmprl.cloud:7233",
        "TEMPORAL_NAMESPACE": "orders.acct1",
        "TEMPORAL_API_KEY": "k-123",
    }
    options = Settings.from_env(env).client_connect_config()
    assert options == {
        "target_host": "orders.acct1.tmprl.cloud:7233",
        "namespace": "orders.acct1",
        "api_key": "k-123",
        "tls": True,
    }
    assert Settings.from_env(env | {"TEMPORAL_TLS": "false"}).client_connect_config()["tls"] is False


def test_to_env_gives_a_child_process_the_same_connection(profile_file):
    parent = Settings.from_env(
        {
            "TEMPORAL_CONFIG_FILE": str(profile_file),
            "TEMPORAL_PROFILE": "prod",
            "ORDERFLOW_METRICS_ADDRESS": "0.0.0.0:9464",
            "ORDERFLOW_API_TOKEN": "t",
        }
    )
    inline = replace(
        parent, temporal_tls=replace(parent.temporal_tls, client_cert=b"PEM DATA"), temporal_grpc_meta=(("x-a-b", "1"),)
    )
    for settings in (parent, inline, Settings(temporal_address="127.0.0.1:1234")):
        assert Settings.from_env(settings.to_env()) == settings
    # What the parent inherited does not leak: a local test stack gets no API key and no metrics port.
    local = Settings(temporal_address="127.0.0.1:1234")
    child = local.child_env(
        {
            "TEMPORAL_API_KEY": "secret",
            "TEMPORAL_PROFILE": "prod",
            "PATH": "/bin",
            "TEMPORAL_TLS_SERVER_NAME": "x",
            "TEMPORAL_GRPC_META_X": "y",
            "ORDERFLOW_METRICS_ADDRESS": "127.0.0.1:9410",
            "TEMPORAL_CORE_PRETTY_LOGS": "1",
        }
    )
    assert Settings.from_env(child) == local
    assert child["PATH"] == "/bin" and child["TEMPORAL_CORE_PRETTY_LOGS"] == "1"  # SDK tuning passes on


class FakeTLSFrontend:
    """A TLS server that wants a client certificate from our test CA, records the SNI name and the
    client's certificate, and decodes the first gRPC request's headers. It answers nothing, so the
    client's connect fails after sending them: enough to see what reached the wire."""

    def __init__(self) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(CERTS / "server.pem", CERTS / "server.key")
        self.ctx.load_verify_locations(CERTS / "ca.pem")
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.set_alpn_protocols(["h2"])
        self.ctx.sni_callback = lambda _sock, name, _ctx: self.seen.__setitem__("sni", name)
        self.seen: dict = {}
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with self.ctx.wrap_socket(conn, server_side=True) as tls:
            self.seen["client_cert"] = dict(x[0] for x in tls.getpeercert()["subject"])["commonName"]
            tls.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # an empty HTTP/2 SETTINGS frame
            tls.settimeout(5)
            data = b""
            while "headers" not in self.seen and (chunk := tls.recv(65536)):
                data += chunk
                self._parse(data)

    def _parse(self, data: bytes) -> None:
        buf = data[24:]  # after the client preface
        while len(buf) >= 9:
            length, kind, flags = int.from_bytes(buf[:3], "big"), buf[3], buf[4]
            if len(buf) < 9 + length:
                return
            payload, buf = buf[9 : 9 + length], buf[9 + length :]
            if kind == 1:  # HEADERS
                if flags & 0x8:
                    payload = payload[1 : len(payload) - payload[0]]
                if flags & 0x20:
                    payload = payload[5:]
                self.seen["headers"] = dict(hpack.Decoder().decode(payload))
                return


async def test_tls_client_certificate_and_api_key_reach_the_wire():
    """TLS server name, CA, client certificate and key from the environment, the API key too:
    the handshake only succeeds if the client trusts our CA and shows a certificate our CA signed."""
    frontend = FakeTLSFrontend()
    env = NO_FILE | {
        "TEMPORAL_ADDRESS": f"127.0.0.1:{frontend.port}",
        "TEMPORAL_API_KEY": "key-on-the-wire",
        "TEMPORAL_TLS_SERVER_NAME": "orderflow-test",
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(CERTS / "ca.pem"),
        "TEMPORAL_TLS_CLIENT_CERT_PATH": str(CERTS / "client.pem"),
        "TEMPORAL_TLS_CLIENT_KEY_PATH": str(CERTS / "client.key"),
        "TEMPORAL_GRPC_META_X_TENANT": "acme",
    }
    with pytest.raises(RuntimeError, match="get_system_info"):
        await asyncio.wait_for(connect(Settings.from_env(env)), 10)
    frontend.thread.join(5)
    assert frontend.seen["sni"] == "orderflow-test"
    assert frontend.seen["client_cert"] == "orderflow-test-client"
    headers = frontend.seen["headers"]
    assert headers["authorization"] == "Bearer key-on-the-wire"
    assert headers["x-tenant"] == "acme" and headers[":scheme"] == "https"


async def test_a_profiles_address_and_namespace_reach_the_server(dev_server, tmp_path):
    await dev_server.wait_ready()
    path = tmp_path / "temporal.toml"
    path.write_text(f'[profile.local]\naddress = "{dev_server.address}"\nnamespace = "no-such-namespace"\n')
    client = await connect(Settings.from_env({"TEMPORAL_CONFIG_FILE": str(path), "TEMPORAL_PROFILE": "local"}))
    assert client.namespace == "no-such-namespace"
    with pytest.raises(RPCError, match="no-such-namespace"):  # the server was asked about our namespace
        await client.count_workflows()
    ok = await connect(
        replace(
            Settings.from_env({"TEMPORAL_CONFIG_FILE": str(path), "TEMPORAL_PROFILE": "local"}), namespace="default"
        )
    )
    assert (await ok.count_workflows()).count >= 0


BAD = {
    "broken TOML": ("[profile.default\naddress = 1", {}, "TOML parse error"),
    "a typo in a key": ('[profile.default]\napi-key = "x"', {}, "unknown field `api-key`"),
    "a missing profile": ('[profile.prod]\naddress = "a:1"', {"TEMPORAL_PROFILE": "prdo"}, "Profile 'prdo' not found"),
    "a missing config file": (None, {"TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml"}, "no such file"),
    "TEMPORAL_TLS=no": ("", {"TEMPORAL_TLS": "no"}, "TEMPORAL_TLS must be true or false"),
    "a missing certificate": (
        "",
        {
            "TEMPORAL_TLS_CLIENT_CERT_PATH": "/nonexistent.pem",
            "TEMPORAL_TLS_CLIENT_KEY_PATH": str(CERTS / "client.key"),
        },
        "not found",
    ),
    "a certificate without its key": (
        "",
        {"TEMPORAL_TLS_CLIENT_CERT_PATH": str(CERTS / "client.pem")},
        "needs its key",
    ),
    "a bad metrics address": ("", {"ORDERFLOW_METRICS_ADDRESS": "localhost:http"}, "ORDERFLOW_METRICS_ADDRESS"),
    "a bad log level": ("", {"ORDERFLOW_LOG_LEVEL": "LOUD"}, "ORDERFLOW_LOG_LEVEL must be"),
}


def bad_env(tmp_path: Path, case: str) -> dict[str, str]:
    text, env, _ = BAD[case]
    if text is not None:
        path = tmp_path / "temporal.toml"
        path.write_text(text)
        env = {"TEMPORAL_CONFIG_FILE": str(path)} | env
    return env


@pytest.mark.parametrize("case", BAD)
def test_a_bad_configuration_is_one_line_from_the_cli(case, tmp_path, monkeypatch, capsys):
    for name in [k for k in os.environ if k.startswith(("TEMPORAL_", "ORDERFLOW_METRICS", "ORDERFLOW_LOG"))]:
        monkeypatch.delenv(name)
    for name, value in bad_env(tmp_path, case).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError):
        Settings.from_env()
    assert cli.main(["worker", "orders"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("orderflow: ") and BAD[case][2] in err, err


def test_the_real_command_prints_one_line_and_no_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")} | bad_env(tmp_path, "a typo in a key")
    done = subprocess.run(
        [sys.executable, "-m", "orderflow.cli", "worker", "shipping"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "unknown field `api-key`" in done.stderr, done.stderr


def test_tls_settings_survive_a_round_trip_through_the_environment():
    tls = ClientConfigTLS(disabled=False, server_name="s", server_root_ca_cert=CERTS / "ca.pem")
    settings = Settings(temporal_address="t:7233", namespace="n", temporal_api_key="k", temporal_tls=tls)
    assert Settings.from_env(settings.to_env()) == settings
