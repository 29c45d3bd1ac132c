from temporalio import workflow


@workflow.defn(sandboxed=False)
class Basket:
    """A tiny workflow: a basket with a quantity, open until `close` is signalled."""

    def __init__(self) -> None:
        self.quantity = 1
        self.closed = False

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.closed)
        return self.quantity

    @workflow.signal
    def close(self) -> None:
        self.closed = True

    @workflow.query
    def current(self) -> int:
        return self.quantity

    @workflow.update
    def set_quantity(self, n: int) -> int:
        self.quantity = n
        return self.quantity

    @set_quantity.validator
    def validate_set_quantity(self, n: int) -> None:
        if n <= 0:
            raise ValueError(f"a quantity must be at least 1, not {n}")
