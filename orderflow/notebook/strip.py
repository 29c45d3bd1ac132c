"""Committed notebooks stay clean: the git "clean" filter that strips outputs and run metadata."""

from __future__ import annotations

import sys
from pathlib import Path

KEPT_CELL_METADATA = ("tags",)


def stripped(text: str) -> str:
    """A notebook's JSON without outputs, execution counts, saved widget state or per-cell run
    metadata (JupyterLab's "scrolled", "collapsed", "execution" timings), in one canonical layout."""
    import json

    nb = json.loads(text)
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb["cells"]:
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in KEPT_CELL_METADATA}
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def strip_notebook(path: Path) -> bool:
    """Rewrite ``path`` stripped; True if that changed it."""
    raw = path.read_text()
    clean = stripped(raw)
    if clean != raw:
        path.write_text(clean)
    return clean != raw


def main(args: list[str]) -> None:
    """``python -m orderflow.notebook notebooks/*.ipynb`` strips files in place;
    ``python -m orderflow.notebook -`` strips stdin to stdout (a git "clean" filter)."""
    if args == ["-"]:
        sys.stdout.write(stripped(sys.stdin.read()))
        return
    changed = [p for p in map(Path, args) if strip_notebook(p)]
    print("stripped:", ", ".join(map(str, changed)) or "nothing to strip")
