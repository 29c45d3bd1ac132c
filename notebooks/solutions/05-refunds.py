import pandas as pd


def refunds(payments: pd.DataFrame) -> pd.Series:
    """The refunded orders: a Series indexed by order_id whose values are the refunded amounts."""
    refunded = payments[payments["status"] == "refunded"]
    return refunded.set_index("order_id")["amount"]


refunds(stack.payments())
