# expect: indexed by payment_id
import pandas as pd


def refunds(payments: pd.DataFrame) -> pd.Series:
    return payments[payments["status"] == "refunded"].set_index("payment_id")["amount"]
