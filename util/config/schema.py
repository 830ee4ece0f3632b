"""The experiment config's keys, declared once (:data:`KEYS`), and :func:`validate_config`,
which checks a config and resolves it, in one pass, into the typed :class:`ValidatedConfig`
that every later step takes (``prepare``, the model builder, the hashes, the walk).

:data:`DEFAULT_CONFIG`, the unknown-key checks and :func:`util.config.training_hash` are derived
from :data:`KEYS` (and :data:`util.config.walk.WALK_KEYS`); docs/config.md lists the same keys
and defaults (tests/test_config_schema.py keeps the two equal). Two sub-sections keep their own
typed parsers: the model family's (``model.<model_class>``: :func:`models.parse_model_config`
and :func:`noise.placement.resolve_repetitions`) and ``noise_settings``
(:func:`noise.placement.resolve_site_configs`).
"""
from __future__ import annotations

import copy
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping

from models import FAMILIES, get_conf, model_site_table, parse_model_config
from models.builder import weight_layer_names
from noise.config import NoiseConfig
from noise.placement import resolve_repetitions, resolve_site_configs
from noise.weights import WeightNoise, resolve_weight_configs

from ..cluster import LocationError, resolve_location
from ..config_paths import MISSING, value_at
from .keys import (ConfigError, Key, boolean, check_unknown, deep_update, defaults_of, integer,
                   one_of, optional, real, resolve_keys, to_plain)
from .cohort import COHORT_KEYS, parse_cohort
from .walk import WALK_KEYS, WalkSettings, parse_walk
from .weight_noise import WEIGHT_NOISE_KEYS, check_section

__all__ = ["KEYS", "SEED_KEYS", "DEFAULT_CONFIG", "BOOKKEEPING_KEYS", "General", "Optimizer",
           "Data", "Model", "ValidatedConfig", "validate_config", "strip_bookkeeping",
           "deep_update", "merged_with_defaults"]

#: Keys sacred and seml add to every config; they never change what a run computes.
BOOKKEEPING_KEYS = ("seed", "db_collection", "overwrite", "seml", "slurm", "__doc__")
OPTIMIZERS = ("Adam",)
LR_SCHEDULERS = ("CosineAnnealingLR", "None")
CRITERIA = ("CrossEntropyLoss",)


def _recorded(path: str, value: Any) -> Any:
    """Any value: recorded with the run, used by nothing that computes."""
    return value


def _clamping(path: str, value: Any) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path} must be {{min, max}} or null, got {value!r}")
    check_unknown(path, value, ("min", "max"))
    for name in ("min", "max"):
        if value.get(name) is not None:
            real()(f"{path}.{name}", value[name])
    lo, hi = value.get("min"), value.get("max")
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(f"{path}.min ({lo}) must be <= {path}.max ({hi})")
    return dict(value)


def _lr_scheduler(path: str, value: Any) -> str | None:
    if str(value) not in LR_SCHEDULERS:  # null and 'None': a constant learning rate
        raise ConfigError(f"{path} {value!r} is not supported; allowed: {list(LR_SCHEDULERS)}")
    return value


def _dataset(path: str, value: Any) -> str:
    from data import dataset_names, resolve_name  # lazily: torchvision's import cost
    try:
        resolve_name(value)
    except (ValueError, TypeError):
        raise ConfigError(f"{path} {value!r} is unknown; allowed: {dataset_names()}") from None
    return value


def _fraction(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ConfigError(f"{path} must be a fraction in (0, 1) or null, got {value!r}")
    return value  # (NaN fails the comparison too)


def _location(path: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path} must be a folder path (a string) or null, got {value!r}")
    try:
        resolve_location(value, path)
    except LocationError as err:
        raise ConfigError(str(err)) from None
    return value


def _model_class(path: str, value: Any) -> str:
    if not isinstance(value, str) or value not in FAMILIES:
        raise ConfigError(f"unknown {path} {value!r}; known: {sorted(FAMILIES)}")
    return value


def _device(path: str, value: Any) -> str:
    if not isinstance(value, str) or not (value in ("auto", "cpu", "cuda")
                                          or value.startswith("cuda:")):
        raise ConfigError(f"{path} must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}")
    return value


#: Every key of the experiment config (the walk section's: :data:`WALK_KEYS`), in the order
#: of :data:`DEFAULT_CONFIG`.
KEYS = (
    Key("general.num_epochs", 5, integer(positive=True), True, "epochs to train"),
    Key("general.repeat_number", 0, integer(minimum=0), True,
        "the repeat: seeds training and evaluation unless seed is set"),
    Key("general.weight_clamping", {"min": None, "max": None}, _clamping, True,
        "clamp every weight to [min, max] after each step (null bounds: unclamped)"),
    Key("general.experiment_name", "default", _recorded, False, "a label of the run"),
    Key("general.seed", None, optional(integer(minimum=0)), True,
        "seeds training and evaluation; null: repeat_number"),
    Key("general.train_repeat_number", None, optional(integer(minimum=0)), True,
        "the repeat whose trained model this run uses (eval-only configs with many evaluation "
        "repeats share one trained model); null: the seed above"),
    Key("optimizer.optimizer_type", "Adam", one_of(OPTIMIZERS), True, "the optimizer"),
    Key("optimizer.lr_scheduler", "CosineAnnealingLR", _lr_scheduler, True,
        "CosineAnnealingLR over num_epochs, or None (a constant learning rate)"),
    Key("optimizer.lr", 1e-3, real(positive=True), True, "the learning rate"),
    Key("data.dataset", "FashionMNIST", _dataset, True,
        "MNIST, FashionMNIST, CIFAR10, SVHN or GSC2 (aliases GSC2_TF, GSC2_PyTorch)"),
    Key("data.batch_size", 128, integer(positive=True), True, "samples per training step"),
    Key("data.root", None, optional(_location), False,
        "the data root; null: the default data root (running.md)"),
    Key("data.val_split", None, optional(_fraction), True,
        "hold out this fraction of the training set for validation (then the official test "
        "split is the test split); null: validate on the official test split"),
    Key("data.download", True, boolean, False, "download a dataset that is not there"),
    Key("model.model_class", "LeNet", _model_class, True,
        "the model family: LeNet, MLP, CNN_HE, VGG or torchvision"),
    Key("model.criterion", "CrossEntropyLoss", one_of(CRITERIA), True, "the training loss"),
    Key("model.weight_criterion", False, boolean, True,
        "weight the loss by the dataset's class weights (GSC2 is unbalanced)"),
    Key("model.LeNet", {"conf_name": "LeNet5-BN",
                        "repetition_config": {"global": 1, "layer_wise_mapped": None}}, None, True,
        "the sub-section of the family model_class names (model.MLP, model.CNN_HE, model.VGG "
        "alike): conf_name and the repetition of every site (parsed by "
        "models.parse_model_config and noise.placement.resolve_repetitions)"),
    Key("noise_settings", {"default": {"noise_type": "NoNoise", "enable_in_training": True,
                                       "enable_in_eval": True},
                           "layer_wise": None, "layer_mapped": None}, None, True,
        "the noise of every site (parsed by noise.placement.resolve_site_configs); only the "
        "noise active in training enters the training hash"),
    Key("artifact_root", None, optional(_location), False,
        "checkpoints and walks go here; null: the default artifact root (running.md)"),
    Key("device", "auto", _device, False, "auto, cpu, cuda or cuda:N"),
)

#: The keys that seed a run; the training hash holds the seed they resolve to (``train_seed``).
SEED_KEYS = ("general.repeat_number", "general.seed", "general.train_repeat_number")

#: Every section's defaults; the ``cohort`` section (:mod:`util.config.cohort`) is left out of
#: :func:`util.config.config_hash` at its defaults, so configs from before it keep their hashes.
DEFAULT_CONFIG: dict[str, Any] = defaults_of((*KEYS, *WALK_KEYS, *WEIGHT_NOISE_KEYS,
                                               *COHORT_KEYS))
#: The sections whose keys this module declares (noise_settings' are its parser's).
_SECTIONS = ("general", "optimizer", "data", "model")
TOP_LEVEL_KEYS = (*DEFAULT_CONFIG,) + BOOKKEEPING_KEYS


# ---- the typed config -------------------------------------------------------------------------

@dataclass(frozen=True)
class General:
    """The ``general`` section (one field per key of :data:`KEYS`)."""
    num_epochs: int
    repeat_number: int
    weight_clamping: dict | None  # {min, max} as given, or None
    experiment_name: Any
    seed: int | None
    train_repeat_number: int | None


@dataclass(frozen=True)
class Optimizer:
    optimizer_type: str
    lr_scheduler: str | None  # 'CosineAnnealingLR'; None or 'None': a constant learning rate
    lr: float


@dataclass(frozen=True)
class Data:
    dataset: str  # as given (an alias stays an alias)
    batch_size: int
    root: str | None
    val_split: float | None
    download: bool


@dataclass(frozen=True)
class Model:
    """The ``model`` section with its family's sub-section resolved."""
    model_class: str
    criterion: str
    weight_criterion: bool
    conf_name: str
    #: the repetition R of every site, in site order
    repetitions: tuple[int, ...]
    site_names: tuple[str, ...]
    #: the conv/linear layers (where weight noise sits), ``'0:conv1'``, ...
    weight_layer_names: tuple[str, ...] = ()
    #: what else shapes the network: a torchvision model's ``{"kwargs": ...}``, else {}
    architecture: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ValidatedConfig:
    """A config that passed :func:`validate_config`, resolved: what every later step takes."""

    #: the config as given (plain types, integer keys as ints): what a run records and
    #: :func:`util.config.config_hash` hashes
    config: dict
    general: General
    optimizer: Optimizer
    data: Data
    model: Model
    #: the noise of every site, in site order (``noise_settings`` resolved)
    site_configs: tuple[NoiseConfig, ...]
    artifact_root: str | None
    device: str
    #: the walk settings, when the config is validated for a walk
    walk: WalkSettings | None = None
    #: the weight noise of every weight layer (``weight_noise`` resolved); () for none
    weight_noise: tuple[WeightNoise, ...] = ()

    @property
    def model_class(self) -> str:
        return self.model.model_class

    @property
    def conf_name(self) -> str:
        return self.model.conf_name

    @property
    def site_names(self) -> tuple[str, ...]:
        return self.model.site_names

    @property
    def repetitions(self) -> tuple[int, ...]:
        return self.model.repetitions

    @property
    def noisy_training(self) -> bool:
        """Noise (on activations or weights) is active in training."""
        return any(c.active(training=True) for c in self.site_configs) or \
            self.weight_noisy_training

    @property
    def weight_noisy_training(self) -> bool:
        return any(c.active(training=True) for c in self.weight_noise)

    @property
    def seed(self) -> int:
        """Seeds evaluation noise (and training, unless ``train_repeat_number`` is set)."""
        g = self.general
        return g.seed if g.seed is not None else g.repeat_number

    @property
    def train_seed(self) -> int:
        """Seeds initialisation, data order, augmentation and training noise."""
        g = self.general
        return g.train_repeat_number if g.train_repeat_number is not None else self.seed

    @property
    def weight_clamping(self) -> tuple[float | None, float | None] | None:
        wc = self.general.weight_clamping or {}
        if wc.get("min") is None and wc.get("max") is None:
            return None
        return wc.get("min"), wc.get("max")


def _section(values: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {k.name: values[k.path] for k in KEYS if k.section == name}


def validate_config(config: Mapping[str, Any], *, walk: bool | None = None) -> ValidatedConfig:
    """Check a full experiment config and resolve it; raise :class:`ConfigError` on the first
    problem. A key the config leaves out takes its default.

    The ``walk`` section is checked when ``walk`` is true, or when None and
    ``walk.enabled`` is set in the config.
    """
    from data import DATASETS, resolve_name  # lazily: torchvision's import cost
    config = to_plain(dict(config))
    check_unknown("config", config, TOP_LEVEL_KEYS)
    for section in _SECTIONS:
        allowed = [k.name for k in KEYS if k.section == section]
        if section == "model":
            allowed += [f for f in FAMILIES if f not in allowed]
        value = config.get(section, {})
        if not isinstance(value, Mapping):
            raise ConfigError(f"{section} must be a dict with keys {allowed}, got {value!r}")
        check_unknown(section, value, allowed)
    values = resolve_keys(config, KEYS)

    dataset = resolve_name(values["data.dataset"])
    val_split = values["data.val_split"]
    if val_split is not None and not DATASETS[dataset].supports_val_split:
        raise ConfigError(f"data.val_split: dataset {dataset} has official validation and test "
                          "splits; allowed: null")

    model_class = values["model.model_class"]
    family = value_at(config, f"model.{model_class}")
    if family is MISSING:
        family = DEFAULT_CONFIG["model"].get(model_class)
    try:
        spec = parse_model_config({"model_class": model_class, model_class: family})
        # the sites of a traced network (torchvision) depend on the dataset's input
        names = tuple(model_site_table(spec, DATASETS[dataset].dims,
                                       DATASETS[dataset].num_classes)[0])
    except ValueError as err:
        raise ConfigError(str(err)) from None
    conf_name, repetition_config = spec.conf_name, spec.repetition_config
    try:
        site_configs = tuple(resolve_site_configs(values["noise_settings"], len(names)))
        repetitions = tuple(resolve_repetitions(repetition_config, len(names)))
    except ValueError as err:
        raise ConfigError(f"{err} (model {model_class}/{conf_name})") from None
    layers, weight_noise = _weight_noise(config.get("weight_noise"), model_class, conf_name)
    model = Model(model_class, values["model.criterion"], values["model.weight_criterion"],
                  conf_name, repetitions, names, layers,
                  architecture=spec.architecture)

    parse_cohort(config.get("cohort"))
    walk_section = config.get("walk")
    if walk_section is not None and not isinstance(walk_section, Mapping):
        raise ConfigError(f"walk must be a dict of walk settings or null, got {walk_section!r}")
    if walk is None:
        walk = boolean("walk.enabled", (walk_section or {}).get("enabled", False))
    settings = None
    if walk:
        settings = parse_walk(walk_section, len(names), dataset=dataset,
                              has_test_split=DATASETS[dataset].has_test_split(val_split),
                              n_layers=len(layers))
    return ValidatedConfig(
        config, General(**_section(values, "general")), Optimizer(**_section(values, "optimizer")),
        Data(**_section(values, "data")), model,
        site_configs, values["artifact_root"], values["device"], settings, weight_noise)


def _weight_noise(section: Any, model_class: str, conf_name: str
                  ) -> tuple[tuple[str, ...], tuple[WeightNoise, ...]]:
    """(weight layer names, weight noise per layer) of the ``weight_noise`` section; the noise
    is () when no layer has any."""
    section = check_section(section)
    resolve_keys({"weight_noise": section}, WEIGHT_NOISE_KEYS)
    try:
        layers = tuple(weight_layer_names(get_conf(model_class, conf_name)))
    except (KeyError, ValueError):  # a family not built from layer specs
        if section == check_section(None):
            return (), ()
        raise ConfigError(f"weight_noise: model.model_class {model_class!r} is not built from "
                          "layer specs; weight noise needs LeNet, MLP, CNN_HE or VGG") from None
    try:
        configs = tuple(resolve_weight_configs(section, len(layers)))
    except ValueError as err:
        raise ConfigError(f"{err} (model {model_class}/{conf_name}: weight layers "
                          f"{list(layers)})") from None
    return layers, (() if all(c.is_noiseless for c in configs) else configs)


# ---- plain config dicts -----------------------------------------------------------------------

def strip_bookkeeping(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in BOOKKEEPING_KEYS}


def merged_with_defaults(updates: Mapping[str, Any]) -> dict[str, Any]:
    """DEFAULT_CONFIG recursively updated with ``updates`` (for runs outside sacred)."""
    return deep_update(copy.deepcopy(DEFAULT_CONFIG), to_plain(dict(updates)))
