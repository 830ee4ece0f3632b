"""The walk over weight layers (``walk.target: weights``): accuracy of a trained model with
weight noise (:mod:`noise.weights`) on one conv/linear layer at a time, clean everywhere else.

Weight noise changes a layer itself, so the prefix caching of the activation walk
(:class:`util.engine.walk.SiteEvaluator`) does not apply: every evaluation is a full forward
over the evaluation data, one evaluation pass (a ``programming_pass`` draw is held for all of
it; a ``programming_instance`` draw is seeded by the evaluation's own seed, so each repeat is
another programmed instance).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from noise.config import NoNoise
from noise.placement import configure
from noise.weights import (WeightNoise, attach_weight_noise, new_programming_draw,
                           remove_weight_noise, weight_layers)

from .loops import correct_predictions
from .seeding import seed_torch

__all__ = ["WeightLayerEvaluator"]


class WeightLayerEvaluator:
    """Accuracy of a trained model with weight noise on one weight layer; the same interface
    as :class:`util.engine.walk.SiteEvaluator`, whose ``sites`` are here the weight layers."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 criterion: nn.Module, chunk_size: int = 256):
        self.model = model.eval()
        self.x, self.y = x, y
        self.criterion = criterion
        self.chunk_size = chunk_size
        self.sites = [name for name, _ in weight_layers(model)]
        if hasattr(model, "noise_sites"):  # no activation noise anywhere
            configure(model, configs=[NoNoise()] * len(model.noise_sites))

    @torch.inference_mode()
    def evaluate(self, site: int | None, noise: WeightNoise | None = None
                 ) -> tuple[float, float]:
        """(accuracy %, mean loss) with ``noise`` on weight layer ``site`` only (None: the
        clean model), over the whole evaluation data as one pass."""
        remove_weight_noise(self.model)
        if site is not None:
            configs: list[Any] = [None] * len(self.sites)
            configs[site] = noise
            attach_weight_noise(self.model, configs)
        new_programming_draw(self.model)
        loss_sum, correct, n = 0.0, 0, 0
        try:
            for i in range(0, self.x.shape[0], self.chunk_size):
                xc, yc = self.x[i:i + self.chunk_size], self.y[i:i + self.chunk_size]
                out = self.model(xc)
                loss_sum += self.criterion(out, yc).item() * yc.shape[0]
                correct += correct_predictions(out, yc).item()
                n += yc.shape[0]
        finally:
            remove_weight_noise(self.model)
        return 100.0 * correct / n, loss_sum / n

    def evaluate_many(self, site: int, jobs: Sequence[tuple[WeightNoise, Sequence[Any]]]
                      ) -> list[tuple[float, float]]:
        """``evaluate(site, noise)`` for every (noise, seed parts) of ``jobs``, each seeded
        by ``seed_torch(*parts)`` (one by one: a full forward each)."""
        out = []
        for noise, parts in jobs:
            seed_torch(*parts)
            out.append(self.evaluate(site, noise))
        return out
