"""Seeds for the data pipeline: every random draw comes from a generator seeded by named keys.

A training epoch draws its shuffling and augmentation from ``epoch_generator(seed, epoch)``
alone, so epoch k is the same whether or not epochs 0..k-1 ran in this process (this is what
makes a resumed run reproduce an uninterrupted one).

Initialisation and noise draw from torch's global generator instead, reseeded by the engine
from its own scheme (``util.engine.seeding``: SHA-256 of named parts); see there why there
are two.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["derive_seed", "seeded_generator", "epoch_generator",
           "STREAM_TRAIN_EPOCH", "STREAM_VAL_SPLIT", "STREAM_GSC_UNKNOWN", "STREAM_GSC_SILENCE"]

# Stream tags keep the seeds of unrelated draws apart even when the user's seeds coincide.
STREAM_TRAIN_EPOCH = 1
STREAM_VAL_SPLIT = 2
STREAM_GSC_UNKNOWN = 3
STREAM_GSC_SILENCE = 4


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from non-negative integer keys; different key tuples give unrelated seeds."""
    ints = [int(k) for k in keys]
    if any(k < 0 for k in ints):
        raise ValueError(f"seed keys must be non-negative integers, got {keys}")
    hi, lo = np.random.SeedSequence(ints).generate_state(2, dtype=np.uint32)
    return ((int(hi) << 32) | int(lo)) & ((1 << 63) - 1)


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``keys`` (see :func:`derive_seed`)."""
    generator = torch.Generator()
    generator.manual_seed(derive_seed(*keys))
    return generator


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one training epoch: shuffling and augmentation of that epoch only."""
    return seeded_generator(STREAM_TRAIN_EPOCH, seed, epoch)
