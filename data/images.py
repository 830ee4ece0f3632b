"""MNIST, Fashion-MNIST, CIFAR-10 and SVHN: whole splits in memory as uint8 tensors, augmented and
normalised batch by batch on the training device.

The files are torchvision's (downloaded by torchvision's dataset classes in ``prepare()``, read
from torchvision's on-disk layout under ``root``); the transforms are the paper's:

| dataset      | train                                          | eval            |
|--------------|------------------------------------------------|-----------------|
| MNIST        | [0, 1]                                         | [0, 1]          |
| FashionMNIST | RandomCrop(28, pad 4) + flip + Normalize(.5,.5) | Normalize only  |
| CIFAR10      | RandomCrop(32, pad 4) + flip + Normalize(CIFAR) | Normalize only  |
| SVHN         | as CIFAR10 (the paper used CIFAR's statistics)  | as CIFAR10      |

The validation loader is the official test split and there is no test loader, unless
``val_split`` holds out a fraction of the training split as validation; then the official test
split is the test loader.
"""
from __future__ import annotations

import abc
import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .augment import ImageTransform
from .base import BaseDataset, BatchLoader, file_fingerprint, memory_cached
from .errors import DatasetCorruptError
from .formats import read_cifar_batch, read_idx, read_svhn_mat
from .registry import register_dataset
from .seeding import STREAM_VAL_SPLIT, seeded_generator

__all__ = ["ImageDataset", "MNIST", "FashionMNIST", "CIFAR10", "SVHN",
           "FASHION_MNIST_ENV_VAR", "SYSTEM_FASHION_MNIST_DIR"]

logger = logging.getLogger(__name__)

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)

FASHION_MNIST_ENV_VAR = "WALKING_NOISE_FASHION_MNIST_DIR"
SYSTEM_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


class ImageDataset(BaseDataset):
    """An image dataset held in memory; subclasses say where the files are and how to read them."""

    train_transform: ImageTransform
    eval_transform: ImageTransform
    _split_cache: Optional[dict] = None  # set on first use, per object

    @abc.abstractmethod
    def _files(self, location) -> list[Path]:
        """Every file the located dataset consists of."""

    @abc.abstractmethod
    def _read(self, location) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{'train': (images uint8 [N, C, H, W], labels [N]), 'test': (...)}."""

    # --- reading, once per process ----------------------------------------------------------
    def _official_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        location = self._require_files()
        files = self._files(location)
        return memory_cached((self.name, file_fingerprint(files)),
                             lambda: self._read_checked(location))

    def _read_checked(self, location) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        out = {}
        for split, (images, labels) in self._read(location).items():
            if tuple(images.shape[1:]) != tuple(self.dims):
                raise DatasetCorruptError(self._files(location)[0],
                                          f"{split} images have shape {list(images.shape[1:])}, "
                                          f"expected {list(self.dims)}")
            if len(images) != len(labels):
                raise DatasetCorruptError(self._files(location)[0],
                                          f"{split}: {len(images)} images but {len(labels)} labels")
            if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise DatasetCorruptError(self._files(location)[0],
                                          f"{split} labels outside 0..{self.num_classes - 1}")
            out[split] = (torch.from_numpy(np.array(images, dtype=np.uint8)),  # own, writable copy
                          torch.from_numpy(np.asarray(labels, dtype=np.int64)))
            logger.info("%s: %s split, %d images, read from %s", self.name, split, len(labels),
                        Path(self._files(location)[0]).parent)
        return out

    def _splits(self) -> dict[str, Optional[tuple[torch.Tensor, torch.Tensor]]]:
        """{'train', 'val', 'test'} → (images, labels); 'test' None without ``val_split``."""
        if self._split_cache is None:
            official = self._official_splits()
            if self.val_split is None:
                self._split_cache = {"train": official["train"], "val": official["test"],
                                     "test": None}
            else:
                images, labels = official["train"]
                n = len(labels)
                n_val = int(round(self.val_split * n))
                if not 0 < n_val < n:
                    raise ValueError(f"{self.name}: val_split={self.val_split} of {n} training "
                                     f"samples leaves an empty split")
                order = torch.randperm(n, generator=seeded_generator(STREAM_VAL_SPLIT,
                                                                     self.split_seed))
                val_idx, train_idx = order[:n_val].sort().values, order[n_val:].sort().values
                self._split_cache = {"train": (images[train_idx], labels[train_idx]),
                                     "val": (images[val_idx], labels[val_idx]),
                                     "test": official["test"]}
        return self._split_cache

    def _on_device(self, split: str, device) -> tuple[torch.Tensor, torch.Tensor]:
        device = torch.device(device)
        cache = self.__dict__.setdefault("_device_cache", {})
        key = (split, str(device))
        if key not in cache:
            images, labels = self._splits()[split]
            cache[key] = (images.to(device), labels.to(device))
        return cache[key]

    # --- loaders ----------------------------------------------------------------------------
    def _loader(self, split: str, device, transform: ImageTransform, batch_size: int,
                generator_factory=None) -> BatchLoader:
        images, labels = self._on_device(split, device)
        augment = generator_factory is not None and transform.is_random

        def make_batch(indices: torch.Tensor, generator):
            indices = indices.to(images.device)
            params = transform.draw(len(indices), generator) if augment else None
            return transform(images[indices], params), labels[indices]

        return BatchLoader(len(labels), batch_size, make_batch, generator_factory)

    def train_loader(self, device="cpu", epoch: int = 0, seed: int = 0) -> BatchLoader:
        return self._loader("train", device, self.train_transform, self.batch_size,
                            self._train_generator_factory(seed, epoch))

    def val_loader(self, device="cpu") -> BatchLoader:
        return self._loader("val", device, self.eval_transform, self.eval_batch_size)

    @classmethod
    def has_test_split(cls, val_split: Optional[float] = None) -> bool:
        return val_split is not None  # else the official test split is the validation split

    def test_loader(self, device="cpu") -> Optional[BatchLoader]:
        if self._splits()["test"] is None:
            return None
        return self._loader("test", device, self.eval_transform, self.eval_batch_size)

    @property
    def num_train(self) -> int:
        return len(self._splits()["train"][1])

    @property
    def num_val(self) -> int:
        return len(self._splits()["val"][1])

    @property
    def num_test(self) -> int:
        test = self._splits()["test"]
        return 0 if test is None else len(test[1])


IDX_STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def find_idx_files(folder: Path) -> Optional[dict[str, Path]]:
    """The four MNIST-style IDX files in ``folder`` (each plain or ``.gz``), or None."""
    found = {}
    for stems in IDX_STEMS.values():
        for stem in stems:
            for candidate in (folder / stem, folder / f"{stem}.gz"):
                if candidate.is_file():
                    found[stem] = candidate
                    break
            else:
                return None
    return found


class IdxImageDataset(ImageDataset):
    """MNIST-style: four IDX files in ``root/<ClassName>/raw`` (torchvision's layout)."""

    torchvision_class: str

    def _candidate_dirs(self) -> list[Path]:
        return [self.root / self.torchvision_class / "raw"]

    def _looked_in(self) -> list[str]:
        return [str(d) for d in self._candidate_dirs()]

    def _locate(self) -> Optional[dict[str, Path]]:
        for folder in self._candidate_dirs():
            found = find_idx_files(folder)
            if found is not None:
                return found
        return None

    def _files(self, location) -> list[Path]:
        return list(location.values())

    def _read(self, location):
        out = {}
        for split, (image_stem, label_stem) in IDX_STEMS.items():
            images = read_idx(location[image_stem], ndim=3)
            labels = read_idx(location[label_stem], ndim=1)
            if tuple(images.shape[1:]) != tuple(self.dims[1:]):
                raise DatasetCorruptError(location[image_stem],
                                          f"images are {list(images.shape[1:])}, expected "
                                          f"{list(self.dims[1:])}")
            if len(images) != len(labels):
                raise DatasetCorruptError(location[label_stem],
                                          f"{len(labels)} labels for {len(images)} images in "
                                          f"{location[image_stem]}")
            out[split] = (images[:, None], labels)
        return out

    def _download(self) -> None:
        import torchvision

        getattr(torchvision.datasets, self.torchvision_class)(str(self.root), train=True,
                                                              download=True)


@register_dataset("MNIST")
class MNIST(IdxImageDataset):
    dims = (1, 28, 28)
    num_classes = 10
    classes = tuple(str(d) for d in range(10))
    torchvision_class = "MNIST"
    train_transform = ImageTransform()
    eval_transform = ImageTransform()
    how_to_get = "torchvision downloads the four IDX files into <root>/MNIST/raw."


@register_dataset("FashionMNIST")
class FashionMNIST(IdxImageDataset):
    """Fashion-MNIST; also read, without any download, from ``$WALKING_NOISE_FASHION_MNIST_DIR``
    or Debian's ``/usr/share/datasets/fashion-mnist`` when one of them holds the four files."""

    dims = (1, 28, 28)
    num_classes = 10
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
    torchvision_class = "FashionMNIST"
    train_transform = ImageTransform(crop_padding=4, flip_p=0.5, mean=(0.5,), std=(0.5,))
    eval_transform = ImageTransform(mean=(0.5,), std=(0.5,))
    how_to_get = (f"torchvision downloads them into <root>/FashionMNIST/raw; offline, install "
                  f"Debian's dataset-fashion-mnist or set {FASHION_MNIST_ENV_VAR} to a folder "
                  f"with the four IDX files.")

    def _candidate_dirs(self) -> list[Path]:
        dirs = []
        if os.environ.get(FASHION_MNIST_ENV_VAR):
            dirs.append(Path(os.environ[FASHION_MNIST_ENV_VAR]).expanduser())
        return dirs + super()._candidate_dirs() + [Path(SYSTEM_FASHION_MNIST_DIR)]


@register_dataset("CIFAR10")
class CIFAR10(ImageDataset):
    dims = (3, 32, 32)
    num_classes = 10
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck")
    train_transform = ImageTransform(crop_padding=4, flip_p=0.5, mean=CIFAR_MEAN, std=CIFAR_STD)
    eval_transform = ImageTransform(mean=CIFAR_MEAN, std=CIFAR_STD)
    how_to_get = "torchvision downloads and extracts cifar-10-python.tar.gz into <root>."
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)

    def _looked_in(self) -> list[str]:
        return [str(self.root / self.folder)]

    def _locate(self) -> Optional[Path]:
        folder = self.root / self.folder
        names = self.train_files + self.test_files
        return folder if all((folder / n).is_file() for n in names) else None

    def _files(self, location: Path) -> list[Path]:
        return [location / n for n in self.train_files + self.test_files]

    def _read(self, location: Path):
        out = {}
        for split, names in (("train", self.train_files), ("test", self.test_files)):
            parts = [read_cifar_batch(location / n) for n in names]
            out[split] = (np.concatenate([p[0] for p in parts]),
                          np.concatenate([p[1] for p in parts]))
        return out

    def _download(self) -> None:
        import torchvision

        torchvision.datasets.CIFAR10(str(self.root), train=True, download=True)


@register_dataset("SVHN")
class SVHN(ImageDataset):
    dims = (3, 32, 32)
    num_classes = 10
    classes = tuple(str(d) for d in range(10))
    train_transform = CIFAR10.train_transform
    eval_transform = CIFAR10.eval_transform
    how_to_get = "torchvision downloads train_32x32.mat and test_32x32.mat into <root>."
    split_files = {"train": "train_32x32.mat", "test": "test_32x32.mat"}

    def _looked_in(self) -> list[str]:
        return [str(self.root)]

    def _locate(self) -> Optional[Path]:
        ok = all((self.root / n).is_file() for n in self.split_files.values())
        return self.root if ok else None

    def _files(self, location: Path) -> list[Path]:
        return [location / n for n in self.split_files.values()]

    def _read(self, location: Path):
        return {split: read_svhn_mat(location / n) for split, n in self.split_files.items()}

    def _download(self) -> None:
        import torchvision

        for split, name in self.split_files.items():
            if not (self.root / name).is_file():
                torchvision.datasets.SVHN(str(self.root), split=split, download=True)
