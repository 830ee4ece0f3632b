"""Registry of model families: ``model_class`` name -> the family that parses its config
sub-section, names its sites and builds it (:data:`FAMILIES`).

A family of layer specs calls :func:`register_family` once with its conf table
(:data:`MODEL_FAMILIES` keeps the tables); a family that builds its networks another way (the
torchvision constructors, :mod:`models.torchvision_models`) subclasses :class:`ModelFamily` and
calls :func:`register_model_family`. Adding a family is adding one file (and importing it in
``models/__init__.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from torch import nn

from .builder import ModelConf, build_network, site_kinds, site_names

__all__ = ["MODEL_FAMILIES", "FAMILIES", "ModelSpec", "ModelFamily", "ConfFamily",
           "register_family", "register_model_family", "get_family", "get_conf", "bn_variants",
           "MODEL_SUBKEYS"]

#: The conf tables of the families of layer specs.
MODEL_FAMILIES: dict[str, dict[str, ModelConf]] = {}
#: Every family, by ``model_class``.
FAMILIES: dict[str, "ModelFamily"] = {}
#: The keys of a layer-spec family's sub-section (``model.<model_class>``).
MODEL_SUBKEYS = ("conf_name", "repetition_config")


@dataclass(frozen=True)
class ModelSpec:
    """A config's ``model`` section parsed: which network, and the repetition of its sites."""

    model_class: str
    #: the network within the family (a torchvision model's constructor name)
    conf_name: str
    #: what else shapes the network: {} for the layer-spec families, ``{"kwargs": {...}}`` for
    #: a torchvision model built with constructor arguments; part of the training hash
    architecture: dict = field(default_factory=dict)
    repetition_config: dict = field(default_factory=dict)


class ModelFamily:
    """A ``model_class``: parses its config sub-section, names its sites, builds networks."""

    #: the keys its sub-section ``model.<model_class>`` allows
    subkeys: tuple[str, ...] = ()

    def parse(self, model_class: str, sub: Any) -> ModelSpec:
        """The spec of sub-section ``sub``; ``ValueError`` naming the key otherwise."""
        raise NotImplementedError

    def check_subkeys(self, model_class: str, sub: Mapping[str, Any]) -> None:
        """``ValueError`` for a key of ``model.<model_class>`` outside :attr:`subkeys`."""
        unknown = set(sub) - set(self.subkeys)
        if unknown:
            raise ValueError(f"model.{model_class}: unknown key {sorted(unknown)[0]!r}; "
                             f"allowed: {list(self.subkeys)}")

    def site_table(self, spec: ModelSpec, input_shape: Sequence[int] | None,
                   num_classes: int | None) -> tuple[list[str], list[str]]:
        """(site names, site kinds) of ``spec``'s network, without building it for real.
        ``input_shape``/``num_classes``: the dataset's (families whose sites depend on them
        raise ``ValueError`` without them)."""
        raise NotImplementedError

    def build(self, spec: ModelSpec, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        """The network (randomly initialised) with ``noise_sites``, no noise on them yet."""
        raise NotImplementedError


class ConfFamily(ModelFamily):
    """A family of layer specs: a table of named :class:`ModelConf`, built by
    :func:`models.builder.build_network`."""

    subkeys = MODEL_SUBKEYS

    def __init__(self, confs: Mapping[str, ModelConf]):
        self.confs = confs

    def parse(self, model_class: str, sub: Any) -> ModelSpec:
        if not isinstance(sub, Mapping) or "conf_name" not in sub:
            raise ValueError(f"model.{model_class} must be a dict with 'conf_name' "
                             f"(one of {sorted(self.confs)})")
        self.check_subkeys(model_class, sub)
        get_conf(model_class, sub["conf_name"])
        return ModelSpec(model_class, sub["conf_name"], {},
                         dict(sub.get("repetition_config") or {}))

    def site_table(self, spec, input_shape=None, num_classes=None):
        conf = get_conf(spec.model_class, spec.conf_name)
        return site_names(conf), site_kinds(conf)

    def build(self, spec, input_shape, num_classes):
        return build_network(get_conf(spec.model_class, spec.conf_name), input_shape,
                             num_classes)


def register_model_family(model_class: str, family: ModelFamily) -> None:
    if model_class in FAMILIES:
        raise ValueError(f"model family {model_class!r} registered twice")
    FAMILIES[model_class] = family


def register_family(model_class: str, confs: Mapping[str, ModelConf]) -> None:
    """Register a family of layer specs (its conf table)."""
    confs = dict(confs)
    register_model_family(model_class, ConfFamily(confs))
    MODEL_FAMILIES[model_class] = confs


def get_family(model_class: Any) -> ModelFamily:
    """The family ``model_class``; an unknown name raises ``ValueError`` listing the known."""
    family = FAMILIES.get(model_class) if isinstance(model_class, str) else None
    if family is None:
        raise ValueError(f"unknown model.model_class {model_class!r}; "
                         f"known: {sorted(FAMILIES)}")
    return family


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
