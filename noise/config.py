"""Noise configurations: one frozen dataclass per noise type, validated where it is built.

A YAML-style dict such as ``{'noise_type': 'GaussAdd', 'GaussStd': 0.5}`` becomes a config with
:func:`parse_noise_config`. Field names are the paper's YAML keys, so a config file reads the
same as the dataclass. Every bad value raises ``ValueError`` naming the key and the value: the
paper's code only warned on unknown keys, and a typo such as ``GausStd`` silently ran a
noise-free experiment. Numbers must be finite and fit float32 (|x| <= :data:`FLOAT32_MAX`), the
precision the noise is drawn in: σ = 1e300 would otherwise be accepted and fail, or give NaN
losses, after a full epoch.

Formulas (z, z1, z2 ~ N(0, 1) i.i.d. per element, redrawn on every forward):

=======================  ============================================================
``GaussAdd``             x + μ + σ·z
``GaussMul``             x · (μ + σ·z)
``GaussCombined``        mul-then-add: x·(μm + σm·z1) + μa + σa·z2,
                         add-then-mul: (x + μa + σa·z2)·(μm + σm·z1),
                         with σa = A·r and σm = A·(1 − r)
``GaussCombined_direct`` as ``GaussCombined`` with σm, σa given directly
``NoNoise``              x
=======================  ============================================================

Relative σ (``sigma_relative_to: rms``, every type; default ``none``: σ is absolute): the
*additive* σ's are given in units of the site's clean activation RMS, so that a σ is a
noise-to-signal ratio, comparable across sites and models. At a site of calibrated clean RMS
ρ (:mod:`noise.calibration`) the noise applied is that of :meth:`NoiseConfig.absolute`:
σ_add·ρ, while a multiplicative σ is left as it is, since it is relative to the signal
already (the noise x·σ·z has std σ·ρ over the site); means are never scaled. So for
``GaussAdd`` and ``GaussMul`` (μ = 1) alike the realised noise std over the site is σ·ρ.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

__all__ = [
    "NoiseConfig", "NoNoise", "GaussAdd", "GaussMul", "GaussCombined", "GaussCombined_direct",
    "NOISE_TYPES", "parse_noise_config", "noise_config_to_dict", "validate_repetition",
    "FLOAT32_MAX", "check_finite_float32", "SIGMA_RELATIVE_TO",
]

#: The values of ``sigma_relative_to``: ``none`` (σ absolute) or ``rms`` (σ in units of the
#: site's calibrated clean activation RMS).
SIGMA_RELATIVE_TO = ("none", "rms")

#: The largest finite float32 (``torch.finfo(torch.float32).max``): noise parameters, learning
#: rates and clamping bounds beyond it become inf in the model's precision.
FLOAT32_MAX = 3.4028234663852886e38

#: Registry noise_type name -> config class, filled by :func:`register_noise_type`.
NOISE_TYPES: dict[str, type["NoiseConfig"]] = {}


def register_noise_type(cls):
    """Class decorator: make ``cls`` buildable by its class name as ``noise_type``."""
    NOISE_TYPES[cls.__name__] = cls
    return cls


def _as_bool(key: str, value: Any) -> bool:
    # YAML grids write flags as 0/1 (``enable_in_training: [0, 1]``); accept those and bools.
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and int(value) in (0, 1):
        return bool(value)
    raise ValueError(f"noise key {key!r} must be a boolean (true/false or 0/1), got {value!r}")


def check_finite_float32(key: str, value: Any) -> float:
    """``value`` as a float if it is a real number (not a bool), finite and fits float32;
    else ``ValueError`` naming ``key`` and what is allowed."""
    allowed = f"a finite number with |value| <= {FLOAT32_MAX:.4g} (float32)"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{key} must be {allowed}, got {value!r}")
    try:
        f = float(value)
    except OverflowError:  # an int beyond the float range
        f = math.inf
    if not math.isfinite(f) or abs(f) > FLOAT32_MAX:
        raise ValueError(f"{key} must be {allowed}, got {value!r}")
    return f


def _as_float(key: str, value: Any, *, minimum: float | None = None,
              maximum: float | None = None) -> float:
    value = check_finite_float32(f"noise key {key!r}", value)
    if minimum is not None and value < minimum:
        raise ValueError(f"noise key {key!r} must be >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"noise key {key!r} must be <= {maximum}, got {value!r}")
    return value


@dataclass(frozen=True)
class NoiseConfig:
    """Fields every noise type shares.

    Attributes:
        enable_in_training: apply the noise while the module is in train mode.
        enable_in_eval: apply the noise while the module is in eval mode.
        normalize_to_input_size: divide every σ by the number of elements of one sample at
            the site (the paper's option for comparing sites of different widths).
        sigma_relative_to: ``none`` (σ absolute) or ``rms``: every additive σ is in units of
            the site's calibrated clean activation RMS (see the module docstring and
            :meth:`absolute`). Left out of :func:`noise_config_to_dict` at ``none``, so the
            hashes of configs without it stay as they were.
    """

    enable_in_training: bool = True
    enable_in_eval: bool = True
    normalize_to_input_size: bool = False
    sigma_relative_to: str = "none"

    #: Fields that are standard deviations or amplitudes (must be >= 0).
    _non_negative: ClassVar[tuple[str, ...]] = ()
    #: Fields restricted to [0, 1].
    _unit_interval: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "sigma_relative_to":
                if not isinstance(value, str) or value not in SIGMA_RELATIVE_TO:
                    raise ValueError(f"noise key 'sigma_relative_to' must be one of "
                                     f"{list(SIGMA_RELATIVE_TO)}, got {value!r}")
            elif f.type in ("bool", bool):
                value = _as_bool(f.name, value)
            else:
                value = _as_float(
                    f.name, value,
                    minimum=0.0 if f.name in self._non_negative + self._unit_interval else None,
                    maximum=1.0 if f.name in self._unit_interval else None)
            object.__setattr__(self, f.name, value)

    @property
    def noise_type(self) -> str:
        return type(self).__name__

    @property
    def is_noiseless(self) -> bool:
        """True when the operator is the identity whatever the mode (σ = 0 and neutral means)."""
        return True

    def active(self, training: bool) -> bool:
        """Whether noise is applied in the given mode (train/eval)."""
        enabled = self.enable_in_training if training else self.enable_in_eval
        return enabled and not self.is_noiseless

    def std_pair(self) -> tuple[float, float]:
        """(σ_add, σ_mul): the additive and multiplicative standard deviations (as
        configured: relative ones for ``sigma_relative_to: rms``)."""
        return 0.0, 0.0

    @property
    def is_relative(self) -> bool:
        """Whether σ is relative to the site's clean RMS (needs a calibrated site)."""
        return self.sigma_relative_to == "rms"

    def absolute(self, rms: float | None) -> "NoiseConfig":
        """The absolute config this one means at a site of clean activation RMS ``rms``:
        itself when σ is absolute; else every additive σ times ``rms`` (multiplicative σ's
        and the means unchanged; ``GaussCombined`` becomes the ``GaussCombined_direct`` of
        its two σ's). ``rms`` may be None only for an absolute config."""
        if not self.is_relative:
            return self
        if rms is None:
            raise ValueError("a noise config with sigma_relative_to='rms' needs the site's "
                             "calibrated clean RMS (noise.calibration.calibrate)")
        rms = check_finite_float32("the calibrated clean RMS", rms)
        return self._scaled_additive(rms)

    def _scaled_additive(self, rms: float) -> "NoiseConfig":
        return dataclasses.replace(self, sigma_relative_to="none")


@register_noise_type
@dataclass(frozen=True)
class NoNoise(NoiseConfig):
    """No noise: the identity."""


@register_noise_type
@dataclass(frozen=True)
class GaussAdd(NoiseConfig):
    """Additive Gaussian noise, x + μ + σ·z.

    Attributes:
        GaussStd: σ, the standard deviation (>= 0).
        GaussMean: μ, the mean (default 0).
    """

    GaussStd: float = 0.0
    GaussMean: float = 0.0
    _non_negative: ClassVar[tuple[str, ...]] = ("GaussStd",)

    @property
    def is_noiseless(self) -> bool:
        return self.GaussStd == 0.0 and self.GaussMean == 0.0

    def std_pair(self):
        return self.GaussStd, 0.0

    def _scaled_additive(self, rms):
        return dataclasses.replace(self, GaussStd=self.GaussStd * rms, sigma_relative_to="none")


@register_noise_type
@dataclass(frozen=True)
class GaussMul(NoiseConfig):
    """Multiplicative Gaussian noise, x · (μ + σ·z).

    Attributes:
        GaussStd: σ, the standard deviation (>= 0).
        GaussMean: μ, the mean (default 1).
    """

    GaussStd: float = 0.0
    GaussMean: float = 1.0
    _non_negative: ClassVar[tuple[str, ...]] = ("GaussStd",)

    @property
    def is_noiseless(self) -> bool:
        return self.GaussStd == 0.0 and self.GaussMean == 1.0

    def std_pair(self):
        return 0.0, self.GaussStd


@dataclass(frozen=True)
class _CombinedBase(NoiseConfig):
    GaussMeanMul: float = 1.0
    GaussMeanAdd: float = 0.0
    FirstMulThenAdd: bool = True

    @property
    def is_noiseless(self) -> bool:
        s_add, s_mul = self.std_pair()
        return s_add == 0.0 and s_mul == 0.0 and self.GaussMeanMul == 1.0 \
            and self.GaussMeanAdd == 0.0


@register_noise_type
@dataclass(frozen=True)
class GaussCombined(_CombinedBase):
    """Multiplicative and additive noise from one amplitude A and a ratio r.

    σ_add = A·r and σ_mul = A·(1 − r). ``FirstMulThenAdd`` (default true) picks
    x·(μm + σm·z1) + μa + σa·z2; false picks (x + μa + σa·z2)·(μm + σm·z1).

    Attributes:
        StdAmplitude: A (>= 0).
        StdRatio: r in [0, 1], the additive share of the amplitude.
        GaussMeanMul: μm (default 1).  GaussMeanAdd: μa (default 0).
    """

    StdAmplitude: float = 0.0
    StdRatio: float = 0.5
    _non_negative: ClassVar[tuple[str, ...]] = ("StdAmplitude",)
    _unit_interval: ClassVar[tuple[str, ...]] = ("StdRatio",)

    def std_pair(self):
        return self.StdAmplitude * self.StdRatio, self.StdAmplitude * (1.0 - self.StdRatio)

    def _scaled_additive(self, rms):
        s_add, s_mul = self.std_pair()
        return GaussCombined_direct(
            enable_in_training=self.enable_in_training, enable_in_eval=self.enable_in_eval,
            normalize_to_input_size=self.normalize_to_input_size,
            GaussMeanMul=self.GaussMeanMul, GaussMeanAdd=self.GaussMeanAdd,
            FirstMulThenAdd=self.FirstMulThenAdd, GaussStdMul=s_mul, GaussStdAdd=s_add * rms)


@register_noise_type
@dataclass(frozen=True)
class GaussCombined_direct(_CombinedBase):  # noqa: N801 - the paper's name
    """Combined noise with both standard deviations given directly.

    Attributes:
        GaussStdMul: σ_mul (>= 0).  GaussStdAdd: σ_add (>= 0).
    """

    GaussStdMul: float = 0.0
    GaussStdAdd: float = 0.0
    _non_negative: ClassVar[tuple[str, ...]] = ("GaussStdMul", "GaussStdAdd")

    def std_pair(self):
        return self.GaussStdAdd, self.GaussStdMul

    def _scaled_additive(self, rms):
        return dataclasses.replace(self, GaussStdAdd=self.GaussStdAdd * rms,
                                   sigma_relative_to="none")


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def parse_noise_config(d: Mapping[str, Any] | NoiseConfig | None) -> NoiseConfig:
    """Build a validated noise config from a YAML-style dict.

    ``d`` holds ``noise_type`` and that type's keys. ``None`` or an empty dict means
    :class:`NoNoise`. Raises ``ValueError`` naming the key and value for an unknown noise type
    (listing the known ones), an unknown key (listing the allowed ones), a non-numeric value, a
    negative σ or amplitude, a ratio outside [0, 1], or a number that is not finite or does not
    fit float32.
    """
    if isinstance(d, NoiseConfig):
        return d
    if d is None:
        return NoNoise()
    if not isinstance(d, Mapping):
        raise ValueError(f"a noise config must be a dict with 'noise_type', got {d!r}")
    if len(d) == 0:
        return NoNoise()
    d = dict(d)
    name = d.pop("noise_type", None)
    if name is None:
        raise ValueError(f"noise config {d!r} lacks the key 'noise_type' "
                         f"(one of {sorted(NOISE_TYPES)})")
    cls = NOISE_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown noise_type {name!r}; known: {sorted(NOISE_TYPES)}")
    allowed = _field_names(cls)
    for key in d:
        if key not in allowed:
            raise ValueError(f"unknown key {key!r} (value {d[key]!r}) for noise_type {name!r}; "
                             f"allowed keys: {['noise_type'] + allowed}")
    return cls(**d)


def noise_config_to_dict(config: NoiseConfig) -> dict[str, Any]:
    """The YAML-style dict of ``config`` (inverse of :func:`parse_noise_config`);
    ``sigma_relative_to`` only where it is not ``none`` (hashes of older configs unchanged)."""
    out: dict[str, Any] = {"noise_type": config.noise_type}
    out.update(dataclasses.asdict(config))
    if out["sigma_relative_to"] == "none":
        del out["sigma_relative_to"]
    return out


def replace_noise(config: NoiseConfig, **changes) -> NoiseConfig:
    """A validated copy of ``config`` with ``changes``; unknown keys raise like the parser."""
    allowed = _field_names(type(config))
    for key, value in changes.items():
        if key not in allowed:
            raise ValueError(f"unknown key {key!r} (value {value!r}) for noise_type "
                             f"{config.noise_type!r}; allowed keys: {allowed}")
    return dataclasses.replace(config, **changes)


def validate_repetition(value: Any, key: str = "repetition") -> int:
    """A repetition count R: an integer >= 1 (float 3.0 is accepted as 3)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
    if float(value) != int(value) or int(value) < 1:
        raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
    return int(value)
