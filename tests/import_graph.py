"""The package's import graph, read from the source with ``ast`` (nothing is imported).

Every ``import`` counts, at module level or inside a function (a lazy import is still a
dependency); imports under ``if TYPE_CHECKING:`` do not (they never run). A module is named by
its dotted path (``orderflow.db.orders``); a package by its ``__init__``'s name (``orderflow.db``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "orderflow"


@dataclass
class Module:
    name: str
    path: Path
    lines: int
    imports: set[str] = field(default_factory=set)  # orderflow modules it imports
    external: set[str] = field(default_factory=set)  # top-level names of other packages (stdlib included)
    # (module imported, attribute) for every ``module.attr`` / ``from module import attr`` use
    attributes: set[tuple[str, str]] = field(default_factory=set)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:``."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skipped.update(id(n) for n in ast.walk(inner))
    return skipped


def _resolve(target: str, known: set[str]) -> str | None:
    """The orderflow module ``target`` names, or its closest enclosing package."""
    while target:
        if target in known:
            return target
        target = target.rpartition(".")[0]
    return None


def read_graph() -> dict[str, Module]:
    paths = sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.relative_to(PACKAGE).parts)
    modules = {module_name(p): Module(module_name(p), p, len(p.read_text().splitlines())) for p in paths}
    known = set(modules)
    for module in modules.values():
        tree = ast.parse(module.path.read_text(), str(module.path))
        skipped = _type_checking_blocks(tree)
        package = module.name if module.path.name == "__init__.py" else module.name.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            targets: list[tuple[str, list[str]]] = []
            if isinstance(node, ast.Import):
                targets = [(alias.name, []) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [(base, [alias.name for alias in node.names])]
            for base, names in targets:
                if not base.startswith("orderflow"):
                    module.external.add(base.split(".")[0])
                    module.attributes.update((base, name) for name in names)
                    continue
                for name in names or [""]:  # `from orderflow import audit` imports orderflow.audit
                    found = _resolve(f"{base}.{name}" if name else base, known)
                    if found and found != module.name:
                        module.imports.add(found)
    return modules


def reachable(modules: dict[str, Module], roots: list[str]) -> set[str]:
    """Every orderflow module that importing ``roots`` may import, the roots included. Importing
    ``a.b.c`` runs the ``__init__`` of ``a`` and ``a.b`` too."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in modules:
            continue
        seen.add(name)
        todo += modules[name].imports
        parent = name.rpartition(".")[0]
        while parent:
            todo.append(parent)
            parent = parent.rpartition(".")[0]
    return seen


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for other in sorted(modules[name].imports):
            if other not in index:
                visit(other)
                low[name] = min(low[name], low[other])
            elif other in on_stack:
                low[name] = min(low[name], index[other])
        if low[name] == index[name]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == name:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in sorted(modules):
        if name not in index:
            visit(name)
    return found
