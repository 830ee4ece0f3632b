"""The hashes that find checkpoints and results: :func:`config_hash` (a whole config),
:func:`training_hash` (what shapes the trained model: the checkpoint folder) and
:func:`eval_noise_hash` (the noise a config evaluates under).

A config's hashes must never move: checkpoints trained before are found by them
(tests/data/config_hashes.json pins them for configs of every section).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from noise.config import noise_config_to_dict
from noise.weights import weight_noise_to_dict

from .cohort import is_default
from .keys import to_plain
from .schema import KEYS, SEED_KEYS, ValidatedConfig, strip_bookkeeping
from .walk import LATE_KEYS, WALK_DEFAULTS
from .weight_noise import is_default as weight_noise_is_default

__all__ = ["config_hash", "training_hash", "eval_noise_hash"]


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
    """Hash of the whole config without sacred/seml bookkeeping keys (and without a cohort
    section at its defaults, nor the walk keys declared later at theirs: configs made before
    they existed keep their hashes)."""
    config = strip_bookkeeping(config)
    if "cohort" in config and is_default(config["cohort"]):
        del config["cohort"]
    if "weight_noise" in config and weight_noise_is_default(config["weight_noise"]):
        del config["weight_noise"]
    walk = config.get("walk")
    if isinstance(walk, Mapping) and any(k in walk for k in LATE_KEYS):
        config["walk"] = {k: v for k, v in walk.items()
                          if not (k in LATE_KEYS and to_plain(v) == WALK_DEFAULTS[k])}
    return _hash(_canonical_numbers(to_plain(config)))


def training_hash(vc: ValidatedConfig) -> str:
    """Identifies a trained model: everything that shapes training, nothing else.

    Two configs with the same hash train the same model. It holds every key declared with
    ``training_hash`` (:data:`util.config.schema.KEYS`), its value resolved: the seed keys as
    the one training seed they give (``train_seed``), the model family's sub-section as its
    ``conf_name`` and ``noise_settings`` as the noise *active in training*, per site with its
    repetition, and ``weight_noise`` as the weight noise active in training (only when there
    is some). Evaluation-only noise, the experiment name and seml's bookkeeping are left
    out, so every eval-only config finds the one noise-free model trained for it.
    """
    hashed: dict[str, dict[str, Any]] = {}
    for key in KEYS:
        if key.training_hash and key.check is not None and key.path not in SEED_KEYS:
            hashed.setdefault(key.section, {})[key.name] = getattr(getattr(vc, key.section),
                                                                   key.name)
    hashed["general"]["train_seed"] = vc.train_seed
    hashed["model"]["conf_name"] = vc.conf_name
    if vc.model.architecture:  # a torchvision model's kwargs (absent elsewhere: hashes kept)
        hashed["model"]["architecture"] = vc.model.architecture
    # The user's numbers are canonicalised (1 and 1.0 train the same model); the training noise
    # comes from the typed noise configs, whose numbers are floats already. Hashing the two
    # apart keeps every hash of a config without integral floats in these sections what it
    # was, so checkpoints trained before numbers were canonicalised are still found.
    out: dict[str, Any] = {s: _canonical_numbers(to_plain(v)) for s, v in hashed.items()}
    out["training_noise"] = None
    if any(c.active(training=True) for c in vc.site_configs):
        out["training_noise"] = []
        for c, r in zip(vc.site_configs, vc.repetitions):
            if c.active(training=True):
                d = noise_config_to_dict(c)
                d.pop("enable_in_eval")
                out["training_noise"].append([d, r])
            else:
                out["training_noise"].append(None)
    if vc.weight_noisy_training:  # only then: hashes of configs without it stay as they were
        out["training_weight_noise"] = [_without_eval_flag(c) if c.active(training=True)
                                         else None for c in vc.weight_noise]
    return _hash(out)


def _without_eval_flag(config) -> dict[str, Any]:
    d = weight_noise_to_dict(config)
    d.pop("enable_in_eval")
    return d


def eval_noise_hash(vc: ValidatedConfig) -> str:
    """Identifies the noise a config's validation runs under (configs sharing one trained
    model may evaluate it under different noise)."""
    sites = [[noise_config_to_dict(c), r] for c, r in zip(vc.site_configs, vc.repetitions)]
    if not vc.weight_noise:  # (no weight noise: the hash it always had)
        return _hash(sites)
    return _hash([sites, [weight_noise_to_dict(c) for c in vc.weight_noise]])
