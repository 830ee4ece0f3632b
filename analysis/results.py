"""Results of walking-noise runs as one tidy DataFrame, from the local run store or MongoDB.

:func:`load_results` reads either source and returns the same columns (:data:`COLUMNS`), one
row per run, or one row per evaluation for a walk run (whose result holds
``result['evaluations']``, see :mod:`util.engine.walk`):

=======================  ======================================================================
``dataset``              canonical dataset name (old aliases such as ``GSC2_TF`` resolved)
``model_class``          ``LeNet`` | ``MLP`` | ``CNN_HE`` | ``VGG``
``conf_name``            model configuration, e.g. ``LeNet5-BN``
``placement``            where the noise sits: ``layer_wise`` (one site), ``layer_mapped`` (a
                         σ map over sites), ``default`` (every site), ``none`` (noise-free run)
``site``                 site index; :data:`ALL_SITES` (-1) when the noise is not at one site
``site_name``            e.g. ``'5:conv2'``; ``'all'`` for default placement, ``'mapped'`` for a
                         σ map over several sites, ``'none'`` for noise-free runs
``noise_type``           ``GaussAdd``, ``GaussMul``, ``GaussCombined``, ... (``NoNoise``)
``sigma``                σ: ``GaussStd``; ``StdAmplitude`` A for combined noise (σ_add + σ_mul
                         for ``GaussCombined_direct``); the ``std_multiplication_factor`` of a
                         σ map over several sites; 0 for noise-free runs
``std_ratio``            ``StdRatio`` r of combined noise (σ_add / (σ_add + σ_mul)); NaN else
``order``                ``'mul_add'`` | ``'add_mul'`` for combined noise; None else
``sigma_add``            additive σ at the site (NaN for a σ map over several sites)
``sigma_mul``            multiplicative σ at the site (NaN for a σ map over several sites)
``enable_in_training``   the noise is applied while training (for walk rows: the walked model
                         was trained with noise); False for noise-free runs
``enable_in_eval``       the noise is applied while evaluating; False for noise-free runs
``weight_clamping``      ``'none'`` or ``'[min, max]'``
``repetition``           repetition R at the site; for noise at every site the mean R over
                         sites (a repetition plan's budget factor)
``repeat_number``        ``general.repeat_number`` (the training repeat)
``eval_repeat``          repeat of a walk evaluation (a fresh noise draw); 0 for plain runs
``eval_split``           split ``accuracy`` was measured on: ``validation`` (a walk may use
                         ``test``)
``experiment_name``      ``general.experiment_name``
``accuracy``             final validation accuracy in percent (a walk row: the evaluation's)
``test_accuracy``        final test accuracy in percent; NaN without a test split / for walks
``loss``                 final validation loss (a walk row: the evaluation's)
``clean_accuracy``       accuracy of the matching noise-free run: the same data, model and
                         training settings (repeat included) without any noise; a walk's own
                         clean evaluation for walk rows; NaN when none was found
``chance``               100 / number of classes
``trained``              True: the run trained its model; False: it reused one (eval-only)
``config_hash``          hash of the run's config (bookkeeping keys left out)
``run_id``               run id as a string (the run folder's name / the MongoDB ``_id``)
``checkpoint``           path of the checkpoint the run trained or used
``diverged``             the 1-based epoch in which the training loss or a weight became
                         non-finite (``result['diverged']['epoch']``); NaN for a normal run
                         and for results written before runs recorded it
``noise_generator``      the Gaussian generator that drew the noise: ``'fast_rng'`` (the
                         compiled CPU kernel) or ``'torch.randn'``; None when the result does
                         not say (older runs)
``target``               what the noise is on: ``activations`` (the sites), ``weights`` (the
                         conv/linear layers, ``weight_noise`` or a walk with ``walk.target:
                         weights``: ``site`` and ``site_name`` are then the weight layer's,
                         ``repetition`` 1), ``both`` (a run with both: the columns describe its
                         activation noise)
=======================  ======================================================================

:func:`sigma_mid_per_site` turns such a table into σ_mid per site (one row per curve).

Runs that cannot give a row never stop the others from being read. A run store's unreadable
runs (truncated or non-object ``run.json``/``config.json``) are skipped with a warning each by
:func:`util.run_store.iter_runs`. A readable run that lacks what a row needs (no result, a
config without its sections, no accuracy, ...) is named in a ValueError by default, or, with
``on_bad_run='skip'`` (the default of ``python -m analysis``), left out with a warning naming
its path and a summary count. A run that is not COMPLETED and has no result yet is simply not
finished: it is left out with an INFO line, never an error. A run stored with a non-finite
noise number (σ = inf written by an older version) is a row, with a warning: its σ columns
are inf (NaN where the value is NaN) and :func:`sigma_mid_per_site` leaves it out of the fit.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import numbers
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from util.config_paths import matches_query

from .midpoint import midpoint_table
from .uncertainty import DEFAULT_N_BOOT, group_seed, sigma_mid_interval

log = logging.getLogger(__name__)

__all__ = ["COLUMNS", "CURVE_COLUMNS", "ALL_SITES", "PLACEMENTS", "RunRecord", "load_results",
           "read_run_store", "read_collection", "records_to_frame", "sigma_mid_per_site",
           "parse_source", "load_runs", "describe_source", "CONDITION_COLUMNS",
           "iter_conditions", "condition_label", "curve_points"]

COLUMNS = [
    "dataset", "model_class", "conf_name", "placement", "site", "site_name", "noise_type",
    "sigma", "std_ratio", "order", "sigma_add", "sigma_mul", "enable_in_training",
    "enable_in_eval", "weight_clamping", "repetition", "repeat_number", "eval_repeat",
    "eval_split", "experiment_name", "accuracy", "test_accuracy", "loss", "clean_accuracy",
    "chance", "trained", "config_hash", "run_id", "checkpoint", "diverged", "noise_generator",
    "target", "sigma_relative_to",
]

#: The columns that name one walking-noise curve (accuracy versus σ at one site under one
#: condition); :func:`sigma_mid_per_site` groups by them.
CURVE_COLUMNS = [
    "dataset", "model_class", "conf_name", "noise_type", "std_ratio", "order",
    "enable_in_training", "enable_in_eval", "weight_clamping", "repetition", "eval_split",
    "experiment_name", "target", "sigma_relative_to", "placement", "site", "site_name",
]

#: The columns that tell walking-noise conditions apart: a curve is a condition at one site.
CONDITION_COLUMNS = [c for c in CURVE_COLUMNS
                     if c not in ("target", "placement", "site", "site_name")]

PLACEMENTS = ("layer_wise", "layer_mapped", "default", "none")
#: The ``site`` of noise that is not at one site (default placement, σ maps, noise-free runs).
ALL_SITES = -1
DEFAULT_STATES = ("COMPLETED",)
MONGO_PREFIX = "mongodb:"

_FLOAT_COLUMNS = ["sigma", "std_ratio", "sigma_add", "sigma_mul", "repetition", "accuracy",
                  "test_accuracy", "loss", "clean_accuracy", "chance", "diverged"]
#: The columns computed from a noise config's numbers (see :func:`_tolerating_non_finite`).
_NOISE_NUMBER_COLUMNS = ("sigma", "std_ratio", "sigma_add", "sigma_mul")
#: Finite numbers that stand in for a stored config's non-finite ones while it is described.
_STAND_INS = (0.5, 0.25)
#: The sections every stored config has (sacred stores the whole config).
_CONFIG_SECTIONS = ("general", "data", "model", "noise_settings")
_INT_COLUMNS = ["site", "repeat_number", "eval_repeat"]
_BOOL_COLUMNS = ["enable_in_training", "enable_in_eval"]


@dataclass(frozen=True)
class RunRecord:
    """One stored run, whatever its source: its id, status, config and result; ``where``
    names it in messages (its folder in a run store, the collection and ``_id`` in MongoDB)."""

    run_id: str
    status: str
    config: Any
    result: Any
    where: str | None = None


class _BadRun(ValueError):
    """A run that lacks what a row needs; the message names the run and the missing field."""


# --------------------------------------------------------------------------- sources


def parse_source(source: str | os.PathLike) -> tuple[str, str]:
    """``('run_store', path)`` or ``('mongodb', collection)`` for a ``source`` argument.

    ``mongodb:<collection>`` is always a collection; a ``Path``, an existing path, or a string
    that looks like a path (contains a path separator, starts with ``.`` or ``~``) is a run
    store; any other string is a seml collection name.
    """
    if isinstance(source, os.PathLike):
        return "run_store", os.fspath(source)
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"source must be a run store folder or a seml collection name, "
                         f"got {source!r}")
    if source.startswith(MONGO_PREFIX):
        name = source[len(MONGO_PREFIX):]
        if not name:
            raise ValueError("source 'mongodb:' names no collection; use mongodb:<collection>")
        return "mongodb", name
    looks_like_path = ("/" in source or os.sep in source or source.startswith((".", "~")))
    if looks_like_path or os.path.exists(os.path.expanduser(source)):
        return "run_store", os.path.expanduser(source)
    return "mongodb", source


def _check_filter(filter: Mapping[str, Any] | None) -> dict[str, Any]:
    if filter is None:
        return {}
    if not isinstance(filter, Mapping):
        raise ValueError(f"filter must be a dict (a MongoDB query such as "
                         f"{{'config.data.dataset': 'MNIST'}}), got {filter!r}")
    return dict(filter)


def _restore(obj: Any) -> Any:
    """Undo sacred's jsonpickle flattening (it stores numpy values as ``py/object`` dicts)."""
    try:
        from sacred.serializer import restore
    except ImportError:  # pragma: no cover - sacred is a requirement
        return obj
    return restore(obj)


def _natural_key(run_id: str) -> tuple:
    """Runs in numeric order; a cohort's members (``<run id>/<member>``) in theirs after it."""
    head, _, member = run_id.partition("/")
    if head.isdigit() and (member.isdigit() or not member):
        return (0, int(head), int(member or -1), "")
    return (1, 0, 0, run_id)


def read_run_store(path: str | os.PathLike, filter: Mapping[str, Any] | None = None,
                   states: Sequence[str] | None = DEFAULT_STATES) -> list[RunRecord]:
    """The runs of a local run store (sacred's FileStorageObserver folder), in id order.

    ``filter`` is a MongoDB query on the run as a document ``{_id, status, config, result}``
    (a subset of the operators; see :func:`load_results`). Raises ValueError when the folder
    does not exist, holds no runs, or no run has one of ``states``/matches ``filter``.
    """
    from util.run_store import iter_runs

    filter = _check_filter(filter)
    store = Path(path)
    if not store.exists():
        raise ValueError(f"run store {os.fspath(store)!r} does not exist (a local source is "
                         "the folder of sacred's FileStorageObserver, e.g. runs/)")
    if not store.is_dir():
        raise ValueError(f"run store {os.fspath(store)!r} is a file, not a run store folder")
    every = list(iter_runs(store))  # warns about each unreadable run, and counts them
    if not every:
        raise ValueError(f"run store {os.fspath(store)!r} holds no runs that can be read "
                         "(expected folders <id>/ with run.json and config.json; unreadable "
                         "ones are named in the warnings above)")
    use_states = states and "status" not in filter
    records, statuses = [], {}
    for run in every:
        statuses[run.status] = statuses.get(run.status, 0) + 1
        if use_states and run.status not in states:
            continue
        doc = {"_id": int(run.run_id) if run.run_id.isdigit() else run.run_id,
               "status": run.status, "config": run.config, "result": run.result}
        if filter and not matches_query(doc, filter):
            continue
        records.append(RunRecord(run.run_id, run.status, _restore(run.config),
                                 _restore(run.result), os.fspath(run.path)))
    if not records:
        what = f"with status in {list(states)}" if use_states else ""
        what += (" and " if what else "") + (f"matching filter {filter}" if filter else "")
        raise ValueError(f"none of the {len(every)} runs in {os.fspath(store)!r} is {what} "
                         f"(statuses present: {statuses})")
    return records


def _mongodb_config(mongodb_config: Mapping[str, Any] | None, timeout_s: float) -> dict:
    try:
        from seml.database import get_mongodb_config
    except ImportError as err:  # pragma: no cover - seml is a requirement
        raise ValueError(f"reading a MongoDB collection needs seml: {err}") from None
    if mongodb_config is None:
        try:
            cfg = get_mongodb_config()
        except Exception as err:  # seml's MongoDBError: no or incomplete config file
            raise ValueError(f"cannot read seml's MongoDB config: {err}") from None
    else:
        cfg = dict(mongodb_config)
    cfg.setdefault("serverSelectionTimeoutMS", int(timeout_s * 1000))
    return cfg


def read_collection(collection: str, filter: Mapping[str, Any] | None = None,
                    states: Sequence[str] | None = DEFAULT_STATES, *,
                    mongodb_config: Mapping[str, Any] | None = None,
                    timeout_s: float = 10.0) -> list[RunRecord]:
    """The runs of a seml collection (via ``seml.get_results``), in ``_id`` order.

    ``mongodb_config``: seml's connection dict (``get_mongodb_config()`` keys); default: the
    one ``seml configure`` wrote. Raises ValueError when the server cannot be reached within
    ``timeout_s``, the collection does not exist (the message lists those that do), or no run
    has one of ``states``/matches ``filter``.
    """
    import seml
    from pymongo.errors import PyMongoError
    from seml.database import get_collection

    filter = _check_filter(filter)
    cfg = _mongodb_config(mongodb_config, timeout_s)
    where = f"{cfg.get('host')}:{cfg.get('port')}/{cfg.get('db_name')}"
    try:
        coll = get_collection(collection, mongodb_config=cfg)
        existing = coll.database.list_collection_names()
    except PyMongoError as err:
        raise ValueError(f"cannot reach MongoDB at {where}: {err.__class__.__name__}: "
                         f"{str(err)[:300]}. Is the server running? seml reads the connection "
                         "from ~/.config/seml/mongodb.config (`seml configure`).") from None
    if collection not in existing:
        shown = sorted(n for n in existing if n not in ("fs.files", "fs.chunks"))
        raise ValueError(f"collection {collection!r} does not exist in MongoDB {where}; "
                         f"existing collections: {shown}")
    use_states = list(states) if (states and "status" not in filter) else []
    try:
        with warnings.catch_warnings():
            # seml's jsonpickle call warns about a future default on every document
            warnings.simplefilter("ignore", DeprecationWarning)
            docs = seml.get_results(collection, fields=["config", "result", "status"],
                                    to_data_frame=False, mongodb_config=cfg,
                                    states=use_states, filter_dict=filter, progress=False)
    except PyMongoError as err:
        raise ValueError(f"querying collection {collection!r} at {where} failed: {err}") \
            from None
    if not docs:
        try:
            statuses = {s: coll.count_documents({"status": s}) for s in coll.distinct("status")}
        except PyMongoError:
            statuses = "unknown"
        what = f"with status in {use_states}" if use_states else ""
        what += (" and " if what else "") + (f"matching filter {filter}" if filter else "")
        raise ValueError(f"collection {collection!r} has no run {what or ''}".rstrip()
                         + f" (statuses present: {statuses})")
    records, malformed = [], 0
    for d in docs:
        if not isinstance(d, Mapping) or "_id" not in d:
            malformed += 1
            log.warning("collection %r: skipping a malformed document (no _id or not a "
                        "document): %s", collection, str(d)[:200])
            continue
        records.append(RunRecord(str(d["_id"]), str(d.get("status", "")), d.get("config"),
                                 d.get("result"), f"collection {collection!r} _id={d['_id']}"))
    if malformed:
        log.warning("skipped %d of %d documents in collection %r: malformed", malformed,
                    len(docs), collection)
    if not records:
        raise ValueError(f"collection {collection!r}: none of its {len(docs)} documents is "
                         "a readable run")
    records.sort(key=lambda r: _natural_key(r.run_id))
    return records


# --------------------------------------------------------------------------- rows


def _noise_columns(cfg) -> dict[str, Any]:
    """σ, ratio, order and (σ_add, σ_mul) of one noise config, by the fields it has."""
    s_add, s_mul = cfg.std_pair()
    cols = {"noise_type": cfg.noise_type, "std_ratio": math.nan, "order": None,
            "sigma_add": float(s_add), "sigma_mul": float(s_mul),
            # σ in units of the site's clean RMS or absolute: two curves, never one
            "sigma_relative_to": str(getattr(cfg, "sigma_relative_to", "none") or "none")}
    if hasattr(cfg, "FirstMulThenAdd"):
        cols["order"] = "mul_add" if cfg.FirstMulThenAdd else "add_mul"
    if hasattr(cfg, "StdAmplitude"):
        cols["sigma"] = float(cfg.StdAmplitude)
        cols["std_ratio"] = float(cfg.StdRatio)
    elif hasattr(cfg, "GaussStdAdd"):
        total = float(s_add + s_mul)
        cols["sigma"] = total
        cols["std_ratio"] = float(s_add) / total if total > 0 else math.nan
    elif hasattr(cfg, "GaussStd"):
        cols["sigma"] = float(cfg.GaussStd)
    else:  # NoNoise, or a future type without a σ field
        cols["sigma"] = 0.0 if cfg.is_noiseless else math.nan
    return cols


def _weight_clamping_label(general: Mapping[str, Any]) -> str:
    wc = general.get("weight_clamping") or {}
    lo, hi = wc.get("min"), wc.get("max")
    if lo is None and hi is None:
        return "none"
    fmt = lambda v: "None" if v is None else f"{float(v):g}"  # noqa: E731
    return f"[{fmt(lo)}, {fmt(hi)}]"


def _num_classes(result: Mapping[str, Any], dataset: str) -> float:
    n = result.get("num_classes")
    if isinstance(n, numbers.Real) and n > 0:
        return float(n)
    try:
        from data import DATASETS
        return float(DATASETS[dataset].num_classes)
    except (ImportError, KeyError, AttributeError):
        return math.nan


def _final_metric(result: Mapping[str, Any], split: str, metric: str) -> float | None:
    final = result.get("final")
    if isinstance(final, Mapping) and isinstance(final.get(f"{split}_{metric}"), numbers.Real):
        return float(final[f"{split}_{metric}"])
    history = (result.get(split) or {}).get(metric) if isinstance(result.get(split), Mapping) \
        else None
    if isinstance(history, list) and history and isinstance(history[-1], numbers.Real):
        return float(history[-1])
    return None


class _Keys:
    """Keys that find a run's noise-free reference: the training hash of its config without
    noise, with (``exact``) and without (``loose``) its repeat number and seed."""

    def __init__(self):
        self._cache: dict[str, tuple[str, str]] = {}

    def __call__(self, config: Mapping[str, Any]) -> tuple[str, str]:
        from util.config import training_hash, validate_config

        stripped = copy.deepcopy(dict(config))
        stripped["noise_settings"] = {"default": {"noise_type": "NoNoise"}, "layer_wise": None,
                                      "layer_mapped": None}
        stripped.pop("walk", None)
        stripped.pop("weight_noise", None)
        text = json.dumps(stripped, sort_keys=True, default=str)
        if text not in self._cache:
            exact = training_hash(validate_config(stripped))
            stripped["general"] = dict(stripped["general"], repeat_number=0, seed=None)
            loose = training_hash(validate_config(stripped))
            self._cache[text] = (exact, loose)
        return self._cache[text]


def _mean_repetition(reps: Sequence[int]) -> float:
    return float(reps[0]) if len(set(reps)) == 1 else float(np.mean(reps))


def _placement(config: Mapping[str, Any], vc) -> dict[str, Any]:
    """Where a run's noise sits, and the columns that describe it: its activation noise
    (``target`` ``activations``), or its weight noise when it has only that (``weights``); a
    run with both is described by its activation noise (``both``)."""
    from noise.placement import resolve_site_configs
    from noise.weights import resolve_weight_configs

    if not vc.weight_noise:
        return {"target": "activations",
                **_placed(config.get("noise_settings") or {}, vc.site_configs, vc.repetitions,
                          vc.site_names, resolve_site_configs)}
    if not _is_noise_free(vc.site_configs):
        return {"target": "both",
                **_placed(config.get("noise_settings") or {}, vc.site_configs, vc.repetitions,
                          vc.site_names, resolve_site_configs)}
    layers = vc.model.weight_layer_names
    return {"target": "weights",
            **_placed(config.get("weight_noise") or {}, [c.noise for c in vc.weight_noise],
                      [1] * len(layers), layers,
                      lambda s, n: [c.noise for c in resolve_weight_configs(s, n)])}


def _placed(ns: Mapping[str, Any], configs, reps, names, resolve) -> dict[str, Any]:
    """The placement columns of a ``noise_settings``-shaped section ``ns`` resolved to
    ``configs`` (one per site or weight layer, named ``names``); ``resolve(section, n)``
    resolves such a section."""
    from noise.config import NoNoise

    n = len(names)
    if ns.get("layer_wise"):
        idx = int(ns["layer_wise"]["layer_index"])
        return {"placement": "layer_wise", "site": idx, "site_name": names[idx],
                **_flags(configs[idx]), **_noise_columns(configs[idx]),
                "repetition": float(reps[idx])}
    if ns.get("layer_mapped"):
        spec = ns["layer_mapped"]
        mapped = [i for i, c in enumerate(resolve({"default": None, "layer_mapped": spec}, n))
                  if not isinstance(c, NoNoise)]
        if len(mapped) == 1:
            idx = mapped[0]
            return {"placement": "layer_mapped", "site": idx, "site_name": names[idx],
                    **_flags(configs[idx]), **_noise_columns(configs[idx]),
                    "repetition": float(reps[idx])}
        cols = _noise_columns(configs[mapped[0]])
        cols.update(sigma=float(spec.get("std_multiplication_factor", 1.0)),
                    sigma_add=math.nan, sigma_mul=math.nan)
        return {"placement": "layer_mapped", "site": ALL_SITES, "site_name": "mapped",
                **_flags(configs[mapped[0]]), **cols,
                "repetition": _mean_repetition([reps[i] for i in mapped])}
    if not isinstance(configs[0], NoNoise):
        return {"placement": "default", "site": ALL_SITES, "site_name": "all",
                **_flags(configs[0]), **_noise_columns(configs[0]),
                "repetition": _mean_repetition(reps)}
    return {"placement": "none", "site": ALL_SITES, "site_name": "none",
            "enable_in_training": False, "enable_in_eval": False,
            **_noise_columns(configs[0]), "repetition": _mean_repetition(reps)}


def _flags(cfg) -> dict[str, bool]:
    return {"enable_in_training": bool(cfg.enable_in_training),
            "enable_in_eval": bool(cfg.enable_in_eval)}


def _is_noise_free(site_configs, weight_noise=()) -> bool:
    return not any(c.active(training=True) or c.active(training=False)
                   for c in (*site_configs, *weight_noise))


def _replace_non_finite(obj: Any, value: float) -> tuple[Any, list[float]]:
    """A copy of ``obj`` (nested dicts and lists) with every non-finite float replaced by
    ``value``, and the numbers it replaced."""
    found: list[float] = []

    def walk(o):
        if isinstance(o, float) and not math.isfinite(o):
            found.append(o)
            return value
        if isinstance(o, Mapping):
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, list):
            return [walk(v) for v in o]
        return o

    return walk(obj), found


def _tolerating_non_finite(build, obj):
    """``(build(obj), [])``; or, when ``build`` rejects ``obj`` (ValueError) and ``obj`` holds
    non-finite numbers (σ = inf, stored by a version that accepted it), what ``build`` makes of
    ``obj`` with finite stand-ins for them, and the numbers replaced.

    ``build`` returns ``(rows, extra)``; it is called with two different stand-ins, and every
    noise-number column of a row that differs between the two depends on a non-finite number:
    it gets inf when every replaced number is +inf, NaN otherwise (``std_ratio``, a ratio of
    them, NaN). A rejection that the stand-ins do not cure re-raises the original error."""
    try:
        return build(obj), []
    except ValueError as err:
        (first, found), (second, _) = (_replace_non_finite(obj, v) for v in _STAND_INS)
        if not found:
            raise
        try:
            (rows, extra), (rows_b, _) = build(first), build(second)
        except ValueError:
            raise err from None
    value = math.inf if all(v == math.inf for v in found) else math.nan
    for row, row_b in zip(rows, rows_b):
        for col in _NOISE_NUMBER_COLUMNS:
            a, b = row.get(col), row_b.get(col)
            if a != b and not (a != a and b != b):  # differ, and are not both NaN
                row[col] = math.nan if col == "std_ratio" else value
    return (rows, extra), found


def _diverged_epoch(result: Mapping[str, Any]) -> float:
    """``result['diverged']['epoch']``; NaN for a normal run (None, or no key: older runs)."""
    diverged = result.get("diverged")
    if isinstance(diverged, Mapping) and isinstance(diverged.get("epoch"), numbers.Real):
        return float(diverged["epoch"])
    return math.nan


def _run_rows(rec: RunRecord, keys: _Keys) -> tuple[list[dict], list[tuple[tuple, float]]]:
    """The rows of one run, and its noise-free accuracies ((exact, loose) key, accuracy)."""
    from util.config import config_hash, merged_with_defaults

    rid = rec.run_id
    if not isinstance(rec.config, Mapping) or not rec.config:
        raise _BadRun(f"run {rid}: has no config")
    missing = [s for s in _CONFIG_SECTIONS if not isinstance(rec.config.get(s), Mapping)]
    if missing:
        raise _BadRun(f"run {rid}: its config lacks the section(s) {missing} (a stored "
                      f"config has all of {list(_CONFIG_SECTIONS)})")
    if not isinstance(rec.result, Mapping):
        raise _BadRun(f"run {rid}: has no result (result is {str(rec.result)[:80]!r}); did "
                      "it finish?")
    config = merged_with_defaults(rec.config)
    (rows, clean), non_finite = _tolerating_non_finite(
        lambda c: _config_rows(rec, c, keys), config)
    if non_finite:
        for row in rows:  # the columns that describe the stored config itself
            row["weight_clamping"] = _weight_clamping_label(config["general"])
            row["config_hash"] = rec.result.get("config_hash") or config_hash(config)
        clean = []  # a config that cannot run is nobody's clean reference
    # a walk's evaluations are warned about one by one (see _walk_rows)
    _warn_non_finite(rec.where or f"run {rid}", "its config", non_finite,
                     [] if rec.result.get("evaluations") is not None else rows)
    return rows, clean


def _warn_non_finite(where: str, what: str, replaced: list[float], rows: list[dict]) -> None:
    """One warning for a run stored with non-finite numbers (by a version that accepted
    them): those ``what`` (its config, its noise) holds, and the non-finite σ of ``rows``."""
    sigmas = sorted({str(r["sigma"]) for r in rows if not math.isfinite(r["sigma"])})
    notes = []
    if replaced:
        notes.append(f"{what} holds non-finite number(s) {sorted(set(map(str, replaced)))}, "
                     "which a run now rejects (stored by an older version)")
    if sigmas:
        notes.append(f"σ = {', '.join(sigmas)}: shown as a row, left out of σ_mid fits and "
                     "plots")
    if notes:
        log.warning("%s: %s", where, "; ".join(notes))


def _config_rows(rec: RunRecord, config: Mapping[str, Any], keys: _Keys
                 ) -> tuple[list[dict], list[tuple[tuple, float]]]:
    """:func:`_run_rows` for a config with defaults merged in."""
    from data import resolve_name
    from noise.config import parse_noise_config
    from util.config import ConfigError, config_hash, validate_config

    rid, result = rec.run_id, rec.result
    try:
        vc = validate_config(config)
    except (ConfigError, ValueError) as err:
        raise _BadRun(f"run {rid}: its config is not a valid walking-noise config: {err}") \
            from None
    general = config["general"]
    dataset = resolve_name(config["data"]["dataset"])
    n_classes = _num_classes(result, dataset)
    chance = result.get("chance")
    chance = float(chance) if isinstance(chance, numbers.Real) else 100.0 / n_classes
    checkpoint = (result.get("artifacts") or {}).get("checkpoint") \
        if isinstance(result.get("artifacts"), Mapping) else None
    trained = result.get("trained")
    generator = result.get("noise_generator")
    base = {
        "dataset": dataset, "model_class": vc.model_class, "conf_name": vc.conf_name,
        "weight_clamping": _weight_clamping_label(general),
        "repeat_number": int(general.get("repeat_number") or 0),
        "experiment_name": str(general.get("experiment_name")),
        "chance": chance,
        "trained": bool(trained) if isinstance(trained, (bool, np.bool_)) else None,
        "config_hash": result.get("config_hash") or config_hash(config),
        "run_id": rid,
        "checkpoint": checkpoint or result.get("checkpoint_used"),
        "diverged": _diverged_epoch(result),
        "noise_generator": generator if isinstance(generator, str) else None,
    }
    exact, loose = keys(config)
    evaluations = result.get("evaluations")
    if evaluations is not None:
        return _walk_rows(rec, config, vc, base, (exact, loose), parse_noise_config)

    accuracy = _final_metric(result, "validation", "accuracy")
    if accuracy is None and math.isnan(base["diverged"]):
        raise _BadRun(f"run {rid}: result lacks the final validation accuracy "
                      f"(result['final']['validation_accuracy'] or "
                      f"result['validation']['accuracy']); result keys: {sorted(result)}")
    accuracy = math.nan if accuracy is None else accuracy  # a diverged run may have none
    test = _final_metric(result, "test", "accuracy")
    loss = _final_metric(result, "validation", "loss")
    row = {**base, **_placement(config, vc), "eval_repeat": 0, "eval_split": "validation",
           "accuracy": accuracy, "test_accuracy": math.nan if test is None else test,
           "loss": math.nan if loss is None else loss, "clean_accuracy": math.nan,
           "_keys": (exact, loose)}
    noise_free = _is_noise_free(vc.site_configs, vc.weight_noise) and math.isfinite(accuracy)
    clean = [((exact, loose), accuracy)] if noise_free else []
    return [row], clean


def _walk_rows(rec: RunRecord, config, vc, base, keys, parse_noise_config):
    """One row per evaluation of a walk run (see :mod:`util.engine.walk`)."""
    rid, result = rec.run_id, rec.result
    evaluations = result["evaluations"]
    if not isinstance(evaluations, list) or not evaluations:
        raise _BadRun(f"run {rid}: result['evaluations'] is empty or not a list")
    split = (result.get("walk") if isinstance(result.get("walk"), Mapping) else {}
             ).get("eval_split") or (config.get("walk") or {}).get("eval_split") or "validation"
    split = str(split)
    target = str((result.get("walk") if isinstance(result.get("walk"), Mapping) else {}
                  ).get("target") or (config.get("walk") or {}).get("target") or "activations")
    names, reps = vc.site_names, vc.repetitions
    if target == "weights":  # sites are the weight layers; repetition does not apply
        from noise.weights import parse_weight_noise
        names, reps = vc.model.weight_layer_names, (1,) * len(vc.model.weight_layer_names)
        parse_noise_config = lambda d: parse_weight_noise(d).noise  # noqa: E731
    clean_acc = result.get("clean_accuracy")
    clean_acc = float(clean_acc) if isinstance(clean_acc, numbers.Real) else math.nan
    noisy_training = bool(vc.noisy_training)
    rows = []
    for i, ev in enumerate(evaluations):
        if not isinstance(ev, Mapping):
            raise _BadRun(f"run {rid}: evaluation {i} is not a dict: {ev!r}")
        missing = [k for k in ("noise", "accuracy") if k not in ev]
        if missing:
            raise _BadRun(f"run {rid}: evaluation {i} lacks {missing}; it has {sorted(ev)}")
        try:
            ([noise_cols], [cfg]), non_finite = _tolerating_non_finite(
                lambda d: ([_noise_columns(c := parse_noise_config(d))], [c]), ev["noise"])
        except ValueError as err:
            raise _BadRun(f"run {rid}: evaluation {i} has a bad noise dict: {err}") from None
        _warn_non_finite(f"{rec.where or f'run {rid}'}, evaluation {i}", "its noise",
                         non_finite, [noise_cols])
        site = ev.get("site")
        if site is not None and not isinstance(site, numbers.Integral):
            raise _BadRun(f"run {rid}: evaluation {i} has site {site!r}, not a site index")
        if site is None or site < 0:
            placement, site, name = "default", ALL_SITES, "all"
            repetition = _mean_repetition(reps)
        else:
            site = int(site)
            if site >= len(names):
                raise _BadRun(f"run {rid}: evaluation {i} is at site {site}, but the model "
                              f"has {len(names)} " + ("weight layers" if target == "weights"
                                                      else "sites"))
            placement, name = "layer_wise", ev.get("site_name") or names[site]
            repetition = float(reps[site])
        loss = ev.get("loss")
        rows.append({**base, "placement": placement, "site": site, "site_name": name,
                     # a noisy-training walk says per evaluation which model it evaluated
                     **noise_cols, "enable_in_training":
                         bool(ev.get("enable_in_training", noisy_training)),
                     "enable_in_eval": bool(cfg.enable_in_eval), "repetition": repetition,
                     "eval_repeat": int(ev.get("repeat") or 0), "eval_split": split,
                     "accuracy": float(ev["accuracy"]),
                     "test_accuracy": float(ev["test_accuracy"])
                     if isinstance(ev.get("test_accuracy"), numbers.Real) else math.nan,
                     "loss": float(loss) if isinstance(loss, numbers.Real) else math.nan,
                     "clean_accuracy": clean_acc, "target": target, "_keys": keys})
    clean = []
    if not noisy_training and split == "validation" and math.isfinite(clean_acc):
        clean.append((keys, clean_acc))
    return rows, clean


def _is_cohort(result: Any) -> bool:
    return isinstance(result, Mapping) and isinstance(result.get("members"), list) \
        and isinstance(result.get("cohort"), Mapping)


def _cohort_members(rec: RunRecord) -> list[RunRecord]:
    """A cohort run's members as runs of their own (``<run id>/<member>``): each member's
    stored config and single-run result (util.engine.cohort.cohort_document)."""
    out = []
    for i, member in enumerate(rec.result["members"]):
        if not isinstance(member, Mapping) or not isinstance(member.get("config"), Mapping):
            raise _BadRun(f"run {rec.run_id}: cohort member {i} has no stored config")
        out.append(RunRecord(f"{rec.run_id}/{i}", rec.status, member["config"], member,
                             f"{rec.where or f'run {rec.run_id}'}, member {i}"))
    return out


def _checked_rows(rec: RunRecord, keys: _Keys):
    """:func:`_run_rows`, with an error that odd stored content causes (a string where a
    number belongs, ...) turned into a :class:`_BadRun` that names the run. A cohort run gives
    the rows of its members, as if each had run on its own."""
    if _is_cohort(rec.result):
        rows, clean = [], []
        for member in _cohort_members(rec):
            member_rows, member_clean = _checked_rows(member, keys)
            rows += member_rows
            clean += member_clean
        return rows, clean
    try:
        return _run_rows(rec, keys)
    except _BadRun:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
        raise _BadRun(f"run {rec.run_id}: unexpected content in its config or result "
                      f"({type(err).__name__}: {err})") from None


def records_to_frame(records: Iterable[RunRecord], *, on_bad_run: str = "raise",
                     origin: str = "results") -> pd.DataFrame:
    """The tidy DataFrame (:data:`COLUMNS`) of some runs; see :func:`load_results`."""
    if on_bad_run not in ("raise", "skip"):
        raise ValueError(f"on_bad_run must be 'raise' or 'skip', got {on_bad_run!r}")
    keys = _Keys()
    rows: list[dict] = []
    clean: dict[str, list[float]] = {}
    clean_loose: dict[str, list[float]] = {}
    bad: list[str] = []
    unfinished: dict[str, int] = {}
    n_records = 0
    for rec in records:
        n_records += 1
        if rec.result is None and rec.status not in ("COMPLETED", ""):
            # not finished (RUNNING, FAILED, INTERRUPTED, ...): nothing to show, nothing wrong
            unfinished[rec.status] = unfinished.get(rec.status, 0) + 1
            continue
        try:
            run_rows, run_clean = _checked_rows(rec, keys)
        except _BadRun as err:
            if on_bad_run == "raise":
                where = f" ({rec.where})" if rec.where else ""
                raise ValueError(f"{origin}: {err}{where} (on_bad_run='skip', the default of "
                                 "python -m analysis, leaves such runs out with a warning)") \
                    from None
            log.warning("%s: leaving out %s: %s", origin, rec.where or f"run {rec.run_id}", err)
            bad.append(str(err))
            continue
        rows.extend(run_rows)
        for (exact, loose), acc in run_clean:
            clean.setdefault(exact, []).append(acc)
            clean_loose.setdefault(loose, []).append(acc)
    if unfinished:
        log.info("%s: left out %d runs without a result (not finished: %s)", origin,
                 sum(unfinished.values()), unfinished)
    if bad:
        log.warning("%s: left out %d of %d runs that lack what a row needs (each named "
                    "above)", origin, len(bad), n_records)
    if not rows:
        raise ValueError(f"{origin}: no usable runs ({n_records} read, {len(bad)} left out "
                         f"as bad, {sum(unfinished.values())} not finished)")
    n_missing = 0
    for row in rows:
        exact, loose = row.pop("_keys")
        if math.isnan(row["clean_accuracy"]):
            refs = clean.get(exact) or clean_loose.get(loose)
            if refs:
                row["clean_accuracy"] = float(np.mean(refs))
            elif row["placement"] != "none":
                n_missing += 1
    if n_missing:
        log.info("%s: %d rows have no matching noise-free run (clean_accuracy is NaN)",
                 origin, n_missing)
    frame = pd.DataFrame.from_records(rows, columns=COLUMNS)
    frame[_FLOAT_COLUMNS] = frame[_FLOAT_COLUMNS].astype(float)
    frame[_INT_COLUMNS] = frame[_INT_COLUMNS].astype(int)
    frame[_BOOL_COLUMNS] = frame[_BOOL_COLUMNS].astype(bool)
    generator = frame["noise_generator"].astype(object)
    frame["noise_generator"] = generator.where(generator.notna(), None)  # not NaN
    order = sorted(range(len(frame)), key=lambda i: _natural_key(frame["run_id"].iat[i]))
    return frame.iloc[order].reset_index(drop=True)


def load_results(source: str | os.PathLike, filter: Mapping[str, Any] | None = None, *,
                 states: Sequence[str] | None = DEFAULT_STATES,
                 mongodb_config: Mapping[str, Any] | None = None,
                 on_bad_run: str = "raise", timeout_s: float = 10.0) -> pd.DataFrame:
    """All runs of a local run store or a seml collection as one tidy DataFrame.

    Args:
        source: a run store folder (sacred's FileStorageObserver folder, e.g. ``runs/``), or
            a seml collection in MongoDB: ``mongodb:<collection>``, or a plain name that is
            not an existing path (see :func:`parse_source`).
        filter: a MongoDB query on the run documents (``{_id, status, config, result}``), e.g.
            ``{'config.data.dataset': 'FashionMNIST', 'config.general.repeat_number':
            {'$in': [0, 1]}}``. MongoDB evaluates it itself; for a run store
            :func:`util.config_paths.matches_query` does, with the operators ``$eq $ne $in
            $nin $exists $gt $gte $lt $lte $and $or`` (numbers match within 1e-9 there).
        states: run statuses to keep (None or empty: all); ignored when ``filter`` has a
            ``status`` condition.
        mongodb_config: seml's connection dict; default: seml's config file.
        on_bad_run: ``'raise'`` (default) a ValueError naming the first run that lacks a
            needed field; ``'skip'``: leave such runs out and log a warning.
        timeout_s: how long to wait for the MongoDB server.

    Returns:
        One row per run (per evaluation for walk runs) with the columns :data:`COLUMNS`
        (see the module docstring), ordered by run id.

    Raises:
        ValueError: a missing folder, an unreachable server, a collection that does not
            exist, no (matching) runs, or a run without a needed field; the message says which.
    """
    records = load_runs(source, filter, states=states, mongodb_config=mongodb_config,
                        timeout_s=timeout_s)
    origin = describe_source(source)
    frame = records_to_frame(records, on_bad_run=on_bad_run, origin=origin)
    log.info("%s: %d rows from %d runs", origin, len(frame), frame["run_id"].nunique())
    return frame


def describe_source(source: str | os.PathLike) -> str:
    """'run store <path>' or 'collection <name>', for messages."""
    kind, where = parse_source(source)
    return f"run store {where!r}" if kind == "run_store" else f"collection {where!r}"


def load_runs(source: str | os.PathLike, filter: Mapping[str, Any] | None = None, *,
              states: Sequence[str] | None = DEFAULT_STATES,
              mongodb_config: Mapping[str, Any] | None = None,
              timeout_s: float = 10.0) -> list[RunRecord]:
    """The raw runs (config and result) of a source, in run id order; the arguments are
    those of :func:`load_results`."""
    kind, where = parse_source(source)
    if kind == "run_store":
        return read_run_store(where, filter, states)
    return read_collection(where, filter, states, mongodb_config=mongodb_config,
                           timeout_s=timeout_s)


# --------------------------------------------------------------------------- σ_mid


def _with_points_marked(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with the accuracy of a diverged run that has none set to chance, and
    a column ``_point``: True for rows with a finite σ and accuracy."""
    df = df.copy()
    accuracy = df["accuracy"].astype(float)
    if "diverged" in df.columns:
        as_chance = df["diverged"].notna() & ~np.isfinite(accuracy)
        if as_chance.any():
            log.info("%d diverged runs without an accuracy count as chance (run(s) %s)",
                     int(as_chance.sum()), sorted(set(df.loc[as_chance, "run_id"].astype(str))))
            df.loc[as_chance, "accuracy"] = df.loc[as_chance, "chance"]
    df["_point"] = np.isfinite(df["sigma"].astype(float)) \
        & np.isfinite(df["accuracy"].astype(float))
    return df


def _warn_left_out(df: pd.DataFrame, what: str) -> None:
    left_out = df[~df["_point"]]
    if left_out.empty:
        return
    shown = [f"run {r.run_id} (σ = {r.sigma}, accuracy = {r.accuracy})"
             for r in left_out.head(20).itertuples()]
    more = f" and {len(left_out) - len(shown)} more" if len(left_out) > len(shown) else ""
    log.warning("%s: left out %d of %d rows whose σ or accuracy is not finite (no point on a "
                "log-σ curve): %s%s", what, len(left_out), len(df), "; ".join(shown), more)


def curve_points(df: pd.DataFrame, what: str = "walking-noise curves") -> pd.DataFrame:
    """The rows of a :func:`load_results` table that are points of a walking-noise curve.

    A run whose training diverged (``diverged`` set) and that has no accuracy (NaN) is a model
    at chance: its accuracy counts as ``chance`` (a diverged model with a measured accuracy
    keeps it). Rows whose σ or accuracy is still not finite (σ = inf stored by an older
    version, a NaN accuracy of a normal run) cannot sit on a log-σ axis: they are left out
    with a warning that names them. ``what`` names the caller in that warning."""
    marked = _with_points_marked(df)
    _warn_left_out(marked, what)
    return marked[marked["_point"]].drop(columns="_point")


def _describe_curve(cols: Sequence[str], key: tuple) -> str:
    return ", ".join(f"{c}={v}" for c, v in zip(cols, key)
                     if c in ("conf_name", "noise_type", "site_name", "enable_in_training",
                              "repeat_number", "dataset"))


def _generator_label(rows: pd.DataFrame, desc: str) -> str | None:
    """The one noise generator of a curve's rows; several: a warning, and ``'a+b'``."""
    counts = rows["noise_generator"].fillna("unknown").value_counts().sort_index()
    if len(counts) == 1:
        return rows["noise_generator"].iloc[0]
    log.warning("σ_mid per site: curve (%s) mixes noise generators %s: its points were drawn "
                "by different generators (the same config gives other numbers under each); "
                "select one with --where noise_generator=... (or group by it)", desc,
                {k: int(v) for k, v in counts.items()})
    return "+".join(counts.index)


def sigma_mid_per_site(df: pd.DataFrame, group_cols: Sequence[str] | None = None, *,
                       clean_accuracy: float | None = None,
                       repeat_col: str | None = "repeat_number", ci: float | None = None,
                       n_boot: int = DEFAULT_N_BOOT, ci_seed: int = 0) -> pd.DataFrame:
    """σ_mid of every walking-noise curve of a :func:`load_results` table.

    Noise-free rows (``placement == 'none'``) are left out (they are the curves' clean
    reference, already in ``clean_accuracy``). Curves are the groups of ``group_cols``
    (default: those of :data:`CURVE_COLUMNS` the table has); ``clean_accuracy`` overrides the
    table's column (e.g. when no noise-free run was stored). The points of each curve are
    those of :func:`curve_points`: a diverged run without an accuracy counts as chance, a row
    with a non-finite σ or accuracy is left out with a warning (it never stops the others).

    Returns :func:`analysis.midpoint.midpoint_table` (one row per curve, sorted by the group
    columns), plus ``n_diverged`` (runs of the curve whose training diverged),
    ``n_left_out`` (its rows left out as not finite) and, where the table has it and it is
    not a group column, ``noise_generator``: the generator of the curve's points, or
    ``'a+b'`` when they mix generators (which also logs a warning: the noise generator is
    not a curve column, so a curve measured partly under each is still one curve).

    With ``ci`` (a level, e.g. 0.95) also ``sigma_mid_low``, ``sigma_mid_high``: the
    bootstrap interval of σ_mid over evaluation draws and training seeds (``repeat_col``)
    from ``n_boot`` replicates (:func:`analysis.uncertainty.sigma_mid_interval`; each curve's
    generator seeded by ``ci_seed`` and its key, so the table is reproducible).

    Raises:
        ValueError: no noisy rows, a curve without a clean accuracy (the message names it and
            says how to provide one), or a curve :func:`analysis.midpoint.midpoint` rejects
            (e.g. a single σ).
    """
    if df is None or len(df) == 0:
        raise ValueError("σ_mid per site: no results (empty table)")
    missing = [c for c in ("sigma", "accuracy", "chance", "placement") if c not in df.columns]
    if missing:
        raise ValueError(f"σ_mid per site: the table lacks column(s) {missing}; "
                         "expected a load_results() table")
    noisy = df[df["placement"] != "none"]
    if noisy.empty:
        raise ValueError("σ_mid per site: every run is noise-free (placement 'none'); there is "
                         "no walking-noise curve")
    cols = [c for c in (group_cols or CURVE_COLUMNS) if c in noisy.columns]
    if group_cols is not None and len(cols) < len(group_cols):
        raise ValueError(f"σ_mid per site: unknown group column(s) "
                         f"{sorted(set(group_cols) - set(cols))}; columns: {list(df.columns)}")
    noisy = _with_points_marked(noisy)
    _warn_left_out(noisy, "σ_mid per site")
    if clean_accuracy is not None:
        noisy["clean_accuracy"] = float(clean_accuracy)
    extras = []
    for key, rows in noisy.groupby(cols, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        points = rows[rows["_point"]]
        if points.empty:
            continue
        if points["clean_accuracy"].isna().all():
            raise ValueError(
                f"σ_mid per site: curve ({_describe_curve(cols, key)}) has no clean accuracy: "
                "no noise-free run with the same data, model and training settings was found. "
                "Store one (noise_settings.default NoNoise) or pass clean_accuracy / "
                "--clean-accuracy.")
        extra = {"n_diverged": int(rows["diverged"].notna().sum())
                 if "diverged" in rows.columns else 0,
                 "n_left_out": int((~rows["_point"]).sum())}
        if "noise_generator" in rows.columns and "noise_generator" not in cols:
            extra["noise_generator"] = _generator_label(points, _describe_curve(cols, key))
        if ci is not None:
            try:
                iv = sigma_mid_interval(
                    points["sigma"], points["accuracy"], points["clean_accuracy"],
                    float(points["chance"].mean()), level=ci, n_boot=n_boot,
                    seeds=None if repeat_col is None else points[repeat_col],
                    seed=group_seed(ci_seed, key))
            except ValueError as exc:
                raise ValueError(f"σ_mid per site: curve ({_describe_curve(cols, key)}): "
                                 f"{exc}") from exc
            extra.update(sigma_mid_low=iv.low, sigma_mid_high=iv.high)
        extras.append(extra)
    points = noisy[noisy["_point"]].drop(columns="_point")
    if points.empty:
        raise ValueError("σ_mid per site: no noisy row has a finite σ and accuracy (see the "
                         "warning above)")
    table = midpoint_table(points, cols, "sigma", "accuracy", "clean_accuracy",
                           chance="chance", repeat_col=repeat_col)
    if len(table) != len(extras):  # both are the sorted groups of the same rows
        raise AssertionError(f"internal: {len(table)} curves but {len(extras)} curve notes")
    for col in extras[0]:
        table[col] = [e[col] for e in extras]
    return table


# --------------------------------------------------------------------------- conditions


def _present(value) -> bool:
    """False for None/NaN (the group key of a column that does not apply, e.g. std_ratio of
    additive noise)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def iter_conditions(df: pd.DataFrame, cols: Sequence[str] = CONDITION_COLUMNS):
    """``(key, rows)`` per condition: ``key`` maps each of ``cols`` that ``df`` has to its value;
    conditions in sorted order, NaN keys kept."""
    cols = [c for c in cols if c in df.columns]
    for key, rows in df.groupby(cols, dropna=False, sort=True):
        yield dict(zip(cols, key if isinstance(key, tuple) else (key,))), rows


def condition_label(key: Mapping[str, Any], with_model: bool = True,
                    with_training: bool = True) -> str:
    """A readable name of a condition, e.g. ``'MNIST, LeNet5, GaussAdd, clean training'``;
    parameters that do not apply or have their usual value are left out."""
    parts = [str(key.get("dataset"))]
    if with_model:
        parts.append(str(key.get("conf_name")))
    parts.append(str(key.get("noise_type")))
    if _present(key.get("std_ratio")):
        parts.append(f"r={key['std_ratio']:g}")
    if _present(key.get("order")):
        parts.append(str(key["order"]))
    if with_training:
        parts.append("noisy training" if key.get("enable_in_training") else "clean training")
    if _present(key.get("enable_in_eval")) and not key["enable_in_eval"]:
        parts.append("no eval noise")
    if _present(key.get("weight_clamping")) and key["weight_clamping"] != "none":
        parts.append(f"clamp {key['weight_clamping']}")
    rep = key.get("repetition")
    if _present(rep) and rep != 1:
        parts.append(f"R={rep:g}")
    if _present(key.get("eval_split")) and key["eval_split"] != "validation":
        parts.append(f"on {key['eval_split']}")
    return ", ".join(parts)
