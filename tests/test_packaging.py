"""What the image and each install get.

* The image's dependency list is built here exactly as the Dockerfile builds it (its RUN line
  calls scripts/runtime-requirements.sh; the command is read out of the Dockerfile and run):
  what a worker and the API need is in it; the lint, notebook and test tools are not.
* pyproject.toml declares the same runtime dependencies, and every pinned name of
  requirements.txt is in the runtime list or in one of the extras ``notebooks`` and ``dev``.
* The runtime modules (worker, API, activities, workflows, database, config, models, client)
  import, through all the orderflow modules they reach, no notebook or benchmark package; and
  they do import in a Python where those packages cannot be imported.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

from tests.import_graph import ROOT, reachable, read_graph

NOT_IN_THE_IMAGE = {"ruff", "mypy", "jupyterlab", "pytest", "pandas", "matplotlib", "ipywidgets", "ipykernel", "nbmake"}
IN_THE_IMAGE = {"temporalio", "sqlalchemy", "fastapi", "uvicorn", "pymysql", "alembic", "cryptography"}
RUNTIME_ROOTS = [
    "orderflow.worker",
    "orderflow.api",
    "orderflow.api.codec_server",
    "orderflow.activities",
    "orderflow.workflows",
    "orderflow.db.repository",
    "orderflow.db.migrate",
    "orderflow.config",
    "orderflow.models",
    "orderflow.order_client",
]
# Packages that only the notebooks, the benchmarks and the dev stack use.
TOOL_PACKAGES = {"pandas", "matplotlib", "ipywidgets", "IPython", "jupyter", "jupyterlab", "tqdm", "psutil", "httpx"}


def normal(name: str) -> str:
    return re.split(r"[=<>\[ ;]", name.strip(), maxsplit=1)[0].lower().replace("_", "-")


def image_requirements() -> list[str]:
    """The Dockerfile's own command for the dependency list, run in the repository."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    (line,) = [ln for ln in lines if "runtime-requirements.sh" in ln and "/tmp/runtime.txt" in ln]
    command = line.strip().removeprefix("&&").removeprefix("RUN").strip().split(">")[0].strip()
    done = subprocess.run(["sh", "-c", command], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_the_image_gets_what_a_worker_and_the_api_need_and_no_tools():
    pins = image_requirements()
    names = {normal(p) for p in pins}
    assert all("==" in p for p in pins), pins  # pinned, and no "-e ."
    assert IN_THE_IMAGE <= names, IN_THE_IMAGE - names
    assert not NOT_IN_THE_IMAGE & names, NOT_IN_THE_IMAGE & names


def test_pyproject_declares_the_runtime_block_and_the_extras_cover_the_rest():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {normal(d) for d in project["dependencies"]}
    assert runtime == {normal(p) for p in image_requirements()}
    extras = project["optional-dependencies"]
    assert set(extras) == {"notebooks", "dev"}
    declared = runtime | {normal(d) for group in extras.values() for d in group}
    pinned = {
        normal(ln)
        for ln in (ROOT / "requirements.txt").read_text().splitlines()
        if ln.strip() and not ln.startswith(("#", "-e"))
    }
    assert pinned == declared, (pinned - declared, declared - pinned)
    assert {"jupyterlab", "pandas"} <= {normal(d) for d in extras["notebooks"]}
    assert {"ruff", "mypy", "pytest"} <= {normal(d) for d in extras["dev"]}


def test_requirements_have_the_four_sections_in_order():
    headers = [
        ln.split(":")[0] for ln in (ROOT / "requirements.txt").read_text().splitlines() if re.match(r"# [A-Z]", ln)
    ]
    assert [h.split()[1] for h in headers] == ["Runtime", "Notebooks", "Lint", "Tests"]
    assert (ROOT / "requirements.txt").read_text().splitlines()[-1] == "-e ."


def test_runtime_modules_reach_no_tool_package_through_the_package():
    graph = read_graph()
    reached = reachable(graph, RUNTIME_ROOTS)
    wrong = {name: sorted(graph[name].external & TOOL_PACKAGES) for name in sorted(reached)}
    wrong = {name: packages for name, packages in wrong.items() if packages}
    assert not wrong, f"runtime modules importing tool packages: {wrong}"
    assert not {n for n in reached if n.startswith(("orderflow.notebook", "orderflow.bench", "orderflow.audit"))}


def test_runtime_modules_import_without_the_tool_packages():
    """In a fresh interpreter where importing any tool package fails, the runtime modules import."""
    blocked = sorted(TOOL_PACKAGES)
    code = f"""
import importlib, importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not a runtime dependency")
sys.meta_path.insert(0, Block())
for name in {RUNTIME_ROOTS!r} + ["orderflow.cli"]:
    importlib.import_module(name)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
