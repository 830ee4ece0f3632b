"""Weight noise: Gaussian noise on the weights of conv and linear layers (analog in-memory
hardware stores them as noisy conductances), placed on the model's *weight layers* the way
:mod:`noise.placement` places activation noise on sites.

The weight layers of a model are its conv and linear layers (:data:`WEIGHT_LAYER_TYPES`) in
module order, which is forward order for the model families (:func:`weight_layers`); each is
named like a site, ``'0:conv1'``, ``'4:logits'``. Batch-norm parameters are not weights here.

A weight-noise config (:class:`WeightNoise`, built by :func:`parse_weight_noise`) is an
activation noise config of type ``GaussAdd``, ``GaussMul`` or ``NoNoise`` (the combined types
are refused: hardware papers state weight noise as one additive or one multiplicative σ) with
two more keys:

``weight_noise_kind``        when z ~ N(0, 1) is drawn, in eval mode: ``read`` (anew at every
                             forward: read noise), ``programming_pass`` (once per evaluation
                             pass: :func:`new_programming_draw` starts one; every forward of the
                             pass sees the same weights), ``programming_instance`` (once per
                             model instance, from the seed given to :func:`attach_weight_noise`:
                             the same weights in every pass). In train mode every kind draws
                             anew at every forward, so hardware-aware training sees a new draw
                             each step.
``sigma_relative_to_max_w``  ``GaussAdd`` only: σ and μ are in units of the layer's max|W|
                             (aihwkit's convention), recomputed from the current stored weights
                             at every forward; false (the default): σ is absolute.

Formulas (:func:`effective_weight`; s = max|W| when relative, else 1):

============  ====================================
``GaussAdd``  W_eff = W + s·μ + s·σ·z
``GaussMul``  W_eff = W · (μ + σ·z)
============  ====================================

The stored parameter is never modified: the layer's forward computes with W_eff, and autograd
carries the gradient through W_eff to the stored W (the identity for additive noise, the noise
factor for multiplicative; s is not differentiated). The enable flags decide by the layer's
train/eval mode, as for activation noise. Repetition does not apply to weight noise.
"""
from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from . import fast_rng
from .config import (GaussAdd, GaussMul, NoiseConfig, NoNoise, _as_bool, noise_config_to_dict,
                     parse_noise_config)
from .placement import resolve_site_configs

__all__ = ["WEIGHT_NOISE_KINDS", "WEIGHT_NOISE_TYPES", "WEIGHT_LAYER_TYPES", "WeightNoise",
           "parse_weight_noise", "weight_noise_to_dict", "effective_weight", "weight_layers",
           "weight_layer_names", "resolve_weight_configs", "attach_weight_noise",
           "remove_weight_noise", "new_programming_draw", "has_weight_noise"]

WEIGHT_NOISE_KINDS = ("read", "programming_pass", "programming_instance")
WEIGHT_NOISE_TYPES = ("NoNoise", "GaussAdd", "GaussMul")
#: The layers whose weights carry weight noise.
WEIGHT_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_WEIGHT_KEYS = ("weight_noise_kind", "sigma_relative_to_max_w")
_CONV = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}


@dataclass(frozen=True)
class WeightNoise:
    """The weight noise of one layer.

    Attributes:
        noise: the Gaussian noise (``GaussAdd``, ``GaussMul`` or ``NoNoise``) with its enable
            flags.
        weight_noise_kind: ``read``, ``programming_pass`` or ``programming_instance``.
        sigma_relative_to_max_w: σ and μ of ``GaussAdd`` in units of the layer's max|W|.
    """

    noise: NoiseConfig = NoNoise()
    weight_noise_kind: str = "read"
    sigma_relative_to_max_w: bool = False

    def __post_init__(self):
        if self.noise.noise_type not in WEIGHT_NOISE_TYPES:
            raise ValueError(f"weight noise: noise_type {self.noise.noise_type!r} is not "
                             f"supported on weights; allowed: {list(WEIGHT_NOISE_TYPES)}")
        if self.noise.normalize_to_input_size:
            raise ValueError("weight noise: noise key 'normalize_to_input_size' must be false "
                             "(there is no input size on a weight); use "
                             "'sigma_relative_to_max_w' for a σ relative to the layer")
        if getattr(self.noise, "sigma_relative_to", "none") != "none":
            raise ValueError("weight noise: noise key 'sigma_relative_to' must be 'none' "
                             "(activation RMS); use 'sigma_relative_to_max_w' for a σ relative "
                             "to the layer's weights")
        if self.weight_noise_kind not in WEIGHT_NOISE_KINDS:
            raise ValueError(f"weight noise key 'weight_noise_kind' must be one of "
                             f"{list(WEIGHT_NOISE_KINDS)}, got {self.weight_noise_kind!r}")
        relative = _as_bool("sigma_relative_to_max_w", self.sigma_relative_to_max_w)
        object.__setattr__(self, "sigma_relative_to_max_w", relative)
        if relative and isinstance(self.noise, GaussMul):
            raise ValueError("weight noise key 'sigma_relative_to_max_w' must be false for "
                             "GaussMul (multiplicative noise is relative to each weight "
                             "already)")

    @property
    def noise_type(self) -> str:
        return self.noise.noise_type

    @property
    def is_noiseless(self) -> bool:
        return self.noise.is_noiseless

    def active(self, training: bool) -> bool:
        """Whether the noise is applied in the given mode (train/eval)."""
        return self.noise.active(training)


def parse_weight_noise(d: Mapping[str, Any] | WeightNoise | None) -> WeightNoise:
    """A validated :class:`WeightNoise` from a YAML-style dict: a noise config
    (:func:`noise.config.parse_noise_config`) plus ``weight_noise_kind`` and
    ``sigma_relative_to_max_w``. None or ``{}``: no noise. ``ValueError`` names the key."""
    if isinstance(d, WeightNoise):
        return d
    if d is not None and not isinstance(d, Mapping):
        raise ValueError(f"a weight noise config must be a dict with 'noise_type', got {d!r}")
    d = dict(d or {})
    extra = {k: d.pop(k) for k in _WEIGHT_KEYS if k in d}
    try:
        noise = parse_noise_config(d)
    except ValueError as err:
        if "allowed keys" in str(err):
            raise ValueError(f"{err} (and for weight noise: {list(_WEIGHT_KEYS)})") from None
        raise
    return WeightNoise(noise, **extra)


def weight_noise_to_dict(config: WeightNoise) -> dict[str, Any]:
    """The YAML-style dict of ``config`` (inverse of :func:`parse_weight_noise`)."""
    return {**noise_config_to_dict(config.noise),
            "weight_noise_kind": config.weight_noise_kind,
            "sigma_relative_to_max_w": config.sigma_relative_to_max_w}


def effective_weight(w: torch.Tensor, config: WeightNoise, z: torch.Tensor) -> torch.Tensor:
    """W_eff of stored weights ``w`` under ``config`` for the standard normal draw ``z``
    (the formulas of the module docstring; differentiable in ``w``, enable flags ignored)."""
    c = config.noise
    if isinstance(c, GaussAdd):
        scale = w.detach().abs().max() if config.sigma_relative_to_max_w else 1.0
        return w + (z * c.GaussStd + c.GaussMean) * scale
    if isinstance(c, GaussMul):
        return w * (z * c.GaussStd + c.GaussMean)
    return w


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(module name, layer) of every conv and linear layer, in module order (forward order
    for the model families)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYER_TYPES)]


def weight_layer_names(model: nn.Module) -> list[str]:
    """``'0:conv1'``, ``'1:conv2'``, ... : index and module name of every weight layer."""
    return [f"{i}:{name}" for i, (name, _) in enumerate(weight_layers(model))]


def resolve_weight_configs(section: Mapping[str, Any] | None, n_layers: int
                           ) -> list[WeightNoise]:
    """The weight noise of every weight layer from a ``weight_noise`` section ``{default,
    layer_wise, layer_mapped}``, with exactly the shapes and checks of ``noise_settings``
    (:func:`noise.placement.resolve_site_configs`); ``layer_index`` and the ``std_map`` keys
    are weight-layer indices."""
    return resolve_site_configs(section, n_layers, section="weight_noise",
                                parse=parse_weight_noise, unit="layer")


class _LayerNoise:
    """A weight layer's noise and its held draws (not a module: nothing in the state_dict)."""

    def __init__(self, config: WeightNoise, instance_seed: int):
        self.config = config
        self.instance_seed = instance_seed
        #: the draw z of the current pass (programming_pass) or of the instance
        self.draw: torch.Tensor | None = None

    def _z(self, w: torch.Tensor, training: bool) -> torch.Tensor:
        kind = self.config.weight_noise_kind
        if training or kind == "read":
            return fast_rng.normal_like(w.detach())
        if self.draw is None:
            if kind == "programming_instance":  # a function of the seed alone, on any device
                g = torch.Generator().manual_seed(self.instance_seed)
                self.draw = torch.randn(w.shape, generator=g, dtype=torch.float32)
            else:
                self.draw = fast_rng.normal_like(w.detach())
        if self.draw.device != w.device or self.draw.dtype != w.dtype:
            self.draw = self.draw.to(w)
        return self.draw

    def weight(self, w: torch.Tensor, training: bool) -> torch.Tensor:
        if not self.config.active(training):
            return w
        return effective_weight(w, self.config, self._z(w, training))


def _noisy_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's own forward with W_eff in place of its stored weight."""
    w = self.weight_noise.weight(self.weight, self.training)
    if isinstance(self, nn.Linear):
        return F.linear(x, w, self.bias)
    conv = next(f for t, f in _CONV.items() if isinstance(self, t))
    return conv(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def remove_weight_noise(model: nn.Module) -> nn.Module:
    """Every weight layer back to its plain forward (its weights were never changed)."""
    for _, layer in weight_layers(model):
        if "weight_noise" in layer.__dict__:
            del layer.forward, layer.weight_noise
    return model


def attach_weight_noise(model: nn.Module, configs: Sequence[WeightNoise | Mapping | None], *,
                        seed: int | None = None) -> nn.Module:
    """Put ``configs`` (one per weight layer, in :func:`weight_layers` order) on ``model``'s
    weight layers, replacing any weight noise it had; layers whose config is noiseless keep
    their plain forward. ``seed`` fixes the ``programming_instance`` draws (layer i draws
    from ``seed`` and i; None: a seed from torch's generator). Everything is validated before
    any layer is changed."""
    layers = weight_layers(model)
    if len(configs) != len(layers):
        raise ValueError(f"weight noise: one config per weight layer ({len(layers)}) expected, "
                         f"got {len(configs)}")
    configs = [parse_weight_noise(c) for c in configs]
    for (name, layer), cfg in zip(layers, configs):
        if not cfg.is_noiseless and getattr(layer, "padding_mode", "zeros") != "zeros":
            raise ValueError(f"weight noise on layer {name!r}: padding_mode "
                             f"{layer.padding_mode!r} is not supported (only 'zeros')")
    if seed is None:
        seed = int(torch.randint(0, 2 ** 62, ()).item())
    remove_weight_noise(model)
    for i, ((_, layer), cfg) in enumerate(zip(layers, configs)):
        if cfg.is_noiseless:
            continue
        # nn.Module.__setattr__ keeps plain objects in the instance dict: no parameter,
        # buffer or submodule is added, so the state_dict and parameter order stay as they are
        layer.weight_noise = _LayerNoise(cfg, (seed * 1_000_003 + i) % 2 ** 63)
        layer.forward = types.MethodType(_noisy_forward, layer)
    return model


def new_programming_draw(model: nn.Module) -> None:
    """Start a new evaluation pass: every ``programming_pass`` layer draws anew at its next
    forward (``programming_instance`` draws stay)."""
    for _, layer in weight_layers(model):
        state = layer.__dict__.get("weight_noise")
        if state is not None and state.config.weight_noise_kind == "programming_pass":
            state.draw = None


def has_weight_noise(model: nn.Module) -> bool:
    """Whether any weight layer of ``model`` carries weight noise."""
    return any("weight_noise" in layer.__dict__ for _, layer in weight_layers(model))
