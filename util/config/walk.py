"""The walk section (``train.py walk``, or ``walk.enabled`` under seml): its keys, and the
validated :class:`WalkSettings` the sweep of :mod:`util.engine.walk` takes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from noise.config import NOISE_TYPES, NoiseConfig, parse_noise_config
from noise.weights import WeightNoise, parse_weight_noise

from .keys import (ConfigError, Key, boolean, check_unknown, count, defaults_of, one_of,
                   optional, real, resolve_keys)

__all__ = ["WALK_KEYS", "WALK_DEFAULTS", "WalkSettings", "parse_walk", "default_sigmas",
           "WALKABLE", "walkable_noise_type", "sigma_list", "site_list", "default_sigma_key",
           "LATE_KEYS", "sigma_key_name", "noise_params", "TARGETS"]

SEARCHES = ("grid", "midpoint")
SPLITS = ("validation", "test")
#: What the walk puts noise on: the activations at the sites, or the weights of the conv/linear
#: layers (:mod:`noise.weights`)
TARGETS = ("activations", "weights")
WALKABLE = tuple(sorted(set(NOISE_TYPES) - {"NoNoise"}))


def default_sigmas() -> list[float]:
    """4 per decade over [1e-2, 1e3]."""
    return [float(10 ** (e / 4)) for e in range(-8, 13)]


def default_sigma_key(noise_type: str) -> str:
    """The key σ sets when none is named: ``StdAmplitude`` for ``GaussCombined``, else
    ``GaussStd``."""
    return "StdAmplitude" if noise_type == "GaussCombined" else "GaussStd"


def walkable_noise_type(path: str, value: Any) -> str:
    if not isinstance(value, str) or value not in WALKABLE:
        raise ConfigError(f"{path} {value!r} is not a noise type with a σ to walk; "
                          f"allowed: {list(WALKABLE)}")
    return value


def _sigma(path: str, value: Any) -> float:
    """A finite number that fits float32 (σ values are drawn in float32)."""
    return real()(path, value)


def sigma_list(path: str, value: Any) -> tuple[float, ...]:
    """A non-empty list of σ >= 0, each named by its index when it is not one."""
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{path} must be a non-empty list of σ >= 0, got {value!r}")
    sigmas = tuple(_sigma(f"{path}[{i}]", s) for i, s in enumerate(value))
    for i, s in enumerate(sigmas):
        if not s >= 0:
            raise ConfigError(f"{path}[{i}] must be a σ >= 0, got {s!r}")
    return sigmas


def _factors(path: str, value: Any) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{path} must be a non-empty list of factors > 0 or null, "
                          f"got {value!r}")
    factors = tuple(_sigma(f"{path}[{i}]", f) for i, f in enumerate(value))
    for i, f in enumerate(factors):
        if not f > 0:
            raise ConfigError(f"{path}[{i}] must be a factor > 0, got {f!r}")
    if len(set(factors)) != len(factors):
        raise ConfigError(f"{path} lists a factor twice: {list(factors)}")
    return factors


def sigma_key_name(path: str, value: Any) -> str | None:
    """The noise type's key that σ sets, or null (:func:`default_sigma_key`)."""
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{path} must be a key of the noise type or null, got {value!r}")
    return value


def noise_params(path: str, value: Any) -> dict:
    """The noise type's other keys, a dict (null: none)."""
    if value is not None and not (isinstance(value, Mapping)
                                  and all(isinstance(k, str) for k in value)):
        raise ConfigError(f"{path} must be a dict of the noise type's keys (e.g. "
                          f"{{StdRatio: 0.5}}) or null, got {value!r}")
    return dict(value or {})


def site_list(path: str, value: Any) -> tuple[int, ...]:
    """Site indices (their range is checked against the model by :func:`parse_walk`)."""
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{path} must be a list of site indices or null, got {value!r}")
    for s in value:
        if isinstance(s, bool) or not isinstance(s, int):
            raise ConfigError(f"{path}: site {s!r} is not a site index")
    if len(set(value)) != len(value):
        raise ConfigError(f"{path} lists a site twice: {list(value)}")
    return tuple(value)


def _sigma_range(path: str, value: Any) -> tuple[float, float]:
    wrong = f"{path} must be [low, high] with 0 < low < high, got {value!r}"
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(wrong)
    lo, hi = (_sigma(f"{path}[{i}]", v) for i, v in enumerate(value))
    if not 0 < lo < hi:
        raise ConfigError(wrong)
    return lo, hi


def _tolerance(path: str, value: Any) -> float:
    value = _sigma(path, value)
    if value <= 0:
        raise ConfigError(f"{path} must be > 0 (the bisection's stop width in decades of σ), "
                          f"got {value!r}")
    return value


def _batch_evals(path: str, value: Any) -> int | str:
    if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{path} must be 'auto' or an integer >= 1, got {value!r}")
    return value


#: The walk section, key by key (none of them shapes the trained model).
WALK_KEYS = (
    Key("walk.enabled", False, boolean, False,
        "under seml: run the walking sweep instead of a plain run"),
    Key("walk.noise_type", "GaussAdd", walkable_noise_type, False,
        "the noise type walked through the sites"),
    Key("walk.sigmas", None, optional(sigma_list), False,
        "σ values of the grid search; null: 4 per decade over [1e-2, 1e3]"),
    Key("walk.sigma_key", None, sigma_key_name, False,
        "the noise type's key that σ sets; null: GaussStd, or StdAmplitude for GaussCombined"),
    Key("walk.params", {}, noise_params, False,
        "the noise type's other keys (e.g. {StdRatio: 0.5})"),
    Key("walk.repeats", 1, count, False, "evaluations per site and σ (each with its own noise)"),
    Key("walk.sites", None, optional(site_list), False, "site indices to walk; null: every site"),
    Key("walk.search", "grid", one_of(SEARCHES, "is unknown"), False,
        "grid (every σ of sigmas), or midpoint (bracketing and bisection in log σ)"),
    Key("walk.sigma_range", [1e-2, 1e10], _sigma_range, False,
        "the bracket [low, high] of the midpoint search"),
    Key("walk.max_evals", 12, count, False, "σ values per site in the midpoint search"),
    Key("walk.tolerance_decades", 0.02, _tolerance, False,
        "the midpoint search stops when its bracket is this narrow (decades of σ)"),
    Key("walk.eval_split", "validation", one_of(SPLITS, "is not a split"), False,
        "the split evaluated; test needs a separate test split (GSC2, or data.val_split set)"),
    Key("walk.chunk_size", 256, count, False,
        "samples per forward (small chunks stay in the CPU cache)"),
    Key("walk.batch_evals", "auto", _batch_evals, False,
        "evaluations of one site per suffix forward (grid search); auto: 1 on a CPU, 8 on a GPU"),
    Key("walk.train", False, boolean, False,
        "noisy training: train one model per site and σ with that noise in training and "
        "evaluation (a cohort), beside the clean model's walk"),
    Key("walk.sigma_factors", None, optional(_factors), False,
        "with walk.train: σ = factor x the clean model's σ_mid at each site (instead of "
        "walk.sigmas); null: walk.sigmas"),
    Key("walk.target", "activations", one_of(TARGETS, "is not a walk target"), False,
        "activations (noise at the sites) or weights (weight noise on one conv/linear layer at "
        "a time: walk.sites are then layer indices; walk.params may hold weight_noise_kind and "
        "sigma_relative_to_max_w)"),
)

#: Walk keys declared after configs were hashed: left out of :func:`util.config.config_hash`
#: at their defaults, so configs made before them keep their hashes.
LATE_KEYS = ("train", "sigma_factors", "target")

WALK_DEFAULTS: dict[str, Any] = defaults_of(WALK_KEYS, "walk.")


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
    #: noisy training (one trained model per site and σ); the clean model is walked too
    train: bool = False
    #: with ``train``: σ = factor × the clean σ_mid per site (None: ``sigmas``)
    sigma_factors: tuple[float, ...] | None = None
    #: ``activations`` (sites) or ``weights`` (the conv/linear layers)
    target: str = "activations"

    def evals_per_forward(self, device) -> int:
        if self.batch_evals != "auto":
            return int(self.batch_evals)
        return 1 if torch.device(device).type == "cpu" else 8

    def noise(self, sigma: float) -> NoiseConfig | WeightNoise:
        """The noise config of one evaluation (active in eval mode only): a weight-noise
        config when the walk's target is the weights."""
        parse = parse_weight_noise if self.target == "weights" else parse_noise_config
        return parse({"noise_type": self.noise_type, **self.params, self.sigma_key: sigma,
                      "enable_in_training": False, "enable_in_eval": True})


def parse_walk(walk: Mapping[str, Any] | None, n_sites: int, *, dataset: str | None = None,
               has_test_split: bool = True, n_layers: int | None = None) -> WalkSettings:
    """Validated walk settings; ``ConfigError`` naming the ``walk.*`` key on bad input.

    ``walk.sites`` are checked against ``n_sites``, or against ``n_layers`` (the model's
    conv/linear layers) for ``walk.target: weights``. ``dataset`` and ``has_test_split`` (whether it has a separate test split with the config's
    ``data.val_split``) decide whether ``eval_split: test`` is allowed.
    """
    if walk is not None and not isinstance(walk, Mapping):
        raise ConfigError(f"walk must be a dict of walk settings, got {walk!r}")
    walk = dict(walk or {})
    check_unknown("walk", walk, WALK_DEFAULTS)
    w = {path.rpartition(".")[2]: v
         for path, v in resolve_keys({"walk": walk}, WALK_KEYS).items()}
    if w["eval_split"] == "test" and not has_test_split:
        raise ConfigError(f"walk.eval_split 'test': dataset {dataset} has no separate test split "
                          "with this data.val_split (null: the official test split is the "
                          "validation split); allowed: 'validation', or 'test' with "
                          "data.val_split set")
    if w["search"] == "midpoint" and w["max_evals"] < 3:
        raise ConfigError("walk.max_evals must be >= 3 for the midpoint search")
    if w["sigma_factors"] is not None:
        if w["sigmas"] is not None:
            raise ConfigError("walk.sigma_factors and walk.sigmas cannot both be set: the σ of "
                              "the noise-trained models are either the grid walk.sigmas or "
                              "walk.sigma_factors x the clean σ_mid per site")
        if not w["train"]:
            raise ConfigError("walk.sigma_factors needs walk.train: true (it sets the σ of "
                              "the noise-trained models)")
        if w["max_evals"] < 3:
            raise ConfigError("walk.max_evals must be >= 3: walk.sigma_factors finds the "
                              "clean σ_mid by the midpoint search")
        _sigma("walk.sigma_factors x walk.sigma_range[1]",
               max(w["sigma_factors"]) * w["sigma_range"][1])
    if w["train"] and w["search"] != "grid":
        raise ConfigError(f"walk.search {w['search']!r} cannot be used with walk.train: true "
                          "(every σ of a noise-trained curve costs a training); allowed: "
                          "walk.search 'grid', with walk.sigmas or walk.sigma_factors")
    if w["target"] == "weights" and w["train"]:
        raise ConfigError("walk.target 'weights' cannot be used with walk.train: true (the "
                          "noisy-training walk trains under activation noise); allowed: "
                          "walk.target 'activations' with walk.train")
    if w["target"] == "weights" and n_layers is not None:
        for s in w["sites"] or ():
            if not 0 <= s < n_layers:
                raise ConfigError(f"walk.sites: layer {s!r} is out of range; with walk.target "
                                  f"'weights' the sites are the model's {n_layers} conv/linear "
                                  f"layers (valid: 0..{n_layers - 1})")
    for s in w["sites"] or () if w["target"] == "activations" else ():
        if not 0 <= s < n_sites:
            raise ConfigError(f"walk.sites: site {s!r} is out of range; this model has "
                              f"{n_sites} sites (valid: 0..{n_sites - 1})")
    sigma_key = w["sigma_key"] or default_sigma_key(w["noise_type"])
    sigmas = w["sigmas"] or sigma_list("walk.sigmas", default_sigmas())
    settings = WalkSettings(w["noise_type"], sigma_key, w["params"], sigmas, w["repeats"],
                            w["sites"], w["search"], w["sigma_range"], w["max_evals"],
                            w["tolerance_decades"], w["eval_split"], w["chunk_size"],
                            w["batch_evals"], w["train"], w["sigma_factors"], w["target"])
    try:
        for sigma in {*sigmas, *settings.sigma_range}:
            settings.noise(sigma)
    except ValueError as err:
        raise ConfigError(f"walk (noise_type, sigma_key, params): {err}") from None
    return settings
