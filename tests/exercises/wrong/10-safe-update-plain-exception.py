# expect: other than ApplicationError
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from orderflow.lessons.messages import STOCKTAKE, stocktake


@workflow.defn(sandboxed=False)
class Stock:
    def __init__(self) -> None:
        self.count = 0
        self.busy = False
        self.held: list[int] = []
        self.closed = False

    @workflow.run
    async def run(self) -> int:
        self.busy = True
        self.count = await workflow.execute_activity(stocktake, start_to_close_timeout=STOCKTAKE)
        self.busy = False
        for n in self.held:
            self.count += n
        self.held.clear()
        await workflow.wait_condition(lambda: self.closed)
        return self.count

    @workflow.signal
    def deliver(self, n: int) -> None:
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
        if n > self.count:
            raise ValueError(f"only {self.count} in stock")  # not an ApplicationError: the task fails
        self.count -= n
        return self.count

    @take.validator
    def validate_take(self, n: int) -> None:
        if n <= 0:
            raise ApplicationError(f"take at least 1, not {n}", type="Rejected")
        if self.busy:
            raise ApplicationError("busy", type="Busy")
