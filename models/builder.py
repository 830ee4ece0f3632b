"""One builder for every model family: compact layer specs in, a network with noise sites out.

A spec is a list of tokens read top-down like the architecture:

=================================  ===============================================
``('conv', C, k)`` / ``(.., s, p)``  Conv2d to C channels, kernel k, stride s, padding p
``('fc', N)``                      Linear to N features
``'relu'``                         ReLU
``('maxpool', k)``                 MaxPool2d(k)
``'flatten'``                      Flatten (carries no site)
``'logits'``                       the last Linear, to ``num_classes``
=================================  ===============================================

Batch norm is not written in the specs: the conf's ``batch_norm`` mode inserts a BN after every
conv/fc except the logits (``'none'``, ``'noisy'`` with a site after it, or ``'silent'`` for the
``-BN-noNoise`` variants whose BN has no site). A site sits on the input and after every layer
of a site kind (:data:`noise.placement.SITE_KINDS`, the rule :func:`noise.inject` follows for
any torch model: every layer but Flatten), so site counts follow from the spec (LeNet5 12,
LeNet5-BN 16, ...), and so do the sites' kinds (:func:`site_kinds`).

Two layers have a CPU fast path (:mod:`noise.speed`, off with ``WN_FAST=0``), each beside the
plain torch reference it equals: :meth:`SiteNetwork.forward` (a ReLU fused with the noise after
it) and :class:`MaxPool2d` (strided maxima for inference).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence, Union

import torch
from torch import nn

from noise import speed
from noise.operator import NoiseOperator
from noise.placement import SITE_KINDS, NoiseSite

__all__ = ["ModelConf", "SiteNetwork", "build_network", "site_names", "site_kinds",
           "weight_layer_names"]

Token = Union[str, tuple]
BATCH_NORM_MODES = ("none", "noisy", "silent")


@dataclass(frozen=True)
class ModelConf:
    """A named architecture: its layer spec and batch-norm mode."""

    layers: tuple[Token, ...]
    batch_norm: str = "none"

    def __post_init__(self):
        if self.batch_norm not in BATCH_NORM_MODES:
            raise ValueError(f"batch_norm must be one of {BATCH_NORM_MODES}, got {self.batch_norm!r}")


def _kind(token: Token) -> str:
    return token if isinstance(token, str) else token[0]


def _expand(conf: ModelConf) -> list[tuple[str, Token]]:
    """(kind, token) of every layer, BN inserted; kind 'bn' for batch norms."""
    out = []
    for token in conf.layers:
        kind = _kind(token)
        if kind not in ("conv", "fc", "relu", "maxpool", "flatten", "logits"):
            raise ValueError(f"unknown layer token {token!r}")
        out.append((kind, token))
        if kind in ("conv", "fc") and conf.batch_norm != "none":
            out.append(("bn", None))
    return out


_SITE_LABEL = {"conv": "conv", "fc": "fc", "relu": "relu", "maxpool": "pool", "bn": "bn"}


def _layer_names(expanded) -> list[str]:
    counters: dict[str, int] = {}
    names = []
    for kind, _ in expanded:
        if kind in ("logits", "flatten"):
            names.append(kind)
            continue
        label = _SITE_LABEL[kind]
        counters[label] = counters.get(label, 0) + 1
        names.append(f"{label}{counters[label]}")
    return names


def _has_site(kind: str, conf: ModelConf) -> bool:
    """The layer kinds are the site kinds of :mod:`noise.placement` (Flatten has none); a
    silent BN is the one layer of a site kind without a site."""
    if kind == "bn":
        return conf.batch_norm == "noisy"
    return kind in SITE_KINDS


def site_names(conf: ModelConf) -> list[str]:
    """Site names (``'0:input'``, ``'1:conv1'``, ...) of a conf, without building it."""
    expanded = _expand(conf)
    labels = ["input"] + [name for (kind, _), name in zip(expanded, _layer_names(expanded))
                          if _has_site(kind, conf)]
    return [f"{i}:{label}" for i, label in enumerate(labels)]


def site_kinds(conf: ModelConf) -> list[str]:
    """The kind of every site of a conf (``'input'``, ``'conv'``, ``'bn'``, ..., ``'logits'``:
    :data:`noise.placement.SITE_KINDS`), in site order, without building it."""
    return ["input"] + [kind for kind, _ in _expand(conf) if _has_site(kind, conf)]


def weight_layer_names(conf: ModelConf) -> list[str]:
    """Names of the weight layers (conv, linear, logits: where weight noise sits,
    :mod:`noise.weights`) of a conf, ``'0:conv1'``, ..., without building it; the same as
    :func:`noise.weights.weight_layer_names` of the built network."""
    expanded = _expand(conf)
    names = [name for (kind, _), name in zip(expanded, _layer_names(expanded))
             if kind in ("conv", "fc", "logits")]
    return [f"{i}:{name}" for i, name in enumerate(names)]


class SiteNetwork(nn.Sequential):
    """A sequential network whose noise operators are its own layers.

    ``noise_sites`` lists the sites in forward order; layer names in the ``state_dict`` are the
    readable ones (``conv1.weight``, ``bn3.running_mean``, ``logits.bias``).
    """

    noise_sites: list[NoiseSite]

    @property
    def site_names(self) -> list[str]:
        return [s.name for s in self.noise_sites]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not speed.enabled():
            return super().forward(x)   # the reference: every layer in turn
        return self._fast_forward(x)

    def _fast_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``nn.Sequential.forward``'s values and gradients, faster (a fast path of
        :mod:`noise.speed`): a ReLU and the noise site after it run as one step
        (:meth:`NoiseOperator.relu_then`: one tensor less) unless either has hooks, and a
        hooked layer's output reaches the noise after it as a view, so that training noise,
        written in place where autograd allows, never changes a tensor that a hook may have
        kept."""
        hooked = speed.any_global_hooks()
        layers = list(self._modules.values())
        i, n = 0, len(layers)
        while i < n:
            layer = layers[i]
            nxt = layers[i + 1] if i + 1 < n else None
            if (not hooked and type(layer) is nn.ReLU and not layer.inplace
                    and type(nxt) is NoiseOperator and not speed.has_hooks(layer)
                    and not speed.has_hooks(nxt)):
                x = nxt.relu_then(x)
                i += 2
                continue
            x = layer(x)
            if hooked or speed.has_hooks(layer):
                x = x.view_as(x)
            i += 1
        return x


def build_network(conf: ModelConf, input_shape: Sequence[int], num_classes: int) -> SiteNetwork:
    """Build ``conf`` for inputs of one-sample shape ``input_shape`` (C, H, W) or (F,)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    expanded = _expand(conf)
    names = _layer_names(expanded)
    layers: "OrderedDict[str, nn.Module]" = OrderedDict()
    sites: list[NoiseSite] = []

    def add_site(label: str, kind: str):
        op = NoiseOperator()
        layers[f"{label}_noise"] = op
        sites.append(NoiseSite(len(sites), f"{len(sites)}:{label}", kind, op))

    shape = tuple(int(s) for s in input_shape)
    add_site("input", "input")
    for (kind, token), name in zip(expanded, names):
        if kind == "conv":
            if len(shape) != 3:
                raise ValueError(f"{name}: a conv layer needs a (C, H, W) input, got {shape}")
            out_ch, kernel = token[1], token[2]
            stride = token[3] if len(token) > 3 else 1
            padding = token[4] if len(token) > 4 else 0
            layer = nn.Conv2d(shape[0], out_ch, kernel, stride=stride, padding=padding)
        elif kind == "fc" or kind == "logits":
            if len(shape) != 1:
                raise ValueError(f"{name}: a linear layer needs a flat input, got {shape}; "
                                 "put 'flatten' before it")
            layer = nn.Linear(shape[0], token[1] if kind == "fc" else num_classes)
        elif kind == "bn":
            layer = nn.BatchNorm2d(shape[0]) if len(shape) == 3 else nn.BatchNorm1d(shape[0])
        elif kind == "relu":
            layer = nn.ReLU()
        elif kind == "maxpool":
            layer = MaxPool2d(token[1])
        else:  # flatten
            layer = nn.Flatten()
        layers[name] = layer
        shape = _output_shape(layer, shape, name)
        if _has_site(kind, conf):
            add_site(name, kind)
    net = SiteNetwork(layers)
    net.noise_sites = sites
    return net


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d``; for inference on the CPU with non-overlapping windows, the same
    maxima bit for bit from strided elementwise maxima, ~10x faster (a fast path of
    :mod:`noise.speed`: :func:`~noise.speed.strided_max_pool2d`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if speed.strided_max_pool_applies(self, x):
            return speed.strided_max_pool2d(x, self.kernel_size)
        return super().forward(x)   # the reference: torch's max_pool2d


def _output_shape(layer: nn.Module, shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
        c, h, w = shape
        if isinstance(layer, nn.Conv2d):
            c = layer.out_channels
            (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
        else:
            k = layer.kernel_size
            kh = kw = sh = sw = k if isinstance(k, int) else k[0]
            ph = pw = 0
        h, w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if h < 1 or w < 1:
            raise ValueError(f"{name}: the input is too small for this architecture "
                             f"(spatial size {h}x{w} after this layer)")
        return (c, h, w)
    if isinstance(layer, nn.Flatten):
        return (int(torch.Size(shape).numel()),)
    if isinstance(layer, nn.Linear):
        return (layer.out_features,)
    return shape
