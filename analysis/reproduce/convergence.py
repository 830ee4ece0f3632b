"""The convergence run of a scale with ``cuts`` (``medium``, ``medium-smoke``):
docs/reproduction/PROTOCOL_medium.md, class :class:`Convergence`.

Per (model, training length, repeat) a *cell*: the clean model first (its σ_mid per site and
global set the σ of the noise-trained variants), then the noise-trained members of the cell,
trained together as one cohort (:func:`util.engine.cohort.run_cohort`, strategy ``auto``):
global GaussAdd, the two clamps (±max|w| of the clean model, and [-1, 1] where the family's
cuts ask for it), per-site GaussAdd at three sites and two factors, GaussMul at the mul site,
MAX noise (GaussMul σ = 1e10 at every site) for the BN models. Every measurement of every model
goes through the :class:`~.cache.MeasurementCache` (keyed by training hash and parameters), and
a model is trained, or found by the engine's checkpoints, only when one of its measurements is
missing. The measurements are :mod:`.measures`; the tables and intervals :mod:`.medium_tables`;
the verdicts :mod:`.verdicts`; the document :mod:`.medium_report`.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from models import model_site_kinds
from util.config import (deep_update, member_configs, merged_with_defaults, training_hash,
                         validate_config)
from util.engine.cohort import choose_strategy, run_cohort
from util.engine.stacked import StackedNetwork, stack_adam, train_epoch_stacked
from util.engine.experiment import load_dataset, obtain_trained_model, prepare
from util.engine.midpoint import midpoint
from util.engine.walk import SiteEvaluator

from . import measures as M
from .cache import MeasurementCache
from .experiments import round_sig
from .scales import BN_MODELS, MODELS, FamilyCuts, Scale, select_sites

log = logging.getLogger(__name__)

#: the protocol's limit on the predicted run time (training and evaluations), in hours
BUDGET_LIMIT_HOURS = 3.5

__all__ = ["Convergence", "Variant", "seed_sigma_mid", "write_data_subset", "MEASURE_VERSION",
           "BUDGET_LIMIT_HOURS"]

#: part of every cached measurement's key: raise it when a measurement's code changes meaning
MEASURE_VERSION = 1


@dataclass(frozen=True)
class Variant:
    """One trained model of a cell: what it is, and the overrides of its config."""

    label: str                    # e.g. "clean", "GaussAdd", "clamp ±max|w|", "site 5 ×1"
    kind: str                     # clean | global | clamp_max | clamp_unit | site | mul | max_noise
    overrides: Mapping[str, Any] = field(default_factory=dict)
    sigma: float | None = None
    site: int | None = None
    factor: float | None = None
    clamp: float | None = None    # the symmetric bound of a clamped variant


def seed_sigma_mid(curve: Mapping[str, Any], chance: float) -> tuple[float, str]:
    """σ_mid (and its kind) of one seed's curve from its lattice rows (the project's estimator
    on every draw)."""
    rows = np.asarray(curve["rows"], dtype=float)
    m = midpoint(rows[:, 0], rows[:, 2], curve["reference"], chance)
    return m.sigma_mid, m.kind


def _noise(noise_type: str, sigma: float) -> dict[str, Any]:
    return {"noise_type": noise_type, "GaussStd": float(sigma), "enable_in_training": 1,
            "enable_in_eval": 1}


def write_data_subset(out: Path, n_train: int, n_val: int) -> Path:
    """The first ``n_train`` training and ``n_val`` test images of the real Fashion-MNIST as IDX
    files under ``out/FashionMNIST/raw`` (a data root for a quick run); ``out``."""
    from data.images import SYSTEM_FASHION_MNIST_DIR
    raw = out / "FashionMNIST" / "raw"
    names = {"train-images-idx3-ubyte": n_train, "train-labels-idx1-ubyte": n_train,
             "t10k-images-idx3-ubyte": n_val, "t10k-labels-idx1-ubyte": n_val}
    raw.mkdir(parents=True, exist_ok=True)
    for name, n in names.items():
        target = raw / name
        if target.is_file():
            continue
        data = gzip.decompress((Path(SYSTEM_FASHION_MNIST_DIR) / f"{name}.gz").read_bytes())
        dims = data[3]
        shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
        item = int(np.prod(shape[1:])) if dims > 1 else 1
        header = bytearray(data[:4 + 4 * dims])
        header[4:8] = int(n).to_bytes(4, "big")
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(bytes(header) + data[4 + 4 * dims:4 + 4 * dims + n * item])
        os.replace(tmp, target)
    if os.environ.get("WALKING_NOISE_FASHION_MNIST_DIR"):
        log.warning("WALKING_NOISE_FASHION_MNIST_DIR is set: the dataset reads that folder, "
                    "not the subset under %s", out)
    return out


class _Loaded:
    """A cell's trained model, loaded (or trained) on first use."""

    def __init__(self, run: "Convergence", config: dict[str, Any]):
        self.run, self.config = run, config
        self._p = None
        self._site_ev = None

    @property
    def p(self):
        if self._p is None:
            t0 = time.perf_counter()
            p = prepare(self.config, dataset=self.run.dataset())
            outcome = obtain_trained_model(p, progress=False)
            self.run.count_training(outcome.trained, time.perf_counter() - t0)
            p.model.eval()
            self._p = p
        return self._p

    @property
    def model(self):
        return self.p.model

    @property
    def site_evaluator(self) -> SiteEvaluator:
        if self._site_ev is None:
            self._site_ev = SiteEvaluator(self.model, *self.run.validation(), self.p.criterion)
        return self._site_ev


class Convergence:
    """The convergence run of one scale (module docstring). After :meth:`run`, ``results``
    holds one dict per trained model (model, length, repeat, variant fields and its
    measurements under ``m``); ``facts`` what the document reports about the run."""

    def __init__(self, scale: Scale, *, artifact_root: str | os.PathLike,
                 cache_root: str | os.PathLike, overrides: Mapping[str, Any] | None = None,
                 device: str = "cpu"):
        if not scale.convergence:
            raise ValueError(f"scale {scale.name!r} has no cuts: it is not a convergence study")
        self.scale = scale
        self.artifact_root = Path(artifact_root)
        self.cache = MeasurementCache(cache_root)
        self.overrides = dict(overrides or {})
        self.device = device
        if scale.data_subset is not None and "data" not in self.overrides:
            root = write_data_subset(self.artifact_root / "data-subset-{}-{}".format(
                *scale.data_subset), *scale.data_subset)
            self.overrides["data"] = {"root": str(root), "download": False}
        self._dataset = None
        self._val = None
        self.results: list[dict[str, Any]] = []
        self.facts: dict[str, Any] = {"trainings": 0, "trainings_reused": 0,
                                      "models_loaded": 0, "train_seconds": 0.0,
                                      "cohorts": [], "budget": {}}

    # ------------------------------------------------------------------ configs and data

    def config(self, model: str, length: int, repeat: int) -> dict[str, Any]:
        family = MODELS[model]
        updates: dict[str, Any] = {
            "general": {"num_epochs": int(length), "repeat_number": int(repeat),
                        "experiment_name": f"reproduction-{self.scale.name}"},
            "model": {"model_class": family,
                      family: {"conf_name": model,
                               "repetition_config": {"global": 1, "layer_wise_mapped": None}}},
            "artifact_root": str(self.artifact_root), "device": self.device,
            "cohort": {"strategy": "auto"}}
        deep_update(updates, self.overrides)
        config = merged_with_defaults(updates)
        if family != "LeNet":
            config["model"].pop("LeNet", None)
        return config

    def data_key(self) -> dict[str, Any]:
        """What the measurements' data are (part of every cache key)."""
        d = self.config(self.scale.models[0], 1, 0)["data"]
        return {"dataset": d["dataset"], "subset": list(self.scale.data_subset or ()),
                "version": MEASURE_VERSION}

    def dataset(self):
        if self._dataset is None:
            self._dataset = load_dataset(validate_config(self.config(self.scale.models[0], 1, 0)))
        return self._dataset

    def validation(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._val is None:
            ds = self.dataset()
            xs, ys = zip(*ds.val_loader(torch.device(self.device)))
            self._val = (torch.cat(xs), torch.cat(ys))
        return self._val

    def count_training(self, trained: bool, seconds: float) -> None:
        self.facts["models_loaded"] += 1
        self.facts["trainings"] += int(trained)
        self.facts["train_seconds"] += seconds if trained else 0.0

    # ------------------------------------------------------------------ the plan

    def cuts(self, model: str) -> FamilyCuts:
        return self.scale.cuts[MODELS[model]]

    def planned_model_epochs(self) -> dict[str, int]:
        """Model-epochs of the plan per model over all repeats ([-1, 1] clamps of
        'if_binding' families counted at every length: an upper bound)."""
        out = {}
        for m in self.scale.models:
            c = self.cuts(m)
            out[m] = len(self.scale.repeats) * c.model_epochs(
                3, len(self.scale.site_factors), m in BN_MODELS, unit_clamps=sum(c.lengths))
        return out

    def measure_epoch_seconds(self, steps: int = 8, members: int = 8) -> dict[str, float]:
        """Seconds per training epoch of each model on this machine, from ``steps`` timed
        Adam steps on real batches (× steps per epoch). A model whose noise-trained variants
        a cohort trains vectorised here (``cohort.strategy: auto``) is timed as such: a
        stacked network of ``members`` copies, per member."""
        ds = self.dataset()
        out = {}
        for m in self.scale.models:
            p = prepare(self.config(m, 1, 0), dataset=ds)
            copies = [p]
            for _ in range(members - 1):
                copies.append(prepare(self.config(m, 1, 0), dataset=ds))
            strategy, _ = choose_strategy("auto", copies, [list(range(members))], p.device)
            batches = iter(ds.train_loader(p.device, epoch=0, seed=0))
            x, y = next(batches)
            if strategy == "vectorised":
                net = StackedNetwork([c.model for c in copies])
                opt = stack_adam(net, [torch.optim.Adam(c.model.parameters(), lr=1e-3)
                                       for c in copies])
                per_member = members
                step = lambda: train_epoch_stacked(net, opt, [(x, y)], None,  # noqa: E731
                                                   [None] * members)
            else:
                opt = torch.optim.Adam(p.model.parameters(), lr=1e-3)
                per_member = 1

                def step():
                    p.model.train()
                    opt.zero_grad()
                    p.criterion(p.model(x), y).backward()
                    opt.step()
            step()   # warm-up
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            per_step = (time.perf_counter() - t0) / steps / per_member
            out[m] = per_step * math.ceil(ds.num_train / x.shape[0])
        return out

    def budget(self) -> dict[str, Any]:
        """The budget printout of the protocol: measured epoch cost × planned model-epochs,
        and its one cut: when the prediction (with evaluations) exceeds
        :data:`BUDGET_LIMIT_HOURS`, the LeNets' GaussMul σ = 1 is dropped, before anything
        runs (docs/reproduction/PROTOCOL_medium.md, Budget).

        The decision is taken once per run: the first start writes it (with its measured
        figures) to ``budget.json`` in the cache root, and every later start of the same
        scale reuses it, so a run resumed on a slower or busier machine does not change its
        plan half-way (a fresh timing of a few steps moves by tens of per cent here)."""
        decided = self.cache.root / "budget.json"
        try:
            b = json.loads(decided.read_text())
        except (FileNotFoundError, ValueError):
            b = None
        if b is not None and b.get("scale") == self.scale.name:
            if b.get("cut"):
                self._apply_cut()
            log.info("budget of scale %s: decided at the run's first start (%s): %s h with "
                     "evaluations, %s; reused", self.scale.name, b.get("decided_at"),
                     b.get("with_evaluations_hours"), b.get("cut") or "no cut")
            self.facts["budget"] = b
            return b
        cost = self.measure_epoch_seconds()

        def predict() -> dict[str, Any]:
            epochs = self.planned_model_epochs()
            per_model = {m: epochs[m] * cost[m] for m in epochs}
            total = sum(per_model.values())
            return {"model_epochs": epochs,
                    "epoch_seconds": {m: round(c, 3) for m, c in cost.items()},
                    "minutes": {m: round(v / 60, 1) for m, v in per_model.items()},
                    "training_hours": round(total / 3600, 2),
                    "with_evaluations_hours": round(1.15 * total / 3600, 2)}
        b = predict()
        lenet = self.scale.cuts.get("LeNet")
        if b["with_evaluations_hours"] > BUDGET_LIMIT_HOURS and lenet is not None \
                and 1.0 in lenet.mul_sigmas:
            before = b["with_evaluations_hours"]
            self._apply_cut()
            b = predict()
            b["cut"] = (f"predicted {before} h > {BUDGET_LIMIT_HOURS} h: the LeNets' GaussMul "
                        f"σ = 1 is dropped (the protocol's cut), now {b['with_evaluations_hours']}"
                        " h")
        lines = [f"budget of scale {self.scale.name} (vectorised where a cohort trains so; "
                 "[-1, 1] clamps of the LeNets counted at every length: an upper bound):"]
        lines += [f"  {m:<12} {b['model_epochs'][m]:>5} model-epochs × {cost[m]:.2f} s = "
                  f"{b['minutes'][m]:.1f} min" for m in b["model_epochs"]]
        lines.append(f"  training {b['training_hours']:.2f} h, with evaluations (+15 %) "
                     f"{b['with_evaluations_hours']:.2f} h")
        if "cut" in b:
            lines.append(f"  {b['cut']}")
        log.info("\n".join(lines))
        b["scale"] = self.scale.name
        b["decided_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        self.cache.root.mkdir(parents=True, exist_ok=True)
        decided.write_text(json.dumps(b, indent=1, sort_keys=True) + "\n")
        self.facts["budget"] = b
        return b

    def _record_start(self, start: dict[str, Any]) -> None:
        """This start's record (``starts/<time>-<pid>.json`` in the cache root, rewritten
        after every cell): the run time of a run continued over several starts and sessions
        is the sum over these records."""
        d = self.cache.root / "starts"
        d.mkdir(parents=True, exist_ok=True)
        name = start["started"].replace(" UTC", "").replace(" ", "T").replace(":", "")
        (d / f"{name}-{start['pid']}.json").write_text(json.dumps(start) + "\n")

    def starts(self) -> list[dict[str, Any]]:
        """Every start's record of this run (those that trained something), oldest first."""
        out = []
        for f in sorted((self.cache.root / "starts").glob("*.json")):
            try:
                rec = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if rec.get("cells"):
                out.append(rec)
        return out

    def _apply_cut(self) -> None:
        """The protocol's one cut: the LeNets' GaussMul σ = 1 dropped."""
        lenet = self.scale.cuts["LeNet"]
        cuts = dict(self.scale.cuts)
        cuts["LeNet"] = dataclasses.replace(
            lenet, mul_sigmas=tuple(s for s in lenet.mul_sigmas if s != 1.0))
        self.scale = dataclasses.replace(self.scale, cuts=cuts)

    # ------------------------------------------------------------------ running

    def run(self, *, budget: bool = True) -> "Convergence":
        t0 = time.perf_counter()
        start = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                 "pid": os.getpid(), "models": list(self.scale.models), "cells": []}
        if budget:
            self.budget()
        for m in self.scale.models:
            for length in self.cuts(m).lengths:
                for r in self.scale.repeats:
                    t_cell = time.perf_counter()
                    before = self.facts["trainings"]
                    self.cell(m, length, r)
                    took = time.perf_counter() - t_cell
                    log.info("%s, %d epochs, repeat %d: done (%.0fs)", m, length, r, took)
                    # tenths of a second, cells rounded down and the total up, so that the
                    # cells of a record never add up to more than its wall time
                    if self.facts["trainings"] > before:
                        start["cells"].append([m, int(length), int(r),
                                               math.floor(took * 10) / 10])
                    start["wall_seconds"] = math.ceil((time.perf_counter() - t0) * 10) / 10
                    if start["cells"]:      # a start that only reads the cache leaves none
                        self._record_start(start)
        self.facts["wall_seconds"] = round(time.perf_counter() - t0, 1)
        self.facts["starts"] = self.starts()
        self.facts["cache"] = {"hits": self.cache.hits, "writes": self.cache.writes,
                               "root": str(self.cache.root)}
        return self

    def _curve_settings(self) -> dict[str, Any]:
        s = self.scale
        return {"draws": s.eval_repeats, "per_decade": s.lattice_per_decade,
                "decades": s.refine_decades}

    def cell(self, model: str, length: int, repeat: int) -> None:
        """Every model of one (model, length, repeat) and its measurements."""
        s, cuts = self.scale, self.cuts(model)
        base = self.config(model, length, repeat)
        vc = validate_config(base)
        n_sites = len(vc.site_names)
        kinds = model_site_kinds(base["model"])
        h_clean = training_hash(vc)
        clean = _Loaded(self, base)
        seed = ("medium", model, length, repeat)
        curve = self._curve_settings()

        dk = self.data_key()

        def measure(kind: str, params: Mapping[str, Any]) -> Any:
            return self.cache.get_or_compute(h_clean, kind, {**dk, **params},
                                             lambda: self._compute(kind, params, clean, chance,
                                                                   seed))

        # ---- the clean model: noise-free accuracy, weights, activations, σ_mid curves
        chance = math.nan  # (the noise-free measurement does not use it)
        nf = measure("noise_free", {})
        chance = 100.0 / nf["num_classes"]
        ref = nf["accuracy"]
        rec_clean = self._record(model, length, repeat, Variant("clean", "clean"), h_clean)
        m = rec_clean["m"]
        m["noise_free"] = nf
        m["weights"] = measure("weights", {})
        m["activations"] = measure("activations", {"n": s.activation_samples})
        m["global_curve"] = measure("global_curve", {
            "range": list(s.global_range), "reference": ref, "max_evals": s.global_max_evals,
            **curve})
        m["site_curves"] = [measure("site_curve", {
            "range": list(s.sigma_range), "reference": ref, "max_evals": s.walk_max_evals,
            "site": k, **curve}) for k in range(n_sites)]
        g_mid, _ = seed_sigma_mid(m["global_curve"], chance)
        site_mids = [seed_sigma_mid(c, chance)[0] for c in m["site_curves"]]
        g_sigma = round_sig(g_mid)
        m["plans"] = measure("plans", {"sigma": g_mid, "site_sigma_mid": site_mids,
                                       "budgets": list(s.budgets), "draws": s.eval_repeats})

        # ---- the noise-trained variants of the cell
        bound = round_sig(max(r["max_abs"] for r in m["weights"]["layers"]), 6)
        variants = [Variant("GaussAdd", "global", {"noise_settings": {
                        "default": _noise("GaussAdd", g_sigma)}}, sigma=g_sigma),
                    Variant("clamp ±max|w|", "clamp_max", {
                        "noise_settings": {"default": _noise("GaussAdd", g_sigma)},
                        "general": {"weight_clamping": {"min": -bound, "max": bound}}},
                        sigma=g_sigma, clamp=bound)]
        unit = Variant("clamp [-1, 1]", "clamp_unit", {
            "noise_settings": {"default": _noise("GaussAdd", g_sigma)},
            "general": {"weight_clamping": {"min": -1.0, "max": 1.0}}}, sigma=g_sigma, clamp=1.0)
        if cuts.unit_clamp == "always":
            variants.append(unit)
        if length in cuts.per_site_lengths:
            for k in select_sites(kinds, s.per_site_rule):
                for f in s.site_factors:
                    sig = round_sig(f * site_mids[k])
                    variants.append(Variant(f"site {k} ×{f:.3g}", "site", {"noise_settings": {
                        "default": {"noise_type": "NoNoise"},
                        "layer_wise": {"layer_index": k, **_noise("GaussAdd", sig)}}},
                        sigma=sig, site=k, factor=f))
        if length in cuts.mul_lengths:
            for sig in cuts.mul_sigmas:
                variants.append(Variant(f"GaussMul σ={sig:g}", "mul", {"noise_settings": {
                    "default": {"noise_type": "NoNoise"},
                    "layer_wise": {"layer_index": s.mul_site, **_noise("GaussMul", sig)}}},
                    sigma=sig, site=s.mul_site))
        if model in BN_MODELS and length in cuts.max_noise_lengths:
            variants.append(Variant("MAX noise", "max_noise", {"noise_settings": {
                "default": _noise("GaussMul", s.max_noise_sigma)}}, sigma=s.max_noise_sigma))
        recs = self._train_and_measure(model, length, repeat, base, variants, clean, rec_clean,
                                       ref, chance, seed)
        if cuts.unit_clamp == "if_binding":
            glob = next(r for r in recs if r["kind"] == "global")
            peak = max((r["max_abs"] for r in glob["m"]["weights"]["layers"]), default=math.nan)
            rec_clean["unit_clamp_binds"] = bool(peak > 1.0)
            if peak > 1.0:
                self._train_and_measure(model, length, repeat, base, [unit], clean, rec_clean,
                                        ref, chance, seed)

    def _record(self, model, length, repeat, v: Variant, h: str) -> dict[str, Any]:
        rec = {"model": model, "length": length, "repeat": repeat, "variant": v.label,
               "kind": v.kind, "sigma": v.sigma, "site": v.site, "factor": v.factor,
               "clamp": v.clamp, "hash": h, "m": {}}
        self.results.append(rec)
        return rec

    def _needs(self, v: Variant, ref: float) -> list[tuple[str, dict[str, Any]]]:
        """(kind, params) of every measurement of a noise-trained variant."""
        s, curve = self.scale, self._curve_settings()
        out = [("noise_free", {}), ("weights", {}), ("activations", {"n": s.activation_samples})]
        if v.kind in ("global", "clamp_max", "clamp_unit"):
            out.append(("global_curve", {"range": list(s.global_range), "reference": ref,
                                         "max_evals": s.global_max_evals, **curve}))
        elif v.kind == "site":
            out.append(("site_accuracy", {"site": v.site, "sigma": v.sigma,
                                          "draws": s.eval_repeats}))
            if v.factor == 1.0:
                out.append(("site_curve", {"range": list(s.sigma_range), "reference": ref,
                                           "max_evals": s.walk_max_evals, "site": v.site,
                                           **curve}))
        elif v.kind == "mul":
            out.append(("mul_accuracy", {"site": v.site, "sigma": v.sigma,
                                         "draws": s.eval_repeats}))
        elif v.kind == "max_noise":
            out.append(("max_noise_accuracy", {"sigma": v.sigma, "draws": s.eval_repeats}))
        return out

    def _compute(self, kind: str, params: Mapping[str, Any], L: _Loaded, chance: float,
                 seed: tuple) -> Any:
        s, val = self.scale, self.validation()
        curve = {"draws": params.get("draws", s.eval_repeats),
                 "per_decade": s.lattice_per_decade, "decades": s.refine_decades}
        if kind == "noise_free":
            return {"accuracy": M.accuracy_draws(L.model, val, draws=1,
                                                 seed_parts=seed)["accuracy"][0],
                    "num_classes": int(L.p.dataset.num_classes)}
        if kind == "weights":
            return M.weight_summary(L.model)
        if kind == "activations":
            return M.activation_summary(L.model, val[0][:s.activation_samples])
        if kind == "global_curve":
            return M.global_curve(L.model, val, reference=params["reference"], chance=chance,
                                  seed_parts=(*seed, "global"), sigma_range=s.global_range,
                                  max_evals=s.global_max_evals, **curve)
        if kind == "site_curve":
            return M.site_curve(L.site_evaluator, params["site"], reference=params["reference"],
                                chance=chance, seed_parts=(*seed, "site"),
                                sigma_range=s.sigma_range, max_evals=s.walk_max_evals, **curve)
        if kind == "plans":
            return M.plan_accuracies(L.model, val, sigma=params["sigma"],
                                     site_sigma_mid=params["site_sigma_mid"],
                                     budgets=params["budgets"], draws=params["draws"],
                                     seed_parts=(*seed, "plans"))
        n = len(L.model.noise_sites)
        if kind in ("site_accuracy", "mul_accuracy"):
            noise = "GaussAdd" if kind == "site_accuracy" else "GaussMul"
            return M.accuracy_draws(L.model, val, M.noise_configs(n, noise, params["sigma"],
                                                                  [params["site"]]),
                                    draws=params["draws"], seed_parts=(*seed, kind,
                                                                        params["site"]))
        if kind == "max_noise_accuracy":
            configs = M.noise_configs(n, "GaussMul", params["sigma"])
            f32 = M.accuracy_draws(L.model, val, configs, draws=params["draws"],
                                   seed_parts=(*seed, kind))
            m64 = M.as_float64(L.model)
            val64 = (val[0].double(), val[1])
            f64 = M.accuracy_draws(m64, val64, configs, draws=params["draws"],
                                   seed_parts=(*seed, kind))
            clean32 = M.accuracy_draws(L.model, val, draws=1, seed_parts=seed)["accuracy"][0]
            clean64 = M.accuracy_draws(m64, val64, draws=1, seed_parts=seed)["accuracy"][0]
            return {"float32": f32, "float64": f64, "noise_free_float32": clean32,
                    "noise_free_float64": clean64, "n_sites": n}
        raise ValueError(f"unknown measurement {kind!r}")

    def _train_and_measure(self, model, length, repeat, base, variants, clean: _Loaded,
                           rec_clean, ref, chance, seed) -> list[dict[str, Any]]:
        """Measure every variant (and the clean model at the same noise), training the
        variants with a missing measurement as one cohort first."""
        configs = member_configs(base, [dict(v.overrides) for v in variants])
        hashes = [training_hash(validate_config(c)) for c in configs]
        dk = self.data_key()
        missing = [i for i, (v, h) in enumerate(zip(variants, hashes))
                   if any(not self.cache.has(h, kind, {**dk, **p})
                          for kind, p in self._needs(v, ref))]
        if missing:
            t0 = time.perf_counter()
            res = run_cohort(base, [dict(variants[i].overrides) for i in missing],
                             progress=False)
            c = res["cohort"]
            trained = len(c["members_trained"])
            self.facts["trainings"] += trained
            self.facts["train_seconds"] += time.perf_counter() - t0 if trained else 0.0
            self.facts["cohorts"].append({"model": model, "length": length, "repeat": repeat,
                                          "members": len(missing), "trained": trained,
                                          "strategy": c["strategy"],
                                          "seconds": round(time.perf_counter() - t0, 1)})
            log.info("%s, %d epochs, repeat %d: cohort of %d (%d trained, %s)", model, length,
                     repeat, len(missing), trained, c["strategy"])
        recs = []
        for v, h, config in zip(variants, hashes, configs):
            loaded = _Loaded(self, config)
            rec = self._record(model, length, repeat, v, h)
            for kind, p in self._needs(v, ref):
                rec["m"][kind] = self.cache.get_or_compute(
                    h, kind, {**dk, **p},
                    lambda kind=kind, p=p: self._compute(kind, p, loaded, chance, seed))
            recs.append(rec)
            # the clean model under the same noise, for the comparison
            cm = rec_clean["m"]
            if v.kind in ("site", "mul", "max_noise"):
                kind = {"site": "site_accuracy", "mul": "mul_accuracy",
                        "max_noise": "max_noise_accuracy"}[v.kind]
                p = next(p for k, p in self._needs(v, ref) if k == kind)
                cm.setdefault(kind, {})[f"{v.site}:{v.sigma!r}"] = self.cache.get_or_compute(
                    rec_clean["hash"], kind, {**dk, **p},
                    lambda kind=kind, p=p: self._compute(kind, p, clean, chance, seed))
            del loaded
        return recs
