"""Midpoint noise level σ_mid of a walking-noise curve, and a per-site table of it.

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
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

MidpointKind = Literal["crossing", "lower_bound", "upper_bound"]


@dataclass(frozen=True)
class MidpointResult:
    """The midpoint noise level of one walking-noise curve.

    Attributes:
        sigma_mid: the estimated σ_mid. Exact only when ``kind == 'crossing'``; for a bound it
            is the grid end that bounds it.
        kind: ``'crossing'`` – the mean curve reaches the level inside the σ grid and
            ``sigma_mid`` is interpolated linearly in log10 σ between the two bracketing grid
            points; ``'lower_bound'`` – the curve never falls to the level, so σ_mid > the
            largest σ, and ``sigma_mid`` is that largest σ; ``'upper_bound'`` – the curve is
            already below the level at the smallest σ, so σ_mid ≤ the smallest σ, and
            ``sigma_mid`` is that smallest σ.
        non_monotone: True when the curve, starting from the clean accuracy at σ → 0, crosses
            the level more than once; ``sigma_mid`` is then the first crossing.
        level: the midpoint accuracy ``(clean_accuracy + chance) / 2``.
        n_sigmas: the number of distinct positive σ the estimate used.
    """

    sigma_mid: float
    kind: MidpointKind
    non_monotone: bool
    level: float
    n_sigmas: int

    @property
    def is_bound(self) -> bool:
        """True when ``sigma_mid`` is only a bound (the grid missed the crossing)."""
        return self.kind != "crossing"


def _as_1d_float(values, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numbers, got {values!r}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _check_scalar(value, name: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a number, got {value!r}") from exc
    if not np.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def midpoint(sigmas: Sequence[float], accuracies: Sequence[float],
             clean_accuracy: float, chance: float) -> MidpointResult:
    """Estimate the midpoint noise level σ_mid of one walking-noise curve.

    Args:
        sigmas: noise strength of each run; may repeat (one entry per run). Must be ≥ 0.
            A σ of 0 is the noise-free point: it cannot be placed on a log10 axis, so runs at
            σ = 0 are left out of the interpolation (``clean_accuracy`` already carries the
            noise-free accuracy; the curve is taken to start there at σ → 0).
        accuracies: accuracy of each run, same length as ``sigmas``.
        clean_accuracy: the noise-free accuracy; must exceed ``chance``.
        chance: the accuracy of guessing (e.g. 10 for ten classes in percent).

    Returns:
        A :class:`MidpointResult`. Accuracies at equal σ are averaged first; the first grid
        point whose mean accuracy is ≤ the level brackets the crossing together with its
        predecessor, and σ_mid is interpolated linearly in log10 σ between them (a grid point
        exactly at the level is σ_mid itself). See :class:`MidpointResult` for the bounds and
        the non-monotone flag.

    Raises:
        ValueError: empty input, lengths that differ, NaN or infinite values, a negative σ,
            fewer than two distinct positive σ, or ``clean_accuracy <= chance``.
    """
    s = _as_1d_float(sigmas, "sigmas")
    a = _as_1d_float(accuracies, "accuracies")
    clean = _check_scalar(clean_accuracy, "clean_accuracy")
    chance = _check_scalar(chance, "chance")
    if s.size == 0:
        raise ValueError("midpoint needs at least two distinct σ, got an empty curve")
    if s.size != a.size:
        raise ValueError(f"sigmas and accuracies differ in length: {s.size} vs {a.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"sigmas contain NaN or infinite values: {s[~np.isfinite(s)].tolist()}")
    if not np.all(np.isfinite(a)):
        bad = s[~np.isfinite(a)].tolist()
        raise ValueError(f"accuracies contain NaN or infinite values (at σ = {bad})")
    if np.any(s < 0):
        raise ValueError(f"sigmas must be >= 0, got negative σ {s[s < 0].tolist()}")
    if clean <= chance:
        raise ValueError(f"clean_accuracy ({clean}) must exceed chance ({chance}): "
                         "a curve that starts at chance has no midpoint")

    positive = s > 0
    grid, inverse = np.unique(s[positive], return_inverse=True)
    if grid.size < 2:
        raise ValueError(f"midpoint needs at least two distinct σ > 0, got {grid.tolist()} "
                         f"(σ = 0 is the clean point and does not count)")
    mean_acc = np.bincount(inverse, weights=a[positive]) / np.bincount(inverse)
    level = (clean + chance) / 2.0

    # "Above" per grid point, with the clean point (σ → 0, above the level) in front, so that
    # a curve that starts below the level counts as having crossed once already.
    above = np.concatenate(([True], mean_acc > level))
    n_crossings = int(np.count_nonzero(above[1:] != above[:-1]))
    non_monotone = n_crossings > 1

    reached = np.flatnonzero(mean_acc <= level)
    if reached.size == 0:
        return MidpointResult(float(grid[-1]), "lower_bound", False, level, int(grid.size))
    k = int(reached[0])
    if k == 0:
        if mean_acc[0] == level:
            return MidpointResult(float(grid[0]), "crossing", non_monotone, level, int(grid.size))
        return MidpointResult(float(grid[0]), "upper_bound", non_monotone, level, int(grid.size))
    a_hi, a_lo = mean_acc[k - 1], mean_acc[k]  # a_hi > level >= a_lo
    t = (a_hi - level) / (a_hi - a_lo)
    log_s = np.log10(grid[k - 1]) + t * (np.log10(grid[k]) - np.log10(grid[k - 1]))
    return MidpointResult(float(10.0 ** log_s), "crossing", non_monotone, level, int(grid.size))


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
    chance_value = None if chance_col else _check_scalar(chance, "chance")

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
