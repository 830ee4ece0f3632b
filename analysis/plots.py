"""Figures of the Walking Noise analysis, each saved as PNG and PDF.

Every figure has a builder ``*_figure(...) -> matplotlib.figure.Figure`` (no pyplot, no global
state, so it works headless and in notebooks alike) and a saver ``plot_*(..., path)`` that
builds it, writes ``<path>.png`` and ``<path>.pdf`` and returns both paths.

Inputs are tidy DataFrames, one row per run (or per site for σ_mid), with these columns:

=====================  =======================================================================
``site``               noise site index in forward order (int)
``site_name``          readable site name, e.g. ``'5:conv2'``
``sigma``              noise strength σ (GaussStd, or StdAmplitude for combined noise)
``accuracy``           accuracy of the run (percent or fraction, as long as it is consistent)
``repeat_number``      repeat of the same configuration (optional)
``enable_in_training`` True: noisy training, False: clean (noise-free) training
``conf_name``          model configuration, e.g. ``'LeNet5'`` vs ``'LeNet5-BN'``
``noise_type``         e.g. ``'GaussAdd'``
``std_ratio``          StdRatio r of combined noise (σ_add = A·r, σ_mul = A·(1 − r))
``sigma_add``          σ_add of combined noise
``sigma_mul``          σ_mul of combined noise
=====================  =======================================================================

The σ_mid figure takes the output of :func:`analysis.midpoint.midpoint_table` (columns
``sigma_mid``, ``kind`` and optionally ``log10_sigma_mid_mean`` / ``log10_sigma_mid_std``).
"""
from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .weights import WeightSource, layer_weights

log = logging.getLogger(__name__)

#: Axis labels for the tidy columns.
AXIS_LABELS = {
    "sigma": "noise σ",
    "accuracy": "accuracy",
    "std_ratio": "ratio r  (σ_add = A·r, σ_mul = A·(1−r))",
    "sigma_add": "σ_add",
    "sigma_mul": "σ_mul",
    "sigma_mid": "midpoint noise level σ_mid",
}


def save_figure(fig: Figure, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``fig`` to ``<path>.png`` and ``<path>.pdf`` (a .png/.pdf suffix on ``path`` is
    replaced), creating parent folders; returns (png path, pdf path)."""
    stem = Path(path)
    if stem.suffix.lower() in (".png", ".pdf"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = (stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf"))
    for target in out:
        fig.savefig(target, dpi=150, bbox_inches="tight")
    log.info("wrote %s and %s", *out)
    return out


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    if df is None or len(df) == 0:
        raise ValueError(f"{what}: no data (empty table)")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; available: {list(df.columns)}")


def _require_single(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """One figure shows one condition: refuse tables that mix values of ``columns``."""
    for col in columns:
        if col in df.columns and df[col].nunique(dropna=False) > 1:
            raise ValueError(f"{what}: the table mixes {col} = {sorted(map(str, df[col].unique()))}"
                             f"; filter it to one {col} first")


def _layer_label(site_name: str) -> str:
    """'5:conv2' → 'conv2' (the name without its site index)."""
    return re.sub(r"^\s*\d+\s*:\s*", "", str(site_name))


def _training_label(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "noisy training" if value else "clean training"
    return str(value)


# --------------------------------------------------------------------------- walking noise


def walking_noise_figure(df: pd.DataFrame, *, chance: float | None = None,
                         clean_accuracy: float | None = None,
                         title: str | None = None) -> Figure:
    """Accuracy versus σ (log x) at each site: one line per site, coloured by depth.

    ``df`` needs ``site``, ``site_name``, ``sigma``, ``accuracy`` for ONE condition (it must not
    mix ``conf_name``, ``enable_in_training``, ``noise_type`` or ``std_ratio``). Runs at equal σ
    are averaged; with several runs per σ a band shows their min–max. Rows at σ = 0 cannot sit
    on a log axis and are left out (pass their accuracy as ``clean_accuracy``). Horizontal
    lines: chance (when given), the midpoint level (clean_accuracy + chance)/2 (when both are
    given) and the clean accuracy. The legend lists the site names in site order.

    The site lines carry ``gid='site'``, the horizontal lines ``'chance'``,
    ``'midpoint_level'``, ``'clean'``.
    """
    _require(df, ["site", "site_name", "sigma", "accuracy"], "walking-noise plot")
    _require_single(df, ["conf_name", "enable_in_training", "noise_type", "std_ratio"],
                    "walking-noise plot")
    noisy = df[df["sigma"] > 0]
    if len(noisy) < len(df):
        log.debug("walking-noise plot: left out %d rows at σ <= 0", len(df) - len(noisy))
    if noisy.empty:
        raise ValueError("walking-noise plot: no rows with σ > 0")

    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    sites = noisy.groupby("site", sort=True)
    cmap = colormaps["viridis"]
    n = sites.ngroups
    for i, (site, rows) in enumerate(sites):
        names = rows["site_name"].unique()
        if len(names) > 1:
            raise ValueError(f"walking-noise plot: site {site} has several names {list(names)}")
        stats = rows.groupby("sigma")["accuracy"].agg(["mean", "min", "max", "size"])
        color = cmap(i / max(n - 1, 1) * 0.9)
        (line,) = ax.plot(stats.index, stats["mean"], marker="o", markersize=3, color=color,
                          label=str(names[0]))
        line.set_gid("site")
        if (stats["size"] > 1).any():
            band = ax.fill_between(stats.index, stats["min"], stats["max"], color=color,
                                   alpha=0.15, linewidth=0)
            band.set_gid("spread")
    if chance is not None:
        ax.axhline(chance, color="0.4", linestyle="--", linewidth=1, label="chance",
                   gid="chance")
    if clean_accuracy is not None:
        ax.axhline(clean_accuracy, color="0.4", linestyle="-", linewidth=0.8,
                   label="clean accuracy", gid="clean")
        if chance is not None:
            ax.axhline((clean_accuracy + chance) / 2, color="0.2", linestyle=":", linewidth=1.2,
                       label="midpoint level", gid="midpoint_level")
    ax.set_xscale("log")
    ax.set_xlabel(AXIS_LABELS["sigma"])
    ax.set_ylabel(AXIS_LABELS["accuracy"])
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(title="site", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def plot_walking_noise(df: pd.DataFrame, path: str | os.PathLike, **kwargs) -> tuple[Path, Path]:
    """:func:`walking_noise_figure` saved as PNG and PDF; returns the two paths."""
    return save_figure(walking_noise_figure(df, **kwargs), path)


#: the two curves of a noisy-training walk, by ``enable_in_training``: (gid, label, style)
TRAINING_CURVES = {False: ("clean_training", "clean training", "-"),
                   True: ("noisy_training", "noisy training", "--")}


def walk_training_figure(df: pd.DataFrame, *, chance: float | None = None,
                         clean_accuracy: float | None = None,
                         title: str | None = None) -> Figure:
    """Accuracy versus σ (log x), one panel per site: the clean-trained and the noise-trained
    curve of a noisy-training walk (``train.py walk with walk.train=true``) side by side.

    ``df`` needs ``site``, ``site_name``, ``sigma``, ``accuracy`` and ``enable_in_training``
    (False: the clean model evaluated under the noise, True: a model trained with it). Runs at
    equal σ are averaged; rows at σ = 0 are left out (log axis). The curves carry
    ``gid='clean_training'`` and ``'noisy_training'``; each panel also has the chance and
    midpoint-level lines (``'chance'``, ``'midpoint_level'``) when given.
    """
    _require(df, ["site", "site_name", "sigma", "accuracy", "enable_in_training"],
             "noisy-training walk plot")
    noisy = df[df["sigma"] > 0]
    if noisy.empty:
        raise ValueError("noisy-training walk plot: no rows with σ > 0")
    sites = list(noisy.groupby("site", sort=True))
    ncols = min(4, len(sites))
    nrows = math.ceil(len(sites) / ncols)
    fig = Figure(figsize=(3.2 * ncols + 1.5, 2.6 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, (site, rows) in zip(axes, sites):
        for trained, curve in rows.groupby("enable_in_training", sort=True):
            gid, label, style = TRAINING_CURVES[bool(trained)]
            mean = curve.groupby("sigma")["accuracy"].mean()
            (line,) = ax.plot(mean.index, mean.values, style, marker="o", markersize=3,
                              label=label, color="C1" if trained else "C0")
            line.set_gid(gid)
        if chance is not None:
            ax.axhline(chance, color="0.4", linestyle="--", linewidth=1, gid="chance")
            if clean_accuracy is not None:
                ax.axhline((clean_accuracy + chance) / 2, color="0.2", linestyle=":",
                           linewidth=1.2, gid="midpoint_level")
        ax.set_xscale("log")
        ax.set_title(str(rows["site_name"].iloc[0]), fontsize="small")
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(sites):]:
        ax.remove()
    fig.supxlabel(AXIS_LABELS["sigma"])
    fig.supylabel(AXIS_LABELS["accuracy"])
    handles = [Line2D([], [], color=c, linestyle=TRAINING_CURVES[t][2], marker="o",
                      label=TRAINING_CURVES[t][1]) for t, c in ((False, "C0"), (True, "C1"))]
    fig.legend(handles=handles, loc="outside upper right", fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def walk_figure(result: Mapping) -> Figure:
    """The figure of a walk's result: :func:`walking_noise_figure` (one model), or
    :func:`walk_training_figure` when the evaluations say which training each came from (the
    noisy-training walk). ValueError when there is nothing to draw on a log axis."""
    df = pd.DataFrame([{k: v for k, v in r.items() if k != "noise"}
                       for r in result["evaluations"]])
    kw = dict(chance=result["chance"], clean_accuracy=result["clean_accuracy"])
    if "enable_in_training" in df.columns:
        return walk_training_figure(df, **kw, title=f"{result.get('conf_name')}: "
                                    f"{result['walk']['noise_type']}, clean vs noisy training")
    df["conf_name"] = result.get("conf_name")
    return walking_noise_figure(df, **kw, title=f"{result.get('conf_name')}: "
                                f"{result['walk']['noise_type']} walk")


def plot_walk(result: Mapping) -> dict[str, str]:
    """The walking-noise plot of a walk's result (``train.py walk``; :func:`walk_figure`),
    saved beside its evaluations table as ``walking_noise.{png,pdf}``; the artifact paths, or
    {} (with a warning) when there is nothing to draw on a log axis (e.g. a grid of σ = 0
    only)."""
    table = Path(result["artifacts"]["evaluations"])
    try:
        fig = walk_figure(result)
    except ValueError as err:
        log.warning("no walking-noise plot: %s", err)
        return {}
    png, pdf = save_figure(fig, table.parent / "walking_noise")
    return {"walk_plot_png": str(png), "walk_plot_pdf": str(pdf)}


# --------------------------------------------------------------------------- σ_mid per site


def _merge_in_order(sequences: list[list[str]]) -> list[str]:
    """Union of the sequences keeping each one's order (later items are inserted after the
    last item they follow that is already placed)."""
    merged: list[str] = []
    for seq in sorted(sequences, key=len, reverse=True):
        pos = -1
        for item in seq:
            if item in merged:
                pos = merged.index(item)
            else:
                merged.insert(pos + 1, item)
                pos += 1
    return merged


def _x_keys(table: pd.DataFrame, series: list[pd.DataFrame]) -> tuple[str, list[str]]:
    """Which column places a site on the x axis, and the category order.

    Site names when they agree between series; when the same layer sits at different
    indices (e.g. with and without BN: '4:conv2' vs '5:conv2'), the layer name without index,
    so that the series line up layer by layer.
    """
    names_per_layer = table.groupby("_layer")["site_name"].nunique()
    per_series_unique = all(s["_layer"].is_unique for s in series)
    key = "_layer" if (names_per_layer > 1).any() and per_series_unique else "site_name"
    order = _merge_in_order([list(s.sort_values("site")[key]) for s in series])
    return key, order


def sigma_mid_figure(table: pd.DataFrame, *,
                     series_cols: Sequence[str] = ("enable_in_training", "conf_name"),
                     title: str | None = None) -> Figure:
    """σ_mid (log y) per site (x, labelled with site names), one series per condition.

    ``table`` needs ``site``, ``site_name``, ``sigma_mid``; ``kind`` marks bounds (see
    :class:`analysis.midpoint.MidpointResult`); ``log10_sigma_mid_mean`` and
    ``log10_sigma_mid_std`` give a spread bar 10^(mean ± std) over repeats. A series is one
    combination of the ``series_cols`` that the table has (default: clean vs noisy training
    and the model configuration, e.g. ±BN); each series may hold each site once. Series with
    different site sets are aligned by layer name.

    Markers: filled circle = crossing, open up-triangle = lower bound (σ_mid beyond the
    largest σ), open down-triangle = upper bound. The series lines carry ``gid='series'``,
    the marker sets ``'crossing'``, ``'lower_bound'``, ``'upper_bound'``, bars ``'spread'``.
    """
    _require(table, ["site", "site_name", "sigma_mid"], "σ_mid plot")
    table = table.copy()
    if "kind" not in table.columns:
        table["kind"] = "crossing"
    table["_layer"] = table["site_name"].map(_layer_label)
    cols = [c for c in series_cols if c in table.columns]
    groups = list(table.groupby(cols, dropna=False, sort=True)) if cols else [((), table)]
    series = []
    for key, rows in groups:
        key = key if isinstance(key, tuple) else (key,)
        if rows["site"].duplicated().any():
            raise ValueError(f"σ_mid plot: series {dict(zip(cols, key))} has a site more than "
                             f"once; filter the table or add the distinguishing column to "
                             f"series_cols (now {cols})")
        label = ", ".join(_training_label(v) if c == "enable_in_training" else str(v)
                          for c, v in zip(cols, key)) or "σ_mid"
        series.append((label, rows.sort_values("site")))
    x_key, order = _x_keys(table, [rows for _, rows in series])
    x_of = {k: i for i, k in enumerate(order)}

    fig = Figure(figsize=(max(6.0, 0.45 * len(order) + 3), 4.5), layout="constrained")
    ax = fig.add_subplot()
    colors = colormaps["tab10"]
    width = 0.3
    markers = {"crossing": ("o", True), "lower_bound": ("^", False), "upper_bound": ("v", False)}
    for i, (label, rows) in enumerate(series):
        color = colors(i % 10)
        offset = (i - (len(series) - 1) / 2) * width / max(len(series), 1)
        x = rows[x_key].map(x_of).to_numpy(dtype=float) + offset
        y = rows["sigma_mid"].to_numpy(dtype=float)
        (line,) = ax.plot(x, y, color=color, linewidth=1.2, label=label)
        line.set_gid("series")
        for kind, (marker, filled) in markers.items():
            sel = (rows["kind"] == kind).to_numpy()
            if sel.any():
                ax.scatter(x[sel], y[sel], marker=marker, s=36, zorder=3, edgecolors=color,
                           facecolors=color if filled else "none", gid=kind)
        if {"log10_sigma_mid_mean", "log10_sigma_mid_std"} <= set(rows.columns):
            m = rows["log10_sigma_mid_mean"].to_numpy(dtype=float)
            s = rows["log10_sigma_mid_std"].to_numpy(dtype=float)
            ok = np.isfinite(m) & np.isfinite(s)
            if ok.any():
                ax.vlines(x[ok], 10 ** (m[ok] - s[ok]), 10 ** (m[ok] + s[ok]), color=color,
                          linewidth=1, alpha=0.6, gid="spread")
    ax.set_yscale("log")
    ax.set_xticks(range(len(order)), [str(k) for k in order], rotation=60, ha="right")
    ax.set_xlabel("site" if x_key == "site_name" else "layer (sites aligned by name)")
    ax.set_ylabel(AXIS_LABELS["sigma_mid"])
    ax.grid(True, axis="y", which="major", alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    kinds_present = set(table["kind"])
    for kind, text in (("lower_bound", "lower bound (σ_mid > largest σ)"),
                       ("upper_bound", "upper bound (σ_mid ≤ smallest σ)")):
        if kind in kinds_present:
            handles.append(Line2D([], [], linestyle="", marker=markers[kind][0], color="0.3",
                                  markerfacecolor="none", label=text))
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def plot_sigma_mid(table: pd.DataFrame, path: str | os.PathLike, **kwargs) -> tuple[Path, Path]:
    """:func:`sigma_mid_figure` saved as PNG and PDF; returns the two paths."""
    return save_figure(sigma_mid_figure(table, **kwargs), path)


# --------------------------------------------------------------------------- combined noise


def combined_noise_figure(df: pd.DataFrame, *, x_col: str = "std_ratio", y_col: str = "sigma",
                          value_col: str = "accuracy", title: str | None = None) -> Figure:
    """Heatmap of mean ``value_col`` over a grid of two noise parameters.

    Default axes: ratio r (x) × amplitude A (y); pass ``x_col='sigma_add', y_col='sigma_mul'``
    for σ_add × σ_mul. Runs in one cell are averaged; cells without runs stay blank (grey).
    Grid values are shown as categorical ticks in ascending order (origin lower left), and
    each cell is annotated with its value when the grid has at most 12 × 12 cells. ``df`` must
    hold one condition (one ``site``, ``conf_name``, ``enable_in_training``, ``noise_type``).
    The image's array is the (y, x) table of means.
    """
    _require(df, [x_col, y_col, value_col], "combined-noise heatmap")
    _require_single(df, ["site", "conf_name", "enable_in_training", "noise_type"],
                    "combined-noise heatmap")
    grid = df.pivot_table(index=y_col, columns=x_col, values=value_col, aggfunc="mean",
                          dropna=False).sort_index().sort_index(axis=1)
    values = grid.to_numpy(dtype=float)

    fig = Figure(figsize=(max(5.0, 0.6 * grid.shape[1] + 3), max(4.0, 0.45 * grid.shape[0] + 2)),
                 layout="constrained")
    ax = fig.add_subplot()
    cmap = colormaps["magma"].with_extremes(bad="0.85")
    image = ax.imshow(np.ma.masked_invalid(values), origin="lower", aspect="auto", cmap=cmap)
    image.set_gid("heatmap")
    ax.set_xticks(range(grid.shape[1]), [f"{v:.3g}" for v in grid.columns], rotation=45,
                  ha="right")
    ax.set_yticks(range(grid.shape[0]), [f"{v:.3g}" for v in grid.index])
    ax.set_xlabel(AXIS_LABELS.get(x_col, x_col))
    # In a combined-noise table `sigma` holds the amplitude A.
    ax.set_ylabel("amplitude A" if y_col == "sigma" else AXIS_LABELS.get(y_col, y_col))
    fig.colorbar(image, ax=ax, label=AXIS_LABELS.get(value_col, value_col))
    if values.shape[0] <= 12 and values.shape[1] <= 12:
        finite = values[np.isfinite(values)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for (r, c), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(c, r, f"{v:.3g}", ha="center", va="center", fontsize="x-small",
                        color="black" if v > mid else "white")
    if title:
        ax.set_title(title)
    return fig


def plot_combined_noise(df: pd.DataFrame, path: str | os.PathLike,
                        **kwargs) -> tuple[Path, Path]:
    """:func:`combined_noise_figure` saved as PNG and PDF; returns the two paths."""
    return save_figure(combined_noise_figure(df, **kwargs), path)


# --------------------------------------------------------------------------- weights


def _is_single_source(models) -> bool:
    if isinstance(models, (str, os.PathLike)):
        return True
    return isinstance(models, Mapping) and (
        "model_state" in models or all(isinstance(v, torch.Tensor) for v in models.values()))


def weight_histogram_figure(models: WeightSource | Mapping[str, WeightSource], *,
                            bins: int = 60, layers: Sequence[str] | None = None,
                            title: str | None = None) -> Figure:
    """Histogram of the weights of each conv/linear layer, one panel per layer.

    ``models`` is one model (state_dict, checkpoint dict or checkpoint path, see
    :func:`analysis.weights.load_state_dict`) or a mapping label → model, e.g.
    ``{'clean training': a, 'GaussMul training': b}``, drawn as overlaid step histograms
    (densities) per layer. ``layers`` picks and orders the panels (default: the layers of the
    first model in state_dict order). Each panel is titled with its layer name and holds one
    histogram per model that has the layer.
    """
    if _is_single_source(models):
        models = {"weights": models}
    if not models:
        raise ValueError("weight histograms: no models given")
    per_model = {label: layer_weights(src) for label, src in models.items()}
    if layers is None:
        layers = list(next(iter(per_model.values())))
    unknown = [l for l in layers if not any(l in w for w in per_model.values())]
    if unknown:
        known = sorted({l for w in per_model.values() for l in w})
        raise ValueError(f"weight histograms: unknown layer(s) {unknown}; known: {known}")
    if not layers:
        raise ValueError("weight histograms: no layers to draw")

    ncols = min(4, len(layers))
    nrows = math.ceil(len(layers) / ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colors = colormaps["tab10"]
    for ax, layer in zip(axes, layers):
        for i, (label, weights) in enumerate(per_model.items()):
            if layer in weights:
                ax.hist(weights[layer], bins=bins, histtype="step", density=True,
                        color=colors(i % 10), label=label)
        ax.set_title(layer, fontsize="medium")
        ax.set_xlabel("w")
        ax.set_yticks([])
    for ax in axes[len(layers):]:
        fig.delaxes(ax)
    if len(per_model) > 1:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=len(per_model))
    if title:
        fig.suptitle(title)
    return fig


def plot_weight_histograms(models: WeightSource | Mapping[str, WeightSource],
                           path: str | os.PathLike, **kwargs) -> tuple[Path, Path]:
    """:func:`weight_histogram_figure` saved as PNG and PDF; returns the two paths."""
    return save_figure(weight_histogram_figure(models, **kwargs), path)
