"""docs/REPRODUCTION.md: the markdown document of a finished run, its results.json, and the
headline numbers for the terminal."""
from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .claims import (b_verdict, c_verdict, claim_lines, d_verdict, differences, e_verdict,
                     growth_text)
from .experiments import Reproduction
from .figures import make_figures
from .markdown import (bound_prefix, fmt, fmt_pct, fmt_ratio, markdown_table, median_ratio,
                       sigma_with_kind, wide)
from .medium_summary import medium_block, read_results, update_block
from .scales import PAIRS

log = logging.getLogger(__name__)

__all__ = ["write_document", "summary"]


def _paper_note() -> str:
    return ("The paper's own grids (this repository's `experiment_configs/FashionMNIST/*.yaml`) "
            "train 200 (LeNet) and 250 (MLP) epochs, use three to five training repeats, and "
            "sweep σ on dense grids (4 per decade).")


def write_document(rep: Reproduction, out_dir: Path, *, command: str) -> Path:
    """docs/REPRODUCTION.md (and its figures and results.json) from a finished run."""
    out_dir = Path(out_dir)
    fig_dir = out_dir / "reproduction"
    figs = make_figures(rep, fig_dir)
    s = rep.scale
    T = rep.tables
    rel = lambda key: os.path.relpath(figs[key], out_dir)  # noqa: E731
    L: list[str] = []
    w = L.append

    def details(summary: str, table: str) -> None:
        w(f"<details><summary>{summary}</summary>\n")
        w(table)
        w("\n</details>\n")

    def model_figures(prefix: str, caption: str) -> None:
        for m in s.models:
            if f"{prefix}_{m}" in figs:
                w(f"![{m}: {caption}]({rel(f'{prefix}_{m}')})")

    wall = rep.facts.get("wall_seconds", math.nan)
    dataset = rep.config(s.models[0])["data"]["dataset"]
    pretty = {"FashionMNIST": "Fashion-MNIST"}.get(dataset, dataset)
    w(f"# Reproducing the Walking Noise findings on {pretty}\n")
    w(f"Produced by `{command}` (scale **{s.name}**); every number, table and figure below "
      "was written by that run (`analysis/reproduce/`). The raw tables are in "
      f"[`reproduction/results.json`](reproduction/results.json). Run time: "
      f"{wall / 60:.1f} min wall on this machine ({torch.get_num_threads()} torch thread(s), "
      f"device {rep.device}); {rep.facts['trainings']} training configurations, "
      f"{rep.facts['trainings_reused']} of them found already trained "
      f"(per part: {', '.join(f'{k} {v / 60:.1f} min' for k, v in rep.facts['part_seconds'].items())}).\n")
    w("## Setup\n")
    w(f"- Data: {'the real Fashion-MNIST (60k training images), ' if dataset == 'FashionMNIST' else dataset + ', '}"
      f"the paper's augmentation; every accuracy below is measured on the validation split, "
      f"the {rep.n_validation} images of the official test split.")
    w(f"- Models: {', '.join(s.models)}; Adam, lr 1e-3, cosine schedule, batch 128, "
      f"**{s.epochs} epoch(s) for every model, clean or noisy**; one training seed "
      f"(repeat {rep.seed}) shared by all variants, so a noise-trained model and its clean "
      "counterpart start from the same initialisation and see the same batches.")
    w(f"- Noise draws: {s.walk_repeats} per σ in the per-site walks and global sweeps "
      f"(midpoint search in log σ, at most {s.walk_max_evals} σ per site in "
      f"[{fmt(s.sigma_range[0])}, {fmt(s.sigma_range[1])}] and {s.global_max_evals} per "
      f"global sweep in [{fmt(s.global_range[0])}, {fmt(s.global_range[1])}]); "
      f"{s.eval_repeats} per accuracy point elsewhere (mean reported; seeded, so a rerun "
      "gives the same numbers).")
    w("- σ_mid: the σ at which accuracy falls to (noise-free accuracy + chance)/2, "
      "interpolated in log σ; `> x` / `≤ x` mark bounds where the σ points did not "
      "bracket the crossing. For noise-trained models the reference is the noise-free "
      "accuracy of the clean-trained model with the same training settings (the project's "
      "convention).")
    w(f"- {_paper_note()} Scale `{s.name}` is far smaller; see the last section.\n")
    w(markdown_table(T["clean"], {"model": "model", "bn": "BN", "n_sites": "sites",
                                  "clean_accuracy": "noise-free accuracy (%)",
                                  "train_loss": "final training loss"},
                     {"clean_accuracy": fmt_pct}))
    w("")

    w("## Summary: the paper's claims against this run\n")
    for line in claim_lines(rep):
        w(f"- {line}")
    w("")

    # ---- (a)
    a, ap = T.get("a_sites"), T.get("a_points")
    w("## (a) Per-site σ_mid, clean-trained vs noise-trained at that site (GaussAdd)\n")
    w(f"For each selected site k (rule per family: {dict(s.site_selection)}) and factor f in "
      f"{[round(f, 3) for f in s.site_factors]}, a model is trained with GaussAdd at site k at "
      "σ = f · σ_mid_clean(k) and evaluated with the same noise at the same site; the clean "
      "model is evaluated at the same (k, σ). `gain` is noise-trained minus clean-trained "
      "accuracy in percentage points; σ_mid (noise-trained) comes from those f points only. "
      "`|w| ratio`: mean over conv/linear layers of mean|w| noise-trained / clean.\n")
    if a is not None and len(a):
        n_pts = len(ap)
        n_better = int((ap["gain_pp"] > 0).sum())
        n_sites_all = int(a["more_robust"].sum())
        w(f"**Measured:** the noise-trained model is more accurate than the clean-trained one "
          f"at {n_better} of {n_pts} (site, σ) points, and at every σ point at "
          f"{n_sites_all} of {len(a)} sites. Mean gain "
          f"{ap['gain_pp'].mean():.1f} pp (min {ap['gain_pp'].min():.1f}, max "
          f"{ap['gain_pp'].max():.1f}). σ_mid ratio noise-trained / clean, per model "
          "(median over sites; `>`: at least, the noise-trained points never fell to the "
          "level): " + "; ".join(
              f"{m} {median_ratio(a[a['model'] == m])}" for m in s.models
              if (a["model"] == m).any()) + ".")
        worse = ap[ap["gain_pp"] <= 0]
        if len(worse):
            w("Not more accurate at: " + "; ".join(
                f"{r.model} {r.site_name} σ={fmt(r.sigma)} (noise-trained "
                f"{r.acc_noise_trained:.1f} % vs clean-trained {r.acc_clean_trained:.1f} %)"
                for r in worse.itertuples()) + ".")
        w("")
        w(growth_text(a) + "\n")
        shown = a.assign(
            clean_s=[sigma_with_kind(v, k) for v, k in zip(a["clean_sigma_mid"], a["clean_kind"])],
            noisy_s=[sigma_with_kind(v, k) for v, k in zip(a["noisy_sigma_mid"], a["noisy_kind"])],
            ratio_s=[bound_prefix(k) + fmt_ratio(v) for v, k in zip(a["ratio"], a["noisy_kind"])])
        w(markdown_table(shown, {"model": "model", "site_name": "site",
                                 "clean_s": "σ_mid clean", "noisy_s": "σ_mid noise-trained",
                                 "ratio_s": "ratio", "mean_gain_pp": "mean gain (pp)",
                                 "mean_abs_w_ratio": "|w| ratio"},
                         {"mean_gain_pp": lambda v: f"{v:+.1f}",
                          "mean_abs_w_ratio": lambda v: "n/a" if math.isnan(v) else f"{v:.2f}"}))
        w("")
        details("every (site, σ) point",
                markdown_table(ap, {"model": "model", "site_name": "site", "factor": "f",
                                    "sigma": "σ", "acc_clean_trained": "clean-trained (%)",
                                    "acc_noise_trained": "noise-trained (%)",
                                    "std_noise_trained": "± (std over draws)",
                                    "noise_free_acc_noise_trained": "noise-trained, no noise (%)",
                                    "level": "midpoint level (%)"},
                               {"acc_clean_trained": fmt_pct, "acc_noise_trained": fmt_pct,
                                "std_noise_trained": fmt_pct, "noise_free_acc_noise_trained": fmt_pct,
                                "level": fmt_pct}))
        model_figures("a", "σ_mid clean vs noise-trained")
        w("")

    # ---- (b)
    bm, bw = T.get("b_models"), T.get("b_weights")
    w("## (b) Weight magnitudes under additive-noise training, and weight clamping\n")
    w("Per model: clean training and training with GaussAdd at **every** site at σ = the clean "
      "model's global σ_mid (section (e)), each without and with weights clamped to "
      f"[{s.clamp[0]:g}, {s.clamp[1]:g}] after every step (BN parameters are not clamped). "
      "`acc @ σ`: accuracy with GaussAdd at every site at that same σ; global σ_mid from an "
      "eval-only sweep of each model.\n")
    if bm is not None and len(bm):
        w(b_verdict(bm))
        w("")
        shown = bm.assign(g_s=[sigma_with_kind(v, k)
                               for v, k in zip(bm["global_sigma_mid"], bm["kind"])])
        w(markdown_table(shown, {"model": "model", "variant": "variant",
                                 "noise_free_acc": "no noise (%)", "eval_sigma": "σ",
                                 "acc_at_sigma": "acc @ σ (%)", "g_s": "global σ_mid",
                                 "mean_abs_w": "mean |w|", "max_abs_w": "max |w|",
                                 "mean_abs_bn_gamma": "mean |γ| (BN)",
                                 "same_as_unclamped": "weights identical to unclamped"},
                         {"noise_free_acc": fmt_pct, "acc_at_sigma": fmt_pct}))
        w("")
        details("mean |w| per layer",
                markdown_table(wide(bw, ["model", "layer"], "variant", "mean_abs")))
        model_figures("b", "weight histograms")
        w("")

    # ---- (c)
    c, cb = T.get("c_accuracy"), T.get("c_binarisation")
    w("## (c) Multiplicative noise (GaussMul) with noisy training\n")
    w("GaussMul x·(1 + σz), trained and evaluated at the same σ, at every site and at one "
      f"site (site {s.mul_site}, the first conv/linear output; the paper's own GaussMul grids "
      "are per site). The clean-trained model is evaluated at the same σ. `binarisation`: "
      "mean over conv/linear layers of the share of weights with |w| ≥ 0.9·max|w| "
      "(`analysis.binarisation_index`; a binary layer gives 1, a Gaussian one ≈ 0.001). "
      "`non-finite`: share of test samples whose logits overflowed to inf/NaN (they count "
      "as wrong).\n")
    if c is not None and len(c):
        clean_bi = cb[cb["placement"] == "—"].groupby("model")["binarisation_index"].mean()
        c = c.assign(clean_binarisation=c["model"].map(clean_bi))
        w(c_verdict(c))
        w("")
        w(markdown_table(c, {"model": "model", "placement": "placement", "sigma": "σ",
                             "acc_noise_trained": "noise-trained (%)",
                             "acc_clean_trained": "clean-trained (%)",
                             "non_finite_noise_trained": "non-finite (noise-trained)",
                             "train_loss_finite": "training loss finite",
                             "mean_binarisation": "binarisation (noise-trained)",
                             "clean_binarisation": "binarisation (clean)"},
                         {"acc_noise_trained": fmt_pct, "acc_clean_trained": fmt_pct,
                          "non_finite_noise_trained": lambda v: f"{100 * v:.0f} %"}))
        w("")
        cbl = cb.assign(condition=[
            ("clean" if p == "—" else f"{re.sub(r' [(].*[)]', '', p)}, σ={fmt(sg)}")
            for p, sg in zip(cb["placement"], cb["sigma"])])
        details("binarisation index per layer",
                markdown_table(wide(cbl, ["model", "layer"], "condition", "binarisation_index")))
        if "c_accuracy" in figs:
            w(f"![GaussMul accuracy vs σ]({rel('c_accuracy')})")
        model_figures("c", "weights, clean vs most binarised GaussMul-trained")
        w("")

    # ---- (d)
    d = T["d_sites"]
    w("## (d) Per-site profile of the clean-trained models (GaussAdd walk)\n")
    w(d_verdict(d, s.models))
    w("")
    for pair in PAIRS:
        if f"d_{pair[0]}" in figs:
            w(f"![σ_mid per site {pair}]({rel(f'd_{pair[0]}')})")
    w("")
    for m in s.models:
        rows = d[d["model"] == m]
        if not len(rows):
            continue
        w(f"<details><summary>{m}: σ_mid per site</summary>\n")
        w(markdown_table(rows, {"site_name": "site", "sigma_mid": "σ_mid", "kind": "kind",
                                "rank": "rank (1 = least robust)", "n_evals": "σ evaluated"}))
        w("\n</details>\n")
        if f"walk_{m}" in figs:
            w(f"![{m} walk]({rel(f'walk_{m}')})\n")

    # ---- (e)
    g, pl = T["e_global"], T["e_plans"]
    w("## (e) Multi-execution at the global σ_mid: uniform vs tailored repetition\n")
    w("GaussAdd at every site, eval-only, at each model's global σ_mid (found by a global "
      "sweep). A site repeated R times averages R noise draws (σ/√R). `uniform` repeats every "
      "site b times; the tailored plans (`analysis.repetition_plan`, every scaling; `inverse_*` "
      "and `layer_sort_inverse*` give the least robust sites more) spend the same total "
      "b·n_sites, from the per-site σ_mid of (d). `none`: R = 1 everywhere.\n")
    w(markdown_table(g, {"model": "model", "clean_accuracy": "noise-free (%)",
                         "global_sigma_mid": "global σ_mid", "kind": "kind",
                         "n_evals": "σ evaluated"}, {"clean_accuracy": fmt_pct}))
    w("")
    w(e_verdict(pl, s))
    w("")
    piv = pl.pivot_table(index=["budget", "plan"], columns="model", values="accuracy",
                         sort=False).reset_index()
    w(markdown_table(piv, formats={m: fmt_pct for m in s.models}))
    w("")
    details("the plans (R per site, in site order)",
            markdown_table(pl[pl["plan"] != "none (R=1)"],
                           {"model": "model", "budget": "b", "plan": "plan", "repetitions": "R",
                            "accuracy": "accuracy (%)", "std": "± (std over draws)"},
                           {"accuracy": fmt_pct, "std": fmt_pct}))

    # ---- differences
    w("## Where this differs from the paper, and why it may\n")
    for line in differences(rep):
        w(f"- {line}")
    w("")
    text = "\n".join(L) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = out_dir / "REPRODUCTION.md"
    doc.write_text(text)
    medium = read_results(out_dir / "reproduction" / "medium" / "results.json")
    if medium is not None:
        update_block(doc, medium_block(medium, "REPRODUCTION_medium.md"))
    (fig_dir / "results.json").write_text(json.dumps(_results_json(rep, command), indent=1,
                                                     default=_json_default))
    log.info("wrote %s and %d figures under %s", doc, len(figs), fig_dir)
    return doc



def _results_json(rep: Reproduction, command: str) -> dict[str, Any]:
    return {"command": command, "scale": rep.scale.describe(), "seed": rep.seed,
            "facts": rep.facts,
            "tables": {k: v.to_dict(orient="records") for k, v in rep.tables.items()},
            "global_sweeps": rep.global_mid}


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    return str(o)



def summary(rep: Reproduction, doc: Path) -> str:
    """The few headline numbers, for the terminal."""
    T = rep.tables
    lines = [f"wrote {doc} (scale {rep.scale.name}, {rep.facts['wall_seconds'] / 60:.1f} min)"]
    for r in T["clean"].itertuples():
        g = T["e_global"].set_index("model").loc[r.model]
        lines.append(f"  {r.model:<12} clean {r.clean_accuracy:.2f} %  global σ_mid "
                     f"{fmt(g['global_sigma_mid'])}")
    if "a_points" in T and len(T["a_points"]):
        ap = T["a_points"]
        lines.append(f"  (a) noise-trained better at {int((ap['gain_pp'] > 0).sum())}/"
                     f"{len(ap)} (site, σ) points, mean gain {ap['gain_pp'].mean():+.1f} pp")
    return "\n".join(lines)
