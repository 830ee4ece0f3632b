"""A toy image task that a small model learns in one epoch (tests that need a real
accuracy-versus-σ curve), written in MNIST's on-disk IDX layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from data_fixtures import IDX_NAMES, balanced_labels, write_idx


def learnable_images(n: int, seed: int = 0, noise: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """28×28 uint8 images whose class (0..9) is a bright 8×8 block at a class-specific place,
    under uniform noise: a small model learns them in one epoch (tests that need a real curve)."""
    rng = np.random.default_rng(seed)
    labels = balanced_labels(n, 10, rng)
    images = rng.integers(0, noise, (n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        r, col = 2 + 8 * (c // 4), 1 + 7 * (c % 4)
        images[i, r:r + 8, col:col + 6] = 200
    return images, labels


def write_learnable_mnist(folder: Path, n_train: int = 2000, n_test: int = 500,
                          seed: int = 0) -> None:
    """MNIST-layout IDX files of :func:`learnable_images` in ``folder`` (``<root>/MNIST/raw``)."""
    for split, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        images, labels = learnable_images(n, s)
        image_name, label_name = IDX_NAMES[split]
        write_idx(Path(folder) / image_name, images)
        write_idx(Path(folder) / label_name, labels.astype(np.uint8))


def block_network(monkeypatch) -> None:
    """Make every connection attempt and every torchvision download fail the test."""
    import socket

    import torchvision.datasets.utils as tvu

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for name in ("download_url", "download_and_extract_archive", "download_file_from_google_drive"):
        monkeypatch.setattr(tvu, name, refuse)
