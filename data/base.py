"""What every dataset offers, and the loader that serves its batches.

A dataset object is cheap to create: nothing is read until a loader or a count is asked for.
``prepare()`` downloads missing files and is the only method that may touch the network; the
loaders read local files only (calling ``prepare()`` first when files are missing and the
dataset was created with ``download=True``).

Loader contract (the trainer relies on it):

* ``train_loader(device='cpu', epoch=0, seed=0)``, ``val_loader(device='cpu')``,
  ``test_loader(device='cpu')`` return a re-iterable :class:`BatchLoader` (``len()`` = number of
  batches) yielding ``(x, y)``: x float32 [B, C, H, W] and y int64 [B], both on ``device``.
* The training loader's shuffling and augmentation come only from
  ``seeding.epoch_generator(seed, epoch)``: iterating it twice, or in another process, gives the
  same batches. Eval loaders are unshuffled and deterministic.
* ``test_loader`` is None where the dataset has no separate test split.
"""
from __future__ import annotations

import abc
import logging
import math
import os
from pathlib import Path
from typing import Callable, Hashable, Iterator, Optional

import torch

from .errors import DatasetNotFoundError
from .seeding import epoch_generator

__all__ = ["BaseDataset", "BatchLoader", "memory_cached", "file_fingerprint"]

logger = logging.getLogger(__name__)

MakeBatch = Callable[[torch.Tensor, Optional[torch.Generator]], tuple[torch.Tensor, torch.Tensor]]


class BatchLoader:
    """Batches of one split: ``make_batch(indices, generator)`` builds each from sample indices.

    With ``generator_factory`` (training) every iteration starts a fresh generator from it, draws
    a permutation of the samples, and hands the same generator to ``make_batch`` for the
    augmentation draws; without it the order is 0..N-1 and ``make_batch`` gets None.
    The last batch may be smaller than ``batch_size``.
    """

    def __init__(self, num_samples: int, batch_size: int, make_batch: MakeBatch,
                 generator_factory: Optional[Callable[[], torch.Generator]] = None):
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self._make_batch = make_batch
        self._generator_factory = generator_factory

    @property
    def shuffle(self) -> bool:
        return self._generator_factory is not None

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._generator_factory is None:
            generator = None
            order = torch.arange(self.num_samples)
        else:
            generator = self._generator_factory()
            order = torch.randperm(self.num_samples, generator=generator)
        for start in range(0, self.num_samples, self.batch_size):
            yield self._make_batch(order[start:start + self.batch_size], generator)

    def __repr__(self) -> str:
        return (f"BatchLoader(num_samples={self.num_samples}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle})")


_MEMORY_CACHE: dict[Hashable, object] = {}


def memory_cached(key: Hashable, build: Callable[[], object]) -> object:
    """``build()`` once per process and ``key``; later calls return the same object."""
    if key not in _MEMORY_CACHE:
        _MEMORY_CACHE[key] = build()
    return _MEMORY_CACHE[key]


def file_fingerprint(paths) -> tuple:
    """(path, size, mtime) of each file: a cache key that changes when a file is replaced."""
    out = []
    for path in paths:
        st = os.stat(path)
        out.append((str(Path(path).resolve()), st.st_size, st.st_mtime_ns))
    return tuple(out)


class BaseDataset(abc.ABC):
    """A dataset of the registry; subclasses set ``dims``, ``num_classes``, ``classes``.

    root: folder holding the dataset (in torchvision's layout for the image datasets).
    batch_size: training batch size; ``eval_batch_size`` (default: the same) for eval loaders.
    download: whether missing files may be downloaded by :meth:`prepare`.
    val_split: fraction of the training split held out (seeded by ``split_seed``) as the
        validation split, where a dataset supports it.
    num_workers: threads for decoding/feature extraction where a dataset needs them.
    """

    name: str = "?"  # set by register_dataset
    #: whether ``val_split`` may hold out part of the training split (config validation asks it)
    supports_val_split: bool = True
    dims: tuple[int, int, int]
    num_classes: int
    classes: tuple[str, ...]
    how_to_get: str = ""

    def __init__(self, root, batch_size: int = 128, download: bool = True,
                 val_split: Optional[float] = None, num_workers: int = 0,
                 eval_batch_size: Optional[int] = None, split_seed: int = 0):
        if root is None:
            raise ValueError(f"{self.name}: root (the data folder) must be given")
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1):
                raise ValueError(f"{self.name}: {key} must be a positive integer, got {value!r}")
        if val_split is not None and not 0.0 < float(val_split) < 1.0:
            raise ValueError(f"{self.name}: val_split must be a fraction in (0, 1) or None, "
                             f"got {val_split!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"{self.name}: num_workers must be an integer >= 0, "
                             f"got {num_workers!r}")
        if int(split_seed) < 0:
            raise ValueError(f"{self.name}: split_seed must be >= 0, got {split_seed!r}")
        self.root = Path(root).expanduser()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.download = bool(download)
        self.val_split = None if val_split is None else float(val_split)
        self.num_workers = num_workers
        self.split_seed = int(split_seed)

    # --- files ------------------------------------------------------------------------------
    @abc.abstractmethod
    def _locate(self):
        """Where the complete local files are (dataset-specific object), or None."""

    @abc.abstractmethod
    def _looked_in(self) -> list[str]:
        """Every folder :meth:`_locate` searched, for error messages."""

    @abc.abstractmethod
    def _download(self) -> None:
        """Fetch the missing files into this dataset's folder under ``root``."""

    def _not_found(self, note: str = "") -> DatasetNotFoundError:
        how = (f"Get them by calling prepare() on a dataset made with download=True (on a "
               f"machine with internet access), or copy them there by hand. {self.how_to_get}")
        return DatasetNotFoundError(self.name, self._looked_in(), f"{note}\n{how}".strip())

    def prepare(self) -> None:
        """Download the dataset unless its files are already there; the only network access."""
        if self._locate() is not None:
            logger.debug("%s: files present, nothing to download", self.name)
            return
        if not self.download:
            raise self._not_found("This dataset was created with download=False.")
        logger.info("%s: downloading into %s", self.name, self.root)
        try:
            self._download()
        except Exception as exc:  # network, disk, checksum: all end the same way for a user
            raise self._not_found(f"The download failed: {exc}") from exc
        if self._locate() is None:
            raise self._not_found("The download finished but the files are still incomplete.")

    def _require_files(self):
        """The located files, downloading them first if missing and allowed."""
        location = self._locate()
        if location is None:
            self.prepare()
            location = self._locate()
        return location

    # --- loaders and counts -----------------------------------------------------------------
    @abc.abstractmethod
    def train_loader(self, device="cpu", epoch: int = 0, seed: int = 0) -> BatchLoader: ...

    @abc.abstractmethod
    def val_loader(self, device="cpu") -> BatchLoader: ...

    @abc.abstractmethod
    def test_loader(self, device="cpu") -> Optional[BatchLoader]: ...

    @property
    @abc.abstractmethod
    def num_train(self) -> int: ...

    @property
    @abc.abstractmethod
    def num_val(self) -> int: ...

    @property
    @abc.abstractmethod
    def num_test(self) -> int:
        """Samples in the separate test split; 0 where there is none."""

    @classmethod
    def has_test_split(cls, val_split: Optional[float] = None) -> bool:
        """Whether :meth:`test_loader` gives a separate test split when the dataset is made with
        ``val_split``; known without reading any file (config validation asks it)."""
        return True

    @staticmethod
    def _train_generator_factory(seed: int, epoch: int) -> Callable[[], torch.Generator]:
        seed, epoch = int(seed), int(epoch)
        return lambda: epoch_generator(seed, epoch)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, batch_size={self.batch_size}, "
                f"val_split={self.val_split})")
