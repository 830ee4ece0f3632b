"""The document of a convergence run (``--scale medium``: docs/REPRODUCTION_medium.md, figures
and results.json under docs/reproduction/medium/): scale, run time, seeds, one verdict line
per claim, then per claim its tables and a figure of the measure against training length."""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from ..plots import save_figure
from .convergence import Convergence
from .markdown import fmt, markdown_table
from .medium_summary import TITLES, medium_block, read_results, update_block
from .medium_tables import build_tables
from .verdicts import (mechanism_b, verdict_a, verdict_b, verdict_c, verdict_d, verdict_e)

log = logging.getLogger(__name__)

__all__ = ["write_medium_document", "medium_verdicts"]


def _save(fig, path: Path) -> Path:
    png, pdf = save_figure(fig, path)
    Path(pdf).unlink(missing_ok=True)
    return Path(png)


def _vs_length(df: pd.DataFrame, panels: list[tuple[str, str, bool]], title: str,
               path: Path, group: str = "model", ref: float | None = None) -> Path:
    """One panel per (column, label, log y): the column (with its interval) against the
    training length, one line per ``group``."""
    fig = Figure(figsize=(4.6 * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    colors = colormaps["tab10"]
    for ax, (col, label, logy) in zip(axes, panels):
        for i, (name, g) in enumerate(df.groupby(group, sort=False)):
            g = g.sort_values("length")
            y = g[col].to_numpy(float)
            lo = np.clip(y - g[f"{col}_low"].to_numpy(float), 0, None)
            hi = np.clip(g[f"{col}_high"].to_numpy(float) - y, 0, None)
            hi = np.where(np.isfinite(hi), hi, 0)
            ax.errorbar(g["length"], y, yerr=[np.nan_to_num(lo), hi], marker="o", capsize=3,
                        color=colors(i % 10), label=str(name))
        if ref is not None:
            ax.axhline(ref, color="0.5", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("training length (epochs)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[-1].legend(fontsize="x-small")
    fig.suptitle(title)
    return _save(fig, path)


def medium_verdicts(T: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """The verdict of each claim from the tables."""
    return {"a": verdict_a(T["a"], T["b_sites"]), "b": verdict_b(T["b"]),
            "c": verdict_c(T["c"]), "d": verdict_d(T["d"]), "e": verdict_e(T["e"])}


def _iv(v, lo, hi, digits: int = 3) -> str:
    return f"{fmt(v, digits)} [{fmt(lo, digits)}, {fmt(hi, digits)}]"


def max_noise_summary(c_max: pd.DataFrame) -> str:
    """One sentence on the MAX-noise rows: diverged trainings, and what float64 rescues."""
    out = []
    for who, g in c_max.groupby("model_trained", sort=False):
        n = len(g)
        finite_w = int(g["weights_finite"].sum())
        f32 = int((g["non_finite_float32"] < 1).sum())
        f64 = g[g["non_finite_float64"] < 1]
        part = (f"{who}: trained weights finite in {finite_w} of {n}, some finite output in "
                f"float32 in {f32} of {n}, in float64 in {len(f64)} of {n}")
        if len(f64):
            part += (f" (float64 accuracy {f64['acc_float64'].min():.1f}-"
                     f"{f64['acc_float64'].max():.1f} %)")
        out.append(part)
    return "Measured: " + "; ".join(out) + "."


def _every_plan(e: pd.DataFrame) -> pd.DataFrame:
    """Each tailored plan of (e) at its model's longest length, with the uniform plan's
    accuracy at the same budget and the difference (point estimates)."""
    if e is None or not len(e):
        return pd.DataFrame()
    e = e[e.groupby("model")["length"].transform("max") == e["length"]]
    uni = e[e["plan"] == "uniform"].set_index(["model", "length", "budget"])["accuracy"]
    out = e[~e["plan"].isin(["uniform", "none (R=1)"])].copy()
    keys = list(zip(out["model"], out["length"], out["budget"]))
    out["uniform"] = [uni.get(k, math.nan) for k in keys]
    out["diff"] = out["accuracy"] - out["uniform"]
    return out.sort_values(["model", "budget", "plan"])


def _with_iv(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    df = df.copy()
    for c in cols:
        if c in df.columns:
            df[c] = [_iv(v, lo, hi) for v, lo, hi in zip(df[c], df[f"{c}_low"], df[f"{c}_high"])]
    return df


def write_medium_document(run: Convergence, out_dir: Path, *, command: str,
                          doc_name: str = "REPRODUCTION_medium.md") -> Path:
    """The document of a finished convergence run (module docstring); its path."""
    s = run.scale
    out_dir = Path(out_dir)
    fig_dir = out_dir / "reproduction" / s.name
    fig_dir.mkdir(parents=True, exist_ok=True)
    T = build_tables(run.results, n_boot=s.n_boot, mul_site=s.mul_site)
    V = medium_verdicts(T)
    figs = {}
    figs["b"] = _vs_length(T["b"], [("w_ratio_global", "mean|w| noise-trained / clean", False),
                                    ("gain_global", "global σ_mid noise-trained / clean", True),
                                    ("removed_clamp_max", "share of gain removed by ±max|w|",
                                     False)],
                           "(b) global GaussAdd training", fig_dir / "b_vs_length", ref=1.0)
    if len(T["c"]):
        c = T["c"].assign(group=[f"{m} σ={g:g}" for m, g in zip(T["c"]["model"],
                                                                T["c"]["sigma"])])
        figs["c"] = _vs_length(c, [("bimod_w_noisy", "bimodality, weights before the site",
                                    False),
                                   ("bimod_in_noisy", "bimodality, activations at the site",
                                    False)],
                               "(c) GaussMul at the first conv/linear output",
                               fig_dir / "c_vs_length", group="group", ref=5 / 9)
    least = T["d"].loc[T["d"].groupby(["model", "length"])["sigma_mid"].idxmin()]
    figs["d"] = _vs_length(least, [("sigma_mid", "σ_mid of the least robust site", True)],
                           "(d) clean models", fig_dir / "d_vs_length")
    e = T["e"][T["e"]["plan"] == "uniform"].merge(
        T["e"][~T["e"]["plan"].isin(["uniform", "none (R=1)"])]
        .sort_values("accuracy").groupby(["model", "length", "budget"]).tail(1),
        on=["model", "length", "budget"], suffixes=("_u", "")).rename(
        columns={"accuracy_low_u": "accuracy_u_low", "accuracy_high_u": "accuracy_u_high"})
    e["diff"] = e["accuracy"] - e["accuracy_u"]
    e["diff_low"] = e["accuracy_low"] - e["accuracy_u_high"]
    e["diff_high"] = e["accuracy_high"] - e["accuracy_u_low"]
    e["group"] = [f"{m} b={b:g}" for m, b in zip(e["model"], e["budget"])]
    figs["e"] = _vs_length(e, [("diff", "best tailored − uniform (pp)", False)],
                           "(e) repetition plans at equal budget", fig_dir / "e_vs_length",
                           group="group", ref=0.0)
    if len(T["a"]):
        a = T["a"].assign(group=[f"{m} site {k} ×{f:.3g}" for m, k, f in
                                 zip(T["a"]["model"], T["a"]["site"], T["a"]["factor"])])
        figs["a"] = _vs_length(a, [("gain", "accuracy gain at the trained σ (pp)", False)],
                               "(a) per-site noisy training", fig_dir / "a_vs_length",
                               group="group", ref=0.0)
    rel = {k: os.path.relpath(v, out_dir) for k, v in figs.items()}

    L: list[str] = []
    w = L.append
    wall = run.facts.get("wall_seconds", math.nan)
    w(f"# Reproduction at scale `{s.name}`: do the verdicts stop moving?\n")
    starts = run.facts.get("starts") or []
    busy = sum(st.get("wall_seconds", 0.0) for st in starts)
    w(f"Produced by `{command}` following the protocol fixed before the run, "
      "[PROTOCOL_medium.md](reproduction/PROTOCOL_medium.md). "
      + (f"Run time over all its starts: {busy / 3600:.2f} h of process time in {len(starts)} "
         "start(s) that trained something (" + "; ".join(
             f"{st['started']}: {st.get('wall_seconds', 0) / 60:.0f} min, "
             + ", ".join(st.get("models", [])) + (f" ({st['note']})" if st.get("note") else "")
             for st in starts) + "; starts can overlap, one process per core). "
         if starts else "")
      + "This last start: "
      f"{wall / 60:.1f} min wall ({run.facts['trainings']} models trained in this run, "
      f"{run.facts['models_loaded']} loaded; cache {run.facts['cache']['hits']} hits, "
      f"{run.facts['cache']['writes']} new measurements, in `{run.facts['cache']['root']}`). "
      "A measurement found in the cache is not recomputed, so the run time of a resumed run "
      "covers only what was missing.\n")
    w("## Scale\n")
    for m in s.models:
        cuts = run.cuts(m)
        w(f"- {m}: lengths {list(cuts.lengths)} epochs; per-site noisy training at "
          f"{list(cuts.per_site_lengths)}; GaussMul σ {list(cuts.mul_sigmas)} at "
          f"{list(cuts.mul_lengths)}; [-1, 1] clamp {cuts.unit_clamp}"
          + (f"; MAX noise at {list(cuts.max_noise_lengths)}" if cuts.max_noise_lengths else ""))
    w(f"- Seeds: training repeats {list(s.repeats)} (a noise-trained model shares its clean "
      f"model's repeat); {s.eval_repeats} noise draws per accuracy point; σ lattice "
      f"{s.lattice_per_decade} per decade within {s.refine_decades} decades of each σ_mid; "
      f"{s.n_boot} bootstrap replicates per 95 % interval."
      + (f" Data: a subset of {s.data_subset[0]} training and {s.data_subset[1]} validation "
         "images." if s.data_subset else " Data: the full Fashion-MNIST (60 000 / 10 000)."))
    b = run.facts.get("budget") or {}
    if b:
        per_epoch = ", ".join(f"{m} {v:.2f} s" for m, v in b["epoch_seconds"].items())
        w(f"- Budget measured at the run's first start ({b.get('decided_at', '?')}): "
          f"{b['training_hours']} h of training ({sum(b['model_epochs'].values())} "
          "model-epochs" + (f" at {per_epoch} per epoch" if per_epoch else "")
          + f"), {b['with_evaluations_hours']} h with evaluations."
          + (f" Cut before the run: {b['cut']}." if b.get("cut") else " No cut.")
          + (f" Note: {b['note']}." if b.get("note") else ""))
    w("")
    w("## Verdicts\n")
    titles = TITLES
    for k in "abcde":
        w(f"- ({k}) *{titles[k]}*: {V[k].line()}")
    w(f"- Mechanism of (b): {mechanism_b(T['b_sites'])}.\n")

    def section(key, heading, intro, table, columns):
        w(f"## ({key}) {heading}\n")
        w(intro + "\n")
        w(f"Verdict: {V[key].line()}\n")
        if table is not None and len(table):
            w(markdown_table(table, columns))
            w("")
        if key in rel:
            w(f"![({key}) against training length]({rel[key]})\n")

    a = _with_iv(T["a"], ["acc_clean", "acc_noisy", "gain"])
    section("a", titles["a"], "GaussAdd at one site in training and evaluation at σ = f × the "
            "clean σ_mid at that site (each seed its own), against the clean model at the same "
            "noise (same draws); accuracy (%) over seeds and draws.", a,
            {"model": "model", "length": "epochs", "site": "site", "factor": "f",
             "acc_clean": "clean-trained", "acc_noisy": "noise-trained", "gain": "gain (pp)"})
    bt = _with_iv(T["b"], ["w_ratio_global", "gain_global", "gain_clamp_max", "gain_clamp_unit",
                           "removed_clamp_max", "removed_clamp_unit", "rms_ratio_global"])
    cols = {"model": "model", "length": "epochs", "w_ratio_global": "mean|w| ratio",
            "gain_global": "σ_mid gain", "gain_clamp_max": "gain, ±max|w|",
            "removed_clamp_max": "removed by ±max|w|", "gain_clamp_unit": "gain, [-1, 1]",
            "removed_clamp_unit": "removed by [-1, 1]", "rms_ratio_global": "RMS ratio",
            "unit_clamp_binds": "[-1, 1] can bind",
            "clamp_max_reached": "±max|w| reached", "clamp_max_exceeded": "unclamped over it"}
    section("b", titles["b"], "GaussAdd at every site in training and evaluation at the clean "
            "model's global σ_mid, without and with weight clamping (±max|w| of the clean model, "
            "and [-1, 1]); ratios noise-trained / clean; the removed share is (gain − "
            "gain_clamped) / gain with gains in decades of σ_mid. The ±max|w| bound is the "
            "clean model's largest weight over all layers; `±max|w| reached`: seeds whose "
            "clamped model has its largest weight at the bound (the clamp acted), `unclamped "
            "over it`: seeds whose unclamped noise-trained model has a weight beyond it.", bt,
            {c: v for c, v in cols.items() if c in bt.columns})
    if len(T["b_sites"]):
        bs = _with_iv(T["b_sites"], ["sigma_clean", "sigma_noisy", "ratio", "snr_ratio",
                                     "rms_ratio"])
        w("Per-site noisy training (f = 1): σ_mid, RMS and SNR = σ_mid / RMS at the noisy "
          "site.\n")
        w(markdown_table(bs, {"model": "model", "length": "epochs", "site": "site",
                              "sigma_clean": "σ_mid clean", "sigma_noisy": "σ_mid noise-trained",
                              "ratio": "ratio", "rms_ratio": "RMS ratio",
                              "snr_ratio": "SNR ratio", "w_ratio": "mean|w| ratio"}))
        w("")
    ct = _with_iv(T["c"], ["acc_noisy", "acc_clean", "bimod_w_noisy", "bimod_w_clean",
                           "bimod_in_noisy", "bimod_in_clean"])
    section("c", titles["c"], f"GaussMul at site {s.mul_site} in training and evaluation; the "
            "bimodality coefficient (Sarle's; 5/9 for a uniform distribution) of the weights "
            "of the layer before the site and of the clean activations at the site, over "
            "seeds; near-zero and saturated shares in results.json.", ct,
            {"model": "model", "length": "epochs", "sigma": "σ", "acc_noisy": "noise-trained (%)",
             "acc_clean": "clean-trained (%)", "bimod_w_noisy": "bimodality w",
             "bimod_w_clean": "w, clean", "bimod_in_noisy": "bimodality act.",
             "bimod_in_clean": "act., clean", "non_finite": "non-finite share"})
    if len(T["c_max"]):
        w("MAX noise (GaussMul σ = 1e10 at every site), float32 and float64 (a float64 copy of "
          "the model and inputs); `agree`: float32 and float64 accuracies agree where both are "
          "finite (n/a: float32 not finite); overflow σ: the GaussMul σ at every site above "
          "which the input's RMS times σ per site passes the type's largest number; "
          "`weights finite`: no trained weight is NaN or infinite (a model whose float32 "
          "training under this noise diverged has none).\n")
        w(max_noise_summary(T["c_max"]) + "\n")
        w(markdown_table(T["c_max"], {"model": "model", "length": "epochs", "repeat": "repeat",
                                      "model_trained": "model",
                                      "weights_finite": "weights finite",
                                      "acc_float32": "float32 (%)",
                                      "non_finite_float32": "non-finite f32",
                                      "acc_float64": "float64 (%)",
                                      "non_finite_float64": "non-finite f64",
                                      "noise_free_agree": "noise-free agree",
                                      "finite_agree": "agree",
                                      "overflow_sigma_float32": "overflow σ f32",
                                      "overflow_sigma_float64": "overflow σ f64"}))
        w("")
    dl = _with_iv(least, ["sigma_mid"])
    section("d", titles["d"], "GaussAdd walk of the clean models, σ_mid per site over seeds "
            "and draws; below the least robust site per length (every site in results.json).",
            dl, {"model": "model", "length": "epochs", "site": "least robust site",
                 "sigma_mid": "σ_mid"})
    et = _with_iv(e, ["accuracy", "accuracy_u", "diff"])
    section("e", titles["e"], "GaussAdd at every site at the clean global σ_mid; the best "
            "tailored plan beside the uniform plan at the same budget (accuracy over seeds and "
            "draws; every plan in results.json).", et,
            {"model": "model", "length": "epochs", "budget": "b", "accuracy_u": "uniform (%)",
             "plan": "best tailored", "accuracy": "its accuracy (%)", "diff": "difference (pp)"})
    every = _every_plan(T["e"])
    if len(every):
        w("<details><summary>(e) every plan beside the uniform plan at the same budget, at each "
          "model's longest length</summary>\n")
        w(markdown_table(_with_iv(every, ["accuracy"]),
                         {"model": "model", "length": "epochs", "budget": "b", "plan": "plan",
                          "accuracy": "accuracy (%)", "uniform": "uniform (%)",
                          "diff": "difference (pp)"}))
        w("\n</details>\n")
    text = "\n".join(L) + "\n"
    doc = out_dir / doc_name
    doc.write_text(text)
    (fig_dir / "results.json").write_text(json.dumps(
        {"command": command, "scale": s.describe(), "facts": run.facts,
         "verdicts": {k: {"word": v.word, "reason": v.reason} for k, v in V.items()},
         "tables": {k: v.to_dict(orient="records") for k, v in T.items()}},
        indent=1, default=_default))
    if doc_name == "REPRODUCTION_medium.md":
        update_block(out_dir / "REPRODUCTION.md",
                     medium_block(read_results(fig_dir / "results.json"), doc_name))
    log.info("wrote %s and %d figures under %s", doc, len(figs), fig_dir)
    return doc


def _default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, (tuple, set, np.ndarray)):
        return list(o)
    return str(o)
