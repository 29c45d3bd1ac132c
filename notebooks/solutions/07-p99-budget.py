import pandas as pd


def budget_report(frame: pd.DataFrame) -> tuple[float, bool]:
    """The 99th percentile of the orders' seconds, and whether every order ended within 15 s."""
    return float(frame["seconds"].quantile(0.99)), bool((frame["seconds"] <= 15).all())
