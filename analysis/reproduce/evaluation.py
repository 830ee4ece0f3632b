"""Accuracy of a trained model under noise, for the reproduction: the engine's loops, seeded.

Noise anywhere (any per-site configs and repetitions) is evaluated by the engine's evaluation
loop (:func:`util.engine.loops.evaluate`), noise at one site by the walk's
:class:`util.engine.walk.SiteEvaluator`. Each noise draw ``r`` is seeded from
``(*seed_parts, r)`` (:func:`util.engine.seeding.seed_torch`), so a rerun gives the same numbers.
A sample whose logits are not all finite (a diverged model, or a float32 overflow under huge
multiplicative noise) counts as wrong (:func:`util.engine.loops.correct_predictions`), and the
share of such samples is reported.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from noise.config import NoiseConfig, NoNoise
from noise.placement import configure
from util.engine.loops import evaluate
from util.engine.seeding import seed_torch
from util.engine.walk import SiteEvaluator

__all__ = ["accuracy_over_draws", "site_accuracy_over_draws"]

#: Validation samples per forward pass. The draws of noise at several sites interleave per
#: chunk, so this size is part of what the seeds reproduce.
CHUNK = 512


class _CountingNonFinite(nn.Module):
    """The model, counting the samples whose logits are not all finite (the engine's loop
    counts them as wrong)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.non_finite = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        self.non_finite += int((~torch.isfinite(out).all(dim=1)).sum())
        return out


def _mean_std(accs: Sequence[float]) -> dict[str, float]:
    return {"mean": float(np.mean(accs)),
            "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0}


def accuracy_over_draws(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor],
                        configs: Sequence[NoiseConfig] | None = None,
                        repetitions: Sequence[int] | None = None, *,
                        seed_parts: Sequence[Any] = (), repeats: int = 1) -> dict[str, float]:
    """Mean/std accuracy (%) over ``repeats`` noise draws with per-site ``configs`` (None: the
    noise-free model, one pass) and ``repetitions`` (None: 1 everywhere); ``non_finite`` is the
    share of samples whose logits are not finite. The model's noise is off afterwards."""
    x, y = data
    n_sites = len(model.noise_sites)
    configure(model, configs=configs or [NoNoise()] * n_sites,
              repetitions=repetitions or [1] * n_sites)
    counted = _CountingNonFinite(model)
    chunks = [(x[i:i + CHUNK], y[i:i + CHUNK]) for i in range(0, x.shape[0], CHUNK)]
    accs = []
    try:
        for rep in range(repeats if configs else 1):
            seed_torch(*seed_parts, rep)
            accs.append(evaluate(counted, chunks, nn.CrossEntropyLoss())[1])
    finally:
        configure(model, configs=[NoNoise()] * n_sites, repetitions=[1] * n_sites)
    return {**_mean_std(accs), "non_finite": counted.non_finite / (x.shape[0] * len(accs))}


def site_accuracy_over_draws(evaluator: SiteEvaluator, site: int, noise: NoiseConfig, *,
                             seed_parts: Sequence[Any] = (), repeats: int = 1
                             ) -> dict[str, float]:
    """Mean/std accuracy (%) over ``repeats`` draws of ``noise`` at ``site`` only."""
    accs = []
    for rep in range(repeats):
        seed_torch(*seed_parts, rep)
        accs.append(evaluator.evaluate(site, noise)[0])
    return _mean_std(accs)
