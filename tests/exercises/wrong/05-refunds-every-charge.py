# expect: were not refunded
import pandas as pd


def refunds(payments: pd.DataFrame) -> pd.Series:
    return payments.set_index("order_id")["amount"]  # every payment, refunded or not
