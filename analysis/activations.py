"""Activation statistics per noise site on clean inputs, and σ_mid as a signal-to-noise ratio.

Why does noisy training make a site robust (the paper's claim (b)), and does multiplicative
noise binarise what flows through a site (claim (c))? Both are questions about the clean
activations at the sites. :func:`activation_statistics` measures them for any model with
``noise_sites`` (the families of :mod:`models` and models given sites by
:func:`noise.inject`): forward hooks on each site's operator read the activation the noise
would be applied to, with every site's noise off and the model in eval mode (batch norm by
its running statistics), on the given inputs. Per site:

=====================  ==========================================================================
``rms``                sqrt(mean(x²)) over every element (the scale a relative σ is measured in)
``std``, ``mean``      population std and mean
``min``, ``max``       extremes
``zero_share``         share of exact zeros (after a ReLU: the inactive units)
``near_zero_share``    share with |x| < eps · rms (``eps`` default 0.01)
``saturated_share``    share with |x| > k · rms (``k`` default 3), or with x ≤ lo or x ≥ hi for
                       given ``bounds=(lo, hi)``
``bimodality``         Sarle's bimodality coefficient (:mod:`analysis.distribution`: 1/3 for a
                       Gaussian, 5/9 uniform, 1 for two point masses); after a ReLU the mass
                       at zero is a mode of its own (≈ 0.7 for a rectified Gaussian), so
                       compare clean- and noise-trained models rather than read it against 5/9
``hist_edges``,        with ``bins``: a histogram (``bins`` equal bins over [min, max] of the
``hist_counts``        site, or the given edges, the same for every model; values outside given
                       edges are counted in ``hist_outside``)
=====================  ==========================================================================

``at`` chooses what is measured: ``'site'`` (the activation at the site, which is what leaves
it with the noise off) and/or ``'layer_input'`` (what enters the layer whose output the site
carries: the pair "entering and leaving" for (c); the input site has no layer and no
``layer_input`` row). The statistics are exact: a first pass over the inputs gives mean and
RMS, a second the moments around the mean and the shares relative to the RMS, so the inputs
are held in memory (a few batches are enough; ``max_batches`` caps them).

:func:`sigma_mid_snr` turns a σ_mid table into the signal-to-noise ratio σ_mid / RMS per site.
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from noise.config import NoNoise

from .distribution import bimodality_from_moments

__all__ = ["activation_statistics", "activation_tables", "site_layers", "sigma_mid_snr",
           "STAT_COLUMNS", "POSITIONS"]

#: What can be measured at a site (see the module docstring).
POSITIONS = ("site", "layer_input")
STAT_COLUMNS = ["site", "name", "kind", "at", "n", "rms", "std", "mean", "min", "max",
                "zero_share", "near_zero_share", "saturated_share", "bimodality"]


def site_layers(model: nn.Module) -> list[tuple[nn.Module, int] | None]:
    """Per site of ``model.noise_sites``, the layer whose output it carries and which call of
    that layer (0 unless the layer runs more than once per forward), or None (the input site,
    or a site whose layer cannot be found).

    In a network of :mod:`models` (an ``nn.Sequential`` whose operators are its own
    layers) it is the layer in front of the site's operator; in an injected model the layer
    the site's name gives (``'<index>:<module path>[#k]'``, :func:`noise.inject`)."""
    sites = model.noise_sites
    children = list(model._modules.values()) if isinstance(model, nn.Sequential) else []
    ops = {id(s.operator) for s in sites}
    found: list[tuple[nn.Module, int] | None] = []
    for site in sites:
        if site.kind == "input" or site.index == 0:
            found.append(None)
            continue
        pos = next((i for i, m in enumerate(children) if m is site.operator), None)
        if pos is not None:
            prev = children[pos - 1] if pos > 0 else None
            found.append(None if prev is None or id(prev) in ops else (prev, 0))
            continue
        m = re.match(r"^\d+:(.+?)(?:#(\d+))?$", site.name)
        try:
            layer = model.get_submodule(m.group(1)) if m else None
        except AttributeError:
            layer = None
        found.append(None if layer is None else (layer, int(m.group(2)) - 1 if m.group(2)
                                                 else 0))
    return found


def _batches(inputs, max_batches: int | None, device) -> list[torch.Tensor]:
    if isinstance(inputs, torch.Tensor):
        inputs = [inputs]
    out = []
    for batch in inputs:
        if max_batches is not None and len(out) >= max_batches:
            break
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        out.append(x if device is None else x.to(device))
    if not out:
        raise ValueError("activation_statistics needs at least one input batch")
    return out


class _Stats:
    """Sums of one tensor position over the batches: first pass, then second pass."""

    def __init__(self):
        self.n, self.s1, self.s2, self.zeros = 0, 0.0, 0.0, 0
        self.lo, self.hi = math.inf, -math.inf
        self.m2 = self.m3 = self.m4 = 0.0
        self.near = self.sat = 0
        self.hist: np.ndarray | None = None
        self.outside = 0

    def first(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1).double()
        self.n += x.numel()
        self.s1 += float(x.sum())
        self.s2 += float(x.square().sum())
        self.zeros += int((x == 0).sum())
        if x.numel():
            self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))

    @property
    def mean(self) -> float:
        return self.s1 / self.n

    @property
    def rms(self) -> float:
        return math.sqrt(self.s2 / self.n)

    def second(self, x: torch.Tensor, near: float, sat, edges: np.ndarray | None) -> None:
        x = x.detach().reshape(-1).double()
        d = x - self.mean
        d2 = d.square()
        self.m2 += float(d2.sum())
        self.m3 += float((d2 * d).sum())
        self.m4 += float(d2.square().sum())
        a = x.abs()
        self.near += int((a < near).sum())
        self.sat += int(((x <= sat[0]) | (x >= sat[1])).sum()) if isinstance(sat, tuple) \
            else int((a > sat).sum())
        if edges is not None:
            counts, _ = np.histogram(x.cpu().numpy(), bins=edges)
            self.hist = counts if self.hist is None else self.hist + counts
            inside = (x >= edges[0]) & (x <= edges[-1])
            self.outside += int((~inside).sum())

    def row(self) -> dict[str, Any]:
        n = self.n
        var = self.m2 / n
        return {"n": n, "rms": self.rms, "std": math.sqrt(var), "mean": self.mean,
                "min": self.lo, "max": self.hi, "zero_share": self.zeros / n,
                "near_zero_share": self.near / n, "saturated_share": self.sat / n,
                "bimodality": bimodality_from_moments(n, var, self.m3 / n, self.m4 / n)}


def _edges(stats: _Stats, bins) -> np.ndarray | None:
    if bins is None:
        return None
    if np.ndim(bins) == 0:
        if int(bins) < 1:
            raise ValueError(f"bins must be >= 1 or a sequence of edges, got {bins}")
        lo, hi = stats.lo, stats.hi
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        return np.linspace(lo, hi, int(bins) + 1)
    edges = np.asarray(bins, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("bins as edges must be an increasing sequence of at least 2 numbers")
    return edges


@torch.no_grad()
def activation_statistics(model: nn.Module, inputs, *, sites: Sequence[int] | None = None,
                          at: str | Sequence[str] = "site", eps: float = 0.01,
                          k: float = 3.0, bounds: tuple[float, float] | None = None,
                          bins: int | Sequence[float] | None = None,
                          max_batches: int | None = None) -> pd.DataFrame:
    """Statistics of the clean activations at ``model``'s noise sites (module docstring).

    Args:
        model: a model with ``noise_sites``.
        inputs: one input batch (a tensor), or batches: tensors or (input, label) pairs
            (a DataLoader); moved to the model's device.
        sites: site indices to measure (default every site).
        at: ``'site'``, ``'layer_input'`` or both (:data:`POSITIONS`).
        eps: ``near_zero_share`` counts |x| < eps · rms.
        k: ``saturated_share`` counts |x| > k · rms, unless ``bounds``.
        bounds: ``(lo, hi)``: ``saturated_share`` counts x ≤ lo or x ≥ hi instead.
        bins: None (no histogram), a number of bins over each site's [min, max], or edges.
        max_batches: use at most this many batches of ``inputs``.

    Returns:
        One row per site and position, in site order: :data:`STAT_COLUMNS` (``name``, ``kind``
        of the site), plus ``hist_edges``, ``hist_counts``, ``hist_outside`` with ``bins``.
        The model's mode and noise configs are as before afterwards; no random generator is
        used.

    Raises:
        ValueError: a model without sites, an unknown site or position, no inputs, bad
            ``eps``/``k``/``bounds``/``bins``.
    """
    all_sites = getattr(model, "noise_sites", None)
    if not all_sites:
        raise ValueError("activation_statistics needs a model with noise_sites (models.build_"
                         "model, or noise.inject for any torch model)")
    positions = [at] if isinstance(at, str) else list(at)
    bad = [p for p in positions if p not in POSITIONS]
    if bad or not positions:
        raise ValueError(f"at: unknown position(s) {bad}; known: {list(POSITIONS)}")
    chosen = list(range(len(all_sites))) if sites is None else [int(i) for i in sites]
    unknown = [i for i in chosen if not 0 <= i < len(all_sites)]
    if unknown:
        raise ValueError(f"sites {unknown} do not exist; the model has sites 0..."
                         f"{len(all_sites) - 1}: {[s.name for s in all_sites]}")
    if not eps > 0 or not k > 0:
        raise ValueError(f"eps and k must be > 0, got eps={eps}, k={k}")
    if bounds is not None and not (len(bounds) == 2 and bounds[0] < bounds[1]):
        raise ValueError(f"bounds must be (lo, hi) with lo < hi, got {bounds}")
    device = next((p.device for p in model.parameters()), None)
    batches = _batches(inputs, max_batches, device)
    layers = site_layers(model) if "layer_input" in positions else []

    stats: dict[tuple[int, str], _Stats] = {}
    handles = []
    state = {"pass": 1, "edges": {}, "calls": {}}

    def feed(key, x):
        s = stats[key]
        if state["pass"] == 1:
            s.first(x)
        else:
            sat = (float(bounds[0]), float(bounds[1])) if bounds is not None else k * s.rms
            s.second(x, eps * s.rms, sat, state["edges"].get(key))

    def site_hook(i):
        def hook(_op, args):
            feed((i, "site"), args[0])
        return hook

    # a layer may run several times per forward (injected models): count its calls
    layer_sites: dict[int, tuple[nn.Module, dict[int, list[int]]]] = {}
    for i in chosen:
        if "site" in positions:
            stats[(i, "site")] = _Stats()
            handles.append(all_sites[i].operator.register_forward_pre_hook(site_hook(i)))
        if "layer_input" in positions and layers[i] is not None:
            layer, call = layers[i]
            stats[(i, "layer_input")] = _Stats()
            layer_sites.setdefault(id(layer), (layer, {}))[1].setdefault(call, []).append(i)

    def layer_hook(lid, by_call):
        def hook(_layer, args):
            call = state["calls"].get(lid, 0)
            state["calls"][lid] = call + 1
            for i in by_call.get(call, ()):
                feed((i, "layer_input"), args[0])
        return hook

    for lid, (layer, by_call) in layer_sites.items():
        handles.append(layer.register_forward_pre_hook(layer_hook(lid, by_call)))

    ops = [s.operator for s in all_sites]
    saved = [op.config for op in ops]
    was_training = model.training
    try:
        for op in ops:
            op.config = NoNoise()
        model.eval()
        for pass_ in (1, 2):  # 1: mean, RMS, extremes; 2: what is relative to them
            state["pass"] = pass_
            if pass_ == 2:
                empty = [key for key, s in stats.items() if s.n == 0]
                if empty:
                    raise ValueError(f"no activation reached {empty} (site, position)")
                state["edges"] = {key: _edges(s, bins) for key, s in stats.items()}
            for x in batches:
                state["calls"].clear()
                model(x)
    finally:
        for h in handles:
            h.remove()
        for op, cfg in zip(ops, saved):
            op.config = cfg
        model.train(was_training)

    rows = []
    for (i, pos), s in sorted(stats.items(), key=lambda kv: (kv[0][0],
                                                             POSITIONS.index(kv[0][1]))):
        site = all_sites[i]
        row = {"site": i, "name": site.name, "kind": site.kind, "at": pos, **s.row()}
        if bins is not None:
            row.update(hist_edges=state["edges"][(i, pos)], hist_counts=s.hist,
                       hist_outside=s.outside)
        rows.append(row)
    columns = STAT_COLUMNS + (["hist_edges", "hist_counts", "hist_outside"]
                              if bins is not None else [])
    return pd.DataFrame(rows, columns=columns)


def activation_tables(models: Mapping[str, nn.Module], inputs, label_col: str = "model",
                      **kwargs) -> pd.DataFrame:
    """:func:`activation_statistics` of several models (e.g. ``{'clean training': net1,
    'GaussMul σ=0.1': net2}``) on the same inputs, stacked, with their label in
    ``label_col``; ``kwargs`` go to :func:`activation_statistics` (give ``bins`` as edges to
    compare histograms)."""
    if not models:
        raise ValueError("activation_tables needs at least one model")
    if not isinstance(inputs, torch.Tensor):
        inputs = list(inputs)  # every model sees the same batches
    frames = [activation_statistics(m, inputs, **kwargs).assign(**{label_col: label})
              for label, m in models.items()]
    table = pd.concat(frames, ignore_index=True)
    return table[[label_col] + [c for c in table.columns if c != label_col]]


def sigma_mid_snr(sigma_mid: pd.DataFrame, activations: pd.DataFrame,
                  on: Sequence[str] = ("site",)) -> pd.DataFrame:
    """σ_mid as a signal-to-noise ratio: ``sigma_mid`` / the site's clean activation RMS.

    ``sigma_mid`` is a σ_mid table (:func:`analysis.results.sigma_mid_per_site` or
    :func:`analysis.midpoint.midpoint_table`) whose σ is absolute; ``activations`` an
    :func:`activation_statistics` table of the model the σ_mid were measured on (its
    ``at == 'site'`` rows). They are joined on ``on`` (default the site index; add e.g. a
    model label when the tables hold several models). Returns ``sigma_mid`` with ``rms``
    and ``snr`` = sigma_mid / rms added (``snr_low``, ``snr_high`` from ``sigma_mid_low``,
    ``sigma_mid_high`` when present; a bound σ_mid gives a bound SNR, see ``kind``). Rows
    without a matching site get NaN.

    Raises:
        ValueError: a join column missing from either table, or an activation table with
            several rows per key (several models: join on their label too).
    """
    on = list(on)
    for name, table in (("sigma_mid", sigma_mid), ("activations", activations)):
        missing = [c for c in on if c not in table.columns]
        if missing:
            raise ValueError(f"sigma_mid_snr: the {name} table lacks join column(s) {missing}")
    rms = activations
    if "at" in rms.columns:
        rms = rms[rms["at"] == "site"]
    rms = rms[on + ["rms"]]
    if rms.duplicated(on).any():
        raise ValueError(f"sigma_mid_snr: the activation table has several rows per {on} "
                         "(several models?); join on their label too, e.g. on=['model', "
                         "'site']")
    if "rms" in sigma_mid.columns:
        sigma_mid = sigma_mid.drop(columns="rms")
    out = sigma_mid.merge(rms, on=on, how="left", validate="many_to_one")
    out["snr"] = out["sigma_mid"] / out["rms"]
    for end in ("low", "high"):
        if f"sigma_mid_{end}" in out.columns:
            out[f"snr_{end}"] = out[f"sigma_mid_{end}"] / out["rms"]
    return out
