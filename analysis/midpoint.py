"""Midpoint noise level σ_mid per group of a results table (the math of one curve is
:func:`util.engine.midpoint.midpoint`, re-exported here).

A walking-noise curve is accuracy versus noise strength σ at one noise site. Its midpoint noise
level σ_mid is the σ at which the accuracy has fallen halfway from the noise-free (clean)
accuracy to chance: the accuracy *level* ``(clean_accuracy + chance) / 2``.

:func:`midpoint` estimates σ_mid from one curve (runs at the same σ are averaged first), and
says honestly when the grid does not contain the crossing (a bound, not a number) and when the
curve crosses the level more than once. :func:`midpoint_table` applies it per group of a tidy
results DataFrame, per repeat and on the mean curve.

Accuracies may be in percent or as fractions; only consistency between ``accuracies``,
``clean_accuracy`` and ``chance`` matters.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd

from util.engine.midpoint import MidpointKind, MidpointResult, check_scalar, midpoint

__all__ = ["MidpointKind", "MidpointResult", "midpoint", "midpoint_table"]

log = logging.getLogger(__name__)

def _require_columns(df: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"results lack column(s) {missing}; available: {list(df.columns)}")


def _group_value(group: pd.DataFrame, col: str | None, fallback: float | None,
                 what: str, key) -> float:
    """One number for ``what`` in a group: the mean of ``col`` or the fixed ``fallback``."""
    if col is None:
        assert fallback is not None
        return float(fallback)
    values = group[col].astype(float)
    if values.isna().all():
        raise ValueError(f"group {key!r}: column {col!r} ({what}) is empty")
    if values.nunique() > 1:
        log.debug("group %r: %s column %r varies (%s); using its mean",
                  key, what, col, sorted(values.unique()))
    return float(values.mean())


def midpoint_table(df: pd.DataFrame, group_cols: str | Sequence[str], sigma_col: str = "sigma",
                   acc_col: str = "accuracy", clean_col: str | None = "clean_accuracy", *,
                   chance: float | str,
                   repeat_col: str | None = "repeat_number") -> pd.DataFrame:
    """σ_mid per group of a tidy results table, with its spread over repeats.

    Args:
        df: one row per run, with at least ``group_cols``, ``sigma_col``, ``acc_col``.
        group_cols: the columns that name one curve, e.g. ``['conf_name',
            'enable_in_training', 'noise_type', 'site', 'site_name']``. Rows whose key holds
            NaN (e.g. ``std_ratio`` of an additive run) form their own group; none are dropped.
        sigma_col, acc_col: noise strength and accuracy columns.
        clean_col: column with the noise-free accuracy of each run (its mean over the rows in
            question is used). ``None``: take the mean accuracy of the rows at σ = 0 instead.
        chance: chance accuracy (keyword, required: it depends on the dataset's number of
            classes and on percent vs fraction), a number or the name of a column.
        repeat_col: column that tells repeats apart (``None``: no per-repeat spread).

    Returns:
        One row per group: the group columns, then
        ``sigma_mid``, ``kind``, ``non_monotone``, ``level``, ``n_sigmas`` — :func:`midpoint`
        of the mean curve over all repeats (accuracies at equal σ averaged);
        ``clean_accuracy`` and ``chance`` used for it;
        ``n_repeats`` — repeats with their own σ_mid;
        ``log10_sigma_mid_mean``, ``log10_sigma_mid_std`` — mean and sample std (ddof=1;
        NaN for one repeat) of log10 σ_mid over repeats;
        ``n_repeat_bounds`` — repeats whose σ_mid is only a bound (their bound value enters
        the mean and std, so read the spread with care when this is > 0).

    Raises:
        ValueError: an empty table, missing columns, or a curve (group or repeat) that
            :func:`midpoint` rejects; the message names the group.
    """
    if isinstance(group_cols, str):
        group_cols = [group_cols]
    group_cols = list(group_cols)
    if df is None or len(df) == 0:
        raise ValueError("midpoint_table got no results (empty table)")
    needed = group_cols + [sigma_col, acc_col]
    if clean_col is not None:
        needed.append(clean_col)
    if isinstance(chance, str):
        needed.append(chance)
    if repeat_col is not None:
        needed.append(repeat_col)
    _require_columns(df, needed)
    chance_col = chance if isinstance(chance, str) else None
    chance_value = None if chance_col else check_scalar(chance, "chance")

    def clean_of(rows: pd.DataFrame, key) -> float:
        if clean_col is not None:
            return _group_value(rows, clean_col, None, "clean accuracy", key)
        at_zero = rows.loc[rows[sigma_col] == 0, acc_col]
        if at_zero.empty:
            raise ValueError(f"group {key!r}: clean_col=None needs runs at σ = 0 for the "
                             "clean accuracy, found none")
        return float(at_zero.mean())

    def estimate(rows: pd.DataFrame, key, what: str) -> tuple[MidpointResult, float, float]:
        clean = clean_of(rows, key)
        chance_here = _group_value(rows, chance_col, chance_value, "chance", key)
        try:
            res = midpoint(rows[sigma_col].to_numpy(), rows[acc_col].to_numpy(),
                           clean, chance_here)
        except ValueError as exc:
            raise ValueError(f"group {key!r} ({what}): {exc}") from exc
        return res, clean, chance_here

    records = []
    for key, rows in df.groupby(group_cols, dropna=False, sort=True):
        key_t = key if isinstance(key, tuple) else (key,)
        res, clean, chance_here = estimate(rows, key_t, "mean curve")
        rec = dict(zip(group_cols, key_t))
        rec.update(sigma_mid=res.sigma_mid, kind=res.kind, non_monotone=res.non_monotone,
                   level=res.level, n_sigmas=res.n_sigmas, clean_accuracy=clean,
                   chance=chance_here)
        logs, n_bounds = [], 0
        if repeat_col is not None:
            for rep, rep_rows in rows.groupby(repeat_col, dropna=False, sort=True):
                rep_res, _, _ = estimate(rep_rows, key_t, f"{repeat_col}={rep}")
                logs.append(np.log10(rep_res.sigma_mid))
                n_bounds += rep_res.is_bound
        rec.update(n_repeats=len(logs),
                   log10_sigma_mid_mean=float(np.mean(logs)) if logs else np.nan,
                   log10_sigma_mid_std=float(np.std(logs, ddof=1)) if len(logs) > 1 else np.nan,
                   n_repeat_bounds=n_bounds)
        records.append(rec)
    return pd.DataFrame.from_records(records)
