"""Repetition plans as a ``multi_run_layers`` seml YAML (``python -m analysis plan``).

:func:`plan_document` builds the seml document (a dict: ``seml``, ``slurm``, ``fixed``,
``grid`` and one sub-experiment per plan), :func:`plan_yaml` writes it with
:func:`yaml.safe_dump` under a comment header, so every value reads back exactly as built.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import yaml

from noise.config import NOISE_TYPES
from util.cluster import REPO_ROOT
from util.config import merged_with_defaults

from .repetition import repetition_plan
from .results import condition_label

log = logging.getLogger(__name__)

__all__ = ["sigma_key", "representative_config", "global_sigma_mid", "plan_document",
           "plan_yaml", "build_plan_yaml"]


def sigma_key(noise_type: str) -> str:
    """The config key that holds the σ of ``noise_type`` (GaussStd or StdAmplitude)."""
    fields = set(NOISE_TYPES[noise_type].__dataclass_fields__)
    for key in ("StdAmplitude", "GaussStd"):
        if key in fields:
            return key
    raise ValueError(f"noise type {noise_type!r} has no single σ key (GaussStd or "
                     "StdAmplitude); a repetition plan cannot set its σ")


def representative_config(records, run_ids: set[str]) -> dict:
    """The full config of the first of the runs ``run_ids`` (a warning where they differ in
    epochs, lr or batch size)."""
    configs = [merged_with_defaults(r.config) for r in records if r.run_id in run_ids]
    if not configs:
        raise ValueError("internal: the condition's runs have no config")
    first = configs[0]
    for key in (("general", "num_epochs"), ("optimizer", "lr"), ("data", "batch_size")):
        values = {c[key[0]].get(key[1]) for c in configs}
        if len(values) > 1:
            log.warning("the measured runs differ in %s (%s); the plan uses %r",
                        ".".join(key), sorted(map(str, values)), first[key[0]][key[1]])
    return first


def global_sigma_mid(table: pd.DataFrame, cond: Mapping[str, Any]) -> float | None:
    """σ_mid of the condition's global curve (noise at every site, R = 1), if there is one."""
    rows = table[table["placement"] == "default"]
    for col in ("dataset", "conf_name", "noise_type", "enable_in_training", "weight_clamping"):
        rows = rows[rows[col] == cond[col]]
    if not pd.isna(cond.get("std_ratio")):
        rows = rows[rows["std_ratio"] == cond["std_ratio"]]
    rows = rows[rows["repetition"] == 1]
    if len(rows) == 1:
        return float(rows["sigma_mid"].iat[0])
    return None


def plan_document(*, config: Mapping, sigma_mid: Sequence[float], n_sites: int,
                  condition: Mapping, budgets: Sequence[float], scalings: Sequence[str],
                  sigmas: Sequence[float], repeats: int, out_path: Path,
                  uniform: bool = True) -> dict[str, Any]:
    """The seml document: one sub-experiment per scaling × budget (and the uniform R =
    budget baseline for integer budgets) with ``model.<class>.repetition_config.
    layer_wise_mapped`` (one R per site, in site order), noise at every site at ``sigmas``,
    ``repeats`` repeats."""
    g, opt, data, model = config["general"], config["optimizer"], config["data"], config["model"]
    mc = model["model_class"]
    conf = model[mc]["conf_name"]
    dataset, noise_type = condition["dataset"], condition["noise_type"]
    training = bool(condition["enable_in_training"])
    base_name = f"{dataset}_{conf}_multi_run_tailored"
    fixed: dict[str, Any] = {"general.num_epochs": int(g["num_epochs"]),
                             "general.experiment_name": base_name}
    if not training:
        # evaluation repeats share one trained model (repeat 0's), as in multi_run_layers
        fixed["general.train_repeat_number"] = 0
    wc = g.get("weight_clamping") or {}
    for bound in ("min", "max"):
        if wc.get(bound) is not None:
            fixed[f"general.weight_clamping.{bound}"] = float(wc[bound])
    for k in ("optimizer_type", "lr_scheduler", "lr"):
        if opt.get(k) is not None:
            fixed[f"optimizer.{k}"] = opt[k]
    fixed["data.dataset"] = dataset
    fixed["data.batch_size"] = int(data["batch_size"])
    if data.get("val_split") is not None:
        fixed["data.val_split"] = float(data["val_split"])
    fixed.update({"model.model_class": mc,
                  "model.criterion": model.get("criterion", "CrossEntropyLoss"),
                  "model.weight_criterion": bool(model.get("weight_criterion", False)),
                  f"model.{mc}.conf_name": conf,
                  f"model.{mc}.repetition_config.global": 1,
                  "noise_settings.default.noise_type": noise_type})
    if not pd.isna(condition.get("std_ratio")):
        fixed["noise_settings.default.StdRatio"] = float(condition["std_ratio"])
    if condition.get("order") in ("mul_add", "add_mul"):
        fixed["noise_settings.default.FirstMulThenAdd"] = int(condition["order"] == "mul_add")
    key = f"noise_settings.default.{sigma_key(noise_type)}"
    if len(sigmas) == 1:
        fixed[key] = float(sigmas[0])
    fixed["noise_settings.default.enable_in_training"] = int(training)
    fixed["noise_settings.default.enable_in_eval"] = 1
    grid: dict[str, Any] = {"general.repeat_number": {"type": "range", "min": 0,
                                                      "max": int(repeats), "step": 1}}
    if len(sigmas) > 1:
        grid[key] = {"type": "choice", "options": [float(s) for s in sigmas]}
    doc: dict[str, Any] = {
        "seml": {"executable": "train.py",
                 "name": f"wn_multi_run_{dataset}_{conf}_tailored",
                 "description": f"{dataset} {conf} per-site repetition plans from measured "
                                f"sigma_mid, {noise_type}",
                 "output_dir": "logs",
                 "project_root_dir": os.path.relpath(REPO_ROOT, out_path.resolve().parent)},
        # without experiments_per_job and GPU options: both come from seml's settings
        "slurm": [{"sbatch_options": {"time": "1-00:00"}}],
        "fixed": fixed,
        "grid": grid,
    }
    for budget in budgets:
        plans = [(f"{s}_b{budget:g}".replace(".", "p"), repetition_plan(sigma_mid, budget, s))
                 for s in scalings]
        if uniform and float(budget).is_integer():
            plans.append((f"uniform_b{budget:g}", [int(budget)] * n_sites))
        for name, plan in plans:
            doc[name] = {"fixed": {"general.experiment_name": f"{base_name}_{name}",
                                   f"model.{mc}.repetition_config.layer_wise_mapped":
                                   [int(r) for r in plan]}}
    return doc


class _PlanDumper(yaml.SafeDumper):
    """yaml.SafeDumper (what yaml.safe_dump uses) with lists of scalars on one line, so that one
    R per site reads as a row."""


_PlanDumper.add_representer(
    list, lambda d, data: d.represent_sequence(
        "tag:yaml.org,2002:seq", data,
        flow_style=all(not isinstance(x, (list, dict)) for x in data)))


def plan_yaml(doc: Mapping[str, Any], comments: Sequence[str] = ()) -> str:
    """``doc`` as YAML text (safe representers only, keys in order) under ``comments``, one
    ``# `` line each; :func:`yaml.safe_load` of the text gives ``doc`` back."""
    header = "".join(f"# {c}".rstrip() + "\n" for c in comments)
    body = yaml.dump(dict(doc), Dumper=_PlanDumper, sort_keys=False, allow_unicode=True,
                     width=100)
    return header + ("\n" if header else "") + body


def build_plan_yaml(*, config: dict, sigma_mid: Sequence[float], kinds: Sequence[str],
                    site_names: Sequence[str], condition: dict, budgets: Sequence[float],
                    scalings: Sequence[str], sigmas: Sequence[float], repeats: int,
                    source: str, out_path: Path, uniform: bool = True,
                    sigma_note: str = "") -> str:
    """The text of a ``multi_run_layers`` seml YAML (:func:`plan_document`) with a header
    that says where the plan came from: the measured condition and σ_mid per site."""
    doc = plan_document(config=config, sigma_mid=sigma_mid, n_sites=len(site_names),
                        condition=condition, budgets=budgets, scalings=scalings,
                        sigmas=sigmas, repeats=repeats, out_path=out_path, uniform=uniform)
    model = config["model"]
    conf = model[model["model_class"]]["conf_name"]
    training = bool(condition["enable_in_training"])
    n_plans = sum(1 for k in doc if k not in ("seml", "slurm", "fixed", "grid"))
    mid_text = ", ".join(f"{name} {s:.3g}" + ("" if k == "crossing" else f" ({k})")
                         for name, s, k in zip(site_names, sigma_mid, kinds))
    comments = [
        f"Multi-run layers, tailored part: {condition['dataset']} · {conf} "
        f"({len(site_names)} sites).",
        "",
        f"Written by `python -m analysis plan` from {source} on {_dt.date.today().isoformat()}.",
        f"{'Noisy-training' if training else 'Eval-only'} {condition['noise_type']} at every "
        f"site at σ = {', '.join(f'{s:.3g}' for s in sigmas)}"
        + (f" ({sigma_note})" if sigma_note else "") + "; site l repeated R_l times (R_l "
        "noise draws averaged),",
        "R_l from the measured σ_mid per site by each scaling of analysis.repetition_plan, "
        "sum R_l = budget × sites.",
        f"Measured condition: {condition_label(condition)}.",
        f"σ_mid per site: {mid_text}.",
        f"Sites: {', '.join(site_names)}.",
        f"{n_plans} plans x {len(sigmas)} σ x {repeats} repeats (general.repeat_number "
        f"0..{repeats - 1}) = {n_plans * len(sigmas) * repeats} experiments.",
    ]
    return plan_yaml(doc, comments)
