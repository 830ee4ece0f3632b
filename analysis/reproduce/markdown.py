"""Markdown tables and the number formats of the reproduction document."""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

__all__ = ["fmt", "markdown_table", "sigma_with_kind", "fmt_pct", "fmt_ratio", "wide",
           "bound_prefix", "median_ratio"]


def fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if v is None:
        return "—"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return "n/a"
        if v == 0:
            return "0"
        if abs(v) >= 1e4 or abs(v) < 1e-3:
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}"
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v)
    return str(v)


def markdown_table(df: pd.DataFrame, columns: Mapping[str, str] | None = None,
                   formats: Mapping[str, Callable[[Any], str]] | None = None) -> str:
    """A GitHub markdown table of ``df``: ``columns`` maps column → header (and picks them)."""
    columns = dict(columns or {c: c for c in df.columns})
    formats = dict(formats or {})
    head = "| " + " | ".join(columns.values()) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for _, r in df.iterrows():
        cells = [formats.get(c, fmt)(r[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sigma_with_kind(value: float, kind: str) -> str:
    prefix = {"lower_bound": "> ", "upper_bound": "≤ "}.get(kind, "")
    return prefix + fmt(value)


def fmt_pct(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def fmt_ratio(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.2f}×"



def wide(df: pd.DataFrame, index: list[str], columns: str, values: str) -> pd.DataFrame:
    """``df`` pivoted to one row per ``index`` combination present (in order of first
    appearance) and one column per ``columns`` value (in order of first appearance)."""
    rows = list(dict.fromkeys(map(tuple, df[index].itertuples(index=False))))
    cols = list(dict.fromkeys(df[columns]))
    table = df.set_index(index + [columns])[values]
    table = table[~table.index.duplicated()].unstack(columns)
    table = table.reindex(pd.MultiIndex.from_tuples(rows, names=index))[cols]
    return table.reset_index()


def bound_prefix(kind: str) -> str:
    return {"lower_bound": "> ", "upper_bound": "≤ "}.get(kind, "")


def median_ratio(rows: pd.DataFrame) -> str:
    r = float(np.median(rows["ratio"]))
    lower = (rows["noisy_kind"] == "lower_bound").mean() >= 0.5
    return (">" if lower else "") + fmt_ratio(r)

