"""What the convergence run measures on one trained model in memory, as plain JSON values
(:mod:`.cache` stores them): σ_mid curves with every evaluation draw, weight and activation
statistics with histograms, accuracy under noise per draw, and the float64 re-evaluation of
settings that overflow float32.

σ_mid curves (:func:`sigma_mid_curve`) are measured in two steps: the walk's bracketing and
bisection in log σ (:func:`util.engine.walk.bisect_midpoint`, one draw per σ) locates the
crossing; then every σ of the shared lattice 10^(k/L) within ``refine_decades`` of it is
evaluated ``draws`` times. The lattice is the same for every seed and model, so the rows of
several training seeds fall on common σ and :func:`analysis.uncertainty.sigma_mid_interval`
resamples them as drawn. Each evaluation is seeded from ``(*seed_parts, σ, draw)``.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from noise.config import NoNoise, parse_noise_config
from util.config import parse_walk
from util.engine.midpoint import midpoint
from util.engine.seeding import seed_torch
from util.engine.walk import SiteEvaluator, bisect_midpoint

from ..activations import activation_statistics
from ..repetition import SCALINGS, repetition_plan, total_repetitions
from ..weights import conv_linear_weights, layer_weight_table, load_state_dict, mean_abs_bn_gamma
from .evaluation import accuracy_over_draws

__all__ = ["lattice", "sigma_mid_curve", "global_curve", "site_curve", "accuracy_draws",
           "weight_summary", "activation_summary", "plan_accuracies", "as_float64",
           "noise_configs", "overflow_sigma", "HIST_BINS"]

HIST_BINS = 40


def lattice(center: float, decades: float, per_decade: int,
            bounds: tuple[float, float]) -> list[float]:
    """The σ of the lattice 10^(k/per_decade) within ``decades`` of ``center`` (log10),
    clipped to ``bounds``; each σ computed from its k, so equal k give equal floats."""
    c = math.log10(center)
    lo = max(c - decades, math.log10(bounds[0]))
    hi = min(c + decades, math.log10(bounds[1]))
    ks = range(math.ceil(lo * per_decade - 1e-9), math.floor(hi * per_decade + 1e-9) + 1)
    return [float(10 ** (k / per_decade)) for k in ks]


def sigma_mid_curve(evaluate: Callable[[float, Any], float], *, n_sites: int,
                    sigma_range: tuple[float, float], max_evals: int, draws: int,
                    reference: float, chance: float, per_decade: int, decades: float
                    ) -> dict[str, Any]:
    """Bisection, then lattice refinement (module docstring). ``evaluate(σ, draw)`` gives the
    accuracy (%) of one draw (``draw`` is ``'bisect'`` in the first step). Returns
    ``{"bisection": [[σ, acc], ...], "rows": [[σ, draw, acc], ...], "reference": ...}``;
    ``reference`` is the noise-free accuracy whose midpoint level counts."""
    settings = parse_walk({"search": "midpoint", "sigma_range": list(sigma_range),
                           "max_evals": int(max_evals)}, n_sites)
    level = (reference + chance) / 2
    found = bisect_midpoint(lambda s: evaluate(s, "bisect"), settings, level)
    m = midpoint(list(found), list(found.values()), reference, chance)
    center = m.sigma_mid
    grid = lattice(center, decades, per_decade, sigma_range)
    rows = [[s, d, float(evaluate(s, d))] for s in grid for d in range(draws)]
    # the window missed the crossing (a coarse bisection): extend it a step at a time
    step = 10 ** (1 / per_decade)
    for _ in range(2 * per_decade):
        r = np.asarray(rows)
        kind = midpoint(r[:, 0], r[:, 2], reference, chance).kind
        nxt = grid[-1] * step if kind == "lower_bound" else grid[0] / step
        if kind == "crossing" or not sigma_range[0] <= nxt <= sigma_range[1]:
            break
        k = round(math.log10(nxt) * per_decade)
        nxt = float(10 ** (k / per_decade))
        grid = sorted([*grid, nxt])
        rows += [[nxt, d, float(evaluate(nxt, d))] for d in range(draws)]
    return {"bisection": [[float(s), float(a)] for s, a in sorted(found.items())],
            "bisection_kind": m.kind, "rows": rows, "reference": float(reference)}


def noise_configs(n_sites: int, noise_type: str, sigma: float, sites: Sequence[int] | None = None):
    """Eval-only noise of one type and σ at ``sites`` (None: every site), NoNoise elsewhere."""
    cfg = parse_noise_config({"noise_type": noise_type, "GaussStd": float(sigma),
                              "enable_in_training": 0, "enable_in_eval": 1})
    return [cfg if sites is None or i in sites else NoNoise() for i in range(n_sites)]


def accuracy_draws(model: nn.Module, data, configs=None, repetitions=None, *, draws: int,
                   seed_parts: Sequence[Any]) -> dict[str, list[float]]:
    """Accuracy (%) and the share of non-finite logits of each of ``draws`` noise draws
    (one pass without noise when ``configs`` is None)."""
    accs, bad = [], []
    for d in range(draws if configs else 1):
        a = accuracy_over_draws(model, data, configs, repetitions, seed_parts=(*seed_parts, d),
                                repeats=1)
        accs.append(a["mean"])
        bad.append(a["non_finite"])
    return {"accuracy": accs, "non_finite": bad}


def global_curve(model: nn.Module, data, *, reference: float, chance: float, seed_parts,
                 **curve) -> dict[str, Any]:
    """σ_mid curve of GaussAdd at every site (eval only)."""
    n = len(model.noise_sites)

    def evaluate(sigma, draw):
        return accuracy_over_draws(model, data, noise_configs(n, "GaussAdd", sigma),
                                   seed_parts=(*seed_parts, sigma, draw), repeats=1)["mean"]

    return sigma_mid_curve(evaluate, n_sites=n, reference=reference, chance=chance, **curve)


def site_curve(evaluator: SiteEvaluator, site: int, *, reference: float, chance: float,
               seed_parts, **curve) -> dict[str, Any]:
    """σ_mid curve of GaussAdd at one site (eval only), prefix reused."""
    n = len(evaluator.sites)

    def evaluate(sigma, draw):
        seed_torch(*seed_parts, site, sigma, draw)
        return evaluator.evaluate(site, noise_configs(n, "GaussAdd", sigma)[site])[0]

    return sigma_mid_curve(evaluate, n_sites=n, reference=reference, chance=chance, **curve)


def _histogram(values: np.ndarray, bins: int = HIST_BINS) -> dict[str, list[float]]:
    peak = float(np.abs(values).max()) or 1.0
    counts, edges = np.histogram(values, bins=bins, range=(-peak, peak))
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def weight_summary(model: nn.Module) -> dict[str, Any]:
    """Per conv/linear layer the statistics of :func:`analysis.weights.layer_weight_table`
    (NaN rows for non-finite weights) with a histogram over ±max|w|; BN mean|γ|."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    try:
        table = layer_weight_table(state)
        rows = table.drop(columns=["shape"]).to_dict(orient="records")
        weights = {name: t for name, t in _conv_linear(state)}
        for r in rows:
            r["hist"] = _histogram(weights[r["layer"]])
    except ValueError as err:
        if "NaN" not in str(err) and "infinite" not in str(err):
            raise
        rows = [{"layer": name, "mean_abs": math.nan, "max_abs": math.nan,
                 "bimodality": math.nan, "near_zero_share": math.nan,
                 "binarisation_index": math.nan, "hist": None}
                for name, _ in _conv_linear(state)]
    return {"layers": rows, "mean_abs_bn_gamma": mean_abs_bn_gamma(state)}


def _conv_linear(state):
    for name, _, t in conv_linear_weights(load_state_dict(state)):
        yield name, t.detach().double().reshape(-1).numpy()


def activation_summary(model: nn.Module, x: torch.Tensor, sites: Sequence[int] | None = None
                       ) -> list[dict[str, Any]]:
    """:func:`analysis.activations.activation_statistics` at the sites and entering their
    layers, with histograms (``HIST_BINS`` bins over each site's range); [] when the clean
    activations are not finite."""
    with torch.no_grad():
        if not torch.isfinite(model(x[:8])).all():
            return []
    table = activation_statistics(model, [x[i:i + 500] for i in range(0, x.shape[0], 500)],
                                  sites=sites, at=("site", "layer_input"), bins=HIST_BINS)
    rows = []
    for r in table.to_dict(orient="records"):
        r["hist"] = {"edges": np.asarray(r.pop("hist_edges")).tolist(),
                     "counts": np.asarray(r.pop("hist_counts")).tolist()}
        r.pop("hist_outside", None)
        rows.append(r)
    return rows


def plan_accuracies(model: nn.Module, data, *, sigma: float, site_sigma_mid: Sequence[float],
                    budgets: Sequence[float], draws: int, seed_parts) -> list[dict[str, Any]]:
    """(e): accuracy per draw with GaussAdd at every site at ``sigma`` for R = 1, the uniform
    plan and every tailored plan (:data:`analysis.repetition.SCALINGS`) at each budget."""
    n = len(model.noise_sites)
    configs = noise_configs(n, "GaussAdd", sigma)
    plans = [(1.0, "none (R=1)", [1] * n)]
    for b in budgets:
        total = total_repetitions(b, n)
        if float(b).is_integer() and int(b) * n == total:
            plans.append((float(b), "uniform", [int(b)] * n))
        plans += [(float(b), s, repetition_plan(site_sigma_mid, b, s)) for s in SCALINGS]
    out = []
    for b, name, reps in plans:
        acc = accuracy_draws(model, data, configs, reps, draws=draws,
                             seed_parts=(*seed_parts, b, name))
        out.append({"budget": b, "plan": name, "repetitions": list(map(int, reps)),
                    "accuracy": acc["accuracy"]})
    return out


def as_float64(model: nn.Module) -> nn.Module:
    """A float64 copy of ``model`` (noise sites included; the original is untouched)."""
    return copy.deepcopy(model).double()


def overflow_sigma(n_sites: int, activation_rms: float, dtype: torch.dtype) -> float:
    """The GaussMul σ at every site at which an activation of size ``activation_rms``
    multiplied by σ at each of ``n_sites`` sites passes the largest finite number of
    ``dtype`` (a lower bound of what overflows: BN or a ReLU can only shrink the product by a
    bounded factor per site)."""
    big = float(torch.finfo(dtype).max)
    return float(10 ** ((math.log10(big) - math.log10(max(activation_rms, 1e-30))) / n_sites))
