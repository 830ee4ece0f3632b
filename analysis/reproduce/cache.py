"""The measurement cache of a convergence run: one small JSON file per measurement of a trained
model, keyed by the model's training hash and the measurement's parameters.

A measurement (σ_mid curve, weight statistics, accuracy under noise, ...) is written the moment
it is computed, atomically, to ``<root>/<training hash>/<kind>-<digest of params>.json``, and
read back instead of recomputed. The file holds the key in full (``training_hash``, ``kind``,
``params``) beside the ``value``; a file whose key differs from the one asked for (a digest
collision, a hand-edited file) counts as missing. Training hashes do not depend on where data
or artifacts live (:func:`util.config.training_hash`), so a cache committed under
``docs/reproduction/medium/cache`` serves a fresh checkout on another machine: a model is
trained (or found by the engine's checkpoints) only when one of its measurements is missing.

Whatever the value depends on besides the trained weights (the data, evaluation draws and
seeds, σ, the code version of the measurement) belongs in ``params``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from util.artifacts import atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["MeasurementCache", "to_json_value"]


def to_json_value(value: Any) -> Any:
    """``value`` as plain JSON types (numpy scalars and arrays, tuples → lists; NaN and ±inf
    kept, as Python's json writes them)."""
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_json_value(v) for v in value.tolist()]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value)
    return value


def _canonical(params: Mapping[str, Any]) -> str:
    def number(x):
        if isinstance(x, float) and x.is_integer() and math.isfinite(x):
            return int(x)
        return x

    def walk(v):
        if isinstance(v, Mapping):
            return {k: walk(v[k]) for k in sorted(v)}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return number(v)

    return json.dumps(walk(to_json_value(params)), sort_keys=True, separators=(",", ":"))


class MeasurementCache:
    """Measurements of trained models as JSON files under ``root`` (module docstring).
    ``hits``, ``writes``: counts since construction."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.hits = 0
        self.writes = 0

    def path(self, training_hash: str, kind: str, params: Mapping[str, Any]) -> Path:
        digest = hashlib.sha256(_canonical(params).encode()).hexdigest()[:16]
        return self.root / training_hash / f"{kind}-{digest}.json"

    def get(self, training_hash: str, kind: str, params: Mapping[str, Any]) -> Any | None:
        """The cached value, or None when there is none (or its key does not match)."""
        path = self.path(training_hash, kind, params)
        try:
            entry = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            log.warning("unreadable cached measurement %s (%s): computing it again", path, err)
            return None
        if (entry.get("training_hash") != training_hash or entry.get("kind") != kind
                or _canonical(entry.get("params", {})) != _canonical(params)):
            log.warning("cached measurement %s holds another key: computing it again", path)
            return None
        self.hits += 1
        return entry["value"]

    def has(self, training_hash: str, kind: str, params: Mapping[str, Any]) -> bool:
        return self.path(training_hash, kind, params).is_file() and \
            self.get(training_hash, kind, params) is not None

    def put(self, training_hash: str, kind: str, params: Mapping[str, Any], value: Any) -> Any:
        """Write ``value`` (atomically) and return it as it reads back (plain JSON types)."""
        value = to_json_value(value)
        entry = {"training_hash": training_hash, "kind": kind,
                 "params": to_json_value(params), "value": value}
        path = self.path(training_hash, kind, params)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(entry, indent=None, separators=(",", ":")))
        self.writes += 1
        return json.loads(json.dumps(value))

    def get_or_compute(self, training_hash: str, kind: str, params: Mapping[str, Any],
                       compute: Callable[[], Any]) -> Any:
        """The cached value, else ``compute()`` written and returned."""
        value = self.get(training_hash, kind, params)
        if value is None:
            value = self.put(training_hash, kind, params, compute())
        return value
