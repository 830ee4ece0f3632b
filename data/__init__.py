"""Datasets of walking-noise: a registry of MNIST, FashionMNIST, CIFAR10, SVHN and GSC2.

>>> from data import get_dataset
>>> ds = get_dataset("FashionMNIST", root="~/datasets", batch_size=128)
>>> ds.dims, ds.num_classes
((1, 28, 28), 10)
>>> for x, y in ds.train_loader(device="cuda", epoch=3, seed=0): ...   # doctest: +SKIP

Every dataset object has ``.name``, ``.dims`` (C, H, W), ``.num_classes``, ``.classes``,
``.prepare()`` (download if missing; the only network access), ``.train_loader(device, epoch,
seed)``, ``.val_loader(device)``, ``.test_loader(device)`` (None without a separate test split;
the class method ``has_test_split(val_split)`` tells in advance) and the sample counts
``.num_train``, ``.num_val``, ``.num_test`` (0 without a test split).
GSC2 also has ``.class_weights``. The loader contract is in ``data/base.py``; the image
datasets are in ``data/images.py``, the keyword-spotting dataset in ``data/speech_commands.py``.
Old config names ``GSC2_TF`` and ``GSC2_PyTorch`` are aliases of ``GSC2``.
"""
from __future__ import annotations

from . import images, speech_commands  # noqa: F401  (they register their datasets)
from .augment import ImageTransform
from .audio_features import MfccExtractor, MfccSettings
from .base import BaseDataset, BatchLoader
from .errors import DatasetCorruptError, DatasetNotFoundError
from .registry import DATASETS, dataset_names, get_dataset, register_dataset, resolve_name
from .seeding import epoch_generator

__all__ = ["get_dataset", "register_dataset", "dataset_names", "resolve_name", "DATASETS",
           "BaseDataset", "BatchLoader", "ImageTransform", "MfccSettings", "MfccExtractor",
           "DatasetNotFoundError", "DatasetCorruptError", "epoch_generator"]
