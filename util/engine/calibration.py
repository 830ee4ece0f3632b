"""When and on what the engine calibrates relative σ (``sigma_relative_to: rms``).

The measurement itself is :func:`noise.calibration.site_rms`; this module picks the batches
(:func:`calibration_batches`: the first :data:`~noise.calibration.CALIBRATION_BATCHES` batches
of the training split's epoch 0 under the training seed, the same every time for one trained
model) and calibrates a prepared model right before its noise is used: at the start of every
training epoch when the training noise is relative (:func:`calibrate_for_training`), and on
the model as it is evaluated when the evaluation noise is (:func:`calibrate_for_eval`: after
each epoch's training, on a reused model, before a walk). A config without relative σ
calibrates nothing and computes exactly what it did before.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterable

from noise.calibration import CALIBRATION_BATCHES, calibrate, needs_calibration, site_rms
from noise.config import NoiseConfig

__all__ = ["calibration_batches", "calibrate_model", "calibrate_for_training",
           "calibrate_for_eval", "calibrate_for_walk"]


def calibration_batches(p) -> list:
    """The batches every calibration of ``p``'s model averages over (see the module doc)."""
    loader = p.dataset.train_loader(p.device, epoch=0, seed=p.vc.train_seed)
    return list(itertools.islice(loader, CALIBRATION_BATCHES))


def calibrate_model(p, configs: Iterable[NoiseConfig]) -> dict[str, Any] | None:
    """Calibrate ``p``'s model (every site) if any of ``configs`` is relative; the
    calibration ``{"rms": [one per site], "batches": n}``, or None when none is."""
    if not needs_calibration(configs):
        return None
    batches = calibration_batches(p)
    rms = site_rms(p.model, batches)
    calibrate(p.model, rms)
    return {"rms": rms, "batches": len(batches)}


def calibrate_for_training(p) -> dict[str, Any] | None:
    """:func:`calibrate_model` for ``p``'s noise active in training."""
    return calibrate_model(p, [c for c in p.vc.site_configs if c.active(True)])


def calibrate_for_eval(p) -> dict[str, Any] | None:
    """:func:`calibrate_model` for ``p``'s noise active in evaluation."""
    return calibrate_model(p, [c for c in p.vc.site_configs if c.active(False)])


def calibrate_for_walk(p, settings) -> dict[str, Any] | None:
    """:func:`calibrate_model` for a walk's noise (``walk.params: {sigma_relative_to: rms}``
    walks σ relative to each site's RMS); the trained model as the walk evaluates it."""
    return calibrate_model(p, [settings.noise(1.0)])
