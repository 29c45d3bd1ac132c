"""The package's architecture, read from its imports (``ast``; nothing is imported).

The layers below are the architecture a reader should see. A module imports only from its own
layer or the layers under it: the core never knows which tools sit on top of it, and the tools
around the core do not lean on each other except as listed. No two modules import each other,
even through others (no import circle). Workflow modules import only what is safe in the
workflow sandbox. And no module runs past MAX_LINES unless it is listed with its one job.
"""

from __future__ import annotations

import ast
import sys

from tests.import_graph import PACKAGE, cycles, read_graph

# Bottom to top. A pattern ending in ``*`` takes the package and everything in it.
LAYERS: list[tuple[str, list[str]]] = [
    # Names and settings every layer shares; no orderflow imports but among themselves.
    (
        "foundation",
        ["orderflow", "orderflow.models", "orderflow.errors", "orderflow.config", "orderflow.logs", "orderflow.codec"],
    ),
    # The app database: schema, migrations, the repository by aggregate.
    ("persistence", ["orderflow.db*"]),
    # What the workers run outside workflow code: activities, the flaky stubs, the task guard,
    # and the Prometheus collectors over the database.
    ("activities", ["orderflow.stubs", "orderflow.activities", "orderflow.task_guard", "orderflow.metrics"]),
    # Deterministic orchestration (see WORKFLOW_SAFE for what they may import).
    ("workflows", ["orderflow.workflows*"]),
    # Starting and driving orders (the client), running them (the worker), load shedding.
    ("client and worker", ["orderflow.order_client*", "orderflow.worker", "orderflow.admission"]),
    # The tools around the core. ``audit`` (pandas views of the database) serves the notebooks
    # and the benchmarks, never a worker or the API (tests/test_packaging.py).
    ("tools", ["orderflow.audit", "orderflow.api*", "orderflow.devstack*"]),
    ("tools that drive the stack", ["orderflow.bench*", "orderflow.notebook*"]),
    # The exercise framework for the notebooks sits on the notebook helpers.
    ("lessons", ["orderflow.lessons*"]),
    # The one entry point: it may import anything.
    ("entry point", ["orderflow.cli"]),
]

# Tool packages of the same layer stay apart; these are the sideways imports allowed (none).
SIDEWAYS: set[tuple[str, str]] = set()

# What a workflow module may import from the package: the payloads, and the other workflow
# modules. Activities are imported for their references only, inside
# ``workflow.unsafe.imports_passed_through()`` (checked below), so the sandbox does not re-import them.
WORKFLOW_SAFE = ["orderflow.models", "orderflow.workflows*"]
WORKFLOW_PASSED_THROUGH = ["orderflow.activities"]
WORKFLOW_EXTERNAL = {"temporalio"}  # besides the standard library

MAX_LINES = 400
# Longer modules, each doing one job (keep this list tiny).
LONG_MODULES = {
    "orderflow.workflows.order": "the order workflow: its lifecycle, its message handlers and its status query",
}


def matches(name: str, patterns: list[str]) -> bool:
    return any(name == p or (p.endswith("*") and (name == p[:-1] or name.startswith(p[:-1] + "."))) for p in patterns)


def layer_of(name: str) -> int:
    found = [i for i, (_, patterns) in enumerate(LAYERS) if matches(name, patterns)]
    assert len(found) == 1, f"{name} belongs to {len(found)} layers; add it to exactly one in LAYERS"
    return found[0]


def tool_package(name: str) -> str:
    """``orderflow.bench.storm`` -> ``orderflow.bench``: the unit that sideways rules speak of."""
    return ".".join(name.split(".")[:2])


GRAPH = read_graph()


def test_every_module_has_a_layer():
    for name in GRAPH:
        layer_of(name)


def test_no_import_runs_up_a_layer_or_sideways_between_tools():
    wrong = []
    for name, module in sorted(GRAPH.items()):
        mine = layer_of(name)
        for other in sorted(module.imports):
            theirs = layer_of(other)
            if theirs > mine:
                wrong.append(f"{name} ({LAYERS[mine][0]}) imports {other} ({LAYERS[theirs][0]}): upward")
            elif (
                theirs == mine
                and LAYERS[mine][0].startswith("tools")
                and tool_package(name) != tool_package(other)
                and (tool_package(name), tool_package(other)) not in SIDEWAYS
            ):
                wrong.append(f"{name} imports {other}: sideways between tools of one layer")
    assert not wrong, "\n".join(wrong)


def test_there_is_no_import_circle():
    assert cycles(GRAPH) == []


def test_the_layers_catch_a_circle_and_an_upward_import():
    """The checks themselves, on a made-up graph: they would see what they are meant to see."""
    from tests.import_graph import Module

    fake = {
        "orderflow.models": Module("orderflow.models", PACKAGE, 1, {"orderflow.cli"}),
        "orderflow.cli": Module("orderflow.cli", PACKAGE, 1, {"orderflow.models"}),
    }
    assert cycles(fake) == [["orderflow.cli", "orderflow.models"]]
    assert layer_of("orderflow.cli") > layer_of("orderflow.models")


def test_workflows_import_only_what_the_sandbox_allows():
    wrong = []
    stdlib = set(sys.stdlib_module_names)
    for name, module in sorted(GRAPH.items()):
        if not matches(name, ["orderflow.workflows*"]):
            continue
        for other in module.imports:
            if not matches(other, WORKFLOW_SAFE + WORKFLOW_PASSED_THROUGH):
                wrong.append(f"{name} imports {other}")
        for package in module.external - stdlib - WORKFLOW_EXTERNAL - {"__future__"}:
            wrong.append(f"{name} imports {package}")
        # The passed-through imports really are inside imports_passed_through().
        tree = ast.parse(module.path.read_text())
        passed: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.With) and "imports_passed_through" in ast.unparse(node.items[0].context_expr):
                passed.update(id(n) for n in ast.walk(node))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and matches(node.module or "", WORKFLOW_PASSED_THROUGH):
                if id(node) not in passed:
                    wrong.append(f"{name}:{node.lineno} imports {node.module} outside imports_passed_through()")
    assert not wrong, "\n".join(wrong)


def test_no_module_is_long_unless_it_does_one_job():
    long = {name: m.lines for name, m in GRAPH.items() if m.lines > MAX_LINES}
    unexplained = {name: lines for name, lines in long.items() if name not in LONG_MODULES}
    assert not unexplained, f"over {MAX_LINES} lines: {unexplained}; split them by job, or list one job in LONG_MODULES"
    stale = set(LONG_MODULES) - set(long)
    assert not stale, f"listed as long but no longer are: {sorted(stale)}; remove them from LONG_MODULES"


def test_patterns_name_real_modules():
    """A pattern that matches nothing is a typo (or a package that left): say so."""
    optional = {"orderflow.lessons*"}  # the exercise framework may not be in every checkout yet
    names = list(GRAPH)
    for _, patterns in LAYERS:
        for pattern in patterns:
            if pattern not in optional:
                assert any(matches(n, [pattern]) for n in names), pattern
