"""Helpers for the teaching notebooks, one module a job.

Notebooks import from here and define nothing themselves: the workflows they teach live in
``orderflow.workflows`` and are shown with :func:`show_source`; the helpers here only do the
boring parts (starting things, tables, plots, the widget).

- ``faults``: the log filter that counts the SDK's warnings for injected faults.
- ``stack``: the kernel's stack (Temporal server, database, workers) and ``new_id``.
- ``batch``: a batch of orders as a DataFrame.
- ``source``: the package's own source on screen.
- ``history``: Temporal's event history as a DataFrame.
- ``replay_lesson``: the non-deterministic change of notebook 06.
- ``console`` and ``render``: the order console widget and its HTML.
- ``plots``: a timeline and a histogram.
- ``strip``: the git clean filter (``python -m orderflow.notebook``).
"""

from orderflow.notebook.batch import run_batch
from orderflow.notebook.console import OrderConsole
from orderflow.notebook.faults import FAULTS, FaultCounter
from orderflow.notebook.history import history_frame
from orderflow.notebook.plots import plot_durations, plot_timeline
from orderflow.notebook.render import STEP_ORDER, Reply, as_table, render_replies, render_status, review_deadline
from orderflow.notebook.replay_lesson import ReorderedOrderWorkflow, replay_failure_sentence
from orderflow.notebook.source import PACKAGE_ROOT, SourceView, show_source
from orderflow.notebook.stack import QUIET_BEFORE_SHUTDOWN, TEMPORAL_ENV, KernelStack, StackError, new_id, start_stack
from orderflow.notebook.strip import KEPT_CELL_METADATA, main, strip_notebook, stripped

__all__ = [
    "FAULTS",
    "KEPT_CELL_METADATA",
    "PACKAGE_ROOT",
    "QUIET_BEFORE_SHUTDOWN",
    "TEMPORAL_ENV",
    "STEP_ORDER",
    "FaultCounter",
    "KernelStack",
    "OrderConsole",
    "ReorderedOrderWorkflow",
    "Reply",
    "SourceView",
    "StackError",
    "as_table",
    "history_frame",
    "main",
    "new_id",
    "plot_durations",
    "plot_timeline",
    "render_replies",
    "render_status",
    "replay_failure_sentence",
    "review_deadline",
    "run_batch",
    "show_source",
    "start_stack",
    "strip_notebook",
    "stripped",
]
