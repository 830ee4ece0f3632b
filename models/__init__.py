"""Model families built from compact layer specs by one builder, with numbered noise sites.

>>> from models import build_model
>>> net = build_model({'model_class': 'LeNet', 'LeNet': {'conf_name': 'LeNet5-BN'}},
...                   {'default': {'noise_type': 'GaussAdd', 'GaussStd': 0.1}}, (1, 28, 28), 10)
>>> [s.name for s in net.noise_sites][:3]
['0:input', '1:conv1', '2:bn1']
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from noise.config import NoiseConfig
from noise.placement import configure, resolve_repetitions, resolve_site_configs

from . import cnn_he, lenet, mlp, vgg  # noqa: F401  (they register their families)
from .builder import ModelConf, SiteNetwork, build_network, site_kinds, site_names
from .registry import MODEL_FAMILIES, get_conf, register_family

__all__ = ["build_model", "build_model_from", "model_site_names", "model_site_kinds",
           "parse_model_config", "MODEL_FAMILIES", "ModelConf", "SiteNetwork", "register_family",
           "get_conf"]

MODEL_SUBKEYS = ("conf_name", "repetition_config")


def parse_model_config(model: Mapping[str, Any]) -> tuple[str, str, dict]:
    """(model_class, conf_name, repetition_config) from the config-schema ``model`` dict."""
    if not isinstance(model, Mapping):
        raise ValueError(f"model must be a dict with 'model_class', got {model!r}")
    model_class = model.get("model_class")
    if model_class not in MODEL_FAMILIES:
        raise ValueError(f"unknown model.model_class {model_class!r}; "
                         f"known: {sorted(MODEL_FAMILIES)}")
    sub = model.get(model_class)
    if not isinstance(sub, Mapping) or "conf_name" not in sub:
        raise ValueError(f"model.{model_class} must be a dict with 'conf_name' "
                         f"(one of {sorted(MODEL_FAMILIES[model_class])})")
    unknown = set(sub) - set(MODEL_SUBKEYS)
    if unknown:
        raise ValueError(f"model.{model_class}: unknown key {sorted(unknown)[0]!r}; "
                         f"allowed: {list(MODEL_SUBKEYS)}")
    get_conf(model_class, sub["conf_name"])
    return model_class, sub["conf_name"], dict(sub.get("repetition_config") or {})


def model_site_names(model: Mapping[str, Any]) -> list[str]:
    """Site names of the configured model, without building it."""
    model_class, conf_name, _ = parse_model_config(model)
    return site_names(get_conf(model_class, conf_name))


def model_site_kinds(model: Mapping[str, Any]) -> list[str]:
    """The kind of every site of the configured model, in site order, without building it:
    ``'input'``, ``'conv'``, ``'fc'``, ``'bn'``, ``'relu'``, ``'maxpool'`` or ``'logits'``."""
    model_class, conf_name, _ = parse_model_config(model)
    return site_kinds(get_conf(model_class, conf_name))


def build_model(model: Mapping[str, Any], noise_settings: Mapping[str, Any] | None,
                input_shape: Sequence[int], num_classes: int) -> SiteNetwork:
    """Build the model of a config-schema ``model`` dict with its noise sites configured.

    ``noise_settings`` is the config's ``noise_settings`` dict (None: no noise). Every site's
    noise and repetition is validated before the network is built.
    """
    model_class, conf_name, repetition_config = parse_model_config(model)
    n_sites = len(site_names(get_conf(model_class, conf_name)))
    # validate first, so that bad settings fail before any weights are allocated
    return build_model_from(model_class, conf_name, resolve_site_configs(noise_settings, n_sites),
                            resolve_repetitions(repetition_config, n_sites), input_shape,
                            num_classes)


def build_model_from(model_class: str, conf_name: str, site_configs: Sequence[NoiseConfig],
                     repetitions: Sequence[int], input_shape: Sequence[int],
                     num_classes: int) -> SiteNetwork:
    """Build ``model_class``/``conf_name`` with the already resolved noise and repetition of
    every site (what :func:`util.config.validate_config` resolved from a config)."""
    net = build_network(get_conf(model_class, conf_name), input_shape, num_classes)
    net.model_class, net.conf_name = model_class, conf_name
    return configure(net, configs=site_configs, repetitions=repetitions)
