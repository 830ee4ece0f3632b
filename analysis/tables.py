"""Tables the analysis commands show, assembled from the tidy results table
(:mod:`analysis.results`): rows picked by ``--where``, the printed σ_mid table and its notes,
and the weight statistics of the runs' checkpoints."""
from __future__ import annotations

import logging
import math
import os
import re
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .results import iter_conditions
from .weights import weight_tables

log = logging.getLogger(__name__)

__all__ = ["apply_where", "PRINTED_COLUMNS", "printed_sigma_mid", "sigma_mid_notes",
           "interval_note",
           "WEIGHT_MODEL_COLUMNS", "run_weight_tables", "weight_summary"]

#: The σ_mid table's columns as printed.
PRINTED_COLUMNS = ["dataset", "conf_name", "noise_type", "std_ratio", "enable_in_training",
                   "placement", "site_name", "sigma_mid", "sigma_mid_low", "sigma_mid_high",
                   "kind", "non_monotone", "n_repeats", "log10_sigma_mid_std"]
#: What one weight table (and one histogram figure) is per: the trained architecture.
WEIGHT_MODEL_COLUMNS = ["dataset", "model_class", "conf_name", "weight_clamping"]


def _parse_value(text: str, series: pd.Series):
    if pd.api.types.is_bool_dtype(series):
        low = text.strip().lower()
        if low in ("true", "1", "yes", "noisy"):
            return True
        if low in ("false", "0", "no", "clean"):
            return False
        raise ValueError(f"--where {series.name}: expected true/false, got {text!r}")
    if pd.api.types.is_numeric_dtype(series):
        if text.strip().lower() in ("nan", "none", ""):
            return math.nan
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"--where {series.name}: expected a number, got {text!r}") from None
    return None if text.strip().lower() in ("none", "null") else text


def apply_where(df: pd.DataFrame, conditions: Sequence[str] | None) -> pd.DataFrame:
    """Rows of ``df`` matching every ``COLUMN=V1,V2`` (any of the values) or ``COLUMN!=V``."""
    for cond in conditions or ():
        m = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(!=|=)(.*)$", cond)
        if not m:
            raise ValueError(f"--where {cond!r}: expected COLUMN=VALUE[,VALUE...] or "
                             "COLUMN!=VALUE")
        col, op, raw = m.groups()
        if col not in df.columns:
            raise ValueError(f"--where {cond!r}: unknown column {col!r}; columns: "
                             f"{list(df.columns)}")
        values = [_parse_value(v, df[col]) for v in raw.split(",")]
        series = df[col]
        hit = pd.Series(False, index=df.index)
        for v in values:
            if v is None or (isinstance(v, float) and math.isnan(v)):
                hit |= series.isna()
            else:
                hit |= series == v
        df = df[~hit] if op == "!=" else df[hit]
        if df.empty:
            raise ValueError(f"no rows left after --where {cond!r}")
    return df


def printed_sigma_mid(table: pd.DataFrame) -> pd.DataFrame:
    """The columns of a σ_mid table (:func:`analysis.results.sigma_mid_per_site`) worth
    printing: :data:`PRINTED_COLUMNS`, the diverged / left-out counts where any is not zero,
    and the noise generator where curves differ in it."""
    printed = [c for c in PRINTED_COLUMNS if c in table.columns]
    printed += [c for c in ("n_diverged", "n_left_out")
                if c in table.columns and (table[c] > 0).any()]
    if "noise_generator" in table.columns and table["noise_generator"].nunique(dropna=False) > 1:
        printed.append("noise_generator")
    return table[printed]


def sigma_mid_notes(df: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """Notes on a σ_mid table and the tidy rows ``df`` it came from: bounds, curves that
    cross the level twice, diverged runs, rows no fit could use, mixed noise generators."""
    notes = []
    n_bounds = int((table["kind"] != "crossing").sum())
    if n_bounds:
        notes.append(f"note: {n_bounds} σ_mid are bounds (the σ grid missed the crossing): "
                     "kind lower_bound = σ_mid is beyond the largest σ, upper_bound = below "
                     "the smallest")
    if table["non_monotone"].any():
        notes.append(f"note: {int(table['non_monotone'].sum())} curves cross the midpoint "
                     "level more than once; σ_mid is the first crossing")
    noisy = df[df["placement"] != "none"]
    diverged = df[df["diverged"].notna()]
    if not diverged.empty:
        cols = ["run_id", "conf_name", "noise_type", "enable_in_training", "site_name", "sigma",
                "diverged", "accuracy"]
        with pd.option_context("display.max_rows", 100, "display.width", 200,
                               "display.float_format", "{:.4g}".format):
            notes += [f"note: {diverged['run_id'].nunique()} runs diverged in training (column "
                      "diverged: the epoch in which the loss or a weight became non-finite); a "
                      "diverged run without an accuracy counts as chance:",
                      diverged[cols].rename(columns={"diverged": "diverged_epoch"})
                      .to_string(index=False)]
    not_finite = noisy[~(np.isfinite(noisy["sigma"]) & (np.isfinite(noisy["accuracy"])
                                                       | noisy["diverged"].notna()))]
    if not not_finite.empty:
        listed = ", ".join(f"{r.run_id} (σ = {r.sigma:g}, accuracy = {r.accuracy:g})"
                           for r in not_finite.itertuples())
        notes.append(f"note: {len(not_finite)} rows are left out of the σ_mid fit (σ or "
                     f"accuracy not finite): run {listed}")
    if "noise_generator" in table.columns:
        mixed = table["noise_generator"].fillna("").str.contains(r"\+")
        if mixed.any():
            notes.append(f"note: {int(mixed.sum())} curves mix noise generators (column "
                         "noise_generator); --where noise_generator=... selects one")
    return notes


def interval_note(table: pd.DataFrame, level: float, n_boot: int) -> str:
    """What the interval columns of a σ_mid table with ``sigma_mid_low``/``_high`` mean, and
    how many intervals have zero width."""
    note = (f"note: sigma_mid_low, sigma_mid_high: {level * 100:g} % bootstrap interval "
            f"({n_boot} replicates) over evaluation draws and training seeds; inf / 0 where "
            "too many replicates missed the crossing")
    flat = table["sigma_mid_low"] == table["sigma_mid_high"]
    if flat.any():
        note += (f"; {int(flat.sum())} intervals have zero width: nothing varied between "
                 "their curves' draws and seeds (e.g. one seed, one draw per σ), so no spread "
                 "was measured")
    return note


def _weight_label(row: pd.Series) -> str:
    if not row["enable_in_training"] or row["placement"] == "none":
        return f"clean training, repeat {row['repeat_number']}"
    extra = "" if pd.isna(row["std_ratio"]) else f" r={row['std_ratio']:g}"
    return (f"{row['noise_type']}{extra} σ={row['sigma']:g} at {row['site_name']}, "
            f"repeat {row['repeat_number']}")


def run_weight_tables(df: pd.DataFrame, max_models: int = 4
                      ) -> tuple[pd.DataFrame, list[tuple[dict, dict[str, str]]]]:
    """Weight statistics per layer (:func:`analysis.weights.weight_tables`) of every run's
    checkpoint, one model per checkpoint, per architecture (:data:`WEIGHT_MODEL_COLUMNS`),
    with the run's training condition as columns; and per architecture the models (label →
    checkpoint) of its histogram: the first clean one and at most ``max_models`` in all.

    Runs whose training diverged and checkpoints missing on this machine are left out with a
    warning; a ValueError when nothing is left."""
    diverged = df[df["diverged"].notna() & df["checkpoint"].notna()]
    if not diverged.empty:
        log.warning("weights: leaving out the checkpoints of %d runs whose training diverged "
                    "(run(s) %s)", diverged["run_id"].nunique(),
                    sorted(set(diverged["run_id"])))
    df = df[df["checkpoint"].notna() & df["diverged"].isna()]
    if df.empty:
        raise ValueError("no run records a checkpoint (result['artifacts']['checkpoint'])")
    frames, histograms = [], []
    for key, rows in iter_conditions(df, WEIGHT_MODEL_COLUMNS):
        models: dict[str, str] = {}
        info: dict[str, dict[str, Any]] = {}
        # one model per checkpoint; clean-trained ones first, then by noise type and σ
        rows = rows.assign(_noisy=rows["enable_in_training"] & (rows["placement"] != "none"))
        rows = rows.sort_values(["_noisy", "noise_type", "site", "sigma", "repeat_number"])
        for _, row in rows.drop_duplicates("checkpoint").iterrows():
            path = row["checkpoint"]
            if not os.path.isfile(path):
                log.warning("checkpoint %s (run %s) is missing here; skipped", path,
                            row["run_id"])
                continue
            label = _weight_label(row)
            models[label] = path
            info[label] = {"training": "noisy" if row["_noisy"] else "clean",
                           "noise_type": row["noise_type"] if row["_noisy"] else "NoNoise",
                           "sigma": row["sigma"] if row["_noisy"] else 0.0,
                           "site_name": row["site_name"] if row["_noisy"] else "",
                           "repeat_number": row["repeat_number"], "checkpoint": path}
        if not models:
            continue
        table = weight_tables(models)
        for col in ("training", "noise_type", "sigma", "site_name", "repeat_number",
                    "checkpoint"):
            table[col] = table["model"].map(lambda m, c=col: info[m][c])
        for col in reversed(WEIGHT_MODEL_COLUMNS):
            table.insert(0, col, key[col])
        frames.append(table)
        chosen = _histogram_models(list(models), info, max_models)
        histograms.append((key, {label: models[label] for label in chosen}))
    if not frames:
        raise ValueError("none of the runs' checkpoints exists on this machine")
    return pd.concat(frames, ignore_index=True), histograms


def weight_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over conv/linear layers of mean|w| and the binarisation index, per model."""
    return (table.groupby(["conf_name", "training", "model"], sort=False)
            .agg(layers=("layer", "size"), mean_abs=("mean_abs", "mean"),
                 binarisation_index=("binarisation_index", "mean")).reset_index())


def _histogram_models(labels: list[str], info: dict, max_models: int) -> list[str]:
    """The first clean model and noise-trained ones spread over σ, at most ``max_models``."""
    clean = [l for l in labels if info[l]["training"] == "clean"][:1]
    noisy = [l for l in labels if info[l]["training"] == "noisy"]
    room = max(max_models - len(clean), 0)
    if len(noisy) > room:
        picks = np.unique(np.linspace(0, len(noisy) - 1, room).round().astype(int)) \
            if room else []
        noisy = [noisy[i] for i in picks]
    return clean + noisy
