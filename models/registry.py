"""Registry of model families: ``model_class`` name -> {conf_name: ModelConf}.

A family file calls :func:`register_family` once with its conf table; adding a family is adding
one file (and importing it in ``models/__init__.py``).
"""
from __future__ import annotations

from typing import Mapping

from .builder import ModelConf

__all__ = ["MODEL_FAMILIES", "register_family", "get_conf", "bn_variants"]

MODEL_FAMILIES: dict[str, dict[str, ModelConf]] = {}


def register_family(model_class: str, confs: Mapping[str, ModelConf]) -> None:
    if model_class in MODEL_FAMILIES:
        raise ValueError(f"model family {model_class!r} registered twice")
    MODEL_FAMILIES[model_class] = dict(confs)


def get_conf(model_class: str, conf_name: str) -> ModelConf:
    """The conf of a family; unknown names raise ``ValueError`` listing the known ones."""
    family = MODEL_FAMILIES.get(model_class)
    if family is None:
        raise ValueError(f"unknown model.model_class {model_class!r}; "
                         f"known: {sorted(MODEL_FAMILIES)}")
    conf = family.get(conf_name)
    if conf is None:
        raise ValueError(f"unknown model.{model_class}.conf_name {conf_name!r}; "
                         f"known: {sorted(family)}")
    return conf


def bn_variants(layers, *, plain: str, bn: str, silent: str) -> dict[str, ModelConf]:
    """The three batch-norm variants of one layer spec under the given conf names."""
    layers = tuple(layers)
    return {plain: ModelConf(layers, "none"), bn: ModelConf(layers, "noisy"),
            silent: ModelConf(layers, "silent")}
