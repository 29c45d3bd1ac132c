"""The notebooks are committed clean and stay thin (nbmake executes them: `make test`)."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted(Path(__file__).parents[1].joinpath("notebooks").glob("*.ipynb"))


def test_all_seven_notebooks_exist():
    assert len(NOTEBOOKS) == 7


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stripped_and_thin(path):
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip outputs"
    source = "\n".join("".join(c["source"]) for c in code)
    assert "@workflow.defn" not in source and "@activity.defn" not in source, "define workflows in the package"
    assert "await stack.stop()" in "".join(code[-1]["source"]), "the last cell stops what the notebook started"
    assert any("assert" in "".join(c["source"]) for c in code), "a notebook ends by checking its results"
