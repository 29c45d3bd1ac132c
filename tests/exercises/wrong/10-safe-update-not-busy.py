# expect: as 'Rejected'
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from orderflow.lessons.messages import STOCKTAKE, stocktake


@workflow.defn(sandboxed=False)
class Stock:
    """A shop's stock: a stocktake first (an activity: the shelves are counted and the count
    replaced), then open for deliveries (a signal) and takes (your Update) until closed."""

    def __init__(self) -> None:
        self.count = 0
        self.busy = False  # True while the stocktake runs
        self.held: list[int] = []  # deliveries that came in during the stocktake
        self.closed = False

    @workflow.run
    async def run(self) -> int:
        self.busy = True
        self.count = await workflow.execute_activity(stocktake, start_to_close_timeout=STOCKTAKE)
        self.busy = False
        for n in self.held:  # the deliveries held during the stocktake, now applied
            self.count += n
        self.held.clear()
        await workflow.wait_condition(lambda: self.closed)
        return self.count

    @workflow.signal
    def deliver(self, n: int) -> None:
        """A signal cannot be refused: held while the stocktake runs, applied at once otherwise."""
        if self.busy:
            self.held.append(n)
        else:
            self.count += n

    @workflow.signal
    def close(self) -> None:
        self.closed = True

    @workflow.query
    def current(self) -> int:
        return self.count

    @workflow.update
    def take(self, n: int) -> int:
        self.count -= n
        return self.count

    @take.validator
    def validate_take(self, n: int) -> None:
        if n <= 0 or n > self.count:  # during the stocktake the count is 0: refused for good, not Busy
            raise ApplicationError(f"cannot take {n}: {self.count} in stock", type="Rejected")
