"""The figures of the reproduction document (PNG), from a finished run's tables."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from ..plots import save_figure, sigma_mid_figure, walking_noise_figure, weight_histogram_figure
from ..weights import layer_weight_table_or_nan
from .experiments import Reproduction
from .markdown import fmt
from .scales import PAIRS

__all__ = ["make_figures"]


def _save(fig, path: Path) -> Path:
    png, pdf = save_figure(fig, path)
    Path(pdf).unlink(missing_ok=True)  # the document links PNGs only
    return Path(png)


def make_figures(rep: Reproduction, out: Path) -> dict[str, Path]:
    """Every figure of the document under ``out`` (PNG)."""
    out.mkdir(parents=True, exist_ok=True)
    figs: dict[str, Path] = {}
    d = rep.tables["d_sites"].rename(columns={"model": "conf_name"})
    for pair in PAIRS:
        sel = d[d["conf_name"].isin(pair)]
        if len(sel):
            figs[f"d_{pair[0]}"] = _save(sigma_mid_figure(
                sel, series_cols=("conf_name",),
                title=f"clean training: σ_mid per site (GaussAdd), {' vs '.join(pair)}"),
                out / f"d_sigma_mid_{pair[0]}")
    for m, res in rep.walks.items():
        ev = pd.DataFrame([{k: v for k, v in r.items() if k != "noise"}
                           for r in res["evaluations"]])
        ev["conf_name"] = m
        fig = walking_noise_figure(ev, chance=res["chance"], clean_accuracy=res["clean_accuracy"],
                                   title=f"{m}, clean training: GaussAdd walk "
                                         "(midpoint-search points)")
        hi = max(10 * float(np.max(rep.site_sigma_mid(m))), 10 * rep.scale.sigma_range[0])
        fig.axes[0].set_xlim(rep.scale.sigma_range[0], min(hi, rep.scale.sigma_range[1]))
        figs[f"walk_{m}"] = _save(fig, out / f"d_walk_{m}")
    a = rep.tables.get("a_sites")
    if a is not None and len(a):
        for m in rep.scale.models:
            rows = a[a["model"] == m]
            if not len(rows):
                continue
            clean = d[d["conf_name"] == m].assign(enable_in_training=False)
            noisy = rows.rename(columns={"noisy_sigma_mid": "sigma_mid"}).assign(
                enable_in_training=True, kind=rows["noisy_kind"])
            table = pd.concat([clean[["site", "site_name", "sigma_mid", "kind",
                                      "enable_in_training"]],
                               noisy[["site", "site_name", "sigma_mid", "kind",
                                      "enable_in_training"]]], ignore_index=True)
            figs[f"a_{m}"] = _save(sigma_mid_figure(
                table, series_cols=("enable_in_training",),
                title=f"{m}: σ_mid, clean vs noise-trained at that site (GaussAdd)"),
                out / f"a_sigma_mid_{m}")
    for m in rep.scale.models:
        models = {label: rep.checkpoints[("b", m, label)]
                  for label in ("clean", "GaussAdd-trained", "GaussAdd-trained, clamped")
                  if ("b", m, label) in rep.checkpoints}
        if models and _all_finite(models.values()):
            figs[f"b_{m}"] = _save(weight_histogram_figure(
                models, title=f"{m}: weights, clean vs GaussAdd-trained (every site)"),
                out / f"b_weights_{m}")
    c = rep.tables.get("c_accuracy")
    if c is not None and len(c):
        placements = list(dict.fromkeys(c["placement"].str.replace(r" \(.*\)", "", regex=True)))
        fig = Figure(figsize=(5.2 * len(placements), 4.2), layout="constrained")
        axes = fig.subplots(1, len(placements), squeeze=False).ravel()
        colors = colormaps["tab10"]
        for ax, pl in zip(axes, placements):
            sel = c[c["placement"].str.startswith(pl)]
            for i, m in enumerate(rep.scale.models):
                rows = sel[sel["model"] == m].sort_values("sigma")
                if not len(rows):
                    continue
                ax.plot(rows["sigma"], rows["acc_noise_trained"], "o-", color=colors(i),
                        label=f"{m}, noise-trained")
                ax.plot(rows["sigma"], rows["acc_clean_trained"], "s--", color=colors(i),
                        alpha=0.6, label=f"{m}, clean-trained")
                for col, nf in (("acc_noise_trained", "non_finite_noise_trained"),
                                ("acc_clean_trained", "non_finite_clean_trained")):
                    bad = rows[rows[nf] > 0.5]
                    if len(bad):
                        ax.scatter(bad["sigma"], bad[col], marker="x", s=80, color="k",
                                   zorder=4, label="logits not finite (overflow)")
            ax.set_xscale("log")
            ax.axhline(100.0 / rep.clean[rep.scale.models[0]].num_classes, color="0.5",
                       linestyle=":", linewidth=1)
            ax.set_xlabel("GaussMul σ (train = eval)")
            ax.set_ylabel("accuracy (%)")
            ax.set_title(f"GaussMul at {pl}")
            ax.grid(True, alpha=0.3)
        handles, labels = [], []
        for ax in axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        axes[-1].legend(handles, labels, fontsize="x-small", loc="center left",
                        bbox_to_anchor=(1.01, 0.5))
        figs["c_accuracy"] = _save(fig, out / "c_mul_accuracy")
        for m in rep.scale.models:
            best = _most_binarised(rep, m)
            if best is not None:
                key, label = best
                figs[f"c_{m}"] = _save(weight_histogram_figure(
                    {"clean": rep.clean[m].checkpoint, label: rep.checkpoints[key]},
                    title=f"{m}: weights, clean vs {label}"), out / f"c_weights_{m}")
    return figs


def _all_finite(checkpoints: Iterable[str]) -> bool:
    return all(layer_weight_table_or_nan(c)["mean_abs"].notna().all() for c in checkpoints)


def _most_binarised(rep: Reproduction, m: str):
    """The GaussMul-trained model of ``m`` with the largest mean binarisation index."""
    c = rep.tables["c_accuracy"]
    rows = c[(c["model"] == m) & c["mean_binarisation"].notna()]
    if not len(rows):
        return None
    r = rows.loc[rows["mean_binarisation"].idxmax()]
    key = ("c", m, r["placement"], r["sigma"])
    return key, f"GaussMul σ={fmt(r['sigma'])} at {r['placement']}"

