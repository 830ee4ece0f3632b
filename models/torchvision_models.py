"""Any classification network of ``torchvision.models`` as a model family (``model_class:
torchvision``), its sites given by :func:`noise.inject`.

Config::

    model:
      model_class: torchvision
      torchvision:
        name: resnet18              # a constructor of torchvision.models (classification)
        kwargs: {}                  # its further arguments, e.g. {width_per_group: 32}
        repetition_config: {global: 1, layer_wise_mapped: null}

The network is ``torchvision.models.get_model(name, weights=None, num_classes=<the dataset's>,
**kwargs)``: randomly initialised (pretrained weights would need a download, and the paper's
networks train from scratch), so ``weights`` and ``num_classes`` are refused in ``kwargs``.
Its modules and ``state_dict`` are torchvision's own; :func:`noise.inject` traces one forward
pass and puts a site on the input and after every execution of a conv, linear, BN, ReLU and
max-pool layer, in forward order, named by module path (``5:layer1.0.conv1``, a module called
twice gets ``#2`` on its second site: ``10:layer1.0.relu#2``, the ReLU after a residual sum).

The sites depend on the network and the input, so the site table (what the config checks
``layer_index``, ``std_map``, ``walk.sites`` and repetition maps against) comes from a trace
on the ``meta`` device (no weights allocated; on the CPU for a network whose forward the meta
device cannot run), cached by (name, kwargs, input shape, classes).

Images with one channel (MNIST, FashionMNIST) are repeated to the channels of the network's
first convolution by a forward pre-hook that runs after the input site's noise: site 0 is the
dataset's own image, and no module or parameter is added. Other channel mismatches are refused.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from noise.inject import inject

from .registry import ModelFamily, ModelSpec, register_model_family

__all__ = ["TorchvisionFamily", "available_names", "RepeatChannels", "SUBKEYS"]

SUBKEYS = ("name", "kwargs", "repetition_config")
#: constructor arguments a config may not set, and why
REFUSED_KWARGS = {
    "weights": "networks are randomly initialised (weights=None): pretrained weights would "
               "need a download",
    "weights_backbone": "networks are randomly initialised (weights=None)",
    "num_classes": "it comes from the dataset",
}

#: traced networks (on the meta device: no weights) by (name, kwargs, input shape, classes)
_TRACED: dict[tuple, nn.Module] = {}


def available_names() -> list[str]:
    """The classification constructors of the installed torchvision."""
    import torchvision  # lazily: its import takes seconds
    return sorted(torchvision.models.list_models(module=torchvision.models))


class RepeatChannels:
    """Forward pre-hook: one-channel images repeated to ``channels`` (a view, no copy).

    An object rather than a closure, so that ``copy.deepcopy`` of the model copies it too."""

    def __init__(self, channels: int):
        self.channels = channels

    def __call__(self, _module, args):
        x = args[0]
        return (x.expand(x.shape[0], self.channels, *x.shape[2:]),) + tuple(args[1:])


def _construct(name: str, kwargs: Mapping[str, Any], num_classes: int) -> nn.Module:
    import torchvision
    try:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes,
                                            **kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"model.torchvision: {name}(num_classes={num_classes}, "
                         f"**kwargs={dict(kwargs)}) cannot be built: {err}") from None


def _stem_channels(model: nn.Module) -> int | None:
    """The input channels of the network's first convolution (None: no convolution)."""
    return next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), None)


def _example(model: nn.Module, name: str, input_shape: Sequence[int], device=None
             ) -> tuple[torch.Tensor, int | None]:
    """(example input for the trace, channels to repeat 1-channel images to, or None)."""
    shape = tuple(int(s) for s in input_shape)
    channels = _stem_channels(model)
    if len(shape) != 3 or channels is None or shape[0] == channels:
        return torch.zeros((1, *shape), device=device), None
    if shape[0] != 1:
        raise ValueError(f"model.torchvision: {name} takes {channels}-channel images, the "
                         f"dataset's have {shape[0]} (only 1-channel images are repeated to fit)")
    return torch.zeros((1, channels, *shape[1:]), device=device), channels


def _with_sites(model: nn.Module, example: torch.Tensor, repeat_to: int | None) -> nn.Module:
    inject(model, example_input=example)
    if repeat_to is not None:  # registered after inject's hook: the input site's noise first
        model.register_forward_pre_hook(RepeatChannels(repeat_to))
    return model


def _traced(name: str, kwargs: Mapping[str, Any], input_shape: tuple[int, ...],
            num_classes: int) -> nn.Module:
    """The network with its sites on the meta device, or on the CPU where meta fails."""
    with torch.device("meta"):
        model = _construct(name, kwargs, num_classes)
    try:
        return _with_sites(model, *_example(model, name, input_shape, device="meta"))
    except ValueError as err:
        if str(err).startswith("model.torchvision"):
            raise
    except Exception:  # noqa: BLE001  (an op without a meta kernel, data-dependent code)
        pass
    with torch.random.fork_rng(devices=[]):  # the trace leaves the caller's seed alone
        model = _construct(name, kwargs, num_classes)
    try:
        return _with_sites(model, *_example(model, name, input_shape)).to("meta")
    except Exception as err:  # noqa: BLE001  (whatever the network's forward raises)
        raise ValueError(f"model.torchvision: {name} cannot run on the dataset's inputs of "
                         f"shape {list(input_shape)}: {type(err).__name__}: {err}") from None


class TorchvisionFamily(ModelFamily):
    """``model_class: torchvision`` (see the module docstring)."""

    subkeys = SUBKEYS

    def parse(self, model_class: str, sub: Any) -> ModelSpec:
        what = f"model.{model_class}"
        if not isinstance(sub, Mapping) or "name" not in sub:
            raise ValueError(f"{what} must be a dict with 'name' (a constructor of "
                             f"torchvision.models, e.g. resnet18), got {sub!r}")
        self.check_subkeys(model_class, sub)
        name = sub["name"]
        names = available_names()
        if name not in names:
            raise ValueError(f"unknown {what}.name {name!r}; available: {names}")
        kwargs = sub.get("kwargs")
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
            raise ValueError(f"{what}.kwargs must be a dict of {name}'s arguments or null, "
                             f"got {kwargs!r}")
        for key, why in REFUSED_KWARGS.items():
            if key in kwargs:
                raise ValueError(f"{what}.kwargs.{key} is not allowed: {why}")
        architecture = {"kwargs": dict(kwargs)} if kwargs else {}
        return ModelSpec(model_class, name, architecture,
                         dict(sub.get("repetition_config") or {}))

    def traced(self, spec: ModelSpec, input_shape: Sequence[int] | None,
               num_classes: int | None) -> nn.Module:
        """``spec``'s network with its sites, on the meta device (cached)."""
        if input_shape is None or num_classes is None:
            raise ValueError(f"the sites of model.{spec.model_class} {spec.conf_name} depend "
                             "on the input: give the dataset's input_shape and num_classes")
        kwargs = spec.architecture.get("kwargs", {})
        shape = tuple(int(s) for s in input_shape)
        key = (spec.conf_name, json.dumps(kwargs, sort_keys=True, default=repr), shape,
               int(num_classes))
        if key not in _TRACED:
            _TRACED[key] = _traced(spec.conf_name, kwargs, shape, int(num_classes))
        return _TRACED[key]

    def site_table(self, spec, input_shape=None, num_classes=None):
        sites = self.traced(spec, input_shape, num_classes).noise_sites
        return [s.name for s in sites], [s.kind for s in sites]

    def build(self, spec, input_shape, num_classes):
        model = _construct(spec.conf_name, spec.architecture.get("kwargs", {}), num_classes)
        return _with_sites(model, *_example(model, spec.conf_name, input_shape))


register_model_family("torchvision", TorchvisionFamily())
