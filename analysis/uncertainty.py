"""How sure is a σ_mid? Bootstrap confidence intervals, and comparisons that say so.

A curve's σ_mid (:func:`analysis.midpoint.midpoint`) rests on two kinds of chance: the noise
drawn in each evaluation (rows at the same σ that differ in ``eval_repeat``) and the training
seed of the model (rows that differ in ``repeat_number``, each seed with its own clean
accuracy). :func:`sigma_mid_interval` resamples both, as the data were drawn:

1. the training seeds with replacement (when the curve spans more than one), each drawn seed
   bringing all its rows and its clean accuracy;
2. within each drawn seed and each σ, that seed's evaluation draws at σ with replacement;

(deviations stretched by sqrt(n / (n − 1)) first, so that resampled means vary as much as
the data say even for few draws or seeds), and recomputes σ_mid with the project's one
estimator, :func:`analysis.midpoint.midpoint`
(accuracies at equal σ averaged, the clean accuracy the mean over the rows, as in
:func:`analysis.midpoint.midpoint_table`). The interval is the percentile interval of log10
σ_mid over ``n_boot`` replicates, from a generator seeded by ``seed`` (the same data and seed
give the same interval). A curve with one seed and one draw per σ has nothing to resample:
its interval is the point itself, which says that no spread was measured, not that there is
none.

Replicates whose σ_mid is only a bound (the grid missed the crossing) are censored honestly:
a lower bound (σ_mid beyond the largest σ) counts as that σ for the low end of the interval
and as +∞ for the high end; an upper bound (σ_mid below the smallest σ) as 0 for the low end
and as that σ for the high end. So an interval reaches ∞ (or 0) when more than its tail's
share of the replicates found no crossing.

:func:`compare_sigma_mid` turns two intervals' replicates into the interval of their ratio
and a verdict: ``'higher'`` or ``'lower'`` when that interval excludes 1, ``'no difference'``
when it contains 1 (a difference smaller than its interval is no difference).
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np

from .midpoint import midpoint

__all__ = ["SigmaMidInterval", "SigmaMidComparison", "sigma_mid_interval",
           "compare_sigma_mid", "DEFAULT_LEVEL", "DEFAULT_N_BOOT", "group_seed"]

DEFAULT_LEVEL = 0.95
DEFAULT_N_BOOT = 1000

Verdict = Literal["higher", "lower", "no difference"]


@dataclass(frozen=True, eq=False)
class SigmaMidInterval:
    """σ_mid of one curve with its bootstrap interval.

    Attributes:
        sigma_mid: the point estimate (:func:`analysis.midpoint.midpoint` of all rows).
        kind: its kind (``'crossing'``, ``'lower_bound'``, ``'upper_bound'``).
        low, high: the interval's ends (``0`` / ``inf`` where bounds reach the tail).
        level: the interval's coverage, e.g. 0.95.
        n_boot: bootstrap replicates.
        n_seeds: training seeds the curve spans.
        min_draws: the fewest evaluation draws at one σ of one seed (1: no evaluation spread
            was measured).
        log10_low_values, log10_high_values: log10 σ_mid of each replicate as it counts for
            the low and the high end (equal for crossings; see the module docstring for
            bounds), for :func:`compare_sigma_mid`.
        bound_share: the share of replicates whose σ_mid is a bound.
    """

    sigma_mid: float
    kind: str
    low: float
    high: float
    level: float
    n_boot: int
    n_seeds: int
    min_draws: int
    log10_low_values: np.ndarray = field(repr=False)
    log10_high_values: np.ndarray = field(repr=False)
    bound_share: float = 0.0

    @property
    def resampled(self) -> bool:
        """Whether there was anything to resample (several seeds or draws)."""
        return self.n_seeds > 1 or self.min_draws > 1


@dataclass(frozen=True)
class SigmaMidComparison:
    """σ_mid of curve a relative to curve b: ``ratio`` = σ_mid(a) / σ_mid(b), its interval
    ``[low, high]`` at ``level``, and the ``verdict``: ``'higher'`` (low > 1), ``'lower'``
    (high < 1) or ``'no difference'`` (the interval contains 1)."""

    ratio: float
    low: float
    high: float
    level: float
    verdict: Verdict

    def describe(self, a: str = "a", b: str = "b") -> str:
        """E.g. ``'a/b = 3.1 [2.2, 4.5] (95 %): higher'``."""
        return (f"{a}/{b} = {self.ratio:.3g} [{self.low:.3g}, {self.high:.3g}] "
                f"({self.level * 100:g} %): {self.verdict}")


def group_seed(seed: int, key: Any) -> int:
    """A generator seed for one curve: ``seed`` mixed with a stable hash of its ``key``, so
    curves draw independent resamples and a curve's interval does not depend on which other
    curves a table holds or their order."""
    return int(seed) * 1_000_003 + zlib.crc32(repr(key).encode())


def _check_level(level: float) -> float:
    level = float(level)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95; got {level}")
    return level


def _censored(value: float, kind: str) -> tuple[float, float]:
    """log10 σ_mid of one estimate as it counts for the low and the high end."""
    x = math.log10(value)
    if kind == "lower_bound":
        return x, math.inf
    if kind == "upper_bound":
        return -math.inf, x
    return x, x


def _ends(lo_values: np.ndarray, hi_values: np.ndarray, level: float) -> tuple[float, float]:
    """The percentile interval (log10) from censored replicates; interpolated between order
    statistics where both neighbours are finite, else the conservative one."""
    a = (1 - level) / 2

    def q(values, p, fallback):
        with np.errstate(invalid="ignore"):
            v = float(np.quantile(values, p))
        return v if np.isfinite(v) else float(np.quantile(values, p, method=fallback))

    return q(lo_values, a, "lower"), q(hi_values, 1 - a, "higher")


def _rescaled(s: np.ndarray, a: np.ndarray, clean: np.ndarray, labels: np.ndarray,
              cell_of_row: np.ndarray, cell_size: np.ndarray, n_seeds: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Accuracies and clean accuracies whose resampled means vary as much as the data's.

    Resampling n values with replacement gives a mean whose variance is (n − 1)/n of the
    unbiased estimate s²/n, too narrow for the few draws and seeds a curve has (2/3 for 3
    seeds). Each value's deviation from its mean is stretched by sqrt(n / (n − 1)) (the
    means stay): draws around their cell's mean, and each seed's cell means and clean
    accuracy around the mean over seeds."""
    cell_mean = (np.bincount(cell_of_row, weights=a) / cell_size)[cell_of_row]
    n = cell_size[cell_of_row].astype(float)
    stretch = np.sqrt(np.where(n > 1, n / np.maximum(n - 1, 1), 1.0))
    a = cell_mean + stretch * (a - cell_mean)
    if n_seeds < 2:
        return a, clean
    grid, at = np.unique(s, return_inverse=True)
    # one value per cell (seed, σ), then the mean over the seeds that have that σ
    first = np.unique(cell_of_row, return_index=True)[1]
    cell_at, cell_mean_c = at[first], cell_mean[first]
    seeds_at = np.bincount(cell_at, minlength=grid.size).astype(float)
    mean_at = np.bincount(cell_at, weights=cell_mean_c, minlength=grid.size) / seeds_at
    k = seeds_at[at]
    g = np.sqrt(np.where(k > 1, k / np.maximum(k - 1, 1), 1.0))
    a = a + (g - 1) * (cell_mean - mean_at[at])
    seed_clean = np.bincount(labels, weights=clean) / np.bincount(labels)
    centre = seed_clean.mean()
    gs = math.sqrt(n_seeds / (n_seeds - 1))
    clean = centre + gs * (seed_clean[labels] - centre) + (clean - seed_clean[labels])
    return a, clean


def sigma_mid_interval(sigmas: Sequence[float], accuracies: Sequence[float],
                       clean_accuracy: float | Sequence[float], chance: float, *,
                       seeds: Sequence[Any] | None = None, level: float = DEFAULT_LEVEL,
                       n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> SigmaMidInterval:
    """σ_mid of one curve and its bootstrap percentile interval (module docstring).

    Args:
        sigmas, accuracies: one entry per row (evaluation); σ ≥ 0, as for
            :func:`analysis.midpoint.midpoint`.
        clean_accuracy: the noise-free accuracy, one number or one per row (each training
            seed's own; the estimate uses the mean over the rows, resampled with them).
        chance: chance accuracy.
        seeds: the training seed (e.g. ``repeat_number``) of each row; None: one seed.
        level: coverage of the interval, in (0, 1).
        n_boot: bootstrap replicates (≥ 1).
        seed: the seed of the resampling generator.

    Returns:
        A :class:`SigmaMidInterval`.

    Raises:
        ValueError: what :func:`analysis.midpoint.midpoint` rejects, lengths that differ,
            a level outside (0, 1), ``n_boot`` < 1.
    """
    level = _check_level(level)
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    n_boot = int(n_boot)
    s = np.asarray(sigmas, dtype=float).reshape(-1)
    a = np.asarray(accuracies, dtype=float).reshape(-1)
    clean = np.broadcast_to(np.asarray(clean_accuracy, dtype=float), s.shape).astype(float) \
        if np.ndim(clean_accuracy) == 0 else np.asarray(clean_accuracy, dtype=float).reshape(-1)
    labels = np.zeros(s.size, dtype=int) if seeds is None else \
        np.unique(np.asarray(seeds, dtype=object).astype(str), return_inverse=True)[1]
    if not (a.size == s.size == clean.size == labels.size):
        raise ValueError(f"sigmas, accuracies, clean_accuracy and seeds differ in length: "
                         f"{s.size}, {a.size}, {clean.size}, {labels.size}")
    point = midpoint(s, a, float(clean.mean()), chance)

    # cells: the rows of one seed at one σ, contiguous after sorting
    order = np.lexsort((s, labels))
    s, a, clean, labels = s[order], a[order], clean[order], labels[order]
    cell_key = np.stack([labels.astype(float), s], axis=1)
    _, cell_of_row, cell_size = np.unique(cell_key, axis=0, return_inverse=True,
                                          return_counts=True)
    cell_of_row = cell_of_row.reshape(-1)
    cell_start = np.concatenate(([0], np.cumsum(cell_size)[:-1]))
    n_seeds = int(labels.max()) + 1
    seed_rows = [np.flatnonzero(labels == k) for k in range(n_seeds)]
    a, clean = _rescaled(s, a, clean, labels, cell_of_row, cell_size, n_seeds)

    rng = np.random.default_rng(seed)
    lo_values = np.empty(n_boot)
    hi_values = np.empty(n_boot)
    n_bounds = 0
    for b in range(n_boot):
        drawn = rng.integers(0, n_seeds, n_seeds) if n_seeds > 1 else np.zeros(1, dtype=int)
        rows = np.concatenate([seed_rows[k] for k in drawn])
        cells = cell_of_row[rows]
        picked = cell_start[cells] + (rng.random(rows.size) * cell_size[cells]).astype(int)
        # a resampled draw keeps its seed's clean accuracy (the seed is the row's own)
        res = midpoint(s[picked], a[picked], float(clean[rows].mean()), chance)
        lo_values[b], hi_values[b] = _censored(res.sigma_mid, res.kind)
        n_bounds += res.is_bound
    lo, hi = _ends(lo_values, hi_values, level)
    return SigmaMidInterval(
        sigma_mid=point.sigma_mid, kind=point.kind, low=10.0 ** lo, high=10.0 ** hi,
        level=level, n_boot=n_boot, n_seeds=n_seeds, min_draws=int(cell_size.min()),
        log10_low_values=lo_values, log10_high_values=hi_values,
        bound_share=n_bounds / n_boot)


def compare_sigma_mid(a: SigmaMidInterval, b: SigmaMidInterval,
                      level: float | None = None) -> SigmaMidComparison:
    """σ_mid(a) / σ_mid(b) with its bootstrap interval and a verdict.

    The replicates of a and b are independent resamples (different curves), so the ratio's
    replicates pair them at random: a's k-th with b's k-th after shuffling b's with a fixed
    generator (replicate counts may differ; the shorter set is cycled). Bounds are censored as
    for one interval: the ratio's low end takes a's low-end value over b's high-end value,
    its high end the other way round. The verdict is ``'higher'`` when the whole interval lies
    above 1, ``'lower'`` below 1, else ``'no difference'``. ``level`` defaults to a's.
    """
    level = _check_level(a.level if level is None else level)
    n = max(a.n_boot, b.n_boot)
    ia = np.arange(n) % a.n_boot
    ib = np.random.default_rng(12345).permutation(np.arange(n) % b.n_boot)
    with np.errstate(invalid="ignore"):
        lo_values = a.log10_low_values[ia] - b.log10_high_values[ib]
        hi_values = a.log10_high_values[ia] - b.log10_low_values[ib]
    lo, hi = _ends(lo_values, hi_values, level)
    low, high = 10.0 ** lo, 10.0 ** hi
    verdict: Verdict = "higher" if low > 1 else "lower" if high < 1 else "no difference"
    return SigmaMidComparison(ratio=a.sigma_mid / b.sigma_mid, low=low, high=high,
                              level=level, verdict=verdict)
