"""The benchmarks and the command storm: tools that drive the stack from outside and measure it.

- ``closed_loop``: ``orderflow bench``, N orders at concurrency C through the Temporal client.
- ``user_path``: ``orderflow bench --api``, orders over HTTP in an open loop.
- ``storm`` and ``storm_checks``: ``orderflow storm``, the command storm and what it checks after.
- ``replay``: every history of a run replayed on today's code.
- ``common``: settings for a run, sampling, percentiles, the invariants line.
- ``command``: the ``orderflow bench`` options.

The modules import downwards only: ``command`` → ``closed_loop`` / ``user_path`` → ``replay``,
``common``; ``storm`` → ``storm_checks``, ``replay``, ``common``.
"""

from orderflow.bench.closed_loop import timeout_floor
from orderflow.bench.command import main

__all__ = ["main", "timeout_floor"]
