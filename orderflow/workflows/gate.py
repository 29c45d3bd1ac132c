"""The Gate: messages (signals and Updates) reach a workflow only between steps.

Why: a local activity's result does not arrive with a history event. The SDK core may hand it to
the workflow one workflow task later than the one whose completion recorded it (a query that
arrives during a step makes the core complete the task early), while a replay always hands
it over in the earlier task. Code that runs in reaction to a step's result therefore runs at
different points live and on replay, relative to any message that came in meanwhile. If a
message was accepted or applied in that window, the commands come out in another order and
the history no longer replays (measured: docs/reliability.md, "Messages and the step model").
So while a step runs, and until the workflow has seen a history event after it, the gate is
closed: an Update is refused as ``Busy`` (the client sends it again a moment later) and a
signal is held, then applied when the gate opens. Handlers never schedule activities or send
commands, and an Update completes only in reaction to a history event.

One exception, for Updates only: once the workflow code has seen the step's result and started
the gate's timer, an Update may be accepted while the timer runs (if no signal is held). Its
validator runs in a later workflow task than the one whose completion started the timer: in the
same activation, the SDK runs validators before the workflow code resumes from a step's result,
so a validator that sees "timer started" is in a task after it, live and on replay alike, and
the Update's events come after the timer's. (Validators do not run on replay; a refused Update
leaves nothing to replay.) Measured: an approval sent when the database says "awaiting review"
was refused Busy about twice per order at 6 orders/s (the timer fired a median 0.26 s after it
started), each refusal a workflow task on the server and the worker
(docs/performance.md#the-gate-timer-window).

Such an Update opens the gate at once: its UpdateAccepted event is a history event after the
step's result, as TimerFired is, so the workflow goes on in that task (the timer is cancelled)
instead of waiting one more workflow task for TimerFired. An approval is then charged in the
task that accepts it. Signals still wait for the timer or an Update: a signal is replayed in its
own task, where the live run may not yet have seen the step's result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow

BUSY = "a step is running; send it again in a moment"
# The gate opens on a 1 ms timer after a step: a history event, so the workflow reaches the same
# point live and on replay before it looks at any message (see the module docstring).
GATE_TIMER = timedelta(milliseconds=1)


class Gate:
    """Lets messages in between steps only.

    ``close()`` when a step starts (StepRunner does it). ``await open()`` after it: a 1 ms
    timer, or an Update accepted while it runs (or, with ``after_history_event=True``, the
    caller just awaited a history event itself, such as a child workflow's start); then the
    held signals are applied in the order they came. Update validators call ``refusal()``, and
    Update handlers ``update_entered()`` first thing (see the module docstring); signal handlers
    call ``hold_or_apply()``.
    """

    def __init__(self, timer: timedelta = GATE_TIMER) -> None:
        self.closed = False
        self.timer = timer
        self._timer_started = False  # the code has seen the step's result; the gate's timer runs
        self._update_entered = False  # an Update was accepted while the timer ran
        self._held: list[Callable[[], None]] = []

    def close(self) -> None:
        self.closed = True

    def refusal(self) -> str | None:
        """Why an Update cannot be accepted now (None: it can). The API sends a Busy one again."""
        if not self.closed or (self._timer_started and not self._held):
            return None
        return BUSY

    def update_entered(self) -> None:
        """An Update handler's first call: accepted while the timer runs, it opens the gate now."""
        if self._timer_started:
            self._update_entered = True

    def hold_or_apply(self, effect: Callable[[], None]) -> None:
        """A signal's effect: now if the gate is open, else when it opens."""
        if self.closed:
            self._held.append(effect)
        else:
            effect()

    async def open(self, *, after_history_event: bool = False) -> None:
        if not self.closed:
            return
        if not after_history_event:
            # A durable timer (TimerStarted, then TimerFired in the history), or an Update's
            # acceptance, whichever comes first: a history event, the point where live and
            # replayed runs line up again. wait_condition's timeout is the timer; it is
            # cancelled (TimerCanceled) when an Update comes first.
            self._timer_started = True
            try:
                await workflow.wait_condition(
                    lambda: self._update_entered, timeout=self.timer, timeout_summary="between steps: let messages in"
                )
            except asyncio.TimeoutError:
                pass  # the timer fired first: the usual way the gate opens
            finally:
                self._timer_started = self._update_entered = False
        self.closed = False
        self.drain()

    def drain(self) -> None:
        """Apply the held signals now (the gate stays as it is): at the end, where every
        command's rule refuses, so each is recorded as refused instead of lost."""
        held, self._held = self._held, []
        for effect in held:
            effect()

    def held(self) -> int:
        return len(self._held)
