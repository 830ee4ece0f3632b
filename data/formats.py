"""Readers of the on-disk formats the image datasets come in, checking what they read.

Each reader returns numpy arrays and raises :class:`DatasetCorruptError` naming the file when
the file is truncated or not in the expected format (instead of failing deep inside numpy,
pickle or scipy).

* IDX (MNIST, Fashion-MNIST): big-endian header ``00 00 08 <ndim>`` + ndim uint32 sizes +
  uint8 data; plain or gzip-compressed (detected by content, not by name).
* CIFAR-10 python batches: a pickled dict with ``data`` uint8 [N, 3072] (R, G, B planes of
  32×32) and ``labels`` [N].
* SVHN cropped digits: a MATLAB file with ``X`` uint8 [32, 32, 3, N] and ``y`` [N, 1] with
  labels 1..10, where 10 stands for the digit 0.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import zlib

import numpy as np

from .errors import DatasetCorruptError

__all__ = ["read_idx", "read_cifar_batch", "read_svhn_mat"]

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UBYTE = 0x08


def _read_bytes(path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetCorruptError(path, f"broken gzip data ({exc})") from exc
    return raw


def read_idx(path: os.PathLike | str, ndim: int) -> np.ndarray:
    """The uint8 array of an IDX file with ``ndim`` dimensions (gzip or plain)."""
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetCorruptError(path, "not an IDX file (its first bytes are not 00 00)")
    if raw[2] != _IDX_UBYTE or raw[3] != ndim:
        raise DatasetCorruptError(path, f"expected an IDX file of unsigned bytes with {ndim} "
                                        f"dimensions, header says type 0x{raw[2]:02x} with "
                                        f"{raw[3]} dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetCorruptError(path, "truncated inside the IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected, actual = int(np.prod(shape)), len(raw) - header
    if actual != expected:
        raise DatasetCorruptError(path, f"truncated or padded: the header promises shape {shape} "
                                        f"= {expected} bytes of data, the file has {actual}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_cifar_batch(path: os.PathLike | str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 3, 32, 32], labels int64 [N]) of one CIFAR-10 python batch file."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError) as exc:
        raise DatasetCorruptError(path, f"not a readable CIFAR-10 python batch "
                                        f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(entry, dict) or "data" not in entry or not (
            "labels" in entry or "fine_labels" in entry):
        raise DatasetCorruptError(path, "not a CIFAR-10 python batch (no 'data'/'labels' dict)")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetCorruptError(path, f"'data' should be uint8 [N, 3072], got {data.dtype} "
                                        f"{list(data.shape)}")
    if labels.shape != (data.shape[0],):
        raise DatasetCorruptError(path, f"{data.shape[0]} images but {labels.size} labels")
    return data.reshape(-1, 3, 32, 32), labels


def read_svhn_mat(path: os.PathLike | str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 3, 32, 32], labels int64 [N] in 0..9) of an SVHN ``*_32x32.mat``."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, variable_names=("X", "y"))
    except Exception as exc:  # scipy raises many types for damaged files
        raise DatasetCorruptError(path, f"not a readable MATLAB file "
                                        f"({type(exc).__name__}: {exc})") from exc
    if "X" not in mat or "y" not in mat:
        raise DatasetCorruptError(path, "the MATLAB file lacks the variables 'X' and 'y'")
    images, labels = np.asarray(mat["X"]), np.asarray(mat["y"]).astype(np.int64).reshape(-1)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[:3] != (32, 32, 3):
        raise DatasetCorruptError(path, f"'X' should be uint8 [32, 32, 3, N], got "
                                        f"{images.dtype} {list(images.shape)}")
    if labels.shape != (images.shape[3],):
        raise DatasetCorruptError(path, f"{images.shape[3]} images but {labels.size} labels")
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise DatasetCorruptError(path, f"labels should be 1..10, got {labels.min()}.."
                                        f"{labels.max()}")
    labels[labels == 10] = 0  # SVHN writes the digit 0 as class 10 (torchvision does the same)
    # X is [row, col, channel, sample]; torchvision's transpose (3, 2, 0, 1) gives [N, C, H, W]
    return np.ascontiguousarray(images.transpose(3, 2, 0, 1)), labels
