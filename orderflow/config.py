"""Settings read from the environment, and the names every layer shares.

The Temporal connection comes from the SDK's environment configuration
(``temporalio.envconfig``), the same sources the ``temporal`` CLI reads:

* a profile in a TOML file: ``TEMPORAL_CONFIG_FILE`` (default
  ``~/.config/temporalio/temporal.toml``), profile ``TEMPORAL_PROFILE`` (default ``default``);
* overridden by ``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``,
  ``TEMPORAL_TLS``, ``TEMPORAL_TLS_SERVER_NAME``, ``TEMPORAL_TLS_SERVER_CA_CERT_PATH|_DATA``,
  ``TEMPORAL_TLS_CLIENT_CERT_PATH|_DATA``, ``TEMPORAL_TLS_CLIENT_KEY_PATH|_DATA`` and
  ``TEMPORAL_GRPC_META_<NAME>``.

With none of them set the connection is the embedded dev server at 127.0.0.1:7233, namespace
``default``, no TLS. An API key turns TLS on (managed services need both).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from temporalio.envconfig import ClientConfigProfile, ClientConfigTLS

from orderflow.models import ORDERS_TASK_QUEUE, SHIPPING_TASK_QUEUE

NAMESPACE = "default"
DEFAULT_TEMPORAL_ADDRESS = "127.0.0.1:7233"

DEFAULT_STATE_DIR = Path(os.environ.get("ORDERFLOW_HOME", Path.cwd() / "var"))

# The ORDERFLOW_* variables Settings reads (ORDERFLOW_HOME is where files go, not a setting).
ORDERFLOW_VARIABLES = (
    "ORDERFLOW_DB_URL",
    "ORDERFLOW_ORDERS_TASK_QUEUE",
    "ORDERFLOW_SHIPPING_TASK_QUEUE",
    "ORDERFLOW_API_TOKEN",
    "ORDERFLOW_LOG_LEVEL",
    "ORDERFLOW_MAX_IN_FLIGHT",
    "ORDERFLOW_METRICS_ADDRESS",
    "ORDERFLOW_CODEC_KEYS",
    "ORDERFLOW_CODEC_KEYS_FILE",
)
# Switches of one process, read by the functions below (not Settings fields: they tune this
# process, not where it connects) and passed on to child processes unchanged.
PROCESS_VARIABLES = (
    "ORDERFLOW_HOME",
    "ORDERFLOW_CORE_LOG",
    "ORDERFLOW_WORKFLOW_SANDBOX",
    "ORDERFLOW_NOTEBOOK_TEMPORAL",
)
# The variables temporalio.envconfig reads (other TEMPORAL_* variables tune the SDK core and pass on).
ENVCONFIG_VARIABLES = (
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "TEMPORAL_API_KEY",
    "TEMPORAL_CONFIG_FILE",
    "TEMPORAL_PROFILE",
)
ENVCONFIG_PREFIXES = ("TEMPORAL_TLS", "TEMPORAL_GRPC_META_", "TEMPORAL_CODEC_")
_TLS_SOURCES = (  # (ClientConfigTLS field, environment variable stem, what it is)
    ("server_root_ca_cert", "TEMPORAL_TLS_SERVER_CA_CERT", "server CA certificate"),
    ("client_cert", "TEMPORAL_TLS_CLIENT_CERT", "client certificate"),
    ("client_private_key", "TEMPORAL_TLS_CLIENT_KEY", "client key"),
)


class ConfigError(ValueError):
    """The configuration cannot work; the message is one line that says why and where."""


def core_log_level(env: Mapping[str, str] | None = None) -> str:
    """The SDK core's log level: ERROR, or ``ORDERFLOW_CORE_LOG`` (DEBUG prints every activation,
    command and local-activity attempt: how the task-guard and stuck-step defects were found)."""
    env = os.environ if env is None else env
    return (env.get("ORDERFLOW_CORE_LOG") or "ERROR").upper()


def workflow_sandbox(env: Mapping[str, str] | None = None) -> bool:
    """``ORDERFLOW_WORKFLOW_SANDBOX=1``: the workers run workflows in the sandbox too (orderflow/worker.py)."""
    env = os.environ if env is None else env
    return env.get("ORDERFLOW_WORKFLOW_SANDBOX") == "1"


def db_url_named(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``ORDERFLOW_DB_URL`` names the app database explicitly (``orderflow dev`` otherwise
    keeps it in its state folder)."""
    env = os.environ if env is None else env
    return bool(env.get("ORDERFLOW_DB_URL"))


def notebook_temporal_address(env: Mapping[str, str] | None = None) -> str | None:
    """``ORDERFLOW_NOTEBOOK_TEMPORAL``: host:port of a Temporal server every notebook kernel uses;
    unset, each kernel starts a dev server of its own (orderflow/notebook/stack.py)."""
    env = os.environ if env is None else env
    return env.get("ORDERFLOW_NOTEBOOK_TEMPORAL") or None


def _one_line(err: BaseException) -> str:
    """The SDK's TOML errors span several lines (a source excerpt with a caret); keep the words."""
    lines = [ln.strip() for ln in str(err).splitlines()]
    words = [ln for ln in lines if ln and not re.match(r"^\d*\s*\|", ln)]
    return ": ".join(words) or type(err).__name__


def load_temporal_profile(env: Mapping[str, str]) -> ClientConfigProfile:
    """The SDK's profile (TOML file + environment overrides), with the checks the SDK leaves out.

    Strict parsing: an unknown key (``api-key`` for ``api_key``) is an error, not a connection
    that silently goes out without its credential. A TEMPORAL_CONFIG_FILE that does not exist
    and a TEMPORAL_TLS that is neither true nor false are errors too (the SDK ignores the first,
    and turns TLS *on* for TEMPORAL_TLS=no). Empty TEMPORAL_* variables count as unset.
    """
    # An empty variable counts as unset (compose passes `${TEMPORAL_TLS:-}` through as ""); the
    # SDK would read TEMPORAL_TLS="" as "TLS on" and TEMPORAL_ADDRESS="" as an address.
    env = {k: v for k, v in env.items() if v != "" or not k.startswith("TEMPORAL_")}
    config_file = env.get("TEMPORAL_CONFIG_FILE")
    if config_file and not Path(config_file).exists():
        raise ConfigError(f"TEMPORAL_CONFIG_FILE={config_file}: no such file")
    tls_flag = env.get("TEMPORAL_TLS")
    if tls_flag is not None and tls_flag.strip().lower() not in ("true", "false", "1", "0"):
        raise ConfigError(f"TEMPORAL_TLS must be true or false (got {tls_flag!r})")
    try:
        return ClientConfigProfile.load(config_file_strict=True, override_env_vars=dict(env))
    except Exception as err:  # the SDK core's ConfigError: bad TOML, unknown key, missing profile
        where = f"profile {env.get('TEMPORAL_PROFILE', 'default')!r}"
        if config_file:
            where += f" in {config_file}"
        raise ConfigError(f"Temporal client configuration ({where}): {_one_line(err)}") from err


def _normal_tls(tls: ClientConfigTLS | None) -> ClientConfigTLS | None:
    """One spelling per meaning: ``None`` = not configured, else ``disabled`` True or False."""
    if tls is None:
        return None
    if tls.disabled is None:  # a TLS section or TEMPORAL_TLS_* variable means TLS on
        tls = replace(tls, disabled=False)
    for name, _, what in _TLS_SOURCES:
        source = getattr(tls, name)
        if isinstance(source, Path) and not source.is_file():
            raise ConfigError(f"TLS {what} file {source} not found")
        if isinstance(source, str):
            tls = replace(tls, **{name: source.encode()})  # type: ignore[arg-type]  # name is a bytes field
    if (tls.client_cert is None) != (tls.client_private_key is None):
        raise ConfigError("a TLS client certificate needs its key, and the key its certificate")
    return tls


@dataclass(frozen=True)
class Settings:
    """Where the Temporal service and the app database are; every field has an env variable."""

    temporal_address: str = DEFAULT_TEMPORAL_ADDRESS
    namespace: str = NAMESPACE
    temporal_api_key: str | None = field(default=None, repr=False)
    temporal_tls: ClientConfigTLS | None = field(default=None, repr=False)
    temporal_grpc_meta: tuple[tuple[str, str], ...] = ()
    temporal_profile: str | None = field(default=None, compare=False)  # where the values came from; messages only
    db_url: str = f"sqlite:///{DEFAULT_STATE_DIR / 'orderflow.db'}"
    orders_task_queue: str = ORDERS_TASK_QUEUE
    shipping_task_queue: str = SHIPPING_TASK_QUEUE
    api_token: str | None = field(default=None, repr=False)
    log_level: str = "INFO"
    # Load shedding: orders in flight (started, not yet ended) beyond which the API answers 429;
    # 0: no limit. Why 25: docs/performance.md#the-load-shedding-limit.
    max_in_flight: int = 25
    metrics_address: str | None = None  # host:port for the SDK's Prometheus endpoint; None = off
    # Payload encryption (orderflow/codec.py): (key id, 32-byte key) pairs, the current key first;
    # () = off. From ORDERFLOW_CODEC_KEYS or ORDERFLOW_CODEC_KEYS_FILE.
    codec_keys: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)

    def with_own_queues(self, tag: str | None = None) -> Settings:
        """These settings with task queues of their own (``<queue>-<tag>``, a random tag by
        default): a test, a benchmark run or a notebook kernel never takes another's work."""
        tag = tag or uuid.uuid4().hex[:6]
        return replace(
            self,
            orders_task_queue=f"{self.orders_task_queue}-{tag}",
            shipping_task_queue=f"{self.shipping_task_queue}-{tag}",
        )

    @property
    def tls_enabled(self) -> bool:
        """Whether the client will use TLS (the SDK's rule: a TLS setting, else on with an API key)."""
        if self.temporal_tls is not None:
            return not self.temporal_tls.disabled
        return bool(self.temporal_api_key)

    def describe_temporal(self) -> str:
        """One line for logs and banners; never the key itself."""
        extras = ["TLS" if self.tls_enabled else "no TLS"]
        if self.temporal_api_key:
            extras.append("API key")
        if self.temporal_tls is not None and self.temporal_tls.client_cert is not None:
            extras.append("client certificate")
        if self.temporal_profile:
            extras.append(f"profile {self.temporal_profile}")
        if self.codec_keys:
            extras.append(f"payloads encrypted with key {self.codec_keys[0][0]}")
        return f"{self.temporal_address} namespace {self.namespace} ({', '.join(extras)})"

    def client_connect_config(self) -> dict[str, Any]:
        """Keyword arguments for ``temporalio.client.Client.connect``, built by the SDK's envconfig.

        Certificate files are read here, at connect time, as the SDK does.
        """
        profile = ClientConfigProfile(
            address=self.temporal_address,
            namespace=self.namespace,
            api_key=self.temporal_api_key,
            tls=self.temporal_tls,
            grpc_meta=dict(self.temporal_grpc_meta),
        )
        try:
            return dict(profile.to_client_connect_config())
        except OSError as err:
            raise ConfigError(f"Temporal TLS configuration: cannot read {err.filename}: {err.strerror}") from err

    def to_env(self) -> dict[str, str]:
        """The environment variables that make another process's from_env() equal this.

        Every connection value is explicit and TEMPORAL_CONFIG_FILE points at an empty file, so
        the child reads no profile of its own. Merge it with ``child_env()``, which also drops
        variables the parent inherited (a TEMPORAL_API_KEY in your shell must not reach a worker
        that a test or the benchmark points at a local dev server).
        """
        env = {
            "TEMPORAL_CONFIG_FILE": os.devnull,
            "TEMPORAL_ADDRESS": self.temporal_address,
            "TEMPORAL_NAMESPACE": self.namespace,
            "ORDERFLOW_DB_URL": self.db_url,
            "ORDERFLOW_ORDERS_TASK_QUEUE": self.orders_task_queue,
            "ORDERFLOW_SHIPPING_TASK_QUEUE": self.shipping_task_queue,
            "ORDERFLOW_LOG_LEVEL": self.log_level,
            "ORDERFLOW_MAX_IN_FLIGHT": str(self.max_in_flight),
        }
        if self.temporal_api_key:
            env["TEMPORAL_API_KEY"] = self.temporal_api_key
        tls = self.temporal_tls
        if tls is not None:
            env["TEMPORAL_TLS"] = "false" if tls.disabled else "true"
            if tls.server_name:
                env["TEMPORAL_TLS_SERVER_NAME"] = tls.server_name
            for name, stem, _ in _TLS_SOURCES:
                source = getattr(tls, name)
                if isinstance(source, Path):
                    env[f"{stem}_PATH"] = str(source)
                elif source is not None:
                    env[f"{stem}_DATA"] = source.decode() if isinstance(source, bytes) else source
        for key, value in self.temporal_grpc_meta:
            env["TEMPORAL_GRPC_META_" + key.upper().replace("-", "_")] = value
        if self.api_token:
            env["ORDERFLOW_API_TOKEN"] = self.api_token
        if self.metrics_address:
            env["ORDERFLOW_METRICS_ADDRESS"] = self.metrics_address
        if self.codec_keys:  # a key file's keys reach the child inline (as the API token does)
            env["ORDERFLOW_CODEC_KEYS"] = format_codec_keys(self.codec_keys)
        return env

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) without the variables of the Temporal
        connection or of these settings, plus ``to_env()``: a child configured by these settings alone."""
        base = os.environ if base is None else base
        dropped = (*ENVCONFIG_VARIABLES, *ORDERFLOW_VARIABLES)
        kept = {k: v for k, v in base.items() if k not in dropped and not k.startswith(ENVCONFIG_PREFIXES)}
        return kept | self.to_env()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Settings from ``env`` (default: this process's environment); ConfigError if they cannot work."""
        env = os.environ if env is None else env
        profile = load_temporal_profile(env)
        return cls(
            temporal_address=profile.address or cls.temporal_address,
            namespace=profile.namespace or cls.namespace,
            temporal_api_key=profile.api_key or None,
            temporal_tls=_normal_tls(profile.tls),
            temporal_grpc_meta=tuple(sorted(profile.grpc_meta.items())),
            temporal_profile=env.get("TEMPORAL_PROFILE") or None,
            db_url=env.get("ORDERFLOW_DB_URL", cls.db_url),
            orders_task_queue=env.get("ORDERFLOW_ORDERS_TASK_QUEUE", cls.orders_task_queue),
            shipping_task_queue=env.get("ORDERFLOW_SHIPPING_TASK_QUEUE", cls.shipping_task_queue),
            api_token=env.get("ORDERFLOW_API_TOKEN") or None,
            log_level=_log_level(env.get("ORDERFLOW_LOG_LEVEL") or cls.log_level),
            metrics_address=_metrics_address(env.get("ORDERFLOW_METRICS_ADDRESS")),
            max_in_flight=_non_negative_int(env, "ORDERFLOW_MAX_IN_FLIGHT", cls.max_in_flight),
            codec_keys=_codec_keys(env),
        )


def _non_negative_int(env, name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"{name} must be a whole number >= 0 (got {raw!r})")
    return value


def _log_level(value: str) -> str:
    if value.upper() not in ("CRITICAL", "ERROR", "WARNING", "WARN", "INFO", "DEBUG"):
        raise ConfigError(f"ORDERFLOW_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR (got {value!r})")
    return value


def _metrics_address(value: str | None) -> str | None:
    """``host:port`` or a bare port (bound on 127.0.0.1); empty = off."""
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    if not port.isdigit() or not 0 < int(port) < 65536 or (sep and not host):
        raise ConfigError(f"ORDERFLOW_METRICS_ADDRESS must be host:port or a port (got {value!r})")
    return f"{host}:{port}"


CODEC_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CODEC_KEY_BYTES = 32  # AES-256
NEW_KEY_HINT = "python -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())'"


def parse_codec_keys(text: str, source: str) -> tuple[tuple[str, bytes], ...]:
    """``id:base64key`` entries separated by commas or newlines, the current key first; a line
    starting with ``#`` is a comment. Errors name the entry and its id, never key material."""
    keys: list[tuple[str, bytes]] = []
    lines = (line for line in text.splitlines() if not line.strip().startswith("#"))  # comments first:
    entries = [e.strip() for line in lines for e in line.split(",")]  # a comment may hold a comma
    for n, entry in enumerate((e for e in entries if e), 1):
        key_id, sep, encoded = (part.strip() for part in entry.partition(":"))
        if not sep or not CODEC_KEY_ID.match(key_id):
            raise ConfigError(
                f"{source}: entry {n} is not id:base64key (an id of 1-64 letters, digits or _.- then a colon)"
            )
        try:
            key = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise ConfigError(f"{source}: key {key_id!r} is not valid base64") from None
        if len(key) != CODEC_KEY_BYTES:
            raise ConfigError(
                f"{source}: key {key_id!r} is {len(key)} bytes; AES-256 needs {CODEC_KEY_BYTES} (make one: {NEW_KEY_HINT})"
            )
        if any(key_id == known for known, _ in keys):
            raise ConfigError(f"{source}: key id {key_id!r} is listed twice")
        keys.append((key_id, key))
    return tuple(keys)


def format_codec_keys(keys: tuple[tuple[str, bytes], ...]) -> str:
    """The ORDERFLOW_CODEC_KEYS value for ``keys`` (parse_codec_keys reads it back)."""
    return ",".join(f"{key_id}:{base64.b64encode(key).decode()}" for key_id, key in keys)


def _codec_keys(env: Mapping[str, str]) -> tuple[tuple[str, bytes], ...]:
    """ORDERFLOW_CODEC_KEYS, or the file ORDERFLOW_CODEC_KEYS_FILE names (a mounted secret); unset = off.

    Set but holding no key is an error: a typo must not quietly run the workers unencrypted.
    """
    inline = env.get("ORDERFLOW_CODEC_KEYS") or ""
    path = env.get("ORDERFLOW_CODEC_KEYS_FILE") or ""
    if inline and path:
        raise ConfigError("set ORDERFLOW_CODEC_KEYS or ORDERFLOW_CODEC_KEYS_FILE, not both")
    if path:
        source = f"ORDERFLOW_CODEC_KEYS_FILE={path}"
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"{source}: cannot read it ({err.strerror})") from None
    else:
        source, text = "ORDERFLOW_CODEC_KEYS", inline
    keys = parse_codec_keys(text, source)
    if (path or inline.strip()) and not keys:
        raise ConfigError(f"{source}: no key in it; give id:base64key (make a key: {NEW_KEY_HINT})")
    return keys
