"""Calibration of relative σ: the clean activation RMS of every site.

A noise config with ``sigma_relative_to: rms`` gives its additive σ in units of its site's
clean activation RMS ρ = sqrt(mean(x²)), the mean over every element of the site's clean
activations x on a fixed set of batches (:func:`site_rms`). :func:`calibrate` hands each site's
ρ to its operator, which then applies σ·ρ (:meth:`noise.config.NoiseConfig.absolute`), so a σ
is a noise-to-signal ratio and a walk's σ_mid is comparable across sites and models.

*Clean* means: the model in eval mode (batch norm by its running statistics, which a
calibration must not change) with the noise of every site off, on the model as it is when its
noise is used. The engine calibrates right before the noise is used: the model at the start of
each training epoch for the training noise (the activations move as the model learns, so once
at the start would leave the σ of later epochs relative to an initial model's scale), and the
trained model for the evaluation noise and the walk. The same batches every time (the engine
takes the first batches of the training split's epoch 0 under the training seed), so one
model's calibration is always the same numbers, and a resumed run recalibrates exactly as the
uninterrupted one did.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterable, Sequence

import torch
from torch import nn

from .config import NoiseConfig, NoNoise

__all__ = ["site_rms", "calibrate", "needs_calibration", "noise_off", "CALIBRATION_BATCHES"]

#: Training batches a run's calibration averages over.
CALIBRATION_BATCHES = 8


def needs_calibration(configs: Iterable[NoiseConfig]) -> bool:
    """Whether any of ``configs`` gives σ relative to the site's RMS."""
    return any(getattr(c, "is_relative", False) for c in configs)  # (weight noise: never)


@contextmanager
def noise_off(model: nn.Module):
    """Within this block every site of ``model`` is noise-free (a clean forward pass, which
    needs no calibration); each site's config is restored afterwards."""
    ops = [s.operator for s in model.noise_sites]
    saved = [op.config for op in ops]
    try:
        for op in ops:
            op.config = NoNoise()
        yield model
    finally:
        for op, cfg in zip(ops, saved):
            op.config = cfg


@torch.no_grad()
def site_rms(model: nn.Module, batches: Iterable) -> list[float]:
    """The clean activation RMS of every site of ``model`` (``model.noise_sites`` order):
    sqrt(mean(x²)) over all elements the site sees on ``batches`` (tensors, or (input, label)
    pairs), with every site's noise off and the model in eval mode. The model's mode, noise
    configs and everything else are as before afterwards; the random generators are not used.
    """
    sites = model.noise_sites
    ops = [s.operator for s in sites]
    was_training = model.training
    sums = [0.0] * len(ops)
    counts = [0] * len(ops)

    def recorder(i):
        def hook(_module, inputs):
            x = inputs[0]
            sums[i] += float(x.detach().double().square().sum())
            counts[i] += x.numel()
        return hook

    handles = [op.register_forward_pre_hook(recorder(i)) for i, op in enumerate(ops)]
    try:
        with noise_off(model):
            model.eval()
            n = 0
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x)
                n += 1
        if n == 0:
            raise ValueError("site_rms needs at least one batch")
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    missing = [s.name for s, c in zip(sites, counts) if c == 0]
    if missing:
        raise RuntimeError(f"site_rms: the forward pass never reached the sites {missing}")
    return [math.sqrt(s / c) for s, c in zip(sums, counts)]


def calibrate(model: nn.Module, rms: Sequence[float] | None) -> None:
    """Give every site of ``model`` its clean RMS (one per site, in site order; None: clear
    the calibration); the unit of its relative σ from now on."""
    sites = model.noise_sites
    if rms is not None and len(rms) != len(sites):
        raise ValueError(f"calibrate: one RMS per site ({len(sites)}) expected, got {len(rms)}")
    for i, site in enumerate(sites):
        site.operator.rms = None if rms is None else rms[i]
