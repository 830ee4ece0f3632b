"""The noise operator: an ``nn.Module`` that applies one noise config to its input.

Noise is drawn on the input's device and dtype (``noise.fast_rng``: a compiled counter-based
generator for CPU float32, ``torch.randn_like`` otherwise or with ``WN_FAST=0``); all parameters
are Python floats, so applying noise never synchronises with the host. Additive training noise
is written in place where autograd allows, and ``relu_then`` fuses a ReLU with it: fast paths
of :mod:`noise.speed`, with the same values as the plain torch reference.

Repetition (multi-execution): at a site with repetition R the noise draw is repeated R times on
the same input and the R results are averaged (the layer before it is not recomputed). For every
formula that is affine in the noise (additive, multiplicative, combined multiply-then-add), the
average of R i.i.d. Gaussian draws is itself Gaussian with σ/√R, so we draw once with σ/√R:
the same distribution, exactly, at the cost of one draw. Combined add-then-multiply has a
product of two noise terms; there we really draw R times and average.

Relative σ (``sigma_relative_to: rms``): the operator holds its site's calibrated clean
activation RMS (:attr:`NoiseOperator.rms`, set by :func:`noise.calibration.calibrate`; None
until then) and applies :attr:`NoiseOperator.effective_config`, the config made absolute with
it, on every path (plain, in place, fused with the ReLU, and the cohort's stacked noise). A
relative config on an uncalibrated operator fails on its first noisy forward.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from . import fast_rng, speed
from .config import (GaussAdd, GaussCombined, GaussCombined_direct, GaussMul, NoiseConfig,
                     NoNoise, parse_noise_config, validate_repetition)

__all__ = ["NoiseOperator", "apply_noise"]


def _gauss(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """mean + std·z with z ~ N(0, 1) shaped like ``x`` (a fresh tensor, no autograd history)."""
    return fast_rng.normal_like(x, mean, std)


def _input_size_scale(x: torch.Tensor, config: NoiseConfig) -> float:
    if config.normalize_to_input_size and x.dim() > 0:
        return 1.0 / max(1, x[0].numel())
    return 1.0


def _std(x: torch.Tensor, config: GaussAdd | GaussMul, repetition: int) -> float:
    """σ of one averaged draw: GaussStd, per input size if asked, / √R."""
    return config.GaussStd * _input_size_scale(x, config) / math.sqrt(repetition)


def apply_noise(x: torch.Tensor, config: NoiseConfig, repetition: int = 1, *,
                overwrite: bool = False) -> torch.Tensor:
    """``x`` with the noise of ``config`` applied, averaged over ``repetition`` draws.

    A function of its inputs (and the torch RNG); ignores the enable flags, which are the
    operator's business. ``overwrite=True`` allows additive noise to be written into ``x``
    itself where autograd provably does not need its clean values (see
    :func:`noise.fast_rng.add_noise`); the result is the same.
    """
    if config.is_noiseless:
        return x
    scale = _input_size_scale(x, config)
    if isinstance(config, (GaussAdd, GaussMul)):
        std = _std(x, config, repetition)
        if isinstance(config, GaussAdd):
            if std == 0.0:
                return x + config.GaussMean
            return fast_rng.add_noise(x, std, config.GaussMean, overwrite=overwrite)
        if std == 0.0:
            return x * config.GaussMean
        return x * _gauss(x, config.GaussMean, std)
    if isinstance(config, (GaussCombined, GaussCombined_direct)):
        s_add, s_mul = config.std_pair()
        s_add, s_mul = s_add * scale, s_mul * scale
        mu_a, mu_m = config.GaussMeanAdd, config.GaussMeanMul
        if config.FirstMulThenAdd or repetition == 1 or s_add == 0.0 or s_mul == 0.0:
            # Affine in the noise (or a single draw): one draw with σ/√R is exact.
            r = math.sqrt(repetition)
            s_add, s_mul = s_add / r, s_mul / r
            mul = _gauss(x, mu_m, s_mul) if s_mul else None
            add = _gauss(x, mu_a, s_add) if s_add else None
            if config.FirstMulThenAdd:
                y = x * mul if mul is not None else x * mu_m
                return y + add if add is not None else y + mu_a
            y = x + add if add is not None else x + mu_a
            return y * mul if mul is not None else y * mu_m
        # add-then-mul with R > 1: mean_r (x + a_r)·m_r = x·mean(m_r) + mean(a_r·m_r).
        acc_m = torch.zeros_like(x)
        acc_am = torch.zeros_like(x)
        for _ in range(repetition):
            m = _gauss(x, mu_m, s_mul)
            acc_m.add_(m)
            acc_am.add_(_gauss(x, mu_a, s_add).mul_(m))
        return x * acc_m.div_(repetition) + acc_am.div_(repetition)
    if isinstance(config, NoNoise):
        return x
    raise TypeError(f"no formula for noise config {config!r}")


class NoiseOperator(nn.Module):
    """Applies a noise config to its input, according to train/eval mode.

    The config and repetition can be swapped at any time (``op.config = ...``) without
    rebuilding the model; the walking sweep relies on that. The calibrated clean RMS
    (:attr:`rms`) belongs to the site and stays when the config changes.
    """

    def __init__(self, config: NoiseConfig | dict | None = None, repetition: int = 1):
        super().__init__()
        self.rms = None
        self.config = config
        self.repetition = repetition

    @property
    def rms(self) -> float | None:
        """The site's calibrated clean activation RMS (None: not calibrated); the unit of a
        relative σ (``sigma_relative_to: rms``)."""
        return self.__dict__.get("_rms")

    @rms.setter
    def rms(self, value: float | None):
        self.__dict__["_rms"] = None if value is None else float(value)
        self._plan()

    @property
    def effective_config(self) -> NoiseConfig:
        """The config as applied: absolute σ's (a relative config times :attr:`rms`).
        Raises ``RuntimeError`` for a relative config on an uncalibrated site."""
        effective = self.__dict__.get("_effective")
        if effective is None:
            raise RuntimeError(
                f"noise {self._config.noise_type} has sigma_relative_to='rms' but its site has "
                "no calibrated clean RMS; calibrate the model first "
                "(noise.calibration.calibrate(model, noise.calibration.site_rms(model, batches)))")
        return effective

    @property
    def config(self) -> NoiseConfig:
        return self._config

    @config.setter
    def config(self, value):
        self._config = parse_noise_config(value)
        self._plan()

    @property
    def repetition(self) -> int:
        return self._repetition

    @repetition.setter
    def repetition(self, value):
        self._repetition = validate_repetition(value)
        self._plan()

    def _plan(self) -> None:
        # (std, mean) of plain additive noise, the common case, which forward() hands to the
        # kernel directly; None for everything else (apply_noise works it out per call).
        c, r = self.__dict__.get("_config"), self.__dict__.get("_repetition")
        self._plain_add = None
        self._active = (c.active(False), c.active(True)) if c is not None else (False, False)
        # a relative config without a calibration has no effective config: forward() raises
        c = self.__dict__["_effective"] = (
            None if c is None or (c.is_relative and self.rms is None) else c.absolute(self.rms))
        if (r is not None and type(c) is GaussAdd and c.GaussStd > 0
                and not c.normalize_to_input_size):
            self._plain_add = (c.GaussStd / math.sqrt(r), c.GaussMean)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._active[self.training]:
            return x
        if self._plain_add is not None:
            return fast_rng.add_noise(x, *self._plain_add, overwrite=True)
        return apply_noise(x, self.effective_config, self._repetition, overwrite=True)

    def relu_then(self, x: torch.Tensor) -> torch.Tensor:
        """``self(torch.relu(x))`` with the same values, gradients and draw from the
        generator, but for additive noise without a tensor of its own: the noise goes into
        the output of ``F.threshold(x, 0, 0)`` (relu's twin whose backward keeps its input,
        not its output) in place. A fast path (:mod:`noise.speed`): with the fast paths off,
        or for other noise, it is the reference ``self(torch.relu(x))``."""
        if (self._plain_add is None or not self._active[self.training]
                or not speed.enabled()):
            return self(torch.relu(x))
        return fast_rng.add_noise_(F.threshold(x, 0.0, 0.0), *self._plain_add)

    def extra_repr(self) -> str:
        from .config import noise_config_to_dict
        defaults = noise_config_to_dict(type(self._config)())
        shown = [f"{k}={v}" for k, v in noise_config_to_dict(self._config).items()
                 if k != "noise_type" and v != defaults.get(k)]
        if self.rms is not None and self._config.is_relative:
            shown.append(f"rms={self.rms:.4g}")
        if self._repetition != 1:
            shown.append(f"R={self._repetition}")
        return f"{self._config.noise_type}({', '.join(shown)})"
