"""Plots: one order's timeline, and a batch's durations against the budget."""

from __future__ import annotations

import pandas as pd

from orderflow.notebook.stack import KernelStack


def plot_timeline(stack: KernelStack, order_id: str):
    """One order's audit events on a time axis: a row per step, failures and timeouts marked."""
    import matplotlib.pyplot as plt

    ev = stack.events([order_id])
    start = ev["ts"].min()
    ev = ev.assign(t=(ev["ts"] - start).dt.total_seconds(), step=ev["step"].fillna("order"))
    colors = {"attempt_failed": "tab:red", "attempt_timed_out": "tab:orange"}
    fig, ax = plt.subplots(figsize=(9, 3))
    rows = list(dict.fromkeys(ev["step"]))
    for _, e in ev.iterrows():
        ax.scatter(e["t"], rows.index(e["step"]), color=colors.get(e["type"], "tab:green"), s=30)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("seconds since the order started")
    ax.set_title(f"order {order_id}: red = failed attempt, orange = timed out, green = progress")
    fig.tight_layout()
    return fig


def plot_durations(frame: pd.DataFrame, budget: float = 15.0):
    """Histogram of order durations (a ``seconds`` column) against the budget line."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    frame["seconds"].plot.hist(ax=ax, bins=30)
    ax.axvline(budget, color="red", linestyle="--", label=f"{budget:g} s")
    ax.set_xlabel("seconds from start to terminal state")
    ax.legend()
    fig.tight_layout()
    return fig
