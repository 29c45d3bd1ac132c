# expect: a single late order breaks it
import pandas as pd


def budget_report(frame: pd.DataFrame) -> tuple[float, bool]:
    p99 = float(frame["seconds"].quantile(0.99))
    return p99, p99 <= 15  # the p99 within the budget is not every order within it
