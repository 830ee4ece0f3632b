"""Seeds of the engine: torch's global generator (initialisation, noise draws) reseeded from
named parts, so that an epoch, an evaluation or one walk evaluation computes the same thing
whether or not anything ran before it in this process.

The data pipeline's shuffling and augmentation draw from their own generators
(:mod:`data.seeding`), seeded by another scheme (numpy's ``SeedSequence`` of integer keys).
The two cannot become one: neither function's numbers can be computed from the other's, so
either change would change every trained model while its training hash stays the same.
"""
from __future__ import annotations

import hashlib

import torch

__all__ = ["derive_seed", "seed_torch"]


def derive_seed(*parts) -> int:
    """A 31-bit seed from any parts (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def seed_torch(*parts) -> None:
    seed = derive_seed(*parts)
    torch.manual_seed(seed)  # also seeds every CUDA device
