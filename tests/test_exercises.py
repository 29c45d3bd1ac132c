"""Every exercise can fail and can pass, judged by a real Temporal.

Data-driven: exercises are found in the notebooks (cells tagged ``exercise``), solutions in
``notebooks/solutions/<id>.py``, planted wrong answers in ``tests/exercises/wrong/<id>*.py``
(first line ``# expect: <text the verdict's message must contain>``). A new exercise needs no
edit here. For each: the untouched starter is "not-done", the solution "passed", every wrong
answer "wrong" with its expected text. Then every notebook runs with the solutions put in, and
every check in it must say "passed" (CI runs the published notebooks with nbmake: there the
checks say "not-done" and the run stays green).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
from pathlib import Path

import pytest

from orderflow.lessons.exercise import SOLUTIONS, load_checks, run_check
from orderflow.lessons.notebooks import exercise_cells, markers, with_solutions

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WRONG = ROOT / "tests" / "exercises" / "wrong"
CELLS = {e.exercise_id: e for path in NOTEBOOKS for e in exercise_cells(path)}
IDS = sorted(CELLS)
SOURCE_TIMEOUT = 45  # seconds the learner's cell itself may run


def wrong_answers(exercise_id: str) -> list[Path]:
    return sorted(p for p in WRONG.glob(f"{exercise_id}*.py") if _owner(p) == exercise_id)


def _owner(path: Path) -> str:
    """The exercise a wrong answer belongs to: the longest exercise id its name starts with."""
    return max((i for i in CELLS if path.stem == i or path.stem.startswith(i + "-")), key=len, default="")


WRONG_CASES = [(i, p) for i in IDS for p in wrong_answers(i)]


def expected_text(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect:"), f"{path.name}: the first line must be '# expect: <text>'"
    return first.removeprefix("# expect:").strip()


@pytest.fixture(scope="module")
async def kernel_stack():
    """One kernel-less stack for the module: a dev server of its own, a SQLite file, both workers."""
    from orderflow.notebook import start_stack

    stack = await start_stack()
    yield stack
    await stack.stop()


async def run_source(source: str, stack) -> dict:
    """Run a cell's source as a kernel would (top-level await allowed) in a fresh namespace that
    holds the kernel's ``stack``; return the namespace."""
    ns: dict = {"__name__": "__main__", "stack": stack}
    code = compile(source, "<exercise cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    async with asyncio.timeout(SOURCE_TIMEOUT):
        result = eval(code, ns)
        if inspect.iscoroutine(result):
            await result
    return ns


def test_every_exercise_has_a_check_a_solution_and_a_wrong_answer():
    registered = load_checks()
    assert IDS, "no exercise cells found in the notebooks"
    for exercise_id, cell in CELLS.items():
        assert exercise_id in registered, f"{cell.notebook.name}: no check registered for {exercise_id}"
        assert (SOLUTIONS / f"{exercise_id}.py").exists(), f"no notebooks/solutions/{exercise_id}.py"
        assert wrong_answers(exercise_id), f"no planted wrong answer tests/exercises/wrong/{exercise_id}*.py"
        assert cell.notebook.name.startswith(registered[exercise_id].notebook), (exercise_id, cell.notebook.name)
    assert set(registered) <= set(CELLS), f"checks without an exercise cell: {set(registered) - set(CELLS)}"
    solved = {p.stem for p in SOLUTIONS.glob("*.py")}
    assert solved <= set(CELLS), f"solutions without an exercise cell: {solved - set(CELLS)}"
    assert all(_owner(p) for p in WRONG.glob("*.py")), "a wrong answer whose name starts with no exercise id"


@pytest.mark.parametrize("exercise_id", IDS)
async def test_the_untouched_starter_is_not_done(kernel_stack, exercise_id):
    ns = await run_source(CELLS[exercise_id].source, kernel_stack)
    verdict = await run_check(exercise_id, stack=kernel_stack, ns=ns)
    assert verdict.outcome == "not-done", verdict
    assert len(verdict.message) > 30, f"say what to do: {verdict.message!r}"


@pytest.mark.parametrize("exercise_id", IDS)
async def test_the_solution_passes(kernel_stack, exercise_id):
    ns = await run_source((SOLUTIONS / f"{exercise_id}.py").read_text(), kernel_stack)
    verdict = await run_check(exercise_id, stack=kernel_stack, ns=ns)
    assert verdict.outcome == "passed", verdict


@pytest.mark.parametrize("exercise_id,path", WRONG_CASES, ids=[p.stem for _, p in WRONG_CASES])
async def test_a_planted_wrong_answer_is_caught(kernel_stack, exercise_id, path):
    expected = expected_text(path)
    ns = await run_source(path.read_text(), kernel_stack)
    verdict = await run_check(exercise_id, stack=kernel_stack, ns=ns)
    assert verdict.outcome == "wrong", verdict
    assert expected in verdict.message, f"expected {expected!r} in: {verdict.message}"
    assert "Traceback" not in verdict.message


async def test_a_check_never_raises_and_names_the_unknown(kernel_stack):
    verdict = await run_check("no-such-exercise", stack=kernel_stack, ns={})
    assert verdict.outcome == "wrong" and "no-such-exercise" in verdict.message
    assert verdict.marker == "exercise no-such-exercise: wrong"


# -- every notebook with the solutions put in -----------------------------------------------------

# The run of every notebook with its solutions put in is tests/test_browser.py's: each notebook
# opens in JupyterLab with the solutions in its exercise cells, and every check must say Passed.


# -- the mechanism itself, without a server ----------------------------------------------------------


@pytest.fixture
def practice():
    """A throwaway exercise whose check does what the test's namespace says."""
    from orderflow.lessons.exercise import EXERCISES, NotDone, Verdict, Wrong, exercise, learner

    @exercise("00-practice", title="practice", notebook="00", timeout=0.5)
    async def check_practice(stack, ns):
        answer = learner(ns, "answer", "a number")
        if answer == "hang":
            await asyncio.sleep(5)
        if answer == "raise":
            raise KeyError("no such key")
        if answer == "todo":
            raise NotImplementedError
        if answer == "wrong":
            raise Wrong("41 is not 42")
        if answer == "not done":
            raise NotDone("still the starter")
        return Verdict("passed", "42 it is")

    yield "00-practice"
    EXERCISES.pop("00-practice")


@pytest.mark.parametrize(
    "answer,outcome,text",
    [
        (42, "passed", "42 it is"),
        (..., "not-done", "`answer` is still Ellipsis"),
        (None, "not-done", "fill it in (a number)"),
        ("todo", "not-done", "NotImplementedError"),
        ("not done", "not-done", "still the starter"),
        ("wrong", "wrong", "41 is not 42"),
        ("raise", "wrong", "your code raised KeyError: 'no such key'"),
        ("hang", "wrong", "took too long"),
    ],
)
async def test_a_check_turns_every_ending_into_a_verdict(practice, answer, outcome, text):
    verdict = await run_check(practice, stack=object(), ns={"answer": answer})
    assert (verdict.outcome, verdict.exercise_id) == (outcome, practice), verdict
    assert text in verdict.message
    assert verdict.marker == f"exercise {practice}: {outcome}"


async def test_check_takes_the_callers_globals_prints_the_marker_and_returns(practice, capsys):
    from orderflow.lessons import check

    globals()["answer"] = 42
    try:
        verdict = await check(practice, stack=object())
    finally:
        del globals()["answer"]
    assert verdict.passed
    assert f"exercise {practice}: passed" in capsys.readouterr().out.splitlines()


def test_the_verdict_box_and_the_folded_solution():
    from orderflow.lessons import Verdict, solution

    box = Verdict("wrong", "a <b>bold</b> claim", "03-retry-deadline")._repr_html_()
    assert "<!-- exercise 03-retry-deadline: wrong -->" in box and "&lt;b&gt;" in box
    shown = solution("03-retry-deadline")
    assert shown._repr_html_().startswith("<details") and "<summary>Show the solution</summary>" in shown._repr_html_()
    assert "RetryPolicy" not in repr(shown), "the text form does not give the solution away"
    assert "no solution" in repr(solution("no-such-exercise"))


def test_exercise_cells_are_found_and_solutions_put_in():
    for path in [p for p in NOTEBOOKS if exercise_cells(p)]:
        solved = with_solutions(path)
        for ex in exercise_cells(path):
            assert "".join(solved["cells"][ex.index]["source"]) == (SOLUTIONS / f"{ex.exercise_id}.py").read_text()
            assert "..." in ex.source or "TODO" in ex.source, f"{ex.exercise_id}: the starter says what to fill in"
    executed = {"cells": [{"outputs": [{"data": {"text/plain": "exercise 01-x: passed\nPassed: fine"}}]}]}
    assert markers(executed) == {"01-x": "passed"}


async def test_a_nondeterminism_error_is_told_in_one_sentence():
    """The core's failure dump (300+ characters, cut at ``cause:``) becomes the sentence that says
    what differs: what a learner reads in exercise 06's verdict and in any check's message."""
    from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

    from orderflow.lessons.exercise import one_line
    from orderflow.lessons.harness import nondeterminism_reason, quiet_worker_logs
    from orderflow.notebook import ReorderedOrderWorkflow
    from orderflow.workflows import ShippingWorkflow
    from tests.helpers import HISTORIES, load_history

    replayer = Replayer(
        workflows=[ReorderedOrderWorkflow, ShippingWorkflow], workflow_runner=UnsandboxedWorkflowRunner()
    )
    with quiet_worker_logs():
        replay = await replayer.replay_workflow(
            load_history(HISTORIES / "happy_path.json"), raise_on_replay_failure=False
        )
    sentence = (
        "Activity type of recorded marker 'ReceiveOrder' does not match activity type of local activity command "
        "'ValidateOrder'"
    )
    assert len(str(replay.replay_failure)) > 300
    assert nondeterminism_reason(replay.replay_failure) == sentence
    assert one_line(replay.replay_failure) == f"NondeterminismError: {sentence}"
