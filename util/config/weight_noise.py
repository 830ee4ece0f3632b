"""The weight_noise section: noise on the weights of the conv and linear layers, in the shape of
``noise_settings`` (``default``, ``layer_wise``, ``layer_mapped``; indices are weight layers,
``0:conv1``, ...), each noise config with ``weight_noise_kind`` and ``sigma_relative_to_max_w``
besides (:mod:`noise.weights`).

Each key is checked here as far as it can be without the model; the whole section is resolved
against the model's weight layers by :func:`noise.weights.resolve_weight_configs` in
:func:`util.config.validate_config`. At its defaults (no weight noise) the section is left out of
:func:`util.config.config_hash`, and a section without noise active in training out of the
training hash, so configs from before it keep their hashes.
"""
from __future__ import annotations

from typing import Any, Mapping

from noise.weights import parse_weight_noise

from .keys import ConfigError, Key, check_unknown, defaults_of, to_plain

__all__ = ["WEIGHT_NOISE_KEYS", "WEIGHT_NOISE_DEFAULTS", "is_default", "check_section"]


def _default(path: str, value: Any) -> Any:
    try:
        parse_weight_noise(value)
    except ValueError as err:
        raise ConfigError(f"{path}: {err}") from None
    return value


def _dict_or_null(path: str, value: Any) -> Any:
    if value is not None and not isinstance(value, Mapping):
        raise ConfigError(f"{path} must be a dict or null, got {value!r}")
    return value


#: The weight_noise section, key by key (what the noise in training changes is the trained
#: model: each key enters the training hash with the noise active in training).
WEIGHT_NOISE_KEYS = (
    Key("weight_noise.default", {"noise_type": "NoNoise", "enable_in_training": True,
                                 "enable_in_eval": True}, _default, True,
        "the weight noise of every conv/linear layer: a noise config (GaussAdd, GaussMul or "
        "NoNoise) with weight_noise_kind and sigma_relative_to_max_w"),
    Key("weight_noise.layer_wise", None, _dict_or_null, True,
        "one layer: {layer_index, noise_type, <params>, weight_noise_kind, "
        "sigma_relative_to_max_w, enable_in_training, enable_in_eval}, or null"),
    Key("weight_noise.layer_mapped", None, _dict_or_null, True,
        "σ per layer: {noise_type, std_map: {layer: σ}, std_multiplication_factor, "
        "re_normalize_mapping, std_key_name, noise_op_kwargs}, or null"),
)

WEIGHT_NOISE_DEFAULTS: dict[str, Any] = defaults_of(WEIGHT_NOISE_KEYS, "weight_noise.")


def check_section(section: Any) -> dict[str, Any]:
    """The section as a plain dict (None: the defaults); ``ConfigError`` for a section that
    is not a dict or holds an unknown key."""
    if section is not None and not isinstance(section, Mapping):
        raise ConfigError(f"weight_noise must be a dict {{default, layer_wise, layer_mapped}} "
                          f"or null, got {section!r}")
    section = to_plain(dict(section or {}))
    check_unknown("weight_noise", section, WEIGHT_NOISE_DEFAULTS)
    return {**WEIGHT_NOISE_DEFAULTS, **section}


def is_default(section: Any) -> bool:
    """Whether a config's weight_noise section (None: absent) is at its defaults."""
    if section is None:
        return True
    section = to_plain(section)
    return isinstance(section, dict) and {**WEIGHT_NOISE_DEFAULTS, **section} == \
        WEIGHT_NOISE_DEFAULTS
