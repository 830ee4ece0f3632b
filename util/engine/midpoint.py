"""Midpoint noise level σ_mid of one walking-noise curve (pure math, numpy only).

A walking-noise curve is accuracy versus noise strength σ at one noise site. Its midpoint noise
level σ_mid is the σ at which the accuracy has fallen halfway from the noise-free (clean)
accuracy to chance: the accuracy *level* ``(clean_accuracy + chance) / 2``.

:func:`midpoint` estimates σ_mid from one curve (runs at the same σ are averaged first), and
says honestly when the grid does not contain the crossing (a bound, not a number) and when the
curve crosses the level more than once. The walk reports it per site; :mod:`analysis.midpoint`
applies it per group of a results table.

Accuracies may be in percent or as fractions; only consistency between ``accuracies``,
``clean_accuracy`` and ``chance`` matters.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["MidpointKind", "MidpointResult", "midpoint", "check_scalar"]

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


def check_scalar(value, name: str) -> float:
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
    clean = check_scalar(clean_accuracy, "clean_accuracy")
    chance = check_scalar(chance, "chance")
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
