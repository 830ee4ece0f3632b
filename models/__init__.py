"""Model families built from compact layer specs by one builder, with numbered noise sites.

>>> from models import build_model
>>> net = build_model({'model_class': 'LeNet', 'LeNet': {'conf_name': 'LeNet5-BN'}},
...                   {'default': {'noise_type': 'GaussAdd', 'GaussStd': 0.1}}, (1, 28, 28), 10)
>>> [s.name for s in net.noise_sites][:3]
['0:input', '1:conv1', '2:bn1']

A family (:mod:`models.registry`) parses its config sub-section, names its sites and builds its
networks: the layer-spec families (LeNet, MLP, CNN_HE, VGG) through :mod:`models.builder`, and
``torchvision`` (any classification network of ``torchvision.models``,
:mod:`models.torchvision_models`) through :func:`noise.inject`.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import nn

from noise.config import NoiseConfig
from noise.placement import configure, resolve_repetitions, resolve_site_configs

from . import cnn_he, lenet, mlp, torchvision_models, vgg  # noqa: F401  (they register)
from .builder import ModelConf, SiteNetwork, build_network, site_kinds, site_names
from .registry import (FAMILIES, MODEL_FAMILIES, MODEL_SUBKEYS, ModelFamily, ModelSpec, get_conf,
                       get_family, register_family, register_model_family)

__all__ = ["build_model", "build_model_from", "model_site_names", "model_site_kinds",
           "model_site_table", "parse_model_config", "MODEL_FAMILIES", "FAMILIES", "ModelConf",
           "ModelSpec", "ModelFamily", "SiteNetwork", "register_family", "register_model_family",
           "get_conf", "get_family"]


def parse_model_config(model: Mapping[str, Any]) -> ModelSpec:
    """The :class:`ModelSpec` of the config-schema ``model`` dict (its family's sub-section
    checked by the family: ``ValueError`` naming the key)."""
    if not isinstance(model, Mapping):
        raise ValueError(f"model must be a dict with 'model_class', got {model!r}")
    model_class = model.get("model_class")
    return get_family(model_class).parse(model_class, model.get(model_class))


def model_site_table(spec: ModelSpec, input_shape: Sequence[int] | None = None,
                     num_classes: int | None = None) -> tuple[list[str], list[str]]:
    """(site names, site kinds) of a parsed model, without building it. ``input_shape`` and
    ``num_classes`` (the dataset's) are needed where the sites depend on them (torchvision)."""
    return get_family(spec.model_class).site_table(spec, input_shape, num_classes)


def model_site_names(model: Mapping[str, Any], input_shape: Sequence[int] | None = None,
                     num_classes: int | None = None) -> list[str]:
    """Site names of the configured model, without building it."""
    return model_site_table(parse_model_config(model), input_shape, num_classes)[0]


def model_site_kinds(model: Mapping[str, Any], input_shape: Sequence[int] | None = None,
                     num_classes: int | None = None) -> list[str]:
    """The kind of every site of the configured model, in site order, without building it:
    ``'input'``, ``'conv'``, ``'fc'``, ``'bn'``, ``'relu'``, ``'maxpool'`` or ``'logits'``."""
    return model_site_table(parse_model_config(model), input_shape, num_classes)[1]


def build_model(model: Mapping[str, Any], noise_settings: Mapping[str, Any] | None,
                input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Build the model of a config-schema ``model`` dict with its noise sites configured.

    ``noise_settings`` is the config's ``noise_settings`` dict (None: no noise). Every site's
    noise and repetition is validated before the network is built.
    """
    spec = parse_model_config(model)
    n_sites = len(model_site_table(spec, input_shape, num_classes)[0])
    # validate first, so that bad settings fail before any weights are allocated
    return build_model_from(spec.model_class, spec.conf_name,
                            resolve_site_configs(noise_settings, n_sites),
                            resolve_repetitions(spec.repetition_config, n_sites), input_shape,
                            num_classes, architecture=spec.architecture)


def build_model_from(model_class: str, conf_name: str, site_configs: Sequence[NoiseConfig],
                     repetitions: Sequence[int], input_shape: Sequence[int],
                     num_classes: int, *, architecture: Mapping[str, Any] | None = None
                     ) -> nn.Module:
    """Build ``model_class``/``conf_name`` (with ``architecture``, the family's further
    settings: :attr:`ModelSpec.architecture`) with the already resolved noise and repetition
    of every site (what :func:`util.config.validate_config` resolved from a config)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    spec = ModelSpec(model_class, conf_name, dict(architecture or {}))
    net = get_family(model_class).build(spec, input_shape, num_classes)
    net.model_class, net.conf_name = model_class, conf_name
    return configure(net, configs=site_configs, repetitions=repetitions)
