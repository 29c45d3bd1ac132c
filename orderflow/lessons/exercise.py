"""The exercise mechanism: register a check, run it on the kernel's stack, show the verdict.

A check is ``async def check(stack, ns) -> Verdict``: ``stack`` is the kernel's stack from
``orderflow.notebook.start_stack()`` (``.client``, ``.settings``), ``ns`` the notebook's globals
(what the learner defined). It may also end by raising :class:`NotDone` (the starter is
untouched) or :class:`Wrong` (with the message for the learner); any other exception, which
comes from the learner's code, becomes a "wrong" verdict with the exception's one line.

``await check("03-retry-deadline")`` in a notebook never raises: the published notebook runs
green with every exercise untouched. It shows the verdict (a coloured box in Jupyter, plain text
elsewhere) with a marker line that tests read, ``exercise 03-retry-deadline: passed``, and
returns it.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import importlib
import io
import pkgutil
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Outcome = Literal["passed", "not-done", "wrong"]
OUTCOMES: tuple[Outcome, ...] = ("passed", "not-done", "wrong")
CHECK_TIMEOUT = 60.0  # seconds a whole check may take, unless the exercise says otherwise
SOLUTIONS = Path(__file__).resolve().parents[2] / "notebooks" / "solutions"
MARKER = "exercise {id}: {outcome}"  # tests read this line from a cell's outputs
NONDETERMINISM = re.compile(r"[Nn]ondeterminism error:\s*(.+?)(?:\\?\"|, cause|\n|$)")

_STYLE: dict[str, tuple[str, str, str]] = {  # outcome -> (title, border colour, background)
    "passed": ("Passed", "#1a7f37", "#e9f7ec"),
    "not-done": ("Not done yet", "#8a6d00", "#fff8e1"),
    "wrong": ("Not yet right", "#c62828", "#fdecea"),
}


class NotDone(Exception):
    """Raised by a check: the exercise cell still holds its starter (``...``, ``None``, a TODO)."""


class Wrong(Exception):
    """Raised by a check: the learner's answer is wrong, and the message says how."""


@dataclass
class Verdict:
    """What a check found: ``passed``, ``not-done`` or ``wrong``, and why in plain words."""

    outcome: Outcome
    message: str
    exercise_id: str = ""
    seconds: float | None = field(default=None, compare=False)
    _shown_in: int | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {self.outcome!r}")

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    @property
    def marker(self) -> str:
        return MARKER.format(id=self.exercise_id, outcome=self.outcome)

    def __str__(self) -> str:
        title = _STYLE[self.outcome][0]
        return f"{self.marker}\n{title}: {self.message}"

    def _repr_html_(self) -> str:
        title, border, background = _STYLE[self.outcome]
        took = f" <span style='color:#555'>({self.seconds:.1f} s)</span>" if self.seconds is not None else ""
        body = html.escape(self.message).replace("\n", "<br>")
        return (
            f"<!-- {html.escape(self.marker)} -->"
            f"<div class='orderflow-verdict orderflow-verdict-{self.outcome}' "
            f"style='border-left:6px solid {border};background:{background};padding:8px 12px;margin:4px 0'>"
            f"<b style='color:{border}'>{title}</b> "
            f"<span style='color:#555'>exercise {html.escape(self.exercise_id)}</span>{took}<br>{body}</div>"
        )

    def _ipython_display_(self) -> None:
        from IPython.display import display

        count = _execution_count()
        if count is not None and count == self._shown_in:
            return  # check() showed it in this very cell already: once is enough
        display({"text/html": self._repr_html_(), "text/plain": str(self)}, raw=True)
        self._shown_in = count


CheckFn = Callable[[Any, dict], Awaitable["Verdict | None"]]


@dataclass
class Exercise:
    id: str
    title: str
    notebook: str
    fn: CheckFn
    timeout: float = CHECK_TIMEOUT

    @property
    def solution_path(self) -> Path:
        return SOLUTIONS / f"{self.id}.py"


EXERCISES: dict[str, Exercise] = {}


def exercise(exercise_id: str, *, title: str, notebook: str, timeout: float = CHECK_TIMEOUT):
    """Register ``async def check(stack, ns) -> Verdict`` as the check of ``exercise_id``.

    The function may return a Verdict (its exercise id is filled in), return None (passed, with a
    generic message) or raise NotDone / Wrong with the message for the learner."""

    def register(fn: CheckFn) -> CheckFn:
        EXERCISES[exercise_id] = Exercise(exercise_id, title, notebook, fn, timeout)
        return fn

    return register


def load_checks() -> dict[str, Exercise]:
    """Import every module of ``orderflow.lessons.checks`` (each registers its exercises)."""
    from orderflow.lessons import checks

    for module in pkgutil.iter_modules(checks.__path__):
        importlib.import_module(f"{checks.__name__}.{module.name}")
    return EXERCISES


# -- what a learner defined ---------------------------------------------------------------------


def untouched(value: Any) -> bool:
    return value is None or value is Ellipsis


def learner(ns: dict, name: str, what: str = "") -> Any:
    """The learner's ``name`` from the notebook's globals; NotDone if it is missing or still
    the starter's ``...`` / ``None``."""
    value = ns.get(name, Ellipsis)
    if untouched(value):
        hint = f" ({what})" if what else ""
        state = "is not defined" if name not in ns else f"is still {value!r}"
        raise NotDone(f"`{name}` {state}: fill it in{hint} in the exercise cell, run that cell, then this one.")
    return value


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception as one line: its type and the first line of its message (no traceback).
    A Temporal failure is reported by its innermost cause, the one that says what happened."""
    inner = err
    seen = set()
    while id(inner) not in seen:
        seen.add(id(inner))
        nxt = getattr(inner, "cause", None) or inner.__cause__
        if not isinstance(nxt, BaseException):
            break
        inner = nxt
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
    nondeterminism = NONDETERMINISM.search(text)
    if nondeterminism:  # the core's failure dump: only its sentence that says what differs
        text = nondeterminism.group(1).strip().rstrip(".")
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    kind = type(inner).__name__
    return f"{kind}: {text}" if text else kind


# -- running a check ----------------------------------------------------------------------------


def _execution_count() -> int | None:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return getattr(shell, "execution_count", None) if shell is not None else None


async def _kernel_stack(ns: dict) -> Any:
    """The notebook's ``stack`` if it is a running one, else this kernel's (started if needed)."""
    candidate = ns.get("stack")
    if candidate is not None and hasattr(candidate, "client") and not getattr(candidate, "stopped", False):
        return candidate
    from orderflow.notebook import start_stack

    with contextlib.redirect_stdout(io.StringIO()):  # "already running; using it"
        return await start_stack()


async def run_check(exercise_id: str, stack: Any = None, ns: dict | None = None) -> Verdict:
    """Run the check of ``exercise_id`` and return its Verdict; never raises, shows nothing."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    ns = {} if ns is None else ns

    def verdict(outcome: Outcome, message: str) -> Verdict:
        return Verdict(outcome, message, exercise_id, seconds=loop.time() - began)

    load_checks()
    ex = EXERCISES.get(exercise_id)
    if ex is None:
        known = ", ".join(sorted(EXERCISES)) or "none"
        return verdict("wrong", f"there is no exercise called {exercise_id!r} (known: {known})")
    try:
        async with asyncio.timeout(ex.timeout):
            if stack is None:
                stack = await _kernel_stack(ns)
            found = await ex.fn(stack, ns)
    except NotDone as err:
        return verdict("not-done", str(err))
    except NotImplementedError:
        return verdict("not-done", "your code still raises NotImplementedError: replace it with your answer.")
    except Wrong as err:
        return verdict("wrong", str(err))
    except TimeoutError:
        return verdict(
            "wrong",
            f"took too long: the check stopped after {ex.timeout:g} s. Something waits for ever "
            "(a workflow nobody finishes, an attempt without a timeout?).",
        )
    except asyncio.CancelledError:
        if asyncio.current_task() and asyncio.current_task().cancelling():  # type: ignore[union-attr]
            raise  # the cell itself was interrupted
        return verdict("wrong", "cancelled while it ran (CancelledError)")
    except Exception as err:  # noqa: BLE001 - the learner's code failed: one line, no traceback
        return verdict("wrong", f"your code raised {one_line(err)}")
    if found is None:
        return verdict("passed", "Temporal ran your code and everything checked out.")
    if not isinstance(found, Verdict):
        return verdict("wrong", f"the check returned {found!r} instead of a Verdict (a bug in the check)")
    found.exercise_id = exercise_id
    found.seconds = loop.time() - began
    return found


def show(verdict: Verdict) -> None:
    """In Jupyter: the coloured box (its HTML holds the marker as a comment) and text/plain with
    the marker line; elsewhere: the text."""
    if _execution_count() is not None:
        from IPython.display import display

        display(verdict)
    else:
        print(verdict)


def check(exercise_id: str, stack: Any = None, ns: dict | None = None) -> Awaitable[Verdict]:
    """``await check("03-retry-deadline")``: judge the learner's answer on the kernel's stack.

    ``ns`` defaults to the caller's globals (the notebook's), taken at the call; ``stack`` to
    the notebook's ``stack`` or this kernel's. Shows the verdict and returns it; never raises."""
    if ns is None:
        ns = sys._getframe(1).f_globals

    async def judged() -> Verdict:
        verdict = await run_check(exercise_id, stack, ns)
        show(verdict)
        return verdict

    return judged()


# -- the solution, folded away --------------------------------------------------------------------


@dataclass
class SolutionView:
    exercise_id: str
    source: str | None

    def __repr__(self) -> str:
        if self.source is None:
            return f"no solution stored for {self.exercise_id} ({SOLUTIONS / (self.exercise_id + '.py')})"
        return (
            f"The solution of {self.exercise_id} is folded away in Jupyter (click 'Show the solution'); "
            f"it is in notebooks/solutions/{self.exercise_id}.py"
        )

    def _repr_html_(self) -> str:
        if self.source is None:
            return f"<i>{html.escape(repr(self))}</i>"
        return (
            f"<details class='orderflow-solution'><summary>Show the solution</summary>"
            f"{_highlight(self.source)}</details>"
        )


def _highlight(source: str) -> str:
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer
    except ImportError:
        return f"<pre>{html.escape(source)}</pre>"
    return highlight(source, PythonLexer(), HtmlFormatter(noclasses=True, nobackground=True))


def solution_source(exercise_id: str) -> str | None:
    path = SOLUTIONS / f"{exercise_id}.py"
    return path.read_text() if path.exists() else None


def solution(exercise_id: str) -> SolutionView:
    """The solution of ``exercise_id`` inside a folded ``<details>`` block: hidden until asked."""
    return SolutionView(exercise_id, solution_source(exercise_id))
