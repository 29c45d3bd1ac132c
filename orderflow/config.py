"""Settings read from the environment, and the names every layer shares."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ORDERS_TASK_QUEUE = "orders-tq"
SHIPPING_TASK_QUEUE = "shipping-tq"
NAMESPACE = "default"

DEFAULT_STATE_DIR = Path(os.environ.get("ORDERFLOW_HOME", Path.cwd() / "var"))


@dataclass(frozen=True)
class Settings:
    """Where the Temporal server and the app database are; every field has an env variable."""

    temporal_address: str = "127.0.0.1:7233"
    namespace: str = NAMESPACE
    db_url: str = f"sqlite:///{DEFAULT_STATE_DIR / 'orderflow.db'}"
    orders_task_queue: str = ORDERS_TASK_QUEUE
    shipping_task_queue: str = SHIPPING_TASK_QUEUE
    api_token: str | None = None
    log_level: str = "INFO"
    # Load shedding: orders in flight (started, not yet ended) beyond which the API answers
    # 429. Provisional; the measured default and how it was chosen are in the README. 0: no limit.
    max_in_flight: int = 40

    def to_env(self) -> dict[str, str]:
        """The environment variables that make another process's from_env() equal this."""
        env = {
            "TEMPORAL_ADDRESS": self.temporal_address,
            "TEMPORAL_NAMESPACE": self.namespace,
            "ORDERFLOW_DB_URL": self.db_url,
            "ORDERFLOW_ORDERS_TASK_QUEUE": self.orders_task_queue,
            "ORDERFLOW_SHIPPING_TASK_QUEUE": self.shipping_task_queue,
            "ORDERFLOW_LOG_LEVEL": self.log_level,
            "ORDERFLOW_MAX_IN_FLIGHT": str(self.max_in_flight),
        }
        if self.api_token:
            env["ORDERFLOW_API_TOKEN"] = self.api_token
        return env

    @classmethod
    def from_env(cls) -> "Settings":
        env = os.environ
        return cls(
            temporal_address=env.get("TEMPORAL_ADDRESS", cls.temporal_address),
            namespace=env.get("TEMPORAL_NAMESPACE", cls.namespace),
            db_url=env.get("ORDERFLOW_DB_URL", cls.db_url),
            orders_task_queue=env.get("ORDERFLOW_ORDERS_TASK_QUEUE", cls.orders_task_queue),
            shipping_task_queue=env.get("ORDERFLOW_SHIPPING_TASK_QUEUE", cls.shipping_task_queue),
            api_token=env.get("ORDERFLOW_API_TOKEN") or None,
            log_level=env.get("ORDERFLOW_LOG_LEVEL", cls.log_level),
            max_in_flight=_non_negative_int(env, "ORDERFLOW_MAX_IN_FLIGHT", cls.max_in_flight),
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
        raise ValueError(f"{name} must be a whole number >= 0 (got {raw!r})")
    return value
