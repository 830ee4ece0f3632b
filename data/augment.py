"""Image augmentation and normalisation on whole uint8 batches, equal to torchvision's per-sample
``RandomCrop(size, padding=p)`` (zero fill) → ``RandomHorizontalFlip(p)`` → ``ToTensor()`` →
``Normalize(mean, std)``.

Parameters are drawn on the CPU from the epoch's generator (so a batch is the same on every
device) and then applied on the batch's device. Each crop offset (i, j) is uniform on
{0..2p}², as in ``RandomCrop.get_params``; each image is flipped with probability p.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

__all__ = ["ImageTransform", "AugmentParams", "crop_with_padding", "horizontal_flip",
           "to_float"]


class AugmentParams(NamedTuple):
    """Per-image draws of one batch: crop offsets [B, 2] (row, col) and flip flags [B]."""
    offsets: Optional[torch.Tensor]
    flips: Optional[torch.Tensor]


def crop_with_padding(images: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Zero-pad a [B, C, H, W] batch by ``padding`` and cut image b at ``offsets[b]`` back to H×W.

    Offset (i, j) takes rows i..i+H-1 and columns j..j+W-1 of the padded image, as
    ``torchvision.transforms.functional.crop(pad(img, padding), i, j, H, W)``.
    """
    b, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = offsets.to(images.device)
    rows = offsets[:, 0, None] + torch.arange(h, device=images.device)
    cols = offsets[:, 1, None] + torch.arange(w, device=images.device)
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def horizontal_flip(images: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Mirror the images of a [B, C, H, W] batch whose flag in ``flips`` [B] is set."""
    return torch.where(flips.to(images.device)[:, None, None, None], images.flip(-1), images)


def to_float(images: torch.Tensor, mean=None, std=None) -> torch.Tensor:
    """uint8 → float32 in [0, 1] (``ToTensor``), then ``(x - mean) / std`` per channel if given.

    The operations and their order are torchvision's, so results agree bit for bit.
    """
    x = images.to(torch.float32).div_(255)
    if mean is not None:
        m = torch.as_tensor(mean, dtype=torch.float32, device=x.device)[:, None, None]
        s = torch.as_tensor(std, dtype=torch.float32, device=x.device)[:, None, None]
        x.sub_(m).div_(s)
    return x


@dataclass(frozen=True)
class ImageTransform:
    """One split's image pipeline.

    crop_padding: ``RandomCrop(H×W, padding=crop_padding)`` with zero fill; 0 = no crop.
    flip_p: probability of ``RandomHorizontalFlip``; 0 = no flip.
    mean, std: per-channel ``Normalize``; None = values stay in [0, 1].
    """
    crop_padding: int = 0
    flip_p: float = 0.0
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None

    def __post_init__(self):
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")
        if not 0.0 <= self.flip_p <= 1.0:
            raise ValueError(f"flip_p must be in [0, 1], got {self.flip_p}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std must be given together")

    @property
    def is_random(self) -> bool:
        return self.crop_padding > 0 or self.flip_p > 0

    def draw(self, n: int, generator: torch.Generator) -> AugmentParams:
        """Draw crop offsets and flip flags for ``n`` images from ``generator`` (CPU)."""
        offsets = flips = None
        if self.crop_padding > 0:
            offsets = torch.randint(0, 2 * self.crop_padding + 1, (n, 2), generator=generator)
        if self.flip_p > 0:
            flips = torch.rand(n, generator=generator) < self.flip_p
        return AugmentParams(offsets, flips)

    def __call__(self, images: torch.Tensor, params: Optional[AugmentParams] = None
                 ) -> torch.Tensor:
        """float32 batch from a uint8 [B, C, H, W] batch; ``params`` None = no augmentation."""
        if params is not None:
            if params.offsets is not None:
                images = crop_with_padding(images, self.crop_padding, params.offsets)
            if params.flips is not None:
                images = horizontal_flip(images, params.flips)
        return to_float(images, self.mean, self.std)
