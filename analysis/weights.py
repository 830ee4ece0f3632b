"""Weight statistics per layer from a model's state_dict or checkpoint.

Training under multiplicative noise can push a layer's weights towards two values ±c
("self-binarisation"). :func:`binarisation_index` measures that per layer (with
:func:`near_zero_share` for the mass near zero and Sarle's bimodality coefficient), and
:func:`layer_weight_table` tabulates it with the other per-layer statistics, for comparing
clean and noise-trained models (:func:`weight_tables`); :func:`layer_weight_table_or_nan` gives
a table of NaNs for a model whose training diverged. :func:`mean_abs_bn_gamma` and
:func:`same_state` serve the reproduction's weight-clamping check.

Only conv and linear weight tensors count: a ``<layer>.weight`` key whose tensor has two
dimensions is a linear layer, three to five a conv layer. Batch-norm layers (whose keys have a
``<layer>.running_mean`` sibling), biases and any other one-dimensional parameters are skipped.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Mapping, Union

import numpy as np
import pandas as pd
import torch

from .distribution import bimodality_coefficient

log = logging.getLogger(__name__)

#: Anything :func:`load_state_dict` accepts.
WeightSource = Union[str, "os.PathLike[str]", Mapping[str, Any]]

#: Fraction of max|w| above which a weight counts as "at the extremes".
BINARISATION_THRESHOLD = 0.9

#: Fraction of max|w| below which a weight counts as "near zero".
NEAR_ZERO_THRESHOLD = 0.1

TABLE_COLUMNS = ["layer", "kind", "shape", "n_weights", "mean_abs", "std", "max_abs",
                 "binarisation_index", "near_zero_share", "bimodality"]


def load_state_dict(source: WeightSource) -> dict[str, torch.Tensor]:
    """The model state_dict from a checkpoint path, a checkpoint dict or a state_dict.

    A path is read with ``torch.load(map_location='cpu', weights_only=True)``. A dict with a
    ``'model_state'`` key is a checkpoint and its ``'model_state'`` is returned; any other
    dict must map names to tensors. Raises ValueError for a missing file or a dict that is
    neither.
    """
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise ValueError(f"checkpoint file not found: {os.fspath(source)!r}")
        log.debug("loading checkpoint %s", os.fspath(source))
        source = torch.load(source, map_location="cpu", weights_only=True)
    if not isinstance(source, Mapping):
        raise ValueError(f"expected a state_dict, a checkpoint dict or a path, "
                         f"got {type(source).__name__}")
    if "model_state" in source:
        source = source["model_state"]
        if not isinstance(source, Mapping):
            raise ValueError(f"checkpoint 'model_state' is a {type(source).__name__}, "
                             "not a state_dict")
    not_tensors = [k for k, v in source.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"not a state_dict: entries {not_tensors[:5]} are not tensors "
                         "(a checkpoint needs its state_dict under 'model_state')")
    return dict(source)


def _layer_kind(name: str, tensor: torch.Tensor, keys: set[str]) -> str | None:
    """'conv', 'linear' or None (not a conv/linear weight)."""
    if not name.endswith(".weight") and name != "weight":
        return None
    prefix = name[: -len("weight")]
    if prefix + "running_mean" in keys:
        return None
    if tensor.dim() == 2:
        return "linear"
    if 3 <= tensor.dim() <= 5:
        return "conv"
    return None


def conv_linear_weights(state: Mapping[str, torch.Tensor]):
    """Yield (layer name, kind, tensor) for each conv/linear weight, in state_dict order."""
    keys = set(state)
    for name, tensor in state.items():
        kind = _layer_kind(name, tensor, keys)
        if kind is not None:
            yield (name[: -len(".weight")] if name.endswith(".weight") else name), kind, tensor


def _flat(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float64).reshape(-1).numpy()


def layer_weights(source: WeightSource) -> dict[str, np.ndarray]:
    """Flattened float64 weights of each conv/linear layer, in state_dict order, keyed by
    layer name (the key without ``.weight``)."""
    return {layer: _flat(t) for layer, _, t in conv_linear_weights(load_state_dict(source))}


def binarisation_index(weights, threshold: float = BINARISATION_THRESHOLD) -> float:
    """Fraction of a layer's weights at its extremes: #{|w| ≥ threshold · max|w|} / n.

    With the default threshold 0.9 this is the share of weights within 10 % of ±max|w|.
    A fully binarised layer (every weight ±c) gives 1; a Gaussian layer gives the tail mass
    beyond 0.9 of its largest draw, about 0.3 % for 10³ weights and 0.05 % for 10⁴; a
    uniform layer gives about 1 − threshold = 10 %. One outlier weight sets the scale, so
    read it together with ``max_abs`` (weight clamping makes the clamp bound the scale). Returns NaN for an all-zero layer (no scale).
    Raises ValueError for an empty or non-finite tensor or a threshold outside (0, 1].
    """
    w, peak = _magnitudes(weights, threshold, "binarisation_index")
    if peak == 0:
        return float("nan")
    return float(np.count_nonzero(w >= threshold * peak) / w.size)


def near_zero_share(weights, threshold: float = NEAR_ZERO_THRESHOLD) -> float:
    """Fraction of a layer's weights near zero: #{|w| < threshold · max|w|} / n, the other
    end from :func:`binarisation_index` (default: within 10 % of max|w| from 0). A binarised
    layer gives 0, a uniform one about ``threshold``, a Gaussian one of 10⁴ weights about 30 %.
    NaN for an all-zero layer; ValueError for an empty or non-finite tensor or a threshold
    outside (0, 1]."""
    w, peak = _magnitudes(weights, threshold, "near_zero_share")
    if peak == 0:
        return float("nan")
    return float(np.count_nonzero(w < threshold * peak) / w.size)


def _magnitudes(weights, threshold: float, what: str) -> tuple[np.ndarray, float]:
    """|w| flattened and max|w|; ValueError for an empty or non-finite tensor or a threshold
    outside (0, 1] (``what`` names the caller)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    w = np.abs(np.asarray(weights, dtype=float).reshape(-1))
    if w.size == 0:
        raise ValueError(f"{what} of an empty tensor")
    if not np.all(np.isfinite(w)):
        raise ValueError("weights contain NaN or infinite values")
    return w, float(w.max())


def layer_weight_table(source: WeightSource) -> pd.DataFrame:
    """One row per conv/linear layer, in state_dict order.

    Columns: ``layer`` (name without ``.weight``), ``kind`` ('conv' | 'linear'), ``shape``
    (tuple), ``n_weights``, ``mean_abs`` (mean |w|), ``std`` (population std of w),
    ``max_abs`` (max |w|), ``binarisation_index`` (:func:`binarisation_index`),
    ``near_zero_share`` (:func:`near_zero_share`), ``bimodality`` (Sarle's coefficient,
    :func:`analysis.distribution.bimodality_coefficient`: 1/3 Gaussian, 1 binary).
    Raises ValueError if the state_dict holds no conv/linear weights.
    """
    state = load_state_dict(source)
    rows = []
    for layer, kind, tensor in conv_linear_weights(state):
        w = _flat(tensor)
        rows.append({
            "layer": layer,
            "kind": kind,
            "shape": tuple(tensor.shape),
            "n_weights": int(w.size),
            "mean_abs": float(np.abs(w).mean()),
            "std": float(w.std()),
            "max_abs": float(np.abs(w).max()),
            "binarisation_index": binarisation_index(w),
            "near_zero_share": near_zero_share(w),
            "bimodality": bimodality_coefficient(w),
        })
    if not rows:
        raise ValueError(f"no conv/linear weights in this state_dict; keys: {sorted(state)[:10]}")
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def weight_tables(sources: Mapping[str, WeightSource], label_col: str = "model") -> pd.DataFrame:
    """:func:`layer_weight_table` of several models stacked, with their label (e.g.
    ``{'clean training': path1, 'GaussMul σ=0.1': path2}``) in ``label_col``."""
    if not sources:
        raise ValueError("weight_tables needs at least one model")
    frames = [layer_weight_table(src).assign(**{label_col: label})
              for label, src in sources.items()]
    table = pd.concat(frames, ignore_index=True)
    return table[[label_col] + TABLE_COLUMNS]


def layer_weight_table_or_nan(source: WeightSource) -> pd.DataFrame:
    """:func:`layer_weight_table`, or a table of NaNs when the weights are not finite (a run
    that diverged)."""
    try:
        return layer_weight_table(source)
    except ValueError as err:
        if "NaN" not in str(err) and "infinite" not in str(err):
            raise
        state = load_state_dict(source)
        rows = [{"layer": layer, "mean_abs": math.nan, "max_abs": math.nan,
                 "binarisation_index": math.nan} for layer, _, _ in conv_linear_weights(state)]
        log.warning("%s: weights are not finite (training diverged)",
                    os.fspath(source) if isinstance(source, (str, os.PathLike)) else "a model")
        return pd.DataFrame(rows)


def mean_abs_bn_gamma(source: WeightSource) -> float:
    """Mean |γ| over all batch-norm scale parameters (NaN for a model without BN)."""
    state = load_state_dict(source)
    gammas = [state[k].detach().abs().reshape(-1) for k in state
              if k.endswith(".weight") and k[:-len("weight")] + "running_mean" in state]
    return float(torch.cat(gammas).double().mean()) if gammas else math.nan


def same_state(a: WeightSource, b: WeightSource) -> bool:
    """True when two models (checkpoints or state_dicts) hold exactly the same parameters and
    buffers."""
    sa, sb = load_state_dict(a), load_state_dict(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
