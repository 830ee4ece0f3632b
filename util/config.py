"""The experiment config: embedded defaults, validation, and the hashes that find checkpoints.

The schema is the paper's (see docs/config.md). :func:`validate_config` is the one check that
train.py's config hook, the offline YAML validator and the local runner all use: it raises
:class:`ConfigError` naming the key and the allowed values, before anything runs or is written.
"""
from __future__ import annotations

import copy
import hashlib
import json
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from noise.config import (NOISE_TYPES, NoiseConfig, check_finite_float32, noise_config_to_dict,
                          parse_noise_config)
from noise.placement import resolve_repetitions, resolve_site_configs

from .cluster import LocationError, resolve_location

__all__ = ["ConfigError", "DEFAULT_CONFIG", "validate_config", "config_hash", "training_hash",
           "eval_noise_hash", "WALK_DEFAULTS", "WalkSettings", "parse_walk",
           "strip_bookkeeping", "to_plain", "ValidatedConfig", "BOOKKEEPING_KEYS"]

#: Keys sacred and seml add to every config; they never change what a run computes.
BOOKKEEPING_KEYS = ("seed", "db_collection", "overwrite", "seml", "slurm", "__doc__")

DEFAULT_CONFIG: dict[str, Any] = {
    "general": {
        "num_epochs": 5,
        "repeat_number": 0,
        "weight_clamping": {"min": None, "max": None},
        "experiment_name": "default",
        "seed": None,
        # the repeat whose trained model this run uses; None: repeat_number. Eval-only configs
        # with many evaluation repeats (multi_run_layers) set it to share one trained model.
        "train_repeat_number": None,
    },
    "optimizer": {"optimizer_type": "Adam", "lr_scheduler": "CosineAnnealingLR", "lr": 1e-3},
    "data": {"dataset": "FashionMNIST", "batch_size": 128, "root": None, "val_split": None,
             "download": True},
    "model": {
        "model_class": "LeNet",
        "criterion": "CrossEntropyLoss",
        "weight_criterion": False,
        "LeNet": {"conf_name": "LeNet5-BN",
                  "repetition_config": {"global": 1, "layer_wise_mapped": None}},
    },
    "noise_settings": {
        "default": {"noise_type": "NoNoise", "enable_in_training": True, "enable_in_eval": True},
        "layer_wise": None,
        "layer_mapped": None,
    },
    "artifact_root": None,
    "device": "auto",
    "walk": {
        "enabled": False,        # under seml: run the walking sweep instead of a plain run
        "noise_type": "GaussAdd",
        "sigmas": None,          # None: 4 per decade over [1e-2, 1e3]
        "sigma_key": None,       # None: GaussStd, or StdAmplitude for GaussCombined
        "params": {},            # the noise type's other parameters (e.g. StdRatio)
        "repeats": 1,
        "sites": None,           # None: every site
        "search": "grid",        # 'grid', or 'midpoint' (bracketing and bisection in log σ)
        "sigma_range": [1e-2, 1e10],  # the bracket of the midpoint search
        "max_evals": 12,         # σ values per site in the midpoint search
        "tolerance_decades": 0.02,
        "eval_split": "validation",
        "chunk_size": 256,       # samples per forward (small chunks stay in the CPU cache)
        "batch_evals": "auto",   # evaluations per suffix forward (grid search); auto: 1 on CPU
    },
}

SECTION_KEYS = {
    "general": ("num_epochs", "repeat_number", "weight_clamping", "experiment_name", "seed",
                "train_repeat_number"),
    "optimizer": ("optimizer_type", "lr_scheduler", "lr"),
    "data": ("dataset", "batch_size", "root", "val_split", "download"),
}
MODEL_KEYS = ("model_class", "criterion", "weight_criterion")
OPTIMIZERS = ("Adam",)
LR_SCHEDULERS = ("CosineAnnealingLR", "None")
CRITERIA = ("CrossEntropyLoss",)
TOP_LEVEL_KEYS = tuple(DEFAULT_CONFIG) + BOOKKEEPING_KEYS


class ConfigError(ValueError):
    """A config value that cannot run; the message names the key and the allowed values."""


def to_plain(value: Any) -> Any:
    """Plain Python types all the way down (numpy scalars from seml grids, sacred containers)."""
    if isinstance(value, Mapping):
        return {str(k) if not isinstance(k, (int, str)) else k: to_plain(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "item"):  # 0-d numpy / torch
        return to_plain(value.item())
    return value


def strip_bookkeeping(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in BOOKKEEPING_KEYS}


def _canonical_numbers(value: Any) -> Any:
    """Integral floats as ints, all the way down, so that numerically equal values (``1`` and
    ``1.0``, from a YAML or the command line) hash equally. Bools, other floats, inf and NaN
    stay as they are."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _canonical_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical_numbers(v) for v in value]
    return value


def _hash(obj: Any) -> str:
    """A short hash of ``obj``'s plain JSON (callers canonicalise numbers where a user's
    ``1`` and ``1.0`` can both reach it: see :func:`_canonical_numbers`)."""
    text = json.dumps(to_plain(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def config_hash(config: Mapping[str, Any]) -> str:
    """Hash of the whole config without sacred/seml bookkeeping keys."""
    return _hash(_canonical_numbers(to_plain(strip_bookkeeping(config))))


def _require_number(key, value, *, positive=False, integer=False, minimum=None):
    """``value`` as an int (``integer``) or as a float that is finite and fits float32 (the
    precision it is used in); else a ConfigError naming ``key`` and what is allowed."""
    if integer:
        ok = isinstance(value, numbers.Integral) or (isinstance(value, float)
                                                      and value.is_integer())
        if isinstance(value, bool) or not ok:
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        value = int(value)
    else:
        try:
            value = check_finite_float32(key, value)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if positive and value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {value!r}")
    return value


def _check_keys(section: str, given: Mapping, allowed) -> None:
    for key in given:
        if key not in allowed:
            raise ConfigError(f"{section}: unknown key {key!r}; allowed: {list(allowed)}")


class ValidatedConfig:
    """A config that passed :func:`validate_config`, with the parsed parts at hand."""

    def __init__(self, config, model_class, conf_name, site_names, site_configs, repetitions):
        self.config = config
        self.model_class = model_class
        self.conf_name = conf_name
        self.site_names = site_names
        self.site_configs = site_configs
        self.repetitions = repetitions
        self.walk = None  # WalkSettings, when the config is validated for a walk

    @property
    def noisy_training(self) -> bool:
        return any(c.active(training=True) for c in self.site_configs)

    @property
    def seed(self) -> int:
        """Seeds evaluation noise (and training, unless ``train_repeat_number`` is set)."""
        g = self.config["general"]
        return int(g["seed"]) if g.get("seed") is not None else int(g.get("repeat_number", 0))

    @property
    def train_seed(self) -> int:
        """Seeds initialisation, data order, augmentation and training noise."""
        g = self.config["general"]
        if g.get("train_repeat_number") is not None:
            return int(g["train_repeat_number"])
        return self.seed

    @property
    def weight_clamping(self) -> tuple[float, float] | None:
        wc = self.config["general"].get("weight_clamping") or {}
        if wc.get("min") is None and wc.get("max") is None:
            return None
        return wc.get("min"), wc.get("max")


def validate_config(config: Mapping[str, Any], *, walk: bool | None = None) -> ValidatedConfig:
    """Check a full experiment config; raise :class:`ConfigError` on the first problem.

    The ``walk`` section is checked when ``walk`` is true, or when None and
    ``walk.enabled`` is set in the config.
    """
    from data import DATASETS, dataset_names, resolve_name  # lazily: torchvision import cost
    from models import model_site_names, parse_model_config

    config = to_plain(dict(config))
    _check_keys("config", config, TOP_LEVEL_KEYS)
    for section, allowed in SECTION_KEYS.items():
        value = config.get(section)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{section} must be a dict with keys {list(allowed)}, got {value!r}")
        _check_keys(section, value, allowed)
    g, opt, data = config["general"], config["optimizer"], config["data"]

    # integers are stored as ints (1.0 from a YAML grid would fail where a count is needed)
    g["num_epochs"] = _require_number("general.num_epochs", g.get("num_epochs"), positive=True,
                                      integer=True)
    _require_number("general.repeat_number", g.get("repeat_number", 0), integer=True, minimum=0)
    for key in ("repeat_number", "seed", "train_repeat_number"):
        if g.get(key) is not None:
            g[key] = _require_number(f"general.{key}", g[key], integer=True, minimum=0)
    wc = g.get("weight_clamping")
    if wc is not None:
        if not isinstance(wc, Mapping):
            raise ConfigError(f"general.weight_clamping must be {{min, max}} or null, got {wc!r}")
        _check_keys("general.weight_clamping", wc, ("min", "max"))
        lo, hi = wc.get("min"), wc.get("max")
        for name, v in (("min", lo), ("max", hi)):
            if v is not None:
                _require_number(f"general.weight_clamping.{name}", v)
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(f"general.weight_clamping.min ({lo}) must be <= "
                              f"general.weight_clamping.max ({hi})")

    if opt.get("optimizer_type") not in OPTIMIZERS:
        raise ConfigError(f"optimizer.optimizer_type {opt.get('optimizer_type')!r} is not "
                          f"supported; allowed: {list(OPTIMIZERS)}")
    if str(opt.get("lr_scheduler")) not in LR_SCHEDULERS:
        raise ConfigError(f"optimizer.lr_scheduler {opt.get('lr_scheduler')!r} is not "
                          f"supported; allowed: {list(LR_SCHEDULERS)}")
    _require_number("optimizer.lr", opt.get("lr"), positive=True)

    dataset = data.get("dataset")
    try:
        resolve_name(dataset)
    except ValueError:
        raise ConfigError(f"data.dataset {dataset!r} is unknown; allowed: {dataset_names()}") \
            from None
    data["batch_size"] = _require_number("data.batch_size", data.get("batch_size"),
                                         positive=True, integer=True)
    vs = data.get("val_split")
    if vs is not None and (isinstance(vs, bool) or not isinstance(vs, numbers.Real)
                           or not 0 < vs < 1):  # NaN fails the comparison too
        raise ConfigError(f"data.val_split must be a fraction in (0, 1) or null, got {vs!r}")
    if vs is not None and not DATASETS[resolve_name(dataset)].supports_val_split:
        raise ConfigError(f"data.val_split: dataset {resolve_name(dataset)} has official "
                          "validation and test splits; allowed: null")

    for key, value in (("artifact_root", config.get("artifact_root")),
                       ("data.root", data.get("root"))):
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key} must be a folder path (a string) or null, got {value!r}")
        try:
            resolve_location(value, key)
        except LocationError as err:
            raise ConfigError(str(err)) from None

    model = config.get("model")
    if not isinstance(model, Mapping):
        raise ConfigError(f"model must be a dict with 'model_class', got {model!r}")
    try:
        model_class, conf_name, repetition_config = parse_model_config(model)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    from models import MODEL_FAMILIES
    _check_keys("model", model, MODEL_KEYS + tuple(MODEL_FAMILIES))
    if model.get("criterion", "CrossEntropyLoss") not in CRITERIA:
        raise ConfigError(f"model.criterion {model.get('criterion')!r} is not supported; "
                          f"allowed: {list(CRITERIA)}")
    site_names = model_site_names(model)
    n = len(site_names)
    try:
        site_configs = resolve_site_configs(config.get("noise_settings"), n)
        repetitions = resolve_repetitions(repetition_config,  n)
    except ValueError as err:
        raise ConfigError(f"{err} (model {model_class}/{conf_name})") from None
    device = config.get("device", "auto")
    if not isinstance(device, str) or not (device in ("auto", "cpu", "cuda")
                                           or device.startswith("cuda:")):
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    vc = ValidatedConfig(config, model_class, conf_name, site_names, site_configs, repetitions)
    walk_section = config.get("walk")
    if walk_section is not None and not isinstance(walk_section, Mapping):
        raise ConfigError(f"walk must be a dict of walk settings or null, got {walk_section!r}")
    if walk is None:
        enabled = (walk_section or {}).get("enabled", False)
        if not isinstance(enabled, bool) and enabled not in (0, 1):
            raise ConfigError(f"walk.enabled must be true or false, got {enabled!r}")
        walk = bool(enabled)
    if walk:
        canonical = resolve_name(dataset)
        vc.walk = parse_walk(walk_section, n, dataset=canonical,
                             has_test_split=DATASETS[canonical].has_test_split(vs))
    return vc


# ---- the walk section (``train.py walk``, or ``walk.enabled`` under seml) ----------------------

WALK_DEFAULTS: dict[str, Any] = DEFAULT_CONFIG["walk"]
SEARCHES = ("grid", "midpoint")
SPLITS = ("validation", "test")


def default_sigmas() -> list[float]:
    return [float(10 ** (e / 4)) for e in range(-8, 13)]


@dataclass(frozen=True)
class WalkSettings:
    noise_type: str
    sigma_key: str
    params: dict
    sigmas: tuple[float, ...]
    repeats: int
    sites: tuple[int, ...] | None
    search: str
    sigma_range: tuple[float, float]
    max_evals: int
    tolerance_decades: float
    eval_split: str
    chunk_size: int
    batch_evals: int | str = "auto"

    def evals_per_forward(self, device) -> int:
        if self.batch_evals != "auto":
            return int(self.batch_evals)
        return 1 if torch.device(device).type == "cpu" else 8

    def noise(self, sigma: float) -> NoiseConfig:
        """The noise config of one evaluation (active in eval mode only)."""
        return parse_noise_config({"noise_type": self.noise_type, **self.params,
                                   self.sigma_key: sigma, "enable_in_training": False,
                                   "enable_in_eval": True})


def _walk_float(key: str, value: Any) -> float:
    """A finite number that fits float32 (σ values are drawn in float32); ConfigError else."""
    try:
        return check_finite_float32(f"walk.{key}", value)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def parse_walk(walk: Mapping[str, Any] | None, n_sites: int, *, dataset: str | None = None,
               has_test_split: bool = True) -> WalkSettings:
    """Validated walk settings; ``ConfigError`` naming the ``walk.*`` key on bad input.

    ``dataset`` and ``has_test_split`` (whether it has a separate test split with the config's
    ``data.val_split``) decide whether ``eval_split: test`` is allowed.
    """
    if walk is not None and not isinstance(walk, Mapping):
        raise ConfigError(f"walk must be a dict of walk settings, got {walk!r}")
    w = dict(WALK_DEFAULTS)
    for key, value in (walk or {}).items():
        if key not in WALK_DEFAULTS:
            raise ConfigError(f"walk: unknown key {key!r}; allowed: {list(WALK_DEFAULTS)}")
        w[key] = value
    if not isinstance(w["noise_type"], str) or w["noise_type"] not in NOISE_TYPES \
            or w["noise_type"] == "NoNoise":
        raise ConfigError(f"walk.noise_type {w['noise_type']!r} is not a noise type with a σ "
                          f"to walk; allowed: {sorted(set(NOISE_TYPES) - {'NoNoise'})}")
    if w["sigma_key"] is not None and not isinstance(w["sigma_key"], str):
        raise ConfigError(f"walk.sigma_key must be a key of walk.noise_type or null, "
                          f"got {w['sigma_key']!r}")
    sigma_key = w["sigma_key"] or ("StdAmplitude" if w["noise_type"] == "GaussCombined"
                                   else "GaussStd")
    params = w["params"]
    if params is not None and not (isinstance(params, Mapping)
                                   and all(isinstance(k, str) for k in params)):
        raise ConfigError(f"walk.params must be a dict of {w['noise_type']}'s keys (e.g. "
                          f"{{StdRatio: 0.5}}) or null, got {params!r}")
    sigmas = default_sigmas() if w["sigmas"] is None else w["sigmas"]
    if not isinstance(sigmas, (list, tuple)) or not sigmas:
        raise ConfigError(f"walk.sigmas must be a non-empty list of σ >= 0, got {sigmas!r}")
    sigmas = tuple(_walk_float(f"sigmas[{i}]", s) for i, s in enumerate(sigmas))
    if any(not s >= 0 for s in sigmas):
        raise ConfigError(f"walk.sigmas must all be >= 0, got {list(sigmas)}")
    if w["search"] not in SEARCHES:
        raise ConfigError(f"walk.search {w['search']!r} is unknown; allowed: {list(SEARCHES)}")
    if w["eval_split"] not in SPLITS:
        raise ConfigError(f"walk.eval_split {w['eval_split']!r}; allowed: {list(SPLITS)}")
    if w["eval_split"] == "test" and not has_test_split:
        raise ConfigError(f"walk.eval_split 'test': dataset {dataset} has no separate test split "
                          "with this data.val_split (null: the official test split is the "
                          "validation split); allowed: 'validation', or 'test' with "
                          "data.val_split set")
    for key in ("repeats", "max_evals", "chunk_size"):
        v = w[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"walk.{key} must be an integer >= 1, got {v!r}")
    b = w["batch_evals"]
    if b != "auto" and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
        raise ConfigError(f"walk.batch_evals must be 'auto' or an integer >= 1, got {b!r}")
    if w["search"] == "midpoint" and w["max_evals"] < 3:
        raise ConfigError("walk.max_evals must be >= 3 for the midpoint search")
    lo_hi = w["sigma_range"]
    if not isinstance(lo_hi, (list, tuple)) or len(lo_hi) != 2:
        raise ConfigError(f"walk.sigma_range must be [low, high] with 0 < low < high, "
                          f"got {lo_hi!r}")
    lo, hi = (_walk_float(f"sigma_range[{i}]", v) for i, v in enumerate(lo_hi))
    if not 0 < lo < hi:
        raise ConfigError(f"walk.sigma_range must be [low, high] with 0 < low < high, "
                          f"got {lo_hi!r}")
    tolerance = _walk_float("tolerance_decades", w["tolerance_decades"])
    if tolerance <= 0:
        raise ConfigError(f"walk.tolerance_decades must be > 0 (the bisection's stop width in "
                          f"decades of σ), got {w['tolerance_decades']!r}")
    enabled = w["enabled"]
    if not isinstance(enabled, bool) and enabled not in (0, 1):
        raise ConfigError(f"walk.enabled must be true or false, got {enabled!r}")
    sites = w["sites"]
    if sites is not None:
        if not isinstance(sites, (list, tuple)) or not sites:
            raise ConfigError(f"walk.sites must be a list of site indices or null, got {sites!r}")
        for s in sites:
            if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < n_sites:
                raise ConfigError(f"walk.sites: site {s!r} is out of range; this model has "
                                  f"{n_sites} sites (valid: 0..{n_sites - 1})")
        if len(set(sites)) != len(sites):
            raise ConfigError(f"walk.sites lists a site twice: {list(sites)}")
        sites = tuple(sites)
    settings = WalkSettings(w["noise_type"], sigma_key, dict(params or {}), sigmas,
                            w["repeats"], sites, w["search"], (lo, hi), w["max_evals"],
                            tolerance, w["eval_split"], w["chunk_size"], b)
    try:
        for sigma in {*sigmas, lo, hi}:
            settings.noise(sigma)
    except ValueError as err:
        raise ConfigError(f"walk (noise_type, sigma_key, params): {err}") from None
    return settings



def training_hash(vc: ValidatedConfig) -> str:
    """Identifies a trained model: everything that shapes training, nothing else.

    Two configs with the same hash train the same model: data, model conf, optimizer, epochs,
    training seed (``train_repeat_number``, else ``seed``, else ``repeat_number``) and clamping,
    and the noise *as active in training* (per site, with its repetition). Evaluation-only noise, the experiment name and seml's bookkeeping are left out,
    so every eval-only config finds the one noise-free model trained for it.
    """
    cfg = vc.config
    g = {k: v for k, v in cfg["general"].items()
         if k not in ("experiment_name", "repeat_number", "seed", "train_repeat_number")}
    g["train_seed"] = vc.train_seed
    data = {k: cfg["data"].get(k) for k in ("dataset", "batch_size", "val_split")}
    model = {"model_class": vc.model_class, "conf_name": vc.conf_name,
             "criterion": cfg["model"].get("criterion", "CrossEntropyLoss"),
             "weight_criterion": bool(cfg["model"].get("weight_criterion", False))}
    training_noise = None
    if vc.noisy_training:
        training_noise = []
        for c, r in zip(vc.site_configs, vc.repetitions):
            if c.active(training=True):
                d = noise_config_to_dict(c)
                d.pop("enable_in_eval")
                training_noise.append([d, r])
            else:
                training_noise.append(None)
    # The user's numbers are canonicalised (1 and 1.0 train the same model); the training noise
    # comes from the typed noise configs, whose numbers are floats already. Hashing the two
    # apart keeps every hash of a config without integral floats in these sections what it
    # was, so checkpoints trained before numbers were canonicalised are still found.
    g, optimizer, data = (_canonical_numbers(to_plain(x)) for x in (g, cfg["optimizer"], data))
    return _hash({"general": g, "optimizer": optimizer, "data": data, "model": model,
                  "training_noise": training_noise})


def eval_noise_hash(vc: ValidatedConfig) -> str:
    """Identifies the noise a config's validation runs under (configs sharing one trained
    model may evaluate it under different noise)."""
    return _hash([[noise_config_to_dict(c), r] for c, r in zip(vc.site_configs, vc.repetitions)])


def deep_update(dst: dict, src: Mapping[str, Any]) -> dict:
    """``dst`` updated in place with ``src``, section by section (copies of ``src``'s values)."""
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            deep_update(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)
    return dst


def merged_with_defaults(updates: Mapping[str, Any]) -> dict[str, Any]:
    """DEFAULT_CONFIG recursively updated with ``updates`` (for runs outside sacred)."""
    return deep_update(copy.deepcopy(DEFAULT_CONFIG), to_plain(dict(updates)))
