"""Conventions of the package, read from its source with ``ast``.

* ``config.py`` owns every environment variable: no other module reads ``os.environ`` or
  ``os.getenv`` (``Settings.from_env`` and the few process switches beside it are the one place
  to look up what the environment can change).
* No private SDK API: no module uses an ``_underscored`` name of a ``temporalio`` module, nor
  imports a private ``temporalio`` module. (``task_guard.py`` reads the SDK's bridge protobufs
  of ``temporalio.bridge.proto``: public names of the package the SDK's own worker API hands
  to a ``WorkflowRunner``, so nothing is listed here.)
"""

from __future__ import annotations

import ast

from tests.import_graph import ROOT, read_graph

GRAPH = read_graph()

# Modules allowed to read the environment, with the reason.
ENVIRONMENT_READERS = {
    "orderflow.config": "Settings and the process switches: the one owner of every variable",
}
# (module, name) uses of a private temporalio name allowed, with the reason (keep it empty).
PRIVATE_SDK_ALLOWED: dict[tuple[str, str], str] = {}


def _sdk_aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> temporalio module it stands for (``from temporalio import workflow``)."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("temporalio"):
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.asname and alias.name or "temporalio"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("temporalio") and not node.level:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_only_config_reads_the_environment():
    wrong = []
    for name, module in sorted(GRAPH.items()):
        if name in ENVIRONMENT_READERS:
            continue
        for node in ast.walk(ast.parse(module.path.read_text())):
            text = ast.unparse(node) if isinstance(node, (ast.Attribute, ast.Name)) else ""
            if text in ("os.environ", "os.getenv", "environ", "getenv", "os.environb", "os.putenv"):
                wrong.append(f"{module.path.relative_to(ROOT)}:{node.lineno} reads {text}")
    assert not wrong, "\n".join(sorted(set(wrong))) + "\nread it in orderflow/config.py instead"


def test_no_private_sdk_api():
    wrong = []
    for name, module in sorted(GRAPH.items()):
        tree = ast.parse(module.path.read_text())
        aliases = _sdk_aliases(tree)
        for node in ast.walk(tree):
            found = None
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for dotted in modules:
                    if dotted.startswith("temporalio") and any(_private(part) for part in dotted.split(".")):
                        found = dotted
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("temporalio"):
                    found = found or next((a.name for a in node.names if _private(a.name)), None)
            elif isinstance(node, ast.Attribute) and _private(node.attr):
                base = node.value
                if isinstance(base, ast.Name) and base.id in aliases:
                    found = f"{aliases[base.id]}.{node.attr}"
            if found and (name, found) not in PRIVATE_SDK_ALLOWED:
                wrong.append(f"{module.path.relative_to(ROOT)}:{node.lineno} uses {found}")
    assert not wrong, "\n".join(wrong)


def test_the_private_api_check_sees_what_admission_used_to_do():
    source = "from temporalio import workflow\nname = workflow._Definition.must_from_class(object).name\n"
    tree = ast.parse(source)
    aliases = _sdk_aliases(tree)
    hits = [
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and _private(n.attr) and isinstance(n.value, ast.Name) and n.value.id in aliases
    ]
    assert hits == ["_Definition"]
