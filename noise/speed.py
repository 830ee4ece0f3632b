"""The CPU speed layer: every fast path of the project, behind one switch.

Each fast path gives the values of a plain-torch reference (bit for bit, or the same
distribution for the generator) and only exists because a benchmark measured it
(``benchmarks/RESULTS.md``). ``WN_FAST=0`` turns them all off: plain torch everywhere, the
reference the fast paths are tested against (``tests/test_speed_switch.py``).

======================  ===========================================  ===========================
fast path               where                                        reference (``WN_FAST=0``)
======================  ===========================================  ===========================
compiled generator      :mod:`noise.fast_rng` (finer switch:         ``torch.randn_like``
                        ``WN_FAST_RNG=0`` turns off only this one)
in-place noise          :func:`overwritable`, used by                a new tensor per site
                        :func:`noise.fast_rng.add_noise`
fused ReLU + noise      ``NoiseOperator.relu_then``, called by       ``nn.ReLU``, then the
                        ``models.builder.SiteNetwork.forward``       operator
strided max-pool        :func:`strided_max_pool2d`, used by          torch's ``max_pool2d``
(inference only)        ``models.builder.MaxPool2d``
======================  ===========================================  ===========================

The hook checks (:func:`has_hooks`, :func:`any_global_hooks`) guard the in-place noise and the
fusion: a layer with hooks runs unfused, and its output reaches the noise as a view, so that
a hook that kept the output never sees it change.

The switch is read from the environment once, when :mod:`noise` is imported (``WN_FAST``:
``0``, ``false``, ``no`` or ``off`` turn the fast paths off; anything else, or unset, keeps
them on). Within a process, :func:`fast_paths` flips it for a block (tests, benchmarks);
:func:`enabled` says where it stands. The switch is process-wide, not per thread.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["enabled", "fast_paths", "overwritable", "OUTPUT_NOT_SAVED", "has_hooks",
           "any_global_hooks", "strided_max_pool_applies", "strided_max_pool2d"]

_OFF_WORDS = ("0", "false", "no", "off")


def _from_env(name: str) -> bool:
    return os.environ.get(name, "1").strip().lower() not in _OFF_WORDS


_on = _from_env("WN_FAST")


def enabled() -> bool:
    """Whether the fast paths are on (``WN_FAST``, or the innermost :func:`fast_paths`)."""
    return _on


@contextmanager
def fast_paths(on: bool):
    """Within this block the fast paths are on (``True``) or off (``False``, plain torch);
    the previous setting is restored afterwards."""
    global _on
    before, _on = _on, bool(on)
    try:
        yield
    finally:
        _on = before


# --- in-place noise ----------------------------------------------------------------------------

# Autograd nodes whose backward does not read their own output (derivatives.yaml: convolution
# needs input and weight, addmm/mm their matrices, batch norm its input and saved statistics,
# max-pool its input and indices, threshold its input). A fresh output of one of them may take
# its noise in place.
OUTPUT_NOT_SAVED = frozenset({"ConvolutionBackward0", "AddmmBackward0", "MmBackward0",
                              "NativeBatchNormBackward0", "MaxPool2DWithIndicesBackward0",
                              "ThresholdBackward0"})


def overwritable(x: torch.Tensor) -> bool:
    """True when autograd provably never reads ``x``'s values: a fresh, contiguous, unmodified
    output of a node in :data:`OUTPUT_NOT_SAVED` (not a view, not a leaf, not the data)."""
    gf = x.grad_fn
    return (gf is not None and torch.is_grad_enabled() and type(gf).__name__ in OUTPUT_NOT_SAVED
            and x._base is None and x._version == 0 and x.is_contiguous())


# --- hook checks -------------------------------------------------------------------------------

def has_hooks(module: nn.Module) -> bool:
    """Whether ``module`` has forward or backward hooks of its own."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)


def any_global_hooks() -> bool:
    """Whether any module hooks are registered globally (``register_module_forward_hook``...)."""
    from torch.nn.modules import module as mm
    return bool(mm._global_forward_hooks or mm._global_forward_pre_hooks
                or mm._global_backward_hooks or mm._global_backward_pre_hooks)


# --- strided max-pool --------------------------------------------------------------------------

def strided_max_pool_applies(pool: nn.MaxPool2d, x: torch.Tensor) -> bool:
    """Whether :func:`strided_max_pool2d` may replace ``pool(x)``: fast paths on, a CPU batch
    of images, non-overlapping windows (kernel = stride, no padding, dilation or ceil mode,
    no indices), and no gradient being recorded (so gradients keep torch's tie-breaking)."""
    return (_on and x.device.type == "cpu" and x.dim() == 4 and not pool.return_indices
            and not pool.ceil_mode and pool.padding == 0 and pool.dilation == 1
            and pool.stride == pool.kernel_size and isinstance(pool.kernel_size, int)
            and pool.kernel_size >= 2 and not (torch.is_grad_enabled() and x.requires_grad))


def strided_max_pool2d(x: torch.Tensor, k: int) -> torch.Tensor:
    """``F.max_pool2d(x, k)`` for a 4-d CPU tensor, bit for bit (NaN propagates alike).

    Torch's CPU max-pool kernel handles ~0.5 value/ns here; the same maxima come from k-1
    elementwise ``torch.maximum`` over strided views per axis, ~10x faster."""
    h, w = (x.shape[2] // k) * k, (x.shape[3] // k) * k
    x = x[:, :, :h, :w]
    rows = x[:, :, 0::k]
    for i in range(1, k):
        rows = torch.maximum(rows, x[:, :, i::k])
    out = rows[..., 0::k]
    for j in range(1, k):
        out = torch.maximum(out, rows[..., j::k])
    return out.contiguous()
