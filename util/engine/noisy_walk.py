"""The noisy-training walk (``train.py walk with walk.train=true``): one model per site × σ,
trained with that noise at that site in training *and* evaluation, beside the walk of the
clean model.

The paper runs each noisy-training point as its own job. Here the points are the members of
one cohort (:func:`util.engine.cohort.run_cohort`, the members made by
:func:`util.config.grid_members`): they train on shared batches, and each writes its own
checkpoint under its training hash, so every model is its single run's
(``train.py with noise_settings.layer_wise={site, σ, enable_in_training: true,
enable_in_eval: true}``: bit for bit with ``cohort.strategy: member-serial``, up to float
rounding and its own noise draws when vectorised), a second walk reuses them all, and a killed
walk resumes. The walk config's ``cohort.strategy`` and ``cohort.max_members`` say how the
cohort trains.

The clean model (the config's own, reused or trained first) is always walked too, at the same
σ: it costs evaluations only, and gives the clean-trained curve every noise-trained one is
compared with (and the clean accuracy both curves' midpoint level is taken from, as the
analysis does for noisy-training runs). With ``walk.sigma_factors`` the clean walk is the
midpoint search, and the noise-trained σ of a site are factor × its clean σ_mid.

A member's evaluation repeat 0 is its single run's final evaluation (its result's
``final``), so the walk's accuracy is that run's to the float; repeats 1.. redraw the
evaluation noise (seeded ``(seed, "walk", site, σ, repeat)``) on the member's trained model.
The σ_mid of the noise-trained curve comes from those evaluations with the project's midpoint
estimator; a midpoint search does not apply (every σ costs a training).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
from typing import Any, Mapping

from noise.config import noise_config_to_dict

from ..artifacts import load_torch
from ..config import ConfigError, WALK_DEFAULTS, grid_members, validate_config
from .calibration import calibrate_for_eval, calibrate_for_walk
from .cohort import run_cohort, validate_members
from .experiment import MetricLogger, build_result, obtain_trained_model, prepare
from .loops import evaluate
from .seeding import seed_torch
from .walk import eval_loader, sigma_mid_entry, walk_model, write_evaluations

log = logging.getLogger(__name__)

__all__ = ["run_noisy_training_walk", "member_base"]


def member_base(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config every member deep-updates: the walk's config as a plain single run (walk
    section at its defaults, no cohort section, no ``layer_wise`` noise: the member sets it)."""
    base = {k: copy.deepcopy(v) for k, v in config.items() if k != "cohort"}
    base["walk"] = copy.deepcopy(WALK_DEFAULTS)
    base.setdefault("noise_settings", {})
    base["noise_settings"] = {**base["noise_settings"], "layer_wise": None}
    return base


def _grid(w, sites, sigmas) -> dict[str, Any]:
    return {"noise_type": w.noise_type, "sigma_key": w.sigma_key, "params": w.params,
            "sites": list(sites), "sigmas": list(sigmas), "enable_in_training": True,
            "enable_in_eval": True}


def run_noisy_training_walk(config: Mapping[str, Any], *, run_store=None, db_collection=None,
                            log_metric: MetricLogger | None = None, progress: bool = True
                            ) -> dict[str, Any]:
    """The walk with ``walk.train``: the clean model's walk, then one noise-trained model per
    site × σ (a cohort), each evaluated under its own noise.

    Returns the eval-only walk's result fields (of the clean model: training history,
    checkpoint, ``clean_accuracy``, ...), with ``evaluations`` holding both curves (each
    record's ``enable_in_training`` says which), ``sigma_mid`` the noise-trained curve's table
    and ``sigma_mid_clean`` the clean one's, and ``noisy_training`` one line per member
    (site, σ, training hash, trained or reused) and the cohort's summary.
    """
    t0 = time.perf_counter()
    vc = validate_config(config, walk=True)
    w = vc.walk
    if not w.train:
        raise ConfigError("walk.train is false: the walk of one trained model is "
                          "util.engine.walk.run_walk")
    n_sites = len(vc.site_names)
    sites = list(w.sites) if w.sites is not None else list(range(n_sites))
    base = member_base(vc.config)
    # every member checked before anything is loaded or written (σ of sigma_factors are known
    # only after the clean walk: the members are checked with a stand-in σ here)
    validate_members(base, grid_members(_grid(w, sites, w.sigmas if w.sigma_factors is None
                                              else [1.0]), n_sites, "walk"))

    p = prepare(vc.config, vc=vc)
    outcome = obtain_trained_model(p, run_store=run_store, db_collection=db_collection,
                                   log_metric=log_metric, progress=progress)
    loader = eval_loader(p)
    clean_settings = w if w.sigma_factors is None else dataclasses.replace(w, search="midpoint")
    calibration = calibrate_for_walk(p, w)   # relative σ: the clean model's site RMS
    clean = walk_model(p.model, loader, p.criterion, clean_settings, seed=vc.seed,
                       num_classes=p.dataset.num_classes, device=p.device,
                       site_names=vc.site_names, progress=progress)
    sigmas = {site: list(w.sigmas) for site in sites}
    if w.sigma_factors is not None:
        for site in sites:
            entry = clean["sigma_mid"][vc.site_names[site]]
            if entry["sigma_mid"] is None:
                raise ConfigError(f"walk.sigma_factors: the clean model has no σ_mid at site "
                                  f"{vc.site_names[site]} ({entry['kind']}); use walk.sigmas")
            if entry["kind"] != "crossing":
                log.warning("site %s: the clean σ_mid %.4g is a %s; the factors scale it",
                            vc.site_names[site], entry["sigma_mid"], entry["kind"])
            sigmas[site] = [f * entry["sigma_mid"] for f in w.sigma_factors]

    members, points = [], []
    for site in sites:
        members += grid_members(_grid(w, [site], sigmas[site]), n_sites, "walk")
        points += [(site, sigma) for sigma in sigmas[site]]
    log.info("noisy-training walk: %d models (%d sites x %d σ), trained as one cohort",
             len(members), len(sites), len(members) // len(sites))
    # how the cohort trains (cohort.strategy, cohort.max_members) is the walk config's
    how = {k: v for k, v in (vc.config.get("cohort") or {}).items()
           if k in ("strategy", "max_members")}
    cohort = run_cohort({**base, "cohort": how}, members, run_store=run_store,
                        db_collection=db_collection, log_metric=log_metric, progress=progress)
    member_vcs = validate_members(base, members)

    records = [{**r, "enable_in_training": False} for r in clean["evaluations"]]
    lines, curves = [], {}
    split = w.eval_split
    for (site, sigma), mvc, r in zip(points, member_vcs, cohort["members"]):
        noise = noise_config_to_dict(mvc.site_configs[site])
        evals = [(r["final"][f"{split}_accuracy"], r["final"][f"{split}_loss"])]
        if w.repeats > 1:
            evals += _redraws(mvc, r["checkpoint_used"], p, loader, site, sigma, w.repeats)
        for rep, (acc, loss) in enumerate(evals):
            records.append({"site": site, "site_name": vc.site_names[site], "noise": noise,
                            "sigma": sigma, "repeat": rep, "accuracy": acc, "loss": loss,
                            "enable_in_training": True})
            curves.setdefault(site, []).append((sigma, acc))
        lines.append({"site": site, "site_name": vc.site_names[site], "sigma": sigma,
                      "training_hash": r["training_hash"], "trained": r["trained"],
                      "checkpoint_source": r["checkpoint_source"],
                      "checkpoint": r["checkpoint_used"], "diverged": r["diverged"]})
    table = {vc.site_names[site]: sigma_mid_entry(site, [s for s, _ in curves[site]],
                                                  [a for _, a in curves[site]],
                                                  clean["clean_accuracy"], clean["chance"])
             for site in sites}

    result = build_result(p, outcome, {k: list(v) for k, v in outcome.history.items()},
                          time.perf_counter() - t0)
    result.update(clean)
    result.update({
        "evaluations": records, "n_evaluations": len(records),
        "sigma_mid": table, "sigma_mid_clean": clean["sigma_mid"],
        "walk_seconds": round(time.perf_counter() - t0, 3),
        "walk": {"noise_type": w.noise_type, "sigma_key": w.sigma_key, "search": w.search,
                 "repeats": w.repeats, "eval_split": split, "train": True,
                 "sigma_factors": list(w.sigma_factors) if w.sigma_factors else None,
                 "clean_search": clean_settings.search, "params": dict(w.params)},
        "noisy_training": {"members": lines, "cohort": cohort["cohort"]},
        "conf_name": vc.conf_name, "calibration": calibration,
    })
    result["artifacts"]["evaluations"] = write_evaluations(vc, records)
    return result


def _redraws(mvc, checkpoint: str, clean_p, loader, site: int, sigma: float, repeats: int
             ) -> list[tuple[float, float]]:
    """Evaluation repeats 1.. of one member: its trained model under its own noise, each
    repeat a new draw (seeded ``(seed, "walk", site, σ, repeat)``); (accuracy, loss) each."""
    mp = prepare(mvc.config, vc=mvc, dataset=clean_p.dataset)
    mp.model.load_state_dict(load_torch(checkpoint, map_location=mp.device)["model_state"])
    calibrate_for_eval(mp)   # relative σ: the member's own site RMS, as its final evaluation
    out = []
    for rep in range(1, repeats):
        seed_torch(mvc.seed, "walk", site, sigma, rep)
        loss, acc = evaluate(mp.model, loader, mp.criterion)
        out.append((acc, loss))
    return out
