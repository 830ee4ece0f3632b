"""Repetition plans: how many times to repeat the noisy computation at each site.

Repeating the noise draw R times at a site and averaging shrinks its noise by √R. Given a budget
of ``budget_factor × n_sites`` repetitions in total and the measured midpoint noise level σ_mid
of each site, :func:`repetition_plan` turns a *scaling* into integer repetitions R_l ≥ 1:

1. the scaling gives each site a weight w_l > 0 from the σ_mid values (formulas below; each
   weight function is registered in :data:`SCALINGS` under its name);
2. every site gets its base repetition 1, and the remaining ``E = total − n_sites``
   repetitions are shared in proportion to w_l: site l's quota is ``E · w_l / Σ w``;
3. quotas become integers by largest-remainder rounding: each site gets ⌊quota⌋, and the
   leftover repetitions go one each to the sites with the largest fractional parts (ties: the
   larger weight first, then the earlier site).

The result sums to the total exactly, and if w_a ≥ w_b then R_a ≥ R_b, except that sites of
equal weight may differ by one where the budget does not divide evenly.

Only ratios of σ_mid matter: every scaling gives the same plan for σ_mid and c·σ_mid. The
*inverse* scalings give less robust sites (small σ_mid) more repetitions, which is what a
countermeasure wants; the plain ones do the opposite and serve as baselines.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

WeightFn = Callable[[np.ndarray], np.ndarray]

#: Registry: scaling name → weight function (σ_mid array → positive weights, same length).
SCALINGS: dict[str, WeightFn] = {}


def _scaling(name: str) -> Callable[[WeightFn], WeightFn]:
    def register(fn: WeightFn) -> WeightFn:
        SCALINGS[name] = fn
        return fn
    return register


def _ratio(sigma_mid: np.ndarray) -> np.ndarray:
    """σ_mid relative to the smallest one (≥ 1), which makes every scaling scale-free."""
    return sigma_mid / sigma_mid.min()


def _ranks(sigma_mid: np.ndarray) -> np.ndarray:
    """Ascending ranks 1..n of σ_mid; equal values share their average rank."""
    order = np.argsort(sigma_mid, kind="stable")
    ranks = np.empty(sigma_mid.size, dtype=float)
    ranks[order] = np.arange(1, sigma_mid.size + 1, dtype=float)
    for value in np.unique(sigma_mid):
        tied = sigma_mid == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def _bins(sigma_mid: np.ndarray, n_bins: int) -> np.ndarray:
    """Ascending bin index 1..n_bins of each site: the sites sorted by σ_mid, cut into
    n_bins groups of (nearly) equal size; bin = ⌊(rank − 1) · n_bins / n⌋ + 1."""
    ranks = _ranks(sigma_mid)
    return np.minimum(np.floor((ranks - 1) * n_bins / sigma_mid.size) + 1, n_bins)


@_scaling("log10")
def weight_log10(sigma_mid: np.ndarray) -> np.ndarray:
    """w_l = 1 + log10(σ_l / σ_min): grows with robustness, the least robust site gets 1."""
    return 1.0 + np.log10(_ratio(sigma_mid))


@_scaling("inverse_log10")
def weight_inverse_log10(sigma_mid: np.ndarray) -> np.ndarray:
    """w_l = 1 / (1 + log10(σ_l / σ_min)): the reciprocal of ``log10``; the least robust
    site gets the largest weight, 1."""
    return 1.0 / weight_log10(sigma_mid)


@_scaling("sqrt")
def weight_sqrt(sigma_mid: np.ndarray) -> np.ndarray:
    """w_l = √σ_l: grows with robustness."""
    return np.sqrt(_ratio(sigma_mid))


@_scaling("inverse_sqrt")
def weight_inverse_sqrt(sigma_mid: np.ndarray) -> np.ndarray:
    """w_l = 1 / √σ_l."""
    return 1.0 / np.sqrt(_ratio(sigma_mid))


@_scaling("inverse_lin")
def weight_inverse_lin(sigma_mid: np.ndarray) -> np.ndarray:
    """w_l = 1 / σ_l."""
    return 1.0 / _ratio(sigma_mid)


@_scaling("inverse_square")
def weight_inverse_square(sigma_mid: np.ndarray) -> np.ndarray:
    """w_l = 1 / σ_l²: the noise variance a site tolerates, inverted; strongly favours the
    least robust sites."""
    return 1.0 / _ratio(sigma_mid) ** 2


@_scaling("layer_sort")
def weight_layer_sort(sigma_mid: np.ndarray) -> np.ndarray:
    """w_l = rank of σ_l ascending (1 = least robust … n = most robust); ties share the
    average rank. Uses only the order of σ_mid, not its values."""
    return _ranks(sigma_mid)


@_scaling("layer_sort_inverse")
def weight_layer_sort_inverse(sigma_mid: np.ndarray) -> np.ndarray:
    """w_l = n + 1 − ascending rank (n = least robust … 1 = most robust)."""
    return sigma_mid.size + 1.0 - _ranks(sigma_mid)


@_scaling("layer_sort_bins2")
def weight_layer_sort_bins2(sigma_mid: np.ndarray) -> np.ndarray:
    """w_l = bin of σ_l among 2 equal-count bins sorted ascending: 1 for the less robust
    half, 2 for the more robust half (a coarse ``layer_sort``)."""
    return _bins(sigma_mid, 2)


@_scaling("layer_sort_bins3")
def weight_layer_sort_bins3(sigma_mid: np.ndarray) -> np.ndarray:
    """w_l = bin of σ_l among 3 equal-count bins sorted ascending (1, 2, 3)."""
    return _bins(sigma_mid, 3)


@_scaling("layer_sort_inverse_bins2")
def weight_layer_sort_inverse_bins2(sigma_mid: np.ndarray) -> np.ndarray:
    """w_l = 3 − ascending bin of 2: 2 for the less robust half, 1 for the more robust."""
    return 3.0 - _bins(sigma_mid, 2)


@_scaling("layer_sort_inverse_bins3")
def weight_layer_sort_inverse_bins3(sigma_mid: np.ndarray) -> np.ndarray:
    """w_l = 4 − ascending bin of 3: 3 for the least robust third … 1 for the most robust."""
    return 4.0 - _bins(sigma_mid, 3)


def total_repetitions(budget_factor: float, n_sites: int) -> int:
    """The total budget ``budget_factor × n_sites``, rounded half up to an integer."""
    return int(math.floor(budget_factor * n_sites + 0.5 + 1e-9))


def _largest_remainder(extra: int, weights: np.ndarray) -> np.ndarray:
    quotas = extra * weights / weights.sum()
    counts = np.floor(quotas).astype(int)
    leftover = extra - int(counts.sum())
    remainders = quotas - counts
    # Largest remainder first; ties go to the larger weight, then to the earlier site.
    order = sorted(range(weights.size), key=lambda i: (-remainders[i], -weights[i], i))
    for i in order[:leftover]:
        counts[i] += 1
    return counts


def repetition_plan(sigma_mid: Sequence[float], budget_factor: float,
                    scaling: str) -> list[int]:
    """Integer repetitions per site from measured σ_mid (see the module docstring).

    Args:
        sigma_mid: σ_mid of each site in site order, all finite and > 0. A site whose σ_mid
            is only a lower bound should be passed its bound (it then gets a conservative
            share under the inverse scalings).
        budget_factor: the mean repetitions per site, ≥ 1; the total is
            ``round(budget_factor × n_sites)``, halves rounded up.
        scaling: a name in :data:`SCALINGS`.

    Returns:
        ``R`` with ``len(R) == len(sigma_mid)``, every ``R_l`` an int ≥ 1, and
        ``sum(R) == total_repetitions(budget_factor, len(sigma_mid))``.

    Raises:
        ValueError: unknown scaling (the message lists the known ones), budget_factor < 1 or
            not finite, no sites, or a σ_mid that is not finite and > 0.
    """
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r}; known: {sorted(SCALINGS)}")
    try:
        budget_factor = float(budget_factor)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"budget_factor must be a number, got {budget_factor!r}") from exc
    if not math.isfinite(budget_factor) or budget_factor < 1:
        raise ValueError(f"budget_factor must be >= 1 (every site runs at least once), "
                         f"got {budget_factor}")
    sigma = np.asarray(sigma_mid, dtype=float)
    if sigma.ndim != 1 or sigma.size == 0:
        raise ValueError(f"sigma_mid must be a non-empty list of numbers, got {sigma_mid!r}")
    bad = ~np.isfinite(sigma) | (sigma <= 0)
    if bad.any():
        raise ValueError(f"sigma_mid must be finite and > 0; bad at site(s) "
                         f"{np.flatnonzero(bad).tolist()}: {sigma[bad].tolist()}")
    weights = np.asarray(SCALINGS[scaling](sigma), dtype=float)
    if not (np.all(np.isfinite(weights)) and np.all(weights > 0)):
        raise ValueError(f"scaling {scaling!r} gave non-positive or non-finite weights "
                         f"{weights.tolist()} for σ_mid {sigma.tolist()} (range too wide?)")
    total = total_repetitions(budget_factor, sigma.size)
    plan = 1 + _largest_remainder(total - sigma.size, weights)
    log.debug("repetition plan %s, budget %g × %d = %d: %s",
              scaling, budget_factor, sigma.size, total, plan.tolist())
    return [int(r) for r in plan]
