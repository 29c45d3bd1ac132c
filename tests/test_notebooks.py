"""The notebooks are committed clean and stay thin; the kernel helpers behave (nbmake executes
the notebooks themselves: `make test`; tests/test_browser.py clicks through two in Chromium)."""

import asyncio
import json
import logging
import re
import sys
import time
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from orderflow.devstack import free_port
from orderflow.errors import CarrierRejected
from orderflow.models import OrderResult, OrderState, PaymentState
from orderflow.notebook import (
    FaultCounter,
    OrderConsole,
    ReorderedOrderWorkflow,
    Reply,
    StackError,
    as_table,
    replay_failure_sentence,
    start_stack,
    stripped,
)

NOTEBOOKS = sorted(Path(__file__).parents[1].joinpath("notebooks").glob("*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]
STRIP = "python -m orderflow.notebook notebooks/*.ipynb"


def code_cells(path: Path, exercises: bool = True) -> list[str]:
    """The code cells' sources; without the exercise cells (the learner's own code) if asked."""
    return [
        "".join(c["source"])
        for c in json.loads(path.read_text())["cells"]
        if c["cell_type"] == "code" and (exercises or "exercise" not in c["metadata"].get("tags", []))
    ]


def test_all_twelve_notebooks_exist():
    assert len(NOTEBOOKS) == 12


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_committed_clean(path):
    """No outputs, counts, saved widget state or run metadata, whatever a reader did before saving."""
    text = path.read_text()
    nb = json.loads(text)
    assert "widgets" not in nb["metadata"], f"saved widget state: run `{STRIP}`"
    for cell in nb["cells"]:
        assert not cell.get("outputs") and cell.get("execution_count") is None, f"outputs: run `{STRIP}`"
    assert text == stripped(text), f"not stripped: run `{STRIP}`"


def test_strip_removes_what_jupyterlab_saves():
    """The strip command the check names really cleans a notebook saved after a run."""
    clean = NOTEBOOKS[0].read_text()
    nb = json.loads(clean)
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    first_code["outputs"] = [{"name": "stderr", "output_type": "stream", "text": ["Traceback ...\n"]}]
    first_code["execution_count"] = 3
    first_code["metadata"] = {"scrolled": True, "execution": {"iopub.status.idle": "2026-01-01T00:00:00Z"}}
    dirty = json.dumps(nb, indent=1)
    assert dirty != clean
    assert stripped(dirty) == clean


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_thin_and_says_what_it_needs(path):
    cells = json.loads(path.read_text())["cells"]
    first = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "markdown" and "**Needs:**" in first and "**Takes:**" in first
    code = code_cells(path)
    source = "\n".join(code_cells(path, exercises=False))  # an exercise cell is where the learner defines
    for defining in (r"^\s*def ", r"^\s*async def ", r"^\s*class ", r"\blambda\b", r"@workflow\.", r"@activity\."):
        assert not re.search(defining, source, re.MULTILINE), f"define nothing in cells ({defining}): use the package"
    assert "show_source(" in source, "show the package code the lesson is about"
    assert "await stack.stop()" in code[-1], "the last cell stops what the notebook started"
    assert any("assert" in c for c in code), "a notebook ends by checking its results"


def test_every_console_button_is_pressed_by_some_notebook():
    pressed = set()
    for path in NOTEBOOKS:
        pressed |= {
            m.group(1)
            for m in re.finditer(r"\.press\(\w+\.(start|approve|cancel|update_address)\)", "\n".join(code_cells(path)))
        }
    assert pressed == {"start", "approve", "cancel", "update_address"}


def _record(err: BaseException) -> logging.LogRecord:
    try:
        raise err
    except BaseException:  # noqa: BLE001 - raised only to capture its exc_info
        return logging.LogRecord(
            "temporalio.activity", logging.WARNING, __file__, 1, "Completing activity as failed", None, sys.exc_info()
        )


def test_expected_faults_are_counted_and_real_errors_pass():
    faults = FaultCounter()
    business = ApplicationError("carrier says no", type="CarrierRejected", non_retryable=True)
    business.__cause__ = CarrierRejected("carrier says no")
    expected = (
        RuntimeError("Forced failure for testing"),  # the stub's own exception
        ApplicationError("Forced failure for testing", type="RuntimeError"),  # as our activities pass it on
        asyncio.CancelledError(),  # an attempt cut short by its timeout
        business,
        ApplicationError("failed 5 times, last: Forced failure for testing", type="StepFailed", non_retryable=True),
    )
    for err in expected:
        assert faults.filter(_record(err)) is False, err
    real = (
        RuntimeError("database is locked"),
        KeyError("x"),
        ApplicationError("OperationalError: database is locked", type="OperationalError"),
        ApplicationError("bug", non_retryable=True),
        ApplicationError("Forced failure for testing", type="RuntimeError", non_retryable=True),
    )
    for err in real:
        assert faults.filter(_record(err)) is True, err
    plain = logging.LogRecord("temporalio.activity", logging.WARNING, __file__, 1, "something else", None, None)
    assert faults.filter(plain) is True
    assert dict(faults.counts) == {"failed": 2, "timed out": 1, "refused": 2}
    assert "2 attempts failed" in faults.summary() and "carrier says no" in faults.summary()

    sdk = logging.getLogger("temporalio.worker._workflow_instance")
    failure = logging.LogRecord(sdk.name, logging.ERROR, __file__, 1, "Failed activation", None, None)
    with faults.expecting("a replay that must fail"):
        assert sdk.filter(failure) is False  # the lesson's failure: counted
    assert sdk.filter(failure) is True  # any other time: printed
    assert faults.counts["a replay that must fail"] == 1 and "a replay that must fail" in faults.summary()


async def test_a_named_server_that_is_not_temporal_fails_at_once_naming_the_port():
    async def not_temporal(reader, writer):
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    port = free_port()
    server = await asyncio.start_server(not_temporal, "127.0.0.1", port)
    try:
        await fails_at_once_naming(port)
    finally:
        server.close()
        await server.wait_closed()


async def test_nothing_listening_fails_at_once_naming_the_port():
    await fails_at_once_naming(free_port())


async def fails_at_once_naming(port: int) -> None:
    began = time.monotonic()
    with pytest.raises(StackError, match=f"port {port}"):
        await start_stack(f"127.0.0.1:{port}")
    assert time.monotonic() - began < 6


async def test_console_follows_its_order_and_says_when_the_stack_is_gone():
    """The console outside a browser (its logic; tests/test_browser.py clicks it): buttons enabled
    only when they make sense, a missed review shown with its reason and no "0.0 s left", a new
    order id with a new payment id, and a clear answer from Start once the stack is stopped."""
    stack = await start_stack()
    try:
        console = OrderConsole(stack, prefix="console-test")
        first_id = console.order_id.value
        assert console.payment_id.value == f"pay-{first_id}"
        assert not console.start.disabled
        assert [b.disabled for b in (console.approve, console.cancel, console.update_address)] == [True] * 3
        assert await console.press(console.approve) is None  # disabled before Start: not pressed

        reply = await console.press(console.start)
        assert (reply.button, reply.ok, reply.order_id) == ("Start", True, first_id), reply
        assert console.start.disabled and not console.cancel.disabled
        await console.wait_for("awaiting_review")
        assert not console.approve.disabled
        assert "left to approve" in console.panel.value

        ended = await console.wait_for("terminal", timeout=20)  # nobody approves
        assert (ended.state.value, ended.approved) == ("cancelled", False), ended
        assert all(b.disabled for b in (console.start, console.approve, console.cancel, console.update_address))
        assert "ended cancelled" in console.panel.value and ended.reason in console.panel.value
        assert "0.0 s left" not in console.panel.value
        # A greyed-out button cannot answer a click, so the panel and its tooltip say why.
        assert "<b>Update address</b>: the order has ended: cancelled" in console.panel.value
        assert console.update_address.tooltip == "greyed out: the order has ended: cancelled"

        assert console.renew_if_too_late()
        assert console.order_id.value != first_id
        assert console.payment_id.value == f"pay-{console.order_id.value}"
        assert not console.start.disabled and console.status is None
    finally:
        await stack.stop()
    reply = await console.press(console.start)
    assert not reply.ok and "stack was stopped" in reply.text, reply


async def test_an_order_that_shipped_before_its_address_changed_gets_a_new_one(capsys):
    """Notebook 02's stumble: a learner presses Start and Approve, the order ships, and Update
    address is greyed out. The cell that follows must carry on (a new order), and its summary
    line gives every answer to the button, not only the last one."""
    stack = await start_stack()
    try:
        console = OrderConsole(stack, prefix="stumble", address="1 Old Road")
        first_id = console.order_id.value
        await console.press(console.start)
        await console.wait_for("awaiting_review")
        await console.press(console.approve)
        ended = await console.wait_for("terminal")
        assert ended.state.value == "shipped", ended
        assert await console.press(console.update_address) is None
        assert (
            "Update address: not pressed, the button is disabled (the order has ended: shipped)"
            in capsys.readouterr().out
        )
        assert not console.renew_if_too_late()  # approved: not too late for the order itself
        assert console.renew_if_too_late(console.update_address)
        assert f"order {first_id} ended shipped before Update address was accepted" in capsys.readouterr().out
        assert console.order_id.value != first_id and not console.start.disabled

        await console.press(console.start)
        await console.wait_for("awaiting_review")
        console.address.value = "742 Evergreen Terrace"
        await console.press(console.update_address)
        assert not console.renew_if_too_late(console.update_address)  # running, and accepted
        console.replies.append(Reply("Update address", console.current_id, False, "it has already ended", refused=True))
        assert console.answers(console.update_address).startswith("✓ address updated"), console.replies
        assert console.answers(console.update_address).endswith("; refused: it has already ended")
        assert console.answers(console.cancel) == "not pressed"
    finally:
        await stack.stop()


async def test_the_replay_lesson_shows_the_sentence_that_matters():
    """Notebook 06 prints the nondeterminism error's own sentence, not a 300-character dump."""
    from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

    from orderflow.workflows import ShippingWorkflow
    from tests.helpers import HISTORIES, load_history

    replayer = Replayer(
        workflows=[ReorderedOrderWorkflow, ShippingWorkflow], workflow_runner=UnsandboxedWorkflowRunner()
    )
    result = await replayer.replay_workflow(load_history(HISTORIES / "happy_path.json"), raise_on_replay_failure=False)
    assert replay_failure_sentence(result.replay_failure) == (
        "NondeterminismError: Nondeterminism error: Activity type of recorded marker 'ReceiveOrder' "
        "does not match activity type of local activity command 'ValidateOrder'"
    ), result.replay_failure
    assert replay_failure_sentence(None) == "no replay failure"


def test_a_result_reads_as_a_table_not_a_wrapped_repr():
    result = OrderResult("o-1", OrderState.SHIPPED, PaymentState.CHARGED, None, 1, 3.25, "1 SDK Street", 7)
    table = as_table(result)
    assert table.loc["state", "value"] == "shipped" and table.loc["address", "value"] == "1 SDK Street"
    assert list(table.index) == [
        "order_id",
        "state",
        "payment",
        "reason",
        "shipping_attempts",
        "elapsed_seconds",
        "address",
        "audit_events",
    ]
