"""Registry of datasets: a class registers itself under a name (and aliases) with a decorator.

>>> @register_dataset("MyData", aliases=("MyData_v1",))
... class MyData(BaseDataset): ...
"""
from __future__ import annotations

from typing import Callable, TypeVar

__all__ = ["DATASETS", "ALIASES", "register_dataset", "resolve_name", "dataset_names",
           "get_dataset"]

DATASETS: dict[str, type] = {}
ALIASES: dict[str, str] = {}

T = TypeVar("T", bound=type)


def register_dataset(name: str, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
    """Class decorator: make ``cls`` available to :func:`get_dataset` as ``name``/``aliases``."""

    def decorate(cls: T) -> T:
        for key in (name, *aliases):
            if key in DATASETS or key in ALIASES:
                raise ValueError(f"dataset name {key!r} registered twice")
        DATASETS[name] = cls
        for alias in aliases:
            ALIASES[alias] = name
        cls.name = name
        return cls

    return decorate


def dataset_names() -> list[str]:
    """Every accepted name: canonical names and aliases."""
    return sorted(DATASETS) + sorted(ALIASES)


def resolve_name(name: str) -> str:
    """The canonical name of ``name`` (an alias or, case-insensitively, a registered name)."""
    if name in DATASETS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    folded = {k.lower(): k for k in DATASETS} | {k.lower(): v for k, v in ALIASES.items()}
    if isinstance(name, str) and name.lower() in folded:
        return folded[name.lower()]
    raise ValueError(f"unknown dataset {name!r}; known: {dataset_names()}")


def get_dataset(name: str, root, batch_size: int = 128, download: bool = True,
                val_split: float | None = None, num_workers: int = 0, **kw):
    """The dataset ``name`` with its files under ``root`` (nothing is read until it is used).

    ``download``: whether a missing dataset may be fetched (by ``prepare()``, the only place
    that touches the network). ``val_split``: a fraction of the training split held out as the
    validation split (then the official test split becomes the test loader). ``num_workers``:
    threads for decoding and feature extraction where a dataset needs them. Further keyword
    arguments go to the dataset class (e.g. ``split_seed``, ``eval_batch_size``).
    """
    cls = DATASETS[resolve_name(name)]
    return cls(root, batch_size=batch_size, download=download, val_split=val_split,
               num_workers=num_workers, **kw)
