"""Reproduce the paper's findings on Fashion-MNIST, end to end, and write docs/REPRODUCTION.md.

``python -m analysis.reproduce [--scale smoke|small|full] [--out docs/]``

The paper's claims (issue 9) and how each is checked with this project's own tools, on the
four models LeNet5, LeNet5-BN, RL_TFC-noBN and RL_TFC:

(d) per-site profile: walk additive noise (GaussAdd, eval-only) through every site of the
    clean-trained model (``util.engine.walk.run_walk``, midpoint search) → σ_mid per site.
(e) multi-execution: a global sweep (GaussAdd at every site) finds the global σ_mid; at that σ,
    uniform repetition R = b at every site is compared with the tailored plans of
    ``analysis.repetition_plan`` (every scaling) built from the per-site σ_mid, at the same
    total budget b × n_sites.
(a) per-site noisy training: for selected sites k and factors f, train with GaussAdd at site k
    at σ = f · σ_mid_clean(k) and evaluate at site k at the same σ; the clean-trained model is
    evaluated at the same points. σ_mid of the noise-trained "curve" uses the clean model's
    noise-free accuracy as reference (the project's convention for noisy-trained curves).
(b) weights: clean vs GaussAdd-trained (every site, σ = the clean global σ_mid), each with and
    without weight clamping to [-1, 1]; mean |w| per layer and the global σ_mid of all four.
(c) multiplicative noise: GaussMul training (and evaluation at the same σ) at every site and at
    one site, σ up to 1e10; accuracy vs σ and the binarisation index vs clean training.

Everything is trained under a fixed artifact root (default ``artifacts/reproduction``) and found
again by its training hash, so a second run (or one resumed after a kill) only evaluates.
Evaluation noise is seeded per (experiment, site, σ, repeat): rerunning the script reproduces
the document's numbers.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from noise.config import NoNoise, parse_noise_config
from util.cluster import REPO_ROOT
from noise.placement import configure

from .midpoint import midpoint
from .repetition import SCALINGS, repetition_plan, total_repetitions
from .weights import layer_weight_table

log = logging.getLogger(__name__)

__all__ = ["MODELS", "SCALES", "Scale", "Reproduction", "select_sites", "markdown_table",
           "write_document", "main"]


#: conf_name → model_class of the four models of the issue.
MODELS: dict[str, str] = {"LeNet5": "LeNet", "LeNet5-BN": "LeNet",
                          "RL_TFC-noBN": "MLP", "RL_TFC": "MLP"}
BN_MODELS = {"LeNet5-BN", "RL_TFC"}
PAIRS = (("LeNet5", "LeNet5-BN"), ("RL_TFC-noBN", "RL_TFC"))  # (without BN, with BN)


@dataclass(frozen=True)
class Scale:
    """How much to compute. Every field is reported in the document."""

    name: str
    epochs: int                              # training epochs of every model (clean and noisy)
    models: tuple[str, ...] = tuple(MODELS)
    walk_repeats: int = 1                    # noise draws per σ in walks and global sweeps
    eval_repeats: int = 3                    # noise draws per accuracy point in (a)-(c), (e)
    walk_max_evals: int = 12                 # σ per site in the midpoint search of the walk
    sigma_range: tuple[float, float] = (1e-2, 1e10)   # bracket of the per-site search
    global_max_evals: int = 10               # σ per global sweep
    global_range: tuple[float, float] = (1e-3, 1e3)   # bracket of the global search
    site_factors: tuple[float, ...] = (1.0, 10 ** 0.5)  # (a): σ = f · σ_mid_clean(site)
    site_selection: Mapping[str, str] = field(
        default_factory=lambda: {"LeNet": "all", "MLP": "all"})  # (a): which sites, per family
    mul_sigmas_global: tuple[float, ...] = (0.1, 10.0, 1e10)    # (c): GaussMul at every site
    mul_sigmas_site: tuple[float, ...] = (10.0, 1e10)           # (c): GaussMul at one site
    mul_site: int = 1                        # (c): that site (1 = first conv/linear output)
    budgets: tuple[float, ...] = (2.0,)      # (e): mean repetitions per site
    clamp: tuple[float, float] = (-1.0, 1.0)  # (b): weight clamping bounds

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["site_selection"] = dict(self.site_selection)
        return d


SCALES: dict[str, Scale] = {
    # A few minutes: every code path once on the real data (not for conclusions).
    "smoke": Scale("smoke", epochs=1, walk_repeats=1, eval_repeats=1, walk_max_evals=8,
                   global_max_evals=6, site_factors=(1.0,),
                   site_selection={"LeNet": "ends", "MLP": "ends"},
                   mul_sigmas_global=(1.0, 1e10), mul_sigmas_site=(1e10,)),
    # ≤ 40 min on two shared CPU cores: what docs/REPRODUCTION.md is built from.
    "small": Scale("small", epochs=3, walk_repeats=1, eval_repeats=3,
                   global_max_evals=8, global_range=(1e-2, 1e2), site_factors=(1.0, 10.0),
                   site_selection={"LeNet": "computation", "MLP": "all"},
                   mul_sigmas_global=(0.1, 1.0, 1e10), mul_sigmas_site=(10.0, 1e10)),
    # Hours (an estimated 3-5 h on two shared cores, not yet run): every site, more σ, more
    # repeats, more epochs.
    "full": Scale("full", epochs=10, walk_repeats=3, eval_repeats=5,
                  site_factors=(1.0, 10 ** 0.5, 10.0),
                  mul_sigmas_global=(0.1, 1.0, 10.0, 1e3, 1e10),
                  mul_sigmas_site=(1.0, 10.0, 1e3, 1e6, 1e10),
                  budgets=(2.0, 3.0, 5.0)),
}


def select_sites(site_names: Sequence[str], rule: str) -> list[int]:
    """Site indices for the per-site noisy training of (a).

    ``all``: every site; ``computation``: the input, every conv/linear output and the logits
    (where an analog accelerator computes); ``alternate``: every second site and the last;
    ``ends``: first, middle, last.
    """
    n = len(site_names)
    if rule == "all":
        return list(range(n))
    if rule == "computation":
        return [i for i, name in enumerate(site_names)
                if i == 0 or i == n - 1 or re.search(r":(conv|fc)\d*$", name)]
    if rule == "alternate":
        return sorted(set(range(0, n, 2)) | {n - 1})
    if rule == "ends":
        return sorted({0, n // 2, n - 1})
    raise ValueError(f"unknown site selection {rule!r}; known: all, computation, alternate, ends")


def _sig(x: float, digits: int = 3) -> float:
    """x rounded to ``digits`` significant digits (training σ derived from measurements)."""
    if x == 0 or not math.isfinite(x):
        return float(x)
    return float(f"{x:.{digits}g}")


def _noise(noise_type: str, sigma: float, *, training: bool) -> dict[str, Any]:
    return {"noise_type": noise_type, "GaussStd": float(sigma),
            "enable_in_training": 1 if training else 0, "enable_in_eval": 0 if training else 1}


@dataclass
class Trained:
    """A trained model in memory, with what the document reports about it."""

    model_name: str
    model: torch.nn.Module
    criterion: torch.nn.Module
    checkpoint: str
    site_names: list[str]
    num_classes: int
    trained_now: bool
    train_seconds: float
    final_train_loss: float
    device: torch.device

    @property
    def chance(self) -> float:
        return 100.0 / self.num_classes


class Reproduction:
    """Runs the experiments of one scale and collects their tables (pandas DataFrames)."""

    def __init__(self, scale: Scale, *, artifact_root: str | os.PathLike,
                 overrides: Mapping[str, Any] | None = None, device: str = "cpu",
                 seed: int = 0):
        self.scale = scale
        self.artifact_root = Path(artifact_root)
        self.overrides = dict(overrides or {})
        self.device = device
        self.seed = seed
        self._val: dict[Any, tuple[torch.Tensor, torch.Tensor]] = {}
        self.tables: dict[str, pd.DataFrame] = {}
        self.facts: dict[str, Any] = {"trainings": 0, "trainings_reused": 0,
                                      "train_seconds": 0.0, "part_seconds": {}}
        self.walks: dict[str, dict[str, Any]] = {}       # clean walk result per model
        self.clean: dict[str, Trained] = {}               # clean model per model
        self.clean_clamped: dict[str, Trained] = {}
        self.global_mid: dict[str, dict[str, Any]] = {}   # clean global σ_mid per model
        self.checkpoints: dict[tuple, str] = {}           # (part, model, label) → checkpoint
        self._p: dict[str, Any] = {}                      # Prepared of each clean model

    # ------------------------------------------------------------------ configs and models

    def config(self, model: str, *, noise_settings: Mapping[str, Any] | None = None,
               clamp: bool = False, walk: Mapping[str, Any] | None = None) -> dict[str, Any]:
        from util.config import deep_update, merged_with_defaults
        family = MODELS[model]
        updates: dict[str, Any] = {
            "general": {"num_epochs": self.scale.epochs, "repeat_number": self.seed,
                        "experiment_name": f"reproduction-{self.scale.name}"},
            "model": {"model_class": family,
                      family: {"conf_name": model,
                               "repetition_config": {"global": 1, "layer_wise_mapped": None}}},
            "artifact_root": str(self.artifact_root),
            "device": self.device,
        }
        deep_update(updates, self.overrides)
        if noise_settings is not None:
            updates["noise_settings"] = dict(noise_settings)
        if clamp:
            lo, hi = self.scale.clamp
            updates["general"]["weight_clamping"] = {"min": lo, "max": hi}
        if walk is not None:
            updates["walk"] = dict(walk)
        config = merged_with_defaults(updates)
        if family != "LeNet":
            config["model"].pop("LeNet", None)  # the default model section is LeNet's
        return config

    def train(self, model: str, *, noise_settings=None, clamp: bool = False):
        """(Trained, Prepared): train the model of a config, or find it already trained;
        its noise is off afterwards (evaluations place their own)."""
        from util.engine.experiment import obtain_trained_model, prepare
        config = self.config(model, noise_settings=noise_settings, clamp=clamp)
        t0 = time.perf_counter()
        p = prepare(config)
        outcome = obtain_trained_model(p, progress=False)
        seconds = time.perf_counter() - t0
        self.facts["trainings"] += 1
        self.facts["trainings_reused"] += int(not outcome.trained)
        self.facts["train_seconds"] += seconds if outcome.trained else 0.0
        losses = outcome.history.get("training.loss") or [math.nan]
        log.info("%s %s: %s (%.1fs)", model, _describe_noise(noise_settings, clamp),
                 "trained" if outcome.trained else "reused", seconds)
        p.model.eval()
        n = len(p.model.noise_sites)
        configure(p.model, configs=[NoNoise()] * n, repetitions=[1] * n)
        return Trained(model, p.model, p.criterion, outcome.checkpoint, list(p.vc.site_names),
                       int(p.dataset.num_classes), outcome.trained, seconds,
                       float(losses[-1]), p.device), p

    def validation(self, p) -> tuple[torch.Tensor, torch.Tensor]:
        """The validation split (Fashion-MNIST: the official test split) as two tensors."""
        key = (p.vc.config["data"]["dataset"], str(p.vc.config["data"].get("root")))
        if key not in self._val:
            xs, ys = zip(*[(x, y) for x, y in p.dataset.val_loader(p.device)])
            self._val[key] = (torch.cat(xs), torch.cat(ys))
        return self._val[key]

    # ------------------------------------------------------------------ evaluations

    def _seed(self, *tag) -> None:
        from util.engine.seeding import seed_torch
        seed_torch(self.seed, "reproduce", *tag)

    @torch.inference_mode()
    def accuracy(self, t: Trained, data, configs=None, repetitions=None, *, tag=(),
                 repeats: int = 1, chunk: int = 512) -> dict[str, float]:
        """Mean/std accuracy (%) over ``repeats`` noise draws with per-site ``configs``
        (None: noise-free) and ``repetitions``; ``non_finite`` is the share of samples whose
        logits are not finite (a diverged model or an overflow)."""
        x, y = data
        n_sites = len(t.site_names)
        configure(t.model, configs=configs or [NoNoise()] * n_sites,
                  repetitions=repetitions or [1] * n_sites)
        t.model.eval()
        accs, bad = [], 0
        for rep in range(repeats if configs else 1):
            self._seed(*tag, rep)
            correct = 0
            for i in range(0, x.shape[0], chunk):
                out = t.model(x[i:i + chunk])
                finite = torch.isfinite(out).all(dim=1)
                bad += int((~finite).sum())
                correct += int(((out.argmax(1) == y[i:i + chunk]) & finite).sum())
            accs.append(100.0 * correct / x.shape[0])
        configure(t.model, configs=[NoNoise()] * n_sites, repetitions=[1] * n_sites)
        return {"mean": float(np.mean(accs)),
                "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
                "non_finite": bad / (x.shape[0] * len(accs))}

    def all_sites(self, t: Trained, noise_type: str, sigma: float) -> list:
        cfg = parse_noise_config(_noise(noise_type, sigma, training=False))
        return [cfg] * len(t.site_names)

    def one_site(self, t: Trained, site: int, noise_type: str, sigma: float) -> list:
        configs = [NoNoise()] * len(t.site_names)
        configs[site] = parse_noise_config(_noise(noise_type, sigma, training=False))
        return configs

    def global_sweep(self, t: Trained, data, reference: float, *, tag) -> dict[str, Any]:
        """Global σ_mid (GaussAdd at every site, eval-only) by bracketing and bisection in
        log σ (``util.engine.walk``'s search); ``reference`` is the noise-free accuracy whose midpoint
        level counts."""
        from util.config import parse_walk
        from util.engine.walk import bisect_midpoint
        settings = parse_walk({"search": "midpoint", "sigma_range": list(self.scale.global_range),
                               "max_evals": self.scale.global_max_evals}, len(t.site_names))
        level = (reference + t.chance) / 2

        def evaluate(sigma: float) -> float:
            return self.accuracy(t, data, self.all_sites(t, "GaussAdd", sigma),
                                 tag=("global", *tag, sigma),
                                 repeats=self.scale.walk_repeats)["mean"]

        curve = bisect_midpoint(evaluate, settings, level)
        m = midpoint(list(curve), list(curve.values()), reference, t.chance)
        return {"sigma_mid": m.sigma_mid, "kind": m.kind, "n_evals": len(curve),
                "curve": {float(k): float(v) for k, v in sorted(curve.items())}}

    # ------------------------------------------------------------------ the parts

    def _timed(self, part: str, fn: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        log.info("=== part %s ===", part)
        fn()
        self.facts["part_seconds"][part] = round(time.perf_counter() - t0, 1)
        log.info("part %s done in %.0fs", part, self.facts["part_seconds"][part])

    def run(self) -> "Reproduction":
        t0 = time.perf_counter()
        self._timed("d", self.part_d)
        self._timed("e", self.part_e)
        self._timed("a", self.part_a)
        self._timed("b", self.part_b)
        self._timed("c", self.part_c)
        self.facts["wall_seconds"] = round(time.perf_counter() - t0, 1)
        return self

    def part_d(self) -> None:
        """Clean training and the per-site walk (σ_mid per site) of every model."""
        from util.engine.walk import run_walk
        rows, clean_rows = [], []
        for m in self.scale.models:
            t, p = self.train(m)
            self.clean[m] = t
            self._p[m] = p
            walk = {"noise_type": "GaussAdd", "search": "midpoint",
                    "repeats": self.scale.walk_repeats,
                    "sigma_range": list(self.scale.sigma_range),
                    "max_evals": self.scale.walk_max_evals}
            res = run_walk(self.config(m, walk=walk), progress=False)
            self.walks[m] = res
            clean_rows.append({"model": m, "bn": m in BN_MODELS,
                               "clean_accuracy": res["clean_accuracy"],
                               "train_loss": t.final_train_loss,
                               "n_sites": len(t.site_names)})
            mids = [(name, e) for name, e in res["sigma_mid"].items()]
            order = sorted(range(len(mids)), key=lambda i: mids[i][1]["sigma_mid"])
            rank = {i: r + 1 for r, i in enumerate(order)}
            for i, (name, e) in enumerate(mids):
                rows.append({"model": m, "bn": m in BN_MODELS, "site": int(e["site"]),
                             "site_name": name, "sigma_mid": float(e["sigma_mid"]),
                             "kind": e["kind"], "non_monotone": bool(e["non_monotone"]),
                             "n_evals": int(e["n_evals"]), "rank": rank[i]})
        self.tables["clean"] = pd.DataFrame(clean_rows)
        self.tables["d_sites"] = pd.DataFrame(rows)

    def site_sigma_mid(self, m: str) -> list[float]:
        d = self.tables["d_sites"]
        return d[d["model"] == m].sort_values("site")["sigma_mid"].tolist()

    def clean_accuracy(self, m: str) -> float:
        c = self.tables["clean"]
        return float(c.loc[c["model"] == m, "clean_accuracy"].iloc[0])

    def part_e(self) -> None:
        """Global σ_mid, then uniform vs tailored repetition at that σ at equal budget."""
        g_rows, rows = [], []
        for m in self.scale.models:
            t, data = self.clean[m], self.validation(self._p[m])
            ref = self.clean_accuracy(m)
            g = self.global_sweep(t, data, ref, tag=(m, "clean"))
            self.global_mid[m] = g
            g_rows.append({"model": m, "bn": m in BN_MODELS, "clean_accuracy": ref,
                           "global_sigma_mid": g["sigma_mid"], "kind": g["kind"],
                           "n_evals": g["n_evals"]})
            sigma = g["sigma_mid"]
            configs = self.all_sites(t, "GaussAdd", sigma)
            n = len(t.site_names)
            site_mids = self.site_sigma_mid(m)
            base = self.accuracy(t, data, configs, [1] * n, tag=("plan", m, "none"),
                                 repeats=self.scale.eval_repeats)
            rows.append({"model": m, "budget": 1.0, "plan": "none (R=1)", "total": n,
                         "repetitions": [1] * n, **_acc(base)})
            for b in self.scale.budgets:
                total = total_repetitions(b, n)
                uniform = [int(round(b))] * n if float(b).is_integer() else None
                plans = {}
                if uniform is not None and sum(uniform) == total:
                    plans["uniform"] = uniform
                for scaling in SCALINGS:
                    plans[scaling] = repetition_plan(site_mids, b, scaling)
                for name, reps in plans.items():
                    acc = self.accuracy(t, data, configs, reps, tag=("plan", m, b, name),
                                        repeats=self.scale.eval_repeats)
                    rows.append({"model": m, "budget": float(b), "plan": name,
                                 "total": int(sum(reps)), "repetitions": reps, **_acc(acc)})
        self.tables["e_global"] = pd.DataFrame(g_rows)
        self.tables["e_plans"] = pd.DataFrame(rows)

    def part_a(self) -> None:
        """Per-site noisy training (GaussAdd at site k at σ) vs the clean model at (k, σ)."""
        from util.engine.walk import SiteEvaluator
        rows = []
        for m in self.scale.models:
            clean = self.clean[m]
            data = self.validation(self._p[m])
            ref = self.clean_accuracy(m)
            clean_w = layer_weight_table(clean.checkpoint)
            ev_clean = SiteEvaluator(clean.model, *data, clean.criterion)
            rule = self.scale.site_selection.get(MODELS[m], "all")
            mids = self.site_sigma_mid(m)
            for site in select_sites(clean.site_names, rule):
                for f in self.scale.site_factors:
                    sigma = _sig(f * mids[site])
                    noisy, _ = self.train(m, noise_settings={
                        "default": {"noise_type": "NoNoise"},
                        "layer_wise": {"layer_index": site, **_noise("GaussAdd", sigma,
                                                                     training=True)}})
                    self.checkpoints[("a", m, site, f)] = noisy.checkpoint
                    cfg = parse_noise_config(_noise("GaussAdd", sigma, training=False))
                    a_clean = _site_acc(self, ev_clean, site, cfg, ("a", m, site, sigma),
                                        self.scale.eval_repeats)
                    ev_noisy = SiteEvaluator(noisy.model, *data, noisy.criterion)
                    a_noisy = _site_acc(self, ev_noisy, site, cfg, ("a", m, site, sigma),
                                        self.scale.eval_repeats)
                    free = self.accuracy(noisy, data)["mean"]
                    growth = _weight_growth(clean_w, noisy.checkpoint)
                    rows.append({"model": m, "bn": m in BN_MODELS, "site": site,
                                 "site_name": clean.site_names[site], "factor": f,
                                 "sigma": sigma, "clean_sigma_mid": mids[site],
                                 "acc_clean_trained": a_clean["mean"],
                                 "acc_noise_trained": a_noisy["mean"],
                                 "std_noise_trained": a_noisy["std"],
                                 "gain_pp": a_noisy["mean"] - a_clean["mean"],
                                 "noise_free_acc_noise_trained": free,
                                 "level": (ref + clean.chance) / 2,
                                 "mean_abs_w_ratio": growth})
                    del noisy, ev_noisy
        per_point = pd.DataFrame(rows)
        self.tables["a_points"] = per_point
        self.tables["a_sites"] = _a_site_table(per_point, self.tables["d_sites"],
                                               {m: self.clean_accuracy(m)
                                                for m in self.scale.models},
                                               100.0 / self.clean[self.scale.models[0]].num_classes)

    def part_b(self) -> None:
        """Weight magnitude under global additive-noise training, with/without clamping."""
        w_rows, rows = [], []
        for m in self.scale.models:
            clean, data = self.clean[m], self.validation(self._p[m])
            sigma = _sig(self.global_mid[m]["sigma_mid"])
            clamped, _ = self.train(m, clamp=True)
            ref_clamped = self.accuracy(clamped, data)["mean"]
            variants = {"clean": (clean, self.clean_accuracy(m), False),
                        "clean, clamped": (clamped, ref_clamped, True)}
            for clamp in (False, True):
                t, _ = self.train(m, clamp=clamp, noise_settings={
                    "default": _noise("GaussAdd", sigma, training=True)})
                label = "GaussAdd-trained" + (", clamped" if clamp else "")
                variants[label] = (t, ref_clamped if clamp else self.clean_accuracy(m), clamp)
            for label, (t, ref, clamp) in variants.items():
                self.checkpoints[("b", m, label)] = t.checkpoint
            for label, (t, ref, clamp) in variants.items():
                table = _safe_weight_table(t.checkpoint)
                for _, r in table.iterrows():
                    w_rows.append({"model": m, "variant": label, "layer": r["layer"],
                                   "mean_abs": r["mean_abs"], "max_abs": r["max_abs"]})
                at_sigma = self.accuracy(t, data, self.all_sites(t, "GaussAdd", sigma),
                                         tag=("b", m, label, sigma),
                                         repeats=self.scale.eval_repeats)
                g = (self.global_mid[m] if label == "clean"  # measured in (e)
                     else self.global_sweep(t, data, ref, tag=(m, label)))
                rows.append({"model": m, "bn": m in BN_MODELS, "variant": label,
                             "clamped": clamp, "train_sigma": 0.0 if "clean" in label else sigma,
                             "noise_free_acc": self.accuracy(t, data)["mean"],
                             "reference_acc": ref, "acc_at_sigma": at_sigma["mean"],
                             "eval_sigma": sigma, "global_sigma_mid": g["sigma_mid"],
                             "kind": g["kind"],
                             "mean_abs_w": float(table["mean_abs"].mean()),
                             "max_abs_w": float(table["max_abs"].max()),
                             "mean_abs_bn_gamma": _bn_gamma(t.checkpoint),
                             "same_as_unclamped": _same_weights(
                                 t.checkpoint, self.checkpoints[("b", m, label.replace(
                                     ", clamped", ""))]) if clamp else None})
        self.tables["b_weights"] = pd.DataFrame(w_rows)
        self.tables["b_models"] = pd.DataFrame(rows)

    def part_c(self) -> None:
        """GaussMul training at every site and at one site; accuracy and binarisation."""
        rows, bin_rows = [], []
        for m in self.scale.models:
            clean, data = self.clean[m], self.validation(self._p[m])
            for _, r in _safe_weight_table(clean.checkpoint).iterrows():
                bin_rows.append({"model": m, "placement": "—", "sigma": 0.0,
                                 "layer": r["layer"], "binarisation_index":
                                 r["binarisation_index"], "max_abs": r["max_abs"]})
            site = self.scale.mul_site
            cases = [("every site", s) for s in self.scale.mul_sigmas_global]
            cases += [(f"site {site} ({clean.site_names[site]})", s)
                      for s in self.scale.mul_sigmas_site]
            for placement, sigma in cases:
                everywhere = placement == "every site"
                train_noise = _noise("GaussMul", sigma, training=True)
                ns = ({"default": train_noise} if everywhere else
                      {"default": {"noise_type": "NoNoise"},
                       "layer_wise": {"layer_index": site, **train_noise}})
                t, _ = self.train(m, noise_settings=ns)
                self.checkpoints[("c", m, placement, sigma)] = t.checkpoint

                def configs(tt):
                    return (self.all_sites(tt, "GaussMul", sigma) if everywhere
                            else self.one_site(tt, site, "GaussMul", sigma))

                a_noisy = self.accuracy(t, data, configs(t), tag=("c", m, placement, sigma),
                                        repeats=self.scale.eval_repeats)
                a_clean = self.accuracy(clean, data, configs(clean),
                                        tag=("c", m, placement, sigma),
                                        repeats=self.scale.eval_repeats)
                table = _safe_weight_table(t.checkpoint)
                for _, r in table.iterrows():
                    bin_rows.append({"model": m, "placement": placement, "sigma": sigma,
                                     "layer": r["layer"],
                                     "binarisation_index": r["binarisation_index"],
                                     "max_abs": r["max_abs"]})
                rows.append({"model": m, "bn": m in BN_MODELS, "placement": placement,
                             "sigma": sigma, "acc_noise_trained": a_noisy["mean"],
                             "std_noise_trained": a_noisy["std"],
                             "acc_clean_trained": a_clean["mean"],
                             "non_finite_noise_trained": a_noisy["non_finite"],
                             "non_finite_clean_trained": a_clean["non_finite"],
                             "train_loss_finite": math.isfinite(t.final_train_loss),
                             "mean_binarisation": float(np.nanmean(
                                 table["binarisation_index"])) if table["binarisation_index"]
                             .notna().any() else math.nan})
        self.tables["c_accuracy"] = pd.DataFrame(rows)
        self.tables["c_binarisation"] = pd.DataFrame(bin_rows)


def _describe_noise(noise_settings, clamp: bool) -> str:
    parts = []
    if noise_settings:
        d = noise_settings.get("default") or {}
        if d.get("noise_type", "NoNoise") != "NoNoise":
            parts.append(f"{d['noise_type']} σ={d.get('GaussStd')} at every site")
        lw = noise_settings.get("layer_wise")
        if lw:
            parts.append(f"{lw['noise_type']} σ={lw.get('GaussStd')} at site {lw['layer_index']}")
    if clamp:
        parts.append("clamped")
    return ", ".join(parts) or "clean"


def _acc(a: Mapping[str, float]) -> dict[str, float]:
    return {"accuracy": a["mean"], "std": a["std"]}


def _site_acc(rep: Reproduction, ev, site: int, cfg, tag, repeats: int) -> dict[str, float]:
    accs = []
    for r in range(repeats):
        rep._seed(*tag, r)
        accs.append(ev.evaluate(site, cfg)[0])
    return {"mean": float(np.mean(accs)),
            "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0}


def _safe_weight_table(checkpoint: str) -> pd.DataFrame:
    """:func:`layer_weight_table`, or a table of NaNs when the weights are not finite (a run
    that diverged)."""
    try:
        return layer_weight_table(checkpoint)
    except ValueError as err:
        if "NaN" not in str(err) and "infinite" not in str(err):
            raise
        from .weights import load_state_dict, _conv_linear
        state = load_state_dict(checkpoint)
        rows = [{"layer": layer, "mean_abs": math.nan, "max_abs": math.nan,
                 "binarisation_index": math.nan} for layer, _, _ in _conv_linear(state)]
        log.warning("%s: weights are not finite (training diverged)", checkpoint)
        return pd.DataFrame(rows)


def _bn_gamma(checkpoint: str) -> float:
    """Mean |γ| over all batch-norm scale parameters (NaN for a model without BN)."""
    from .weights import load_state_dict
    state = load_state_dict(checkpoint)
    gammas = [state[k].detach().abs().reshape(-1) for k in state
              if k.endswith(".weight") and k[:-len("weight")] + "running_mean" in state]
    return float(torch.cat(gammas).double().mean()) if gammas else math.nan


def _same_weights(a: str, b: str) -> bool:
    """True when two checkpoints hold exactly the same parameters and buffers."""
    from .weights import load_state_dict
    sa, sb = load_state_dict(a), load_state_dict(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _weight_growth(clean_table: pd.DataFrame, checkpoint: str) -> float:
    """Mean over conv/linear layers of mean|w| (noise-trained) / mean|w| (clean)."""
    noisy = _safe_weight_table(checkpoint).set_index("layer")["mean_abs"]
    ratio = noisy / clean_table.set_index("layer")["mean_abs"]
    return float(ratio.mean())


def _midpoint_of_points(sigmas, accuracies, clean: float, chance: float):
    """:func:`midpoint`, also for a single σ point (then only a bound: above the level at σ
    means σ_mid > σ, otherwise σ_mid ≤ σ)."""
    if len(set(np.asarray(sigmas, dtype=float))) >= 2:
        return midpoint(sigmas, accuracies, clean, chance)
    from .midpoint import MidpointResult
    level = (clean + chance) / 2
    sigma, acc = float(np.max(sigmas)), float(np.mean(accuracies))
    return MidpointResult(sigma, "lower_bound" if acc > level else "upper_bound", False,
                          level, 1)


def _a_site_table(points: pd.DataFrame, sites: pd.DataFrame, clean_acc: Mapping[str, float],
                  chance: float) -> pd.DataFrame:
    """Per (model, site): clean σ_mid, σ_mid of the noise-trained points, and the ratio."""
    rows = []
    for (m, site), g in points.groupby(["model", "site"], sort=False):
        g = g.sort_values("sigma")
        clean = sites[(sites["model"] == m) & (sites["site"] == site)].iloc[0]
        res = _midpoint_of_points(g["sigma"].to_numpy(), g["acc_noise_trained"].to_numpy(),
                                  clean_acc[m], chance)
        rows.append({"model": m, "bn": bool(g["bn"].iloc[0]), "site": int(site),
                     "site_name": g["site_name"].iloc[0],
                     "clean_sigma_mid": float(clean["sigma_mid"]),
                     "clean_kind": clean["kind"],
                     "noisy_sigma_mid": res.sigma_mid, "noisy_kind": res.kind,
                     "ratio": res.sigma_mid / float(clean["sigma_mid"]),
                     "mean_gain_pp": float(g["gain_pp"].mean()),
                     "more_robust": bool((g["gain_pp"] > 0).all()),
                     "mean_abs_w_ratio": float(g["mean_abs_w_ratio"].mean())})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------- document


def _fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if v is None:
        return "—"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return "n/a"
        if v == 0:
            return "0"
        if abs(v) >= 1e4 or abs(v) < 1e-3:
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}"
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v)
    return str(v)


def markdown_table(df: pd.DataFrame, columns: Mapping[str, str] | None = None,
                   formats: Mapping[str, Callable[[Any], str]] | None = None) -> str:
    """A GitHub markdown table of ``df``: ``columns`` maps column → header (and picks them)."""
    columns = dict(columns or {c: c for c in df.columns})
    formats = dict(formats or {})
    head = "| " + " | ".join(columns.values()) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for _, r in df.iterrows():
        cells = [formats.get(c, _fmt)(r[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _sigma_with_kind(value: float, kind: str) -> str:
    prefix = {"lower_bound": "> ", "upper_bound": "≤ "}.get(kind, "")
    return prefix + _fmt(value)


def _pct(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def _ratio(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.2f}×"


def _save(fig, path: Path) -> Path:
    from .plots import save_figure
    png, pdf = save_figure(fig, path)
    Path(pdf).unlink(missing_ok=True)  # the document links PNGs only
    return Path(png)


def make_figures(rep: Reproduction, out: Path) -> dict[str, Path]:
    """Every figure of the document under ``out`` (PNG)."""
    from matplotlib.figure import Figure

    from .plots import sigma_mid_figure, walking_noise_figure, weight_histogram_figure
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
        from matplotlib import colormaps
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
    return all(_safe_weight_table(c)["mean_abs"].notna().all() for c in checkpoints)


def _most_binarised(rep: Reproduction, m: str):
    """The GaussMul-trained model of ``m`` with the largest mean binarisation index."""
    c = rep.tables["c_accuracy"]
    rows = c[(c["model"] == m) & c["mean_binarisation"].notna()]
    if not len(rows):
        return None
    r = rows.loc[rows["mean_binarisation"].idxmax()]
    key = ("c", m, r["placement"], r["sigma"])
    return key, f"GaussMul σ={_fmt(r['sigma'])} at {r['placement']}"


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
      "was written by that run (`analysis/reproduce.py`). The raw tables are in "
      f"[`reproduction/results.json`](reproduction/results.json). Run time: "
      f"{wall / 60:.1f} min wall on this machine ({torch.get_num_threads()} torch thread(s), "
      f"device {rep.device}); {rep.facts['trainings']} training configurations, "
      f"{rep.facts['trainings_reused']} of them found already trained "
      f"(per part: {', '.join(f'{k} {v / 60:.1f} min' for k, v in rep.facts['part_seconds'].items())}).\n")
    w("## Setup\n")
    n_val = int(next(iter(rep._val.values()))[1].shape[0]) if rep._val else 0
    w(f"- Data: {'the real Fashion-MNIST (60k training images), ' if dataset == 'FashionMNIST' else dataset + ', '}"
      f"the paper's augmentation; every accuracy below is measured on the validation split, "
      f"the {n_val} images of the official test split.")
    w(f"- Models: {', '.join(s.models)}; Adam, lr 1e-3, cosine schedule, batch 128, "
      f"**{s.epochs} epoch(s) for every model, clean or noisy**; one training seed "
      f"(repeat {rep.seed}) shared by all variants, so a noise-trained model and its clean "
      "counterpart start from the same initialisation and see the same batches.")
    w(f"- Noise draws: {s.walk_repeats} per σ in the per-site walks and global sweeps "
      f"(midpoint search in log σ, at most {s.walk_max_evals} σ per site in "
      f"[{_fmt(s.sigma_range[0])}, {_fmt(s.sigma_range[1])}] and {s.global_max_evals} per "
      f"global sweep in [{_fmt(s.global_range[0])}, {_fmt(s.global_range[1])}]); "
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
                     {"clean_accuracy": _pct}))
    w("")

    w("## Summary: the paper's claims against this run\n")
    for line in _summary(rep):
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
              f"{m} {_median_ratio(a[a['model'] == m])}" for m in s.models
              if (a["model"] == m).any()) + ".")
        worse = ap[ap["gain_pp"] <= 0]
        if len(worse):
            w("Not more accurate at: " + "; ".join(
                f"{r.model} {r.site_name} σ={_fmt(r.sigma)} (noise-trained "
                f"{r.acc_noise_trained:.1f} % vs clean-trained {r.acc_clean_trained:.1f} %)"
                for r in worse.itertuples()) + ".")
        w("")
        w(_growth_text(a) + "\n")
        shown = a.assign(
            clean_s=[_sigma_with_kind(v, k) for v, k in zip(a["clean_sigma_mid"], a["clean_kind"])],
            noisy_s=[_sigma_with_kind(v, k) for v, k in zip(a["noisy_sigma_mid"], a["noisy_kind"])],
            ratio_s=[_bound_prefix(k) + _ratio(v) for v, k in zip(a["ratio"], a["noisy_kind"])])
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
                               {"acc_clean_trained": _pct, "acc_noise_trained": _pct,
                                "std_noise_trained": _pct, "noise_free_acc_noise_trained": _pct,
                                "level": _pct}))
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
        w(_b_verdict(bm))
        w("")
        shown = bm.assign(g_s=[_sigma_with_kind(v, k)
                               for v, k in zip(bm["global_sigma_mid"], bm["kind"])])
        w(markdown_table(shown, {"model": "model", "variant": "variant",
                                 "noise_free_acc": "no noise (%)", "eval_sigma": "σ",
                                 "acc_at_sigma": "acc @ σ (%)", "g_s": "global σ_mid",
                                 "mean_abs_w": "mean |w|", "max_abs_w": "max |w|",
                                 "mean_abs_bn_gamma": "mean |γ| (BN)",
                                 "same_as_unclamped": "weights identical to unclamped"},
                         {"noise_free_acc": _pct, "acc_at_sigma": _pct}))
        w("")
        details("mean |w| per layer",
                markdown_table(_wide(bw, ["model", "layer"], "variant", "mean_abs")))
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
        w(_c_verdict(c))
        w("")
        w(markdown_table(c, {"model": "model", "placement": "placement", "sigma": "σ",
                             "acc_noise_trained": "noise-trained (%)",
                             "acc_clean_trained": "clean-trained (%)",
                             "non_finite_noise_trained": "non-finite (noise-trained)",
                             "train_loss_finite": "training loss finite",
                             "mean_binarisation": "binarisation (noise-trained)",
                             "clean_binarisation": "binarisation (clean)"},
                         {"acc_noise_trained": _pct, "acc_clean_trained": _pct,
                          "non_finite_noise_trained": lambda v: f"{100 * v:.0f} %"}))
        w("")
        cbl = cb.assign(condition=[
            ("clean" if p == "—" else f"{re.sub(r' [(].*[)]', '', p)}, σ={_fmt(sg)}")
            for p, sg in zip(cb["placement"], cb["sigma"])])
        details("binarisation index per layer",
                markdown_table(_wide(cbl, ["model", "layer"], "condition", "binarisation_index")))
        if "c_accuracy" in figs:
            w(f"![GaussMul accuracy vs σ]({rel('c_accuracy')})")
        model_figures("c", "weights, clean vs most binarised GaussMul-trained")
        w("")

    # ---- (d)
    d = T["d_sites"]
    w("## (d) Per-site profile of the clean-trained models (GaussAdd walk)\n")
    w(_d_verdict(d, s.models))
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
                         "n_evals": "σ evaluated"}, {"clean_accuracy": _pct}))
    w("")
    w(_e_verdict(pl, s))
    w("")
    piv = pl.pivot_table(index=["budget", "plan"], columns="model", values="accuracy",
                         sort=False).reset_index()
    w(markdown_table(piv, formats={m: _pct for m in s.models}))
    w("")
    details("the plans (R per site, in site order)",
            markdown_table(pl[pl["plan"] != "none (R=1)"],
                           {"model": "model", "budget": "b", "plan": "plan", "repetitions": "R",
                            "accuracy": "accuracy (%)", "std": "± (std over draws)"},
                           {"accuracy": _pct, "std": _pct}))

    # ---- differences
    w("## Where this differs from the paper, and why it may\n")
    for line in _differences(rep):
        w(f"- {line}")
    w("")
    text = "\n".join(L) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = out_dir / "REPRODUCTION.md"
    doc.write_text(text)
    (fig_dir / "results.json").write_text(json.dumps(_results_json(rep, command), indent=1,
                                                     default=_json_default))
    log.info("wrote %s and %d figures under %s", doc, len(figs), fig_dir)
    return doc


def _wide(df: pd.DataFrame, index: list[str], columns: str, values: str) -> pd.DataFrame:
    """``df`` pivoted to one row per ``index`` combination present (in order of first
    appearance) and one column per ``columns`` value (in order of first appearance)."""
    rows = list(dict.fromkeys(map(tuple, df[index].itertuples(index=False))))
    cols = list(dict.fromkeys(df[columns]))
    table = df.set_index(index + [columns])[values]
    table = table[~table.index.duplicated()].unstack(columns)
    table = table.reindex(pd.MultiIndex.from_tuples(rows, names=index))[cols]
    return table.reset_index()


def _bound_prefix(kind: str) -> str:
    return {"lower_bound": "> ", "upper_bound": "≤ "}.get(kind, "")


def _median_ratio(rows: pd.DataFrame) -> str:
    r = float(np.median(rows["ratio"]))
    lower = (rows["noisy_kind"] == "lower_bound").mean() >= 0.5
    return (">" if lower else "") + _ratio(r)


def _b_verdict(bm: pd.DataFrame) -> str:
    parts = []
    for m, g in bm.groupby("model", sort=False):
        v = g.set_index("variant")
        c, n = v.loc["clean"], v.loc["GaussAdd-trained"]
        cc, nc = v.loc["clean, clamped"], v.loc["GaussAdd-trained, clamped"]
        growth = n["mean_abs_w"] / c["mean_abs_w"]
        acted = not (bool(cc["same_as_unclamped"]) and bool(nc["same_as_unclamped"]))
        gamma = ("" if math.isnan(c["mean_abs_bn_gamma"]) else
                 f", BN mean|γ| ×{n['mean_abs_bn_gamma'] / c['mean_abs_bn_gamma']:.2f}")
        parts.append(
            f"{m}: mean|w| ×{growth:.2f} after noisy training{gamma} (max|w| "
            f"{n['max_abs_w']:.2f}; clamping {'acted' if acted else 'never acted'}); "
            "global σ_mid clean "
            f"{_fmt(c['global_sigma_mid'])} → noise-trained {_fmt(n['global_sigma_mid'])} "
            f"(×{n['global_sigma_mid'] / c['global_sigma_mid']:.2f}); clamped: "
            f"{_fmt(cc['global_sigma_mid'])} → {_fmt(nc['global_sigma_mid'])} "
            f"(×{nc['global_sigma_mid'] / cc['global_sigma_mid']:.2f})")
    same = [m for m, g in bm.groupby("model", sort=False)
            if g.set_index("variant").loc["clean, clamped", "same_as_unclamped"]]
    text = "**Measured:** " + "; ".join(parts) + "."
    if same:
        spread = [abs(math.log10(g.set_index("variant").loc["clean, clamped", "global_sigma_mid"]
                                 / g.set_index("variant").loc["clean", "global_sigma_mid"]))
                  for m, g in bm.groupby("model", sort=False) if m in same]
        text += (f" Where clamping never acted ({', '.join(same)}: the clean clamped model "
                 "has exactly the weights of the unclamped one), the two are the same network; "
                 "their σ_mid still differ by up to "
                 f"{max(spread):.2f} decade because each sweep draws its own noise, which "
                 "gauges the resolution of this table.")
    return text


def _c_verdict(c: pd.DataFrame) -> str:
    parts = []
    for (m, pl), g in c.groupby(["model", "placement"], sort=False):
        top = g.sort_values("sigma").iloc[-1]
        ok = g[g["non_finite_noise_trained"] == 0]
        best = ok.sort_values("sigma").iloc[-1] if len(ok) else None
        s = f"{m} at {pl}: at σ={_fmt(top['sigma'])} noise-trained {top['acc_noise_trained']:.1f} %"
        if top["non_finite_noise_trained"] > 0:
            s += f" ({100 * top['non_finite_noise_trained']:.0f} % non-finite logits)"
        if best is not None and best["sigma"] != top["sigma"]:
            s += (f"; largest σ with finite logits {_fmt(best['sigma'])}: "
                  f"{best['acc_noise_trained']:.1f} % vs clean-trained "
                  f"{best['acc_clean_trained']:.1f} %")
        else:
            s += f" vs clean-trained {top['acc_clean_trained']:.1f} %"
        bi = g["mean_binarisation"].max()
        s += (f"; binarisation up to {_fmt(bi)} (clean {_fmt(g['clean_binarisation'].iloc[0])})"
              if not math.isnan(bi) else "; weights not finite")
        parts.append(s)
    return "**Measured:** " + "; ".join(parts) + "."


def _d_verdict(d: pd.DataFrame, models: Sequence[str]) -> str:
    parts = []
    for m in models:
        rows = d[d["model"] == m].sort_values("sigma_mid")
        if not len(rows):
            continue
        low = ", ".join(f"{r.site_name} ({_fmt(r.sigma_mid)})" for r in rows.head(3).itertuples())
        high = rows.iloc[-1]
        parts.append(f"{m}: least robust {low}; most robust {high['site_name']} "
                     f"({_sigma_with_kind(high['sigma_mid'], high['kind'])}); spread "
                     f"{math.log10(high['sigma_mid'] / rows.iloc[0]['sigma_mid']):.1f} decades")
    text = "**Measured** (σ_mid, least robust first): " + "; ".join(parts) + "."
    pairs = []
    for plain, bn in PAIRS:
        if plain in models and bn in models:
            a = d[d["model"] == plain]["sigma_mid"]
            b = d[d["model"] == bn]["sigma_mid"]
            pairs.append(f"{plain} {_fmt(float(np.median(a)))} vs {bn} "
                         f"{_fmt(float(np.median(b)))} (least robust site "
                         f"{_fmt(float(a.min()))} vs {_fmt(float(b.min()))})")
    if pairs:
        text += " Median σ_mid over sites, without vs with BN: " + "; ".join(pairs) + "."
    return text


def _e_verdict(pl: pd.DataFrame, s: Scale) -> str:
    parts = []
    for m in s.models:
        for b in s.budgets:
            rows = pl[(pl["model"] == m) & (pl["budget"] == b)]
            uni = rows[rows["plan"] == "uniform"]
            if not len(rows) or not len(uni):
                continue
            u, u_reps = float(uni["accuracy"].iloc[0]), uni["repetitions"].iloc[0]
            tailored = rows[rows["plan"].str.contains("inverse")
                            & rows["repetitions"].map(lambda r: r != u_reps)]
            best = rows.loc[rows["accuracy"].idxmax()]
            std = float(rows["std"].max())
            parts.append(f"{m}, b={b:g}: uniform {u:.1f} %, best plan {best['plan']} "
                         f"{best['accuracy']:.1f} % ({best['accuracy'] - u:+.1f} pp); "
                         f"{int((tailored['accuracy'] > u).sum())} of {len(tailored)} inverse "
                         f"plans that differ from uniform beat it (largest std over draws "
                         f"{std:.2f} pp)")
    return "**Measured:** " + "; ".join(parts) + "."


def _summary(rep: Reproduction) -> list[str]:
    """One computed line per claim of the paper (issue 9 a-e)."""
    T, s, out = rep.tables, rep.scale, []
    ap, a = T.get("a_points"), T.get("a_sites")
    if ap is not None and len(ap):
        out.append(
            "(a) *Noisy training increases robustness* (GaussAdd, per site): the noise-trained "
            f"model is more accurate at {int((ap['gain_pp'] > 0).sum())} of {len(ap)} "
            f"(site, σ) points in {a['site'].count()} sites (gain {ap['gain_pp'].min():+.1f} "
            f"to {ap['gain_pp'].max():+.1f} pp). σ_mid noise-trained / clean: "
            + _ratio_counts(a, s) + ".")
    bm = T.get("b_models")
    if bm is not None and len(bm):
        g = bm.set_index(["model", "variant"])["mean_abs_w"].unstack()
        growth = g["GaussAdd-trained"] / g["clean"]
        mid = bm.set_index(["model", "variant"])["global_sigma_mid"].unstack()
        gain = mid["GaussAdd-trained"] / mid["clean"]
        acted = not bm["same_as_unclamped"].dropna().astype(bool).all()
        txt = (f"(b) *…by growing weight magnitudes*: after GaussAdd training at every site, "
               f"mean|w| changed by ×{growth.min():.2f} to ×{growth.max():.2f} while the global "
               f"σ_mid changed by ×{gain.min():.2f} to ×{gain.max():.2f}; clamping to "
               f"[{s.clamp[0]:g}, {s.clamp[1]:g}] {'acted on some models' if acted else 'never acted (no parameter ever left that range), so it could not test the claim'}.")
        if a is not None and len(a):
            wr = a["mean_abs_w_ratio"]
            txt += (f" Per-site noisy training (a) grew mean|w| (> 1.05×) at "
                    f"{int((wr > 1.05).sum())} of {len(a)} sites")
            if len(a) >= 3 and wr.nunique() > 1:
                rho = float(a[["mean_abs_w_ratio", "mean_gain_pp"]].rank().corr().iloc[0, 1])
                txt += (f"; Spearman rank correlation of that growth with the accuracy gain "
                        f"across sites ρ = {rho:.2f}")
            txt += "."
        out.append(txt)
    c = T.get("c_accuracy")
    if c is not None and len(c):
        site = c[c["placement"] != "every site"]
        top = site[site["sigma"] == site["sigma"].max()]
        every = c[(c["placement"] == "every site") & (c["sigma"] == c["sigma"].max())]
        cb = T["c_binarisation"]
        clean_bi = cb[cb["placement"] == "—"].groupby("model")["binarisation_index"].mean()
        pairs = ", ".join(f"{r.model} {r.acc_noise_trained:.1f} vs {r.acc_clean_trained:.1f} %"
                          for r in top.itertuples())
        chance = 100.0 / rep.clean[s.models[0]].num_classes
        useful = c[c["acc_noise_trained"] > chance + 5]
        degenerate = c[(c["acc_noise_trained"] <= chance + 5) & c["mean_binarisation"].notna()]
        bi_text = (f"the largest mean binarisation index of a GaussMul-trained model above "
                   f"chance is {_fmt(float(useful['mean_binarisation'].max()))}"
                   if useful["mean_binarisation"].notna().any() else
                   "no GaussMul-trained model is above chance")
        if len(degenerate) and degenerate["mean_binarisation"].max() > (
                useful["mean_binarisation"].max() if len(useful) else 0):
            r = degenerate.loc[degenerate["mean_binarisation"].idxmax()]
            bi_text += (f" ({r['model']} at {r['placement']}, σ={_fmt(r['sigma'])}, at chance "
                        f"accuracy, reaches {_fmt(r['mean_binarisation'])})")
        out.append(
            "(c) *GaussMul training self-binarises and gives extreme robustness*: at one site "
            f"with σ = {_fmt(float(top['sigma'].max()))}, noise-trained vs clean-trained "
            f"accuracy {pairs}; {bi_text}; clean models ≤ "
            f"{_fmt(float(clean_bi.max()))}. At every site, σ = "
            f"{_fmt(float(c['sigma'].max()))} overflowed float32 in "
            f"{int((every['non_finite_noise_trained'] > 0.5).sum())} of {len(every)} "
            "noise-trained models.")
    d = T["d_sites"]
    least = "; ".join(f"{m} {', '.join(d[d['model'] == m].nsmallest(2, 'sigma_mid')['site_name'])}"
                      for m in s.models if (d["model"] == m).any())
    out.append(f"(d) *Per-layer robustness differs*: the two least robust sites per model: "
               f"{least}; σ_mid spans {_span(d, s.models)} decades within a model.")
    pl = T["e_plans"]
    lines = []
    for m in s.models:
        for b in s.budgets:
            rows = pl[(pl["model"] == m) & (pl["budget"] == b)]
            uni = rows[rows["plan"] == "uniform"]
            if len(uni):
                best = rows.loc[rows["accuracy"].idxmax()]
                lines.append(f"{m} b={b:g} {best['plan']} {best['accuracy'] - uni['accuracy'].iloc[0]:+.1f} pp")
    out.append("(e) *Tailored multi-execution beats uniform at equal budget*: best plan vs "
               "uniform: " + "; ".join(lines) + ".")
    return out


def _growth_text(a: pd.DataFrame) -> str:
    """Weight growth of the per-site noise-trained models and its association with the gain."""
    wr = a["mean_abs_w_ratio"]
    text = (f"Weights after noisy training at one site (`|w| ratio`): larger (> 1.05) at "
            f"{int((wr > 1.05).sum())} of {len(a)} sites, about equal (0.95–1.05) at "
            f"{int(((wr >= 0.95) & (wr <= 1.05)).sum())}, smaller at {int((wr < 0.95).sum())} "
            f"(range {wr.min():.2f}–{wr.max():.2f}).")
    if len(a) >= 3 and wr.nunique() > 1 and a["mean_gain_pp"].nunique() > 1:
        rho = float(a[["mean_abs_w_ratio", "mean_gain_pp"]].rank().corr().iloc[0, 1])
        grew, rest = a[wr > 1.05], a[wr <= 1.05]
        text += (f" Rank correlation across sites between `|w| ratio` and the mean gain: "
                 f"Spearman ρ = {rho:.2f}.")
        if len(grew) and len(rest):
            text += (f" Sites where the weights grew: median gain {grew['mean_gain_pp'].median():+.1f}"
                     f" pp, median σ_mid ratio {_median_ratio(grew)}; the others: "
                     f"{rest['mean_gain_pp'].median():+.1f} pp, {_median_ratio(rest)} "
                     f"(sites: {', '.join(sorted(set(rest['site_name'].str.replace(r'^[0-9]+:', '', regex=True))))}).")
    return text


def _ratio_counts(a: pd.DataFrame, s: Scale) -> str:
    parts = []
    cross = a[a["noisy_kind"] == "crossing"]
    if len(cross):
        parts.append(f"{cross['ratio'].min():.2f}× to {cross['ratio'].max():.2f}× at "
                     f"{len(cross)} site(s) where it was bracketed")
    lower = a[a["noisy_kind"] == "lower_bound"]
    if len(lower):
        parts.append(f"more than {max(s.site_factors):.3g}× at {len(lower)} site(s) (the "
                     "noise-trained accuracy stayed above the midpoint level at the largest "
                     "σ tried)")
    upper = a[a["noisy_kind"] == "upper_bound"]
    if len(upper):
        parts.append(f"at most {min(s.site_factors):.3g}× at {len(upper)} site(s) (already "
                     "below the level at the smallest σ tried)")
    return "; ".join(parts) + f", of {len(a)} sites"


def _span(d: pd.DataFrame, models) -> str:
    spans = [math.log10(g["sigma_mid"].max() / g["sigma_mid"].min())
             for m, g in d.groupby("model") if m in models]
    return f"{min(spans):.1f}–{max(spans):.1f}"


def _differences(rep: Reproduction) -> list[str]:
    s = rep.scale
    out = [
        f"Training length: {s.epochs} epoch(s) instead of 200-250, and one training seed "
        "instead of three to five. Short training leaves models less converged; noise-trained "
        "models in particular may not have finished adapting, so gains measured here are "
        "likely smaller than after full training, and single-seed differences of a few "
        "percentage points or ~0.1 decade in σ_mid are within run-to-run variation.",
        f"σ resolution: (a) uses {len(s.site_factors)} σ point(s) per site placed relative "
        "to the clean σ_mid rather than the paper's 49-point grid, so the noise-trained "
        "σ_mid is often only a bound, and the ratio between two grid points is "
        "interpolated from very few points.",
        "Weight clamping to [-1, 1] only constrains a model whose weights would leave that "
        "range; with few epochs of Adam the weights stay far inside it (see max |w| in (b)), "
        "so the clamped runs here cannot test whether weight growth beyond 1 explains the "
        "robustness. In BN models the scale of the weights before a BN layer is removed by "
        "the BN, so weight growth there cannot raise the signal-to-noise ratio at sites after "
        "the BN.",
        "GaussMul at every site with σ ≫ 1 multiplies activations by ~σ at each site; in "
        "float32 (max ≈ 3.4e38) a stack of sites overflows for σ = 1e10 (and BN's batch "
        "variance overflows already after two sites), giving inf/NaN. The paper's own "
        "GaussMul grids place the noise at one site, which is why (c) also trains at one "
        "site; whatever happens at every site with σ = 1e10 is a numerical limit, not a "
        "robustness result.",
        "σ is absolute: the same σ is a different signal-to-noise ratio where activations "
        "are larger or smaller. BN rescales activations to about unit variance, so comparing "
        "σ_mid between a model with and one without BN (d) mixes robustness with activation "
        "scale. Likewise the weight statistics of (b) cover conv/linear weights; in BN models "
        "the BN scale γ (reported separately) can take over the role of a growing weight.",
        *_c_differences(rep),
        "(b) trains with noise at every site at the global σ_mid (one σ per model), whereas "
        "the paper examines weights per site and σ; (a)'s `|w| ratio` column gives the "
        "per-site view for the models trained there.",
        "(e) uses the clean walk's per-site σ_mid (noise at one site) to plan for noise at "
        f"every site, {s.eval_repeats} noise draws per plan; differences between plans "
        "smaller than about two standard deviations of the draws (see the plans table) are "
        "not resolved.",
    ]
    return out


def _c_differences(rep: Reproduction) -> list[str]:
    """What (c) measured that bears on the paper's GaussMul claims, and possible reasons."""
    c = rep.tables.get("c_accuracy")
    if c is None or not len(c):
        return []
    chance = 100.0 / rep.clean[rep.scale.models[0]].num_classes
    site = c[c["placement"] != "every site"]
    top = site[site["sigma"] == site["sigma"].max()]
    held = [r.model for r in top.itertuples() if r.acc_noise_trained > chance + 5]
    lost = [r.model for r in top.itertuples() if r.acc_noise_trained <= chance + 5]
    out = []
    if lost:
        out.append(
            f"GaussMul at one site, σ = {_fmt(float(top['sigma'].max()))}: noise-trained "
            f"{', '.join(lost)} ended at chance while {', '.join(held) or 'no model'} "
            "trained to well above chance. A likely reason (not verified here): without BN "
            "after the noisy site, every later activation and the logits are ~σ times larger "
            "than without noise, so the softmax saturates and training gets little useful "
            "gradient; in the BN models a BN layer right after the site normalises the scale "
            "away. Whether long training (200-250 epochs) changes this for the models without "
            f"BN is not tested in {rep.scale.epochs} epoch(s).")
    bi = c.loc[c["acc_noise_trained"] > chance + 5, "mean_binarisation"]
    if bi.notna().any() and bi.max() < 0.1:
        out.append(
            f"No self-binarisation: every GaussMul-trained model above chance keeps a "
            f"binarisation index ≤ {_fmt(float(bi.max()))} (a binary layer gives 1). "
            "Weight distributions that move towards ±c are a slow training effect; "
            f"{rep.scale.epochs} epoch(s) may be far too few to see it, so this run neither "
            "confirms nor rules it out.")
    return out


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


# ---------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.reproduce", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(SCALES), default="small")
    ap.add_argument("--out", default=None,
                    help="folder for REPRODUCTION.md and reproduction/*.png (default: docs/; "
                         "for --scale smoke: artifacts/reproduction/smoke-docs, so that a "
                         "smoke run never overwrites the published document)")
    ap.add_argument("--artifact-root", default=str(REPO_ROOT / "artifacts" / "reproduction"),
                    help="where trained models are kept and found again (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: these models are tiny, and on shared "
                         "cores more threads mostly wait for each other)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=None,
                    help="a subset of the four models")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if not args.verbose:
        for name in ("util", "data", "analysis.plots", "analysis.results"):
            logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    scale = SCALES[args.scale]
    if args.models:
        scale = replace(scale, models=tuple(args.models))
    out = Path(args.out) if args.out else (
        REPO_ROOT / "artifacts" / "reproduction" / "smoke-docs" if args.scale == "smoke"
        else REPO_ROOT / "docs")
    command = "python -m analysis.reproduce --scale " + args.scale + (
        " --models " + " ".join(args.models) if args.models else "")
    rep = Reproduction(scale, artifact_root=args.artifact_root, device=args.device).run()
    doc = write_document(rep, out, command=command)
    print(summary(rep, doc))
    return 0


def summary(rep: Reproduction, doc: Path) -> str:
    """The few headline numbers, for the terminal."""
    T = rep.tables
    lines = [f"wrote {doc} (scale {rep.scale.name}, {rep.facts['wall_seconds'] / 60:.1f} min)"]
    for r in T["clean"].itertuples():
        g = T["e_global"].set_index("model").loc[r.model]
        lines.append(f"  {r.model:<12} clean {r.clean_accuracy:.2f} %  global σ_mid "
                     f"{_fmt(g['global_sigma_mid'])}")
    if "a_points" in T and len(T["a_points"]):
        ap = T["a_points"]
        lines.append(f"  (a) noise-trained better at {int((ap['gain_pp'] > 0).sum())}/"
                     f"{len(ap)} (site, σ) points, mean gain {ap['gain_pp'].mean():+.1f} pp")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
