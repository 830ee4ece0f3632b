"""Training and evaluation loops, device choice, weight clamping, the divergence check.

The caller seeds each epoch (:mod:`util.engine.seeding`) and hands the loops a loader of that
epoch, so an epoch computes the same thing whether the run got there uninterrupted or resumed
from a checkpoint.
"""
from __future__ import annotations

import logging
import math
from typing import Iterable

import torch
from torch import nn

from noise.weights import new_programming_draw

log = logging.getLogger(__name__)

__all__ = ["best_device", "clamp_weights", "train_epoch", "evaluate", "non_finite",
           "correct_predictions"]

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def best_device(requested: str = "auto") -> torch.device:
    """``cuda`` (the GPU with the most free memory) when available, else ``cpu``."""
    if requested not in ("auto", None):
        return torch.device(requested)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    best, best_free = 0, -1
    for i in range(torch.cuda.device_count()):
        try:
            free, _ = torch.cuda.mem_get_info(i)
        except RuntimeError:
            continue
        if free > best_free:
            best, best_free = i, free
    return torch.device(f"cuda:{best}")


@torch.no_grad()
def clamp_weights(model: nn.Module, lo: float | None, hi: float | None) -> None:
    """Clamp every parameter outside batch-norm layers to [lo, hi] (None: unbounded side)."""
    for module in model.modules():
        if isinstance(module, _BN_TYPES):
            continue
        for p in module.parameters(recurse=False):
            p.clamp_(min=lo, max=hi)


@torch.no_grad()
def non_finite(loss: float, model: nn.Module) -> str | None:
    """What became non-finite after an epoch: ``"loss"`` (the epoch's mean training loss),
    ``"weights"`` (a parameter or buffer), or None when everything is finite."""
    if not math.isfinite(loss):
        return "loss"
    for t in model.state_dict().values():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return "weights"
    return None


def correct_predictions(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """How many rows of ``logits`` predict their label ``y``. A row that is not all finite (a
    diverged model, a float32 overflow under huge noise) predicts nothing, so it is wrong:
    the argmax of a NaN row would otherwise pick the NaN's class."""
    return ((logits.argmax(1) == y) & torch.isfinite(logits).all(1)).sum()


def _progress(iterable, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, disable=None)


def train_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                criterion: nn.Module, *, clamp: tuple | None = None, progress: bool = False,
                desc: str = "train") -> tuple[float, float]:
    """One epoch of training; returns (mean loss, accuracy in percent)."""
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64)
    correct = torch.zeros((), dtype=torch.int64)
    n = 0
    for x, y in _progress(loader, desc, progress):
        optimizer.zero_grad(set_to_none=True)
        out = model(x)
        loss = criterion(out, y)
        loss.backward()
        optimizer.step()
        if clamp is not None:
            clamp_weights(model, *clamp)
        loss_sum = loss_sum.to(loss.device) + loss.detach().double() * y.shape[0]
        correct = correct.to(y.device) + correct_predictions(out.detach(), y)
        n += y.shape[0]
    if n == 0:
        raise RuntimeError("the training loader yielded no batches")
    return loss_sum.item() / n, 100.0 * correct.item() / n


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, criterion: nn.Module, *,
             progress: bool = False, desc: str = "eval") -> tuple[float, float]:
    """(mean loss, accuracy in percent) over a loader, in eval mode (eval-mode noise applies);
    one evaluation pass: programming weight noise is drawn anew for it."""
    model.eval()
    new_programming_draw(model)
    loss_sum = None
    correct = None
    n = 0
    for x, y in _progress(loader, desc, progress):
        out = model(x)
        batch_loss = criterion(out, y).double() * y.shape[0]
        batch_correct = correct_predictions(out, y)
        loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
        correct = batch_correct if correct is None else correct + batch_correct
        n += y.shape[0]
    if n == 0:
        raise RuntimeError("the evaluation loader yielded no batches")
    return loss_sum.item() / n, 100.0 * correct.item() / n
