"""Exercises that Temporal judges: a notebook's "your turn" cell, a check cell and a hidden solution.

A notebook ends with an exercise cell (tagged ``exercise``) that the learner edits, a check cell
``await check("03-retry-deadline")`` that runs the learner's code against the kernel's own
Temporal and shows a verdict in plain words, and a cell ``solution("03-retry-deadline")`` that
shows the solution folded away until asked for. The checks live in ``orderflow.lessons.checks``
(one module per notebook, each found by itself); nothing in the package imports this one.

Adding an exercise (no other file to edit; tests/test_exercises.py finds all of it):

1. ``orderflow/lessons/checks/nbNN.py``: ``@exercise("NN-name", title=..., notebook="NN")`` on
   ``async def check(stack, ns) -> Verdict``; take the learner's names with
   ``learner(ns, "my_name")`` (NotDone while still ``...``), raise ``Wrong("what, why, a hint")``;
   run the learner's code on ``harness.task_queue(...)`` with ``harness.worker(...)`` and start
   workflows with ``harness.start(...)`` (bounded by an execution timeout).
2. ``notebooks/solutions/NN-name.py`` (runs as a notebook cell: top-level ``await`` allowed, the
   kernel's ``stack`` defined) and ``tests/exercises/wrong/NN-name-<why>.py`` whose first line is
   ``# expect: <text the verdict must contain>``.
3. The cells: ``orderflow.lessons.notebooks.add_exercise(path, id, title, task, starter)``.
"""

from orderflow.lessons.exercise import (
    EXERCISES,
    Exercise,
    NotDone,
    Verdict,
    Wrong,
    check,
    exercise,
    load_checks,
    solution,
)

__all__ = ["EXERCISES", "Exercise", "NotDone", "Verdict", "Wrong", "check", "exercise", "load_checks", "solution"]
