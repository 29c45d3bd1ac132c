"""The order console: a widget with buttons for one order's commands and a live status panel."""

from __future__ import annotations

import asyncio
import html
from collections.abc import Awaitable, Callable

import ipywidgets as widgets
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from orderflow import order_client
from orderflow.errors import OrderflowError
from orderflow.models import OrderRequest, OrderResult, OrderState, OrderStatus
from orderflow.notebook.faults import FAULTS
from orderflow.notebook.render import Reply, render_disabled, render_replies, render_status, reply_line
from orderflow.notebook.stack import KernelStack, StackError, new_id


class OrderConsole:
    """Start, approve, cancel and re-address one order with buttons; a live status panel.

    Each button sends its command through ``orderflow.order_client`` (the same functions the HTTP API
    uses) and shows the answer, labelled, under the buttons. Buttons are enabled only when
    pressing them makes sense: Start until the order is started, Approve while it awaits review,
    Cancel and Update address until it ends. A new order id gets a new payment id.

    From a cell, ``await console.press(console.start)`` clicks a button exactly as a mouse does
    (``Button.click()`` runs the same handler) and waits for the answer; a disabled button is
    not pressed (you may have pressed it yourself), so re-running a cell is harmless.
    """

    def __init__(self, stack: KernelStack, prefix: str = "order", address: str = "742 Evergreen Terrace"):
        self.stack = stack
        order_id = new_id(prefix)
        self.order_id = widgets.Text(value=order_id, description="order id")
        self.payment_id = widgets.Text(value=f"pay-{order_id}", description="payment id")
        self.address = widgets.Text(value=address, description="address")
        self.start = widgets.Button(description="Start", button_style="primary")
        self.approve = widgets.Button(description="Approve", button_style="success")
        self.cancel = widgets.Button(description="Cancel", button_style="danger")
        self.update_address = widgets.Button(description="Update address")
        self.panel = widgets.HTML()
        self.log = widgets.HTML()
        self.replies: list[Reply] = []
        self.last_task: asyncio.Task | None = None
        self.handle: WorkflowHandle | None = None
        self.request: OrderRequest | None = None
        self.status: OrderStatus | None = None
        self.result: OrderResult | None = None
        self._refresher: asyncio.Task | None = None
        self._busy: set[str] = set()
        self._notes: list[str] = []
        self.start.on_click(lambda _: self._command("Start", self._start))
        self.approve.on_click(
            lambda _: self._command("Approve", lambda: order_client.approve(stack.client, self.current_id))
        )
        self.cancel.on_click(
            lambda _: self._command(
                "Cancel", lambda: order_client.cancel(stack.client, self.current_id, "cancelled from the console")
            )
        )
        self.update_address.on_click(
            lambda _: self._command(
                "Update address", lambda: order_client.update_address(stack.client, self.current_id, self.address.value)
            )
        )
        self.order_id.observe(self._order_id_changed, names="value")
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.order_id, self.payment_id]),
                widgets.HBox([self.start, self.approve, self.cancel]),
                widgets.HBox([self.address, self.update_address]),
                self.panel,
                self.log,
            ]
        )
        stack.consoles.append(self)
        self._render()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # -- what a cell uses ---------------------------------------------------------------------
    @property
    def current_id(self) -> str:
        return self.handle.id.removeprefix("order-") if self.handle else self.order_id.value

    @property
    def workflow_id(self) -> str:
        return order_client.order_workflow_id(self.current_id)

    @property
    def started(self) -> bool:
        return self.handle is not None

    @property
    def ended(self) -> bool:
        return self.status is not None and self.status.terminal

    def accepted(self, button: widgets.Button) -> bool:
        """Whether a press of ``button`` was accepted for the current order."""
        return any(r.ok and r.button == button.description and r.order_id == self.current_id for r in self.replies)

    async def press(self, button: widgets.Button) -> Reply | None:
        """Click ``button`` as a person does and wait for its answer; skip it if it is disabled."""
        await self.refresh()
        if button.disabled:
            print(f"{button.description}: not pressed, the button is disabled ({self._why_disabled(button)})")
            return None
        button.click()
        assert self.last_task is not None  # the click's handler started it
        await self.last_task
        return self.replies[-1]

    async def wait_for(
        self, target: str | Callable[[OrderStatus], bool] = "terminal", timeout: float = 20.0
    ) -> OrderStatus:
        """Wait until the order reaches ``target`` (a state, reached or passed; "terminal"; a predicate)."""
        if not self.started:
            raise StackError(f"order {self.current_id} is not started: press Start first")
        current = await self.stack.wait_for(self.current_id, target, timeout)
        await self.refresh()
        return current

    def answers(self, button: widgets.Button) -> str:
        """Every answer to ``button`` for the current order, oldest first, in words:
        "✓ address updated ...; refused: it has already ended"."""
        own = [reply_line(r) for r in self.replies if r.button == button.description and r.order_id == self.current_id]
        return "; ".join(own) or "not pressed"

    def renew_if_too_late(self, button: widgets.Button | None = None) -> bool:
        """Take a new order id (and with it a new payment id) if the current order has ended
        before it could be used: before anyone approved it (its review deadline passed while you
        read, say) or, given ``button``, before a press of that button was accepted (you pressed
        Approve first and the order shipped before Update address). True if it did."""
        status = self.status
        if status is None or not status.terminal:
            return False
        if not status.approved:
            why = f"before approval ({status.reason})"
        elif button is not None and not self.accepted(button):
            why = f"before {button.description} was accepted"
        else:
            return False
        print(f"order {self.current_id} ended {status.state.value} {why}; using a new order id")
        self.new_order()
        return True

    def new_order(self) -> None:
        """A new order id (and with it a new payment id); Start is enabled again."""
        self.order_id.value = new_id(self.order_id.value.rsplit("-", 1)[0])

    # -- buttons -------------------------------------------------------------------------------
    def _command(self, label: str, command: Callable[[], Awaitable[str]]) -> None:
        button = self._buttons()[label]
        button.disabled = True  # no double press while the command is on its way
        self._busy.add(label)
        order_id = self.current_id

        async def run() -> None:
            try:
                self.stack.check_running()
                text = await command()
                self.replies.append(Reply(label, order_id, True, text))
            except (order_client.Rejected, order_client.OrderExists, OrderflowError) as err:
                refused = isinstance(err, (order_client.Rejected, order_client.OrderExists))
                self.replies.append(Reply(label, order_id, False, str(err), refused=refused))
            except WorkflowUpdateFailedError as err:
                cause = err.cause
                text = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
                self.replies.append(Reply(label, order_id, False, text, refused=True))
            except Exception as err:  # noqa: BLE001 - shown, labelled, to the person who pressed
                self.replies.append(Reply(label, order_id, False, f"{type(err).__name__}: {err}"))
            finally:
                self._busy.discard(label)
            await self.refresh()

        self.last_task = asyncio.ensure_future(run())

    async def _start(self) -> str:
        order_id = self.order_id.value.strip()
        req = order_client.new_order(order_id, self.payment_id.value.strip(), address=self.address.value)
        handle = await order_client.start_order(self.stack.client, req, self.stack.settings)
        self.handle, self.request, self.status, self.result = handle, req, None, None
        self._refresher = asyncio.ensure_future(self._refresh_until_done())
        return f"started {handle.id} (payment id {req.payment_id})"

    def _order_id_changed(self, change) -> None:
        if self.handle is not None and change["new"] == self.current_id:
            return
        self.payment_id.value = f"pay-{change['new']}"
        self.handle = self.request = self.status = self.result = None
        self._render()

    def _stack_stopped(self) -> None:
        if self._refresher and not self._refresher.done():
            self._refresher.cancel()
        self._notes.append("this kernel's stack was stopped: run the notebook's first code cell to start it again")
        self._render()

    def _buttons(self) -> dict[str, widgets.Button]:
        return {b.description: b for b in (self.start, self.approve, self.cancel, self.update_address)}

    def _why_disabled(self, button: widgets.Button) -> str:
        if button.description in self._busy:
            return "its command is on its way"
        if button is self.start:
            return f"order {self.current_id} was started already"
        if not self.started:
            return "the order is not started"
        if self.status is not None and self.status.terminal:
            return f"the order has ended: {self.status.state.value}"
        return "the order is not awaiting review" if button is self.approve else "not available now"

    def _sync_buttons(self) -> None:
        s = self.status
        running = self.started and not self.ended
        self.start.disabled = self.started or "Start" in self._busy
        awaiting = s is not None and s.state == OrderState.AWAITING_REVIEW and not s.approved and not s.cancel_requested
        self.approve.disabled = not (running and awaiting) or "Approve" in self._busy
        self.cancel.disabled = not running or "Cancel" in self._busy
        self.update_address.disabled = not running or "Update address" in self._busy
        for button in self._buttons().values():  # a disabled button cannot answer a click: say why on hover
            button.tooltip = f"greyed out: {self._why_disabled(button)}" if button.disabled else None

    def _disabled_reasons(self) -> dict[str, str]:
        """Why each greyed-out button is greyed out, once there is an order to act on."""
        if not self.started:
            return {}
        return {name: self._why_disabled(b) for name, b in self._buttons().items() if b.disabled}

    # -- the panel -----------------------------------------------------------------------------
    async def refresh(self) -> OrderStatus | None:
        if self.handle is not None and not self.stack.stopped:
            try:
                self.status = await self.stack.status(self.current_id)
            except Exception as err:  # noqa: BLE001 - shown in the panel, the loop goes on
                self._notes = [f"status failed: {type(err).__name__}: {err}"]
            if self.status is not None and self.status.terminal and self.result is None:
                try:
                    self.result = await self.handle.result()
                except Exception:  # noqa: BLE001 - cancelled through Temporal: no result value
                    pass
        self._render()
        return self.status

    async def _refresh_until_done(self) -> None:
        handle = self.handle
        while not self.stack.stopped and self.handle is handle:  # a new order id ends this loop
            current = await self.refresh()
            if current is not None and current.terminal:
                return
            await asyncio.sleep(0.25)

    def _render(self) -> None:
        self._sync_buttons()
        if self.status is None:
            body = f"<i>order {html.escape(self.order_id.value)}: not started</i>"
        else:
            body = render_status(self.status, self.request, self.result, self.replies)
        notes = "".join(f"<div style='color:#a15c00'>{html.escape(n)}</div>" for n in self._notes[-2:])
        disabled = render_disabled(self._disabled_reasons())
        faults = f"<div style='color:#555'>{html.escape(FAULTS.summary())}</div>"
        self.panel.value = f"<div class='orderflow-status'>{body}{notes}{disabled}{faults}</div>"
        self.log.value = render_replies(self.replies)
