"""Errors of the data package: a dataset that is not where it was looked for, or is damaged.

Both carry the paths involved in their message, so that a user can act on them without reading
a traceback into numpy, pickle or scipy.
"""
from __future__ import annotations

import os
from typing import Iterable

__all__ = ["DatasetNotFoundError", "DatasetCorruptError"]


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are missing from every place that was searched."""

    def __init__(self, dataset: str, looked_in: Iterable[os.PathLike | str], how_to_get: str,
                 missing: Iterable[str] = ()):
        self.dataset = dataset
        self.looked_in = [str(p) for p in looked_in]
        self.missing = list(missing)
        where = "\n".join(f"  - {p}" for p in self.looked_in)
        what = f" (missing: {', '.join(self.missing)})" if self.missing else ""
        super().__init__(f"{dataset} files not found{what}. Looked in:\n{where}\n{how_to_get}")


class DatasetCorruptError(ValueError):
    """A dataset file exists but cannot be read as what it should be (truncated, wrong format)."""

    def __init__(self, path: os.PathLike | str, problem: str):
        self.path = str(path)
        super().__init__(f"{self.path}: {problem}. Delete the file and download it again "
                         f"(prepare() with download=True), or replace it with an intact copy.")
