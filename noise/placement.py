"""Noise sites and the placement of noise configs on them.

A *site* is a point in the forward pass where activations may be perturbed: the network input,
and the output of every conv/linear, BN, ReLU and max-pool layer, ending with the logits. Sites
are numbered in forward order; the paper's results are keyed by that index.

The YAML ``noise_settings`` dict places noise on sites:

- ``default``: a noise config for every site;
- ``layer_mapped``: σ per site from ``std_map`` (overrides ``default`` at the mapped sites);
- ``layer_wise``: one site, ``layer_index`` (overrides both at that site).

Repetition (multi-execution) comes from the model's ``repetition_config``: ``global`` (R at every
site) and ``layer_wise_mapped`` (a list with one R per site, or a ``{site: R}`` map that overrides
``global`` at the listed sites). :func:`configure` changes repetitions only when it is given
them; otherwise every site keeps its own.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from torch import nn

from .config import (FLOAT32_MAX, NoiseConfig, check_finite_float32,
                     parse_noise_config, validate_repetition)
from .operator import NoiseOperator

__all__ = ["NoiseSite", "resolve_site_configs", "resolve_repetitions", "configure",
           "validate_noise_settings", "NOISE_SETTINGS_KEYS", "LAYER_MAPPED_KEYS"]

NOISE_SETTINGS_KEYS = ("default", "layer_wise", "layer_mapped")
LAYER_MAPPED_KEYS = ("noise_type", "std_map", "std_multiplication_factor", "re_normalize_mapping",
                     "std_key_name", "noise_op_kwargs")
REPETITION_KEYS = ("global", "layer_wise_mapped")


@dataclass(frozen=True)
class NoiseSite:
    """One site: its forward-order ``index``, readable ``name`` (``'5:conv2'``) and operator."""

    index: int
    name: str
    operator: NoiseOperator

    @property
    def config(self) -> NoiseConfig:
        return self.operator.config

    @property
    def repetition(self) -> int:
        return self.operator.repetition

    @property
    def label(self) -> str:
        """The name without the index (``'conv2'``)."""
        return self.name.split(":", 1)[1]


def _site_index(key: Any, n_sites: int, what: str) -> int:
    """An int site index from a YAML/JSON key (MongoDB turns int keys into strings)."""
    try:
        if isinstance(key, bool):
            raise TypeError
        idx = int(key) if isinstance(key, (numbers.Integral, str)) else None
        if idx is None or (isinstance(key, str) and key.strip() != str(idx)):
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(f"{what}: site index must be an integer in [0, {n_sites - 1}], "
                         f"got {key!r}") from None
    if not 0 <= idx < n_sites:
        raise ValueError(f"{what}: site index {idx} is out of range for this model, which has "
                         f"{n_sites} sites (valid: 0..{n_sites - 1})")
    return idx


def _layer_mapped_configs(spec: Mapping[str, Any], n_sites: int) -> dict[int, NoiseConfig]:
    what = "noise_settings.layer_mapped"
    if not isinstance(spec, Mapping):
        raise ValueError(f"{what} must be a dict with keys {list(LAYER_MAPPED_KEYS)} or null, "
                         f"got {spec!r}")
    unknown = set(map(str, spec)) - set(LAYER_MAPPED_KEYS)
    if unknown:
        key = sorted(unknown)[0]
        raise ValueError(f"{what}: unknown key {key!r}; allowed keys: {list(LAYER_MAPPED_KEYS)}")
    std_map = spec.get("std_map")
    if isinstance(std_map, Sequence) and not isinstance(std_map, str):
        if len(std_map) != n_sites:
            raise ValueError(f"{what}.std_map: a list needs one σ per site "
                             f"({n_sites}), got {len(std_map)}")
        std_map = dict(enumerate(std_map))
    if not isinstance(std_map, Mapping) or not std_map:
        raise ValueError(f"{what}.std_map must be a non-empty "
                         f"{{site: sigma}} map or list, got {std_map!r}")
    factor = spec.get("std_multiplication_factor", 1.0)
    factor = check_finite_float32(f"{what}.std_multiplication_factor", factor)
    if factor < 0:
        raise ValueError(f"{what}.std_multiplication_factor must be a number >= 0, "
                         f"got {factor!r}")
    sigmas = {}
    for key, sigma in std_map.items():
        idx = _site_index(key, n_sites, f"{what}.std_map")
        sigma = check_finite_float32(f"{what}.std_map[{key!r}] (a σ >= 0)", sigma)
        if sigma < 0:
            raise ValueError(f"{what}.std_map[{key!r}] must be a σ >= 0, got {sigma!r}")
        sigmas[idx] = sigma
    total = sum(sigmas.values())
    if spec.get("re_normalize_mapping", False):
        if total <= 0:
            raise ValueError(f"{what}.re_normalize_mapping needs a std_map with a positive sum")
    else:
        total = 1.0
    key_name = spec.get("std_key_name", "GaussStd")
    kwargs = spec.get("noise_op_kwargs")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ValueError(f"{what}.noise_op_kwargs must be a dict of the noise type's keys or "
                         f"null, got {kwargs!r}")
    base = dict(kwargs or {})
    base["noise_type"] = spec.get("noise_type", "GaussAdd")
    out = {}
    for idx, sigma in sigmas.items():
        value = sigma * factor / total
        if not abs(value) <= FLOAT32_MAX:  # also inf and NaN
            raise ValueError(f"{what}: std_map[{idx}] × std_multiplication_factor = "
                             f"{sigma!r} × {factor!r} does not fit float32 "
                             f"(must be <= {FLOAT32_MAX:.4g})")
        try:
            out[idx] = parse_noise_config({**base, key_name: value})
        except ValueError as err:
            raise ValueError(f"{what}: {err}") from None
    return out


def resolve_site_configs(noise_settings: Mapping[str, Any] | None,
                         n_sites: int) -> list[NoiseConfig]:
    """The noise config of every site, in site order (see the module docstring)."""
    if noise_settings is not None and not isinstance(noise_settings, Mapping):
        raise ValueError(f"noise_settings must be a dict with keys {list(NOISE_SETTINGS_KEYS)}, "
                         f"got {noise_settings!r}")
    noise_settings = dict(noise_settings or {})
    unknown = set(noise_settings) - set(NOISE_SETTINGS_KEYS)
    if unknown:
        key = sorted(unknown)[0]
        raise ValueError(f"noise_settings: unknown key {key!r}; allowed: {list(NOISE_SETTINGS_KEYS)}")
    try:
        default = parse_noise_config(noise_settings.get("default"))
    except ValueError as err:
        raise ValueError(f"noise_settings.default: {err}") from None
    configs = [default] * n_sites
    mapped = noise_settings.get("layer_mapped")
    if mapped:
        for idx, cfg in _layer_mapped_configs(mapped, n_sites).items():
            configs[idx] = cfg
    layer_wise = noise_settings.get("layer_wise")
    if layer_wise:
        if not isinstance(layer_wise, Mapping):
            raise ValueError("noise_settings.layer_wise must be a dict with 'layer_index' and a "
                             f"noise config, or null, got {layer_wise!r}")
        layer_wise = dict(layer_wise)
        if "layer_index" not in layer_wise:
            raise ValueError("noise_settings.layer_wise needs 'layer_index' (the site, "
                             f"0..{n_sites - 1})")
        idx = _site_index(layer_wise.pop("layer_index"), n_sites,
                          "noise_settings.layer_wise.layer_index")
        try:
            configs[idx] = parse_noise_config(layer_wise)
        except ValueError as err:
            raise ValueError(f"noise_settings.layer_wise: {err}") from None
    return configs


def resolve_repetitions(repetition_config: Mapping[str, Any] | None, n_sites: int) -> list[int]:
    """Repetition R of every site from a ``repetition_config`` dict."""
    if repetition_config is not None and not isinstance(repetition_config, Mapping):
        raise ValueError(f"repetition_config must be a dict with keys {list(REPETITION_KEYS)} "
                         f"or null, got {repetition_config!r}")
    repetition_config = dict(repetition_config or {})
    unknown = set(repetition_config) - set(REPETITION_KEYS)
    if unknown:
        key = sorted(unknown)[0]
        raise ValueError(f"repetition_config: unknown key {key!r}; allowed: {list(REPETITION_KEYS)}")
    glob = repetition_config.get("global")
    glob = 1 if glob is None else validate_repetition(glob, "repetition_config.global")
    reps = [glob] * n_sites
    mapped = repetition_config.get("layer_wise_mapped")
    if mapped is None:
        return reps
    if isinstance(mapped, Mapping):
        for key, r in mapped.items():
            idx = _site_index(key, n_sites, "repetition_config.layer_wise_mapped")
            reps[idx] = validate_repetition(r, f"repetition_config.layer_wise_mapped[{key!r}]")
        return reps
    if isinstance(mapped, Sequence) and not isinstance(mapped, str):
        if len(mapped) != n_sites:
            raise ValueError(f"repetition_config.layer_wise_mapped: a list needs one R per site; "
                             f"this model has {n_sites} sites, got {len(mapped)} entries")
        return [validate_repetition(r, f"repetition_config.layer_wise_mapped[{i}]")
                for i, r in enumerate(mapped)]
    raise ValueError("repetition_config.layer_wise_mapped must be a list (one R per site) or a "
                     f"{{site: R}} map, got {mapped!r}")


def validate_noise_settings(noise_settings, n_sites: int, repetition_config=None) -> None:
    """Raise ``ValueError`` (naming the key) if the settings do not fit a model of n_sites."""
    resolve_site_configs(noise_settings, n_sites)
    resolve_repetitions(repetition_config, n_sites)


def configure(model: nn.Module, noise_settings: Mapping[str, Any] | None = None,
              repetition_config: Mapping[str, Any] | None = None,
              *, configs: Sequence[NoiseConfig] | None = None,
              repetitions: Sequence[int] | None = None) -> nn.Module:
    """(Re)place noise on the sites of a built model, without rebuilding it.

    Either ``noise_settings`` (the YAML dict; None: no noise anywhere) or explicit per-site
    ``configs``. Repetitions from ``repetition_config`` (a whole ``repetition_config`` dict:
    sites it does not list get ``global``, default 1) or explicit ``repetitions``; with
    neither, every site keeps its current repetition. Everything is validated before any
    site is changed.
    """
    sites = model.noise_sites
    n = len(sites)
    if configs is None:
        configs = resolve_site_configs(noise_settings, n)
    elif len(configs) != n:
        raise ValueError(f"configs: one per site ({n}) expected, got {len(configs)}")
    configs = [parse_noise_config(c) for c in configs]
    if repetitions is None and repetition_config is None:
        repetitions = [site.repetition for site in sites]
    elif repetitions is None:
        repetitions = resolve_repetitions(repetition_config, n)
    elif len(repetitions) != n:
        raise ValueError(f"repetitions: one per site ({n}) expected, got {len(repetitions)}")
    repetitions = [validate_repetition(r) for r in repetitions]
    for site, cfg, rep in zip(sites, configs, repetitions):
        site.operator.config = cfg
        site.operator.repetition = rep
    return model
