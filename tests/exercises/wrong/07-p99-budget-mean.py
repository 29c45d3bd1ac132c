# expect: (that is the mean)
import pandas as pd


def budget_report(frame: pd.DataFrame) -> tuple[float, bool]:
    return float(frame["seconds"].mean()), bool((frame["seconds"] <= 15).all())
