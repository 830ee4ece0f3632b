"""Noise sites and the placement of noise configs on them.

A *site* is a point in the forward pass where activations may be perturbed: the network input,
and the output of every conv/linear, BN, ReLU and max-pool layer, ending with the logits. Sites
are numbered in forward order; the paper's results are keyed by that index. That rule is
:data:`SITE_LAYER_KINDS` (which layer types carry a site, and its kind), used both by the model
builder (:mod:`models.builder`) and by :func:`noise.inject` for any torch model; a site's
kind is one of :data:`SITE_KINDS`.

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
from typing import Any, Callable, Mapping, Sequence

from torch import nn

from .config import (FLOAT32_MAX, NoiseConfig, check_finite_float32,
                     parse_noise_config, validate_repetition)
from .operator import NoiseOperator

__all__ = ["NoiseSite", "SITE_KINDS", "SITE_LAYER_KINDS", "SITE_LAYER_TYPES", "layer_site_kind",
           "resolve_site_configs", "resolve_repetitions", "configure", "validate_noise_settings",
           "NOISE_SETTINGS_KEYS", "LAYER_MAPPED_KEYS"]

NOISE_SETTINGS_KEYS = ("default", "layer_wise", "layer_mapped")
LAYER_MAPPED_KEYS = ("noise_type", "std_map", "std_multiplication_factor", "re_normalize_mapping",
                     "std_key_name", "noise_op_kwargs")
REPETITION_KEYS = ("global", "layer_wise_mapped")

#: The kinds of site: the network input, the output of a conv, linear (``fc``), batch-norm,
#: ReLU or max-pool layer, and the logits (the output of the network's last linear layer).
SITE_KINDS = ("input", "conv", "fc", "bn", "relu", "maxpool", "logits")

#: The layer types whose output is a site, with the kind of that site.
SITE_LAYER_KINDS: dict[type[nn.Module], str] = {
    nn.Conv1d: "conv", nn.Conv2d: "conv", nn.Conv3d: "conv", nn.Linear: "fc",
    nn.BatchNorm1d: "bn", nn.BatchNorm2d: "bn", nn.BatchNorm3d: "bn", nn.ReLU: "relu",
    nn.MaxPool1d: "maxpool", nn.MaxPool2d: "maxpool", nn.MaxPool3d: "maxpool",
}
#: The same types as a tuple (for ``isinstance``; the default of :func:`noise.inject`).
SITE_LAYER_TYPES: tuple[type[nn.Module], ...] = tuple(SITE_LAYER_KINDS)


def layer_site_kind(layer: nn.Module) -> str | None:
    """The kind of the site after ``layer`` (subclasses count), None for a layer without one
    (``Flatten``, ``Dropout``, a container, ...)."""
    for layer_type, kind in SITE_LAYER_KINDS.items():
        if isinstance(layer, layer_type):
            return kind
    return None


@dataclass(frozen=True)
class NoiseSite:
    """One site: its forward-order ``index``, readable ``name`` (``'5:conv2'``), ``kind`` (one
    of :data:`SITE_KINDS` for the model families) and operator."""

    index: int
    name: str
    kind: str
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


def _site_index(key: Any, n_sites: int, what: str, unit: str = "site") -> int:
    """An int site index from a YAML/JSON key (MongoDB turns int keys into strings);
    ``unit`` names what is indexed in messages (``layer`` for weight noise)."""
    try:
        if isinstance(key, bool):
            raise TypeError
        idx = int(key) if isinstance(key, (numbers.Integral, str)) else None
        if idx is None or (isinstance(key, str) and key.strip() != str(idx)):
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(f"{what}: {unit} index must be an integer in [0, {n_sites - 1}], "
                         f"got {key!r}") from None
    if not 0 <= idx < n_sites:
        raise ValueError(f"{what}: {unit} index {idx} is out of range for this model, which has "
                         f"{n_sites} {unit}s (valid: 0..{n_sites - 1})")
    return idx


def _section(value: Any, what: str, allowed: Sequence[str]) -> dict:
    """A config section as a dict (None: empty); ValueError naming an unknown key."""
    if value is not None and not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a dict with keys {list(allowed)} or null, "
                         f"got {value!r}")
    section = dict(value or {})
    unknown = set(map(str, section)) - set(allowed)
    if unknown:
        raise ValueError(f"{what}: unknown key {sorted(unknown)[0]!r}; allowed: {list(allowed)}")
    return section


def _layer_mapped_configs(spec: Mapping[str, Any], n_sites: int, section: str = "noise_settings",
                          parse: Callable[[Any], Any] = parse_noise_config,
                          unit: str = "site") -> dict[int, NoiseConfig]:
    what = f"{section}.layer_mapped"
    spec = _section(spec, what, LAYER_MAPPED_KEYS)
    std_map = spec.get("std_map")
    if isinstance(std_map, Sequence) and not isinstance(std_map, str):
        if len(std_map) != n_sites:
            raise ValueError(f"{what}.std_map: a list needs one σ per {unit} "
                             f"({n_sites}), got {len(std_map)}")
        std_map = dict(enumerate(std_map))
    if not isinstance(std_map, Mapping) or not std_map:
        raise ValueError(f"{what}.std_map must be a non-empty "
                         f"{{{unit}: sigma}} map or list, got {std_map!r}")
    factor = spec.get("std_multiplication_factor", 1.0)
    factor = check_finite_float32(f"{what}.std_multiplication_factor", factor)
    if factor < 0:
        raise ValueError(f"{what}.std_multiplication_factor must be a number >= 0, "
                         f"got {factor!r}")
    sigmas = {}
    for key, sigma in std_map.items():
        idx = _site_index(key, n_sites, f"{what}.std_map", unit)
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
            out[idx] = parse({**base, key_name: value})
        except ValueError as err:
            raise ValueError(f"{what}: {err}") from None
    return out


def resolve_site_configs(noise_settings: Mapping[str, Any] | None, n_sites: int, *,
                         section: str = "noise_settings",
                         parse: Callable[[Any], Any] = parse_noise_config,
                         unit: str = "site") -> list[NoiseConfig]:
    """The noise config of every site, in site order (see the module docstring).

    Weight noise (:mod:`noise.weights`) places its configs on layers in the same shape: it
    passes its ``section`` name (for messages), its config parser ``parse`` and
    ``unit='layer'``.
    """
    noise_settings = _section(noise_settings, section, NOISE_SETTINGS_KEYS)
    try:
        default = parse(noise_settings.get("default"))
    except ValueError as err:
        raise ValueError(f"{section}.default: {err}") from None
    configs = [default] * n_sites
    mapped = noise_settings.get("layer_mapped")
    if mapped:
        for idx, cfg in _layer_mapped_configs(mapped, n_sites, section, parse, unit).items():
            configs[idx] = cfg
    layer_wise = noise_settings.get("layer_wise")
    if layer_wise:
        if not isinstance(layer_wise, Mapping):
            raise ValueError(f"{section}.layer_wise must be a dict with 'layer_index' and a "
                             f"noise config, or null, got {layer_wise!r}")
        layer_wise = dict(layer_wise)
        if "layer_index" not in layer_wise:
            raise ValueError(f"{section}.layer_wise needs 'layer_index' (the {unit}, "
                             f"0..{n_sites - 1})")
        idx = _site_index(layer_wise.pop("layer_index"), n_sites,
                          f"{section}.layer_wise.layer_index", unit)
        try:
            configs[idx] = parse(layer_wise)
        except ValueError as err:
            raise ValueError(f"{section}.layer_wise: {err}") from None
    return configs


def resolve_repetitions(repetition_config: Mapping[str, Any] | None, n_sites: int) -> list[int]:
    """Repetition R of every site from a ``repetition_config`` dict."""
    repetition_config = _section(repetition_config, "repetition_config", REPETITION_KEYS)
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
