"""Exercise cells in notebooks: find them, put the solutions in, read the verdicts, add new ones.

An exercise is four cells: a markdown "## Your turn: <title>", the **exercise cell** (tagged
``exercise``; metadata ``{"orderflow": {"exercise": "<id>"}}`` where the notebook keeps it),
the check cell ``await check("<id>")`` and ``solution("<id>")``. The id is read from the cell's
metadata, else from the check cell that follows it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orderflow.lessons.exercise import MARKER, OUTCOMES, solution_source

TAG = "exercise"
CHECK_CALL = re.compile(r"""check\(\s*["']([^"']+)["']""")
MARKER_LINE = re.compile(MARKER.format(id=r"(\S+)", outcome="(" + "|".join(OUTCOMES) + ")"))
STOP = "await stack.stop()"
IMPORT = "from orderflow.lessons import check, solution"


@dataclass
class ExerciseCell:
    exercise_id: str
    notebook: Path
    index: int  # the cell's position in the notebook
    source: str  # the starter, as published


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def exercise_cells(path: Path, nb: dict | None = None) -> list[ExerciseCell]:
    nb = nb if nb is not None else json.loads(Path(path).read_text())
    cells = nb["cells"]
    found = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "code" or TAG not in cell.get("metadata", {}).get("tags", []):
            continue
        exercise_id = cell.get("metadata", {}).get("orderflow", {}).get("exercise")
        if not exercise_id:
            following = next((c for c in cells[i + 1 :] if c["cell_type"] == "code"), None)
            match = CHECK_CALL.search(_source(following)) if following else None
            if not match:
                raise ValueError(f"{path}: exercise cell {i} has no id and no check cell after it")
            exercise_id = match.group(1)
        found.append(ExerciseCell(exercise_id, Path(path), i, _source(cell)))
    return found


def with_solutions(path: Path) -> dict:
    """The notebook with every exercise cell's source replaced by its solution."""
    nb = json.loads(Path(path).read_text())
    for ex in exercise_cells(path, nb):
        answer = solution_source(ex.exercise_id)
        if answer is None:
            raise FileNotFoundError(f"no solution for {ex.exercise_id} in notebooks/solutions/")
        nb["cells"][ex.index]["source"] = answer
    return nb


def markers(nb: Any) -> dict[str, str]:
    """exercise id -> outcome, from the text outputs of an executed notebook (the last one wins)."""
    found: dict[str, str] = {}
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            texts = [out.get("text", "")]
            data = out.get("data", {})
            texts += [data.get("text/plain", ""), data.get("text/html", "")]
            for text in texts:
                text = "".join(text) if isinstance(text, list) else text
                for m in MARKER_LINE.finditer(text):
                    found[m.group(1)] = m.group(2)
    return found


def _cell(kind: str, cell_id: str, source: str, metadata: dict | None = None) -> dict:
    """A cell in the committed notebooks' own key order (so adding one changes no other line)."""
    lines = source.strip("\n").splitlines(keepends=True)
    cell: dict[str, Any] = {"cell_type": kind, "id": cell_id, "metadata": metadata or {}, "source": lines}
    if kind == "code":
        cell |= {"execution_count": None, "outputs": []}
    return cell


def exercise_cells_for(exercise_id: str, title: str, task: str, starter: str, with_import: bool = True) -> list[dict]:
    """The cells of an exercise: the task, (the import), the exercise, the check, the solution."""
    cells = [_cell("markdown", f"{exercise_id}-task", f"## Your turn: {title}\n\n{task.strip()}")]
    if with_import:
        cells.append(_cell("code", f"{exercise_id}-import", IMPORT))
    cells += [
        _cell("code", f"{exercise_id}-answer", starter, {"tags": [TAG], "orderflow": {"exercise": exercise_id}}),
        _cell("code", f"{exercise_id}-check", f'await check("{exercise_id}")'),
        _cell("code", f"{exercise_id}-solution", f'solution("{exercise_id}")'),
    ]
    return cells


def add_exercise(path: Path, exercise_id: str, title: str, task: str, starter: str) -> None:
    """Put an exercise's cells in a notebook, stripped as committed: before the last cell when
    that cell stops the stack (the check needs it running), else at the end; with the import of
    ``check`` and ``solution`` unless the notebook has it already. Other cells are untouched."""
    from orderflow.notebook import stripped

    path = Path(path)
    nb = json.loads(path.read_text())
    if any(e.exercise_id == exercise_id for e in exercise_cells(path, nb)):
        raise ValueError(f"{path} has exercise {exercise_id} already")
    cells = nb["cells"]
    with_import = not any(IMPORT in _source(c) for c in cells)
    new = exercise_cells_for(exercise_id, title, task, starter, with_import)
    at = len(cells) - 1 if cells and STOP in _source(cells[-1]) else len(cells)
    cells[at:at] = new
    path.write_text(stripped(json.dumps(nb)))
