"""The real Fashion-MNIST from Debian's dataset-fashion-mnist package, read offline."""
import os
import socket

import pytest
import torch

import data.images
from data import get_dataset

pytestmark = pytest.mark.skipif(not os.path.isdir(data.images.SYSTEM_FASHION_MNIST_DIR),
                                reason="Debian package dataset-fashion-mnist not installed")


def test_real_fashion_mnist_has_60000_train_10000_test_images_in_10_balanced_classes(
        tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv(data.images.FASHION_MNIST_ENV_VAR, raising=False)
    ds = get_dataset("FashionMNIST", tmp_path, batch_size=1000, download=True)
    ds.prepare()
    assert (ds.num_train, ds.num_val, ds.num_test) == (60000, 10000, 0)
    x, y = (torch.cat(t) for t in zip(*ds.val_loader()))
    assert x.shape == (10000, 1, 28, 28) and y.dtype == torch.int64
    assert torch.equal(torch.bincount(y), torch.full((10,), 1000))
    pixels = x * 0.5 + 0.5  # undo Normalize(0.5, 0.5)
    assert pixels.min() >= 0 and pixels.max() <= 1
    assert abs(pixels.mean().item() - 0.2860) < 0.002  # Fashion-MNIST's known mean intensity
    train_labels = ds._splits()["train"][1]
    assert torch.equal(torch.bincount(train_labels), torch.full((10,), 6000))
    xb, yb = next(iter(ds.train_loader(epoch=0, seed=0)))
    assert xb.shape == (1000, 1, 28, 28) and set(yb.tolist()) == set(range(10))
