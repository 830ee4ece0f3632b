"""The five experiments of the reproduction (class :class:`Reproduction`) and their tables.

:meth:`Reproduction.run` trains (or finds already trained) every model of a :class:`Scale` and
fills ``tables`` (pandas DataFrames), part by part: (d) the clean walk, (e) multi-execution at
the global σ_mid, (a) per-site noisy training, (b) weights and clamping, (c) multiplicative
noise. Training is the engine's (:func:`util.engine.experiment.obtain_trained_model`), walks
are :func:`util.engine.walk.run_walk`, accuracies come from :mod:`.evaluation`.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch

from models import model_site_kinds
from noise.config import NoNoise, parse_noise_config
from noise.placement import configure
from util.config import deep_update, merged_with_defaults, parse_walk
from util.engine.experiment import obtain_trained_model, prepare
from util.engine.midpoint import MidpointResult, midpoint
from util.engine.walk import SiteEvaluator, bisect_midpoint, run_walk

from ..repetition import SCALINGS, repetition_plan, total_repetitions
from ..weights import (layer_weight_table, layer_weight_table_or_nan, mean_abs_bn_gamma,
                       same_state)
from .evaluation import accuracy_over_draws, site_accuracy_over_draws
from .scales import BN_MODELS, MODELS, Scale, select_sites

log = logging.getLogger(__name__)

__all__ = ["Reproduction", "Trained", "round_sig"]


def round_sig(x: float, digits: int = 3) -> float:
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
    site_kinds: list[str]         # models.model_site_kinds, one per site
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
                       model_site_kinds(config["model"]),
                       int(p.dataset.num_classes), outcome.trained, seconds,
                       float(losses[-1]), p.device), p

    @property
    def n_validation(self) -> int:
        """Samples of the validation split (0 before any was loaded)."""
        return int(next(iter(self._val.values()))[1].shape[0]) if self._val else 0

    def validation(self, p) -> tuple[torch.Tensor, torch.Tensor]:
        """The validation split (Fashion-MNIST: the official test split) as two tensors."""
        key = (p.vc.config["data"]["dataset"], str(p.vc.config["data"].get("root")))
        if key not in self._val:
            xs, ys = zip(*[(x, y) for x, y in p.dataset.val_loader(p.device)])
            self._val[key] = (torch.cat(xs), torch.cat(ys))
        return self._val[key]

    # ------------------------------------------------------------------ evaluations

    def _seed_parts(self, *tag) -> tuple:
        """What a noise draw of an evaluation is seeded from, without the draw's index."""
        return (self.seed, "reproduce", *tag)

    def accuracy(self, t: Trained, data, configs=None, repetitions=None, *, tag=(),
                 repeats: int = 1) -> dict[str, float]:
        """Mean/std accuracy (%) over ``repeats`` noise draws with per-site ``configs``
        (None: noise-free) and ``repetitions``; ``non_finite`` is the share of samples whose
        logits are not finite (a diverged model or an overflow)."""
        return accuracy_over_draws(t.model, data, configs, repetitions,
                                   seed_parts=self._seed_parts(*tag), repeats=repeats)

    def site_accuracy(self, ev: SiteEvaluator, site: int, noise, *, tag=(),
                      repeats: int = 1) -> dict[str, float]:
        """Mean/std accuracy (%) over ``repeats`` draws of ``noise`` at ``site`` only."""
        return site_accuracy_over_draws(ev, site, noise, seed_parts=self._seed_parts(*tag),
                                        repeats=repeats)

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
        rows = []
        for m in self.scale.models:
            clean = self.clean[m]
            data = self.validation(self._p[m])
            ref = self.clean_accuracy(m)
            clean_w = layer_weight_table(clean.checkpoint)
            ev_clean = SiteEvaluator(clean.model, *data, clean.criterion)
            rule = self.scale.site_selection.get(MODELS[m], "all")
            mids = self.site_sigma_mid(m)
            for site in select_sites(clean.site_kinds, rule):
                for f in self.scale.site_factors:
                    sigma = round_sig(f * mids[site])
                    noisy, _ = self.train(m, noise_settings={
                        "default": {"noise_type": "NoNoise"},
                        "layer_wise": {"layer_index": site, **_noise("GaussAdd", sigma,
                                                                     training=True)}})
                    self.checkpoints[("a", m, site, f)] = noisy.checkpoint
                    cfg = parse_noise_config(_noise("GaussAdd", sigma, training=False))
                    a_clean = self.site_accuracy(ev_clean, site, cfg, tag=("a", m, site, sigma),
                                                 repeats=self.scale.eval_repeats)
                    ev_noisy = SiteEvaluator(noisy.model, *data, noisy.criterion)
                    a_noisy = self.site_accuracy(ev_noisy, site, cfg, tag=("a", m, site, sigma),
                                                 repeats=self.scale.eval_repeats)
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
            sigma = round_sig(self.global_mid[m]["sigma_mid"])
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
                table = layer_weight_table_or_nan(t.checkpoint)
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
                             "mean_abs_bn_gamma": mean_abs_bn_gamma(t.checkpoint),
                             "same_as_unclamped": same_state(
                                 t.checkpoint, self.checkpoints[("b", m, label.replace(
                                     ", clamped", ""))]) if clamp else None})
        self.tables["b_weights"] = pd.DataFrame(w_rows)
        self.tables["b_models"] = pd.DataFrame(rows)

    def part_c(self) -> None:
        """GaussMul training at every site and at one site; accuracy and binarisation."""
        rows, bin_rows = [], []
        for m in self.scale.models:
            clean, data = self.clean[m], self.validation(self._p[m])
            for _, r in layer_weight_table_or_nan(clean.checkpoint).iterrows():
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
                table = layer_weight_table_or_nan(t.checkpoint)
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


def _weight_growth(clean_table: pd.DataFrame, checkpoint: str) -> float:
    """Mean over conv/linear layers of mean|w| (noise-trained) / mean|w| (clean)."""
    noisy = layer_weight_table_or_nan(checkpoint).set_index("layer")["mean_abs"]
    ratio = noisy / clean_table.set_index("layer")["mean_abs"]
    return float(ratio.mean())


def _midpoint_of_points(sigmas, accuracies, clean: float, chance: float):
    """:func:`midpoint`, also for a single σ point (then only a bound: above the level at σ
    means σ_mid > σ, otherwise σ_mid ≤ σ)."""
    if len(set(np.asarray(sigmas, dtype=float))) >= 2:
        return midpoint(sigmas, accuracies, clean, chance)
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


