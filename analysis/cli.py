"""``python -m analysis``: walking-noise results from a run store or a seml collection.

    python -m analysis results runs/                      # the tidy table as CSV
    python -m analysis table   my_collection              # σ_mid per site (CSV + printed)
    python -m analysis plot    runs/ --where conf_name=LeNet5-BN
    python -m analysis weights runs/                      # weight statistics, clean vs noisy
    python -m analysis plan    my_collection --where conf_name=LeNet5 \\
        --where noise_type=GaussAdd --where enable_in_training=false --budget 2 --budget 3

SOURCE is a run store folder (``runs/``), ``mongodb:<collection>`` or a collection name that
is not an existing path. Every subcommand takes ``--filter`` (a MongoDB query as JSON, applied
to the run documents), ``--where COLUMN=VALUE[,VALUE...]`` (applied to the tidy table, see
:mod:`analysis.results`), and ``--out-dir`` (default ``analysis_output/<source>/``), and says
what it wrote where. Bad input ends with ``error: ...`` on stderr and exit status 2.

One bad run never stops the analysis: unreadable runs and runs that lack what a row needs are
left out with a warning each (path and reason) and a count (``--strict``: stop at the first
one instead). Runs whose training diverged are shown (``table`` lists them; a diverged run
without an accuracy counts as chance), and a run with a non-finite σ is a row of ``results``,
left out of σ_mid fits and plots with a warning.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from util.cluster import REPO_ROOT

from .results import CONDITION_COLUMNS, condition_label, iter_conditions

log = logging.getLogger("analysis")

DEFAULT_OUT_ROOT = Path("analysis_output")
#: The σ_mid table's columns as printed.
PRINTED_COLUMNS = ["dataset", "conf_name", "noise_type", "std_ratio", "enable_in_training",
                   "placement", "site_name", "sigma_mid", "kind", "non_monotone", "n_repeats",
                   "log10_sigma_mid_std"]


# --------------------------------------------------------------------------- helpers


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", str(text)).strip("_") or "results"


def _out_dir(args) -> Path:
    if args.out_dir:
        out = Path(args.out_dir)
    else:
        from .results import parse_source
        kind, where = parse_source(args.source)
        name = Path(where).resolve().name if kind == "run_store" else where
        out = DEFAULT_OUT_ROOT / _slug(name)
    out.mkdir(parents=True, exist_ok=True)
    return out


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


def _load_with_runs(args) -> tuple[pd.DataFrame, list]:
    """The tidy table (after ``--where``) and the raw runs it came from."""
    from .results import describe_source, load_runs, records_to_frame

    states = None if args.states == ["all"] else args.states
    filter_ = None
    if args.filter:
        try:
            filter_ = json.loads(args.filter)
        except json.JSONDecodeError as err:
            raise ValueError(f"--filter is not valid JSON: {err}") from None
    origin = describe_source(args.source)
    records = load_runs(args.source, filter_, states=states, timeout_s=args.timeout)
    df = records_to_frame(records, on_bad_run="raise" if args.strict else "skip",
                          origin=origin)
    _say(f"read {len(df)} rows from {df['run_id'].nunique()} runs of {origin}")
    return apply_where(df, args.where), records


def _load(args) -> pd.DataFrame:
    return _load_with_runs(args)[0]


def _unique_stem(out: Path, stem: str, used: set[str]) -> Path:
    name, i = stem, 2
    while name in used:
        name, i = f"{stem}_{i}", i + 1
    used.add(name)
    return out / name


def _say(*lines: str) -> None:
    for line in lines:
        print(line)


# --------------------------------------------------------------------------- subcommands


def cmd_results(args) -> int:
    df = _load(args)
    out = Path(args.out) if args.out else _out_dir(args) / "results.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    n_cond = sum(1 for _ in iter_conditions(df[df["placement"] != "none"]))
    _say(f"{len(df)} rows from {df['run_id'].nunique()} runs; {n_cond} noisy conditions, "
         f"{int((df['placement'] == 'none').sum())} noise-free rows",
         f"wrote {out}")
    return 0


def _sigma_mid_table(df: pd.DataFrame, args) -> pd.DataFrame:
    from .results import sigma_mid_per_site
    return sigma_mid_per_site(df, args.by or None, clean_accuracy=args.clean_accuracy)


def cmd_table(args) -> int:
    df = _load(args)
    table = _sigma_mid_table(df, args)
    out = Path(args.out) if args.out else _out_dir(args) / "sigma_mid.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    printed = [c for c in PRINTED_COLUMNS if c in table.columns]
    printed += [c for c in ("n_diverged", "n_left_out")
                if c in table.columns and (table[c] > 0).any()]
    if "noise_generator" in table.columns and table["noise_generator"].nunique(dropna=False) > 1:
        printed.append("noise_generator")
    shown = table[printed]
    with pd.option_context("display.max_rows", 500, "display.width", 200,
                           "display.float_format", "{:.4g}".format):
        _say(shown.to_string(index=False))
    n_bounds = int((table["kind"] != "crossing").sum())
    if n_bounds:
        _say(f"note: {n_bounds} σ_mid are bounds (the σ grid missed the crossing): "
             "kind lower_bound = σ_mid is beyond the largest σ, upper_bound = below the "
             "smallest")
    if table["non_monotone"].any():
        _say(f"note: {int(table['non_monotone'].sum())} curves cross the midpoint level "
             "more than once; σ_mid is the first crossing")
    _notes_on_runs(df, table)
    _say(f"wrote {out}")
    return 0


def _notes_on_runs(df: pd.DataFrame, table: pd.DataFrame) -> None:
    """Print the diverged runs, the rows no fit could use, and curves of mixed generators."""
    noisy = df[df["placement"] != "none"]
    diverged = df[df["diverged"].notna()]
    if not diverged.empty:
        cols = ["run_id", "conf_name", "noise_type", "enable_in_training", "site_name", "sigma",
                "diverged", "accuracy"]
        with pd.option_context("display.max_rows", 100, "display.width", 200,
                               "display.float_format", "{:.4g}".format):
            _say(f"note: {diverged['run_id'].nunique()} runs diverged in training (column "
                 "diverged: the epoch in which the loss or a weight became non-finite); a "
                 "diverged run without an accuracy counts as chance:",
                 diverged[cols].rename(columns={"diverged": "diverged_epoch"})
                 .to_string(index=False))
    not_finite = noisy[~(np.isfinite(noisy["sigma"]) & (np.isfinite(noisy["accuracy"])
                                                       | noisy["diverged"].notna()))]
    if not not_finite.empty:
        listed = ", ".join(f"{r.run_id} (σ = {r.sigma:g}, accuracy = {r.accuracy:g})"
                           for r in not_finite.itertuples())
        _say(f"note: {len(not_finite)} rows are left out of the σ_mid fit (σ or accuracy not "
             f"finite): run {listed}")
    if "noise_generator" in table.columns:
        mixed = table["noise_generator"].fillna("").str.contains(r"\+")
        if mixed.any():
            _say(f"note: {int(mixed.sum())} curves mix noise generators (column "
                 "noise_generator); --where noise_generator=... selects one")


def cmd_plot(args) -> int:
    from .plots import plot_sigma_mid, plot_walking_noise
    from .results import curve_points

    df = _load(args)
    out = _out_dir(args)
    table = _sigma_mid_table(df, args)
    site_rows = curve_points(df[(df["placement"] != "none") & (df["site"] >= 0)], "plot")
    written, used = [], set()
    for key, rows in iter_conditions(site_rows):
        label = condition_label(key)
        clean = rows["clean_accuracy"].mean()
        if args.clean_accuracy is not None:
            clean = args.clean_accuracy
        paths = plot_walking_noise(
            rows, _unique_stem(out, "walking_noise_" + _slug(label.replace(", ", "_")), used),
            chance=float(rows["chance"].mean()),
            clean_accuracy=None if pd.isna(clean) else float(clean), title=label)
        written += paths
    if not written:
        raise ValueError("no runs with noise at a single site (layer_wise placement) to plot")
    # σ_mid per site: one figure per dataset and noise condition; training and conf_name
    # (e.g. ±BN) are the series within it.
    sites_table = table[table["site"] >= 0]
    figure_cols = [c for c in CONDITION_COLUMNS
                   if c not in ("enable_in_training", "conf_name", "experiment_name")]
    for key, rows in iter_conditions(sites_table, figure_cols):
        label = condition_label(key, with_model=False, with_training=False)
        paths = plot_sigma_mid(
            rows, _unique_stem(out, "sigma_mid_" + _slug(label.replace(", ", "_")), used),
            title=f"σ_mid per site: {label}")
        written += paths
    for p in written:
        _say(f"wrote {p}")
    return 0


def _weight_label(row: pd.Series) -> str:
    if not row["enable_in_training"] or row["placement"] == "none":
        return f"clean training, repeat {row['repeat_number']}"
    extra = "" if pd.isna(row["std_ratio"]) else f" r={row['std_ratio']:g}"
    return (f"{row['noise_type']}{extra} σ={row['sigma']:g} at {row['site_name']}, "
            f"repeat {row['repeat_number']}")


def cmd_weights(args) -> int:
    from .plots import plot_weight_histograms
    from .weights import weight_tables

    df = _load(args)
    out = _out_dir(args)
    diverged = df[df["diverged"].notna() & df["checkpoint"].notna()]
    if not diverged.empty:
        log.warning("weights: leaving out the checkpoints of %d runs whose training diverged "
                    "(run(s) %s)", diverged["run_id"].nunique(),
                    sorted(set(diverged["run_id"])))
    df = df[df["checkpoint"].notna() & df["diverged"].isna()]
    if df.empty:
        raise ValueError("no run records a checkpoint (result['artifacts']['checkpoint'])")
    frames, written, used = [], [], set()
    model_cols = ["dataset", "model_class", "conf_name", "weight_clamping"]
    for key, rows in iter_conditions(df, model_cols):
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
        for col in reversed(model_cols):
            table.insert(0, col, key[col])
        frames.append(table)
        chosen = _histogram_models(list(models), info, args.max_models)
        written += plot_weight_histograms(
            {label: models[label] for label in chosen},
            _unique_stem(out, "weights_" + _slug(f"{key['dataset']}_{key['conf_name']}"), used),
            title=f"weights: {key['dataset']} {key['conf_name']}")
    if not frames:
        raise ValueError("none of the runs' checkpoints exists on this machine")
    table = pd.concat(frames, ignore_index=True)
    csv = out / "weights.csv"
    table.to_csv(csv, index=False)
    summary = (table.groupby(["conf_name", "training", "model"], sort=False)
               .agg(layers=("layer", "size"), mean_abs=("mean_abs", "mean"),
                    binarisation_index=("binarisation_index", "mean")).reset_index())
    with pd.option_context("display.width", 200, "display.max_rows", 200,
                           "display.float_format", "{:.4g}".format):
        _say("mean over conv/linear layers (per layer in weights.csv):",
             summary.to_string(index=False))
    for p in [csv, *written]:
        _say(f"wrote {p}")
    return 0


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


# --------------------------------------------------------------------------- plan


def _sigma_key(noise_type: str) -> str:
    from noise.config import NOISE_TYPES
    fields = {f for f in NOISE_TYPES[noise_type].__dataclass_fields__}
    for key in ("StdAmplitude", "GaussStd"):
        if key in fields:
            return key
    raise ValueError(f"noise type {noise_type!r} has no single σ key (GaussStd or "
                     "StdAmplitude); a repetition plan cannot set its σ")


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, float):
        if not math.isfinite(v):
            return ".nan" if math.isnan(v) else (".inf" if v > 0 else "-.inf")
        text = repr(float(f"{v:.6g}"))
        mantissa, e, exponent = text.partition("e")
        if e and "." not in mantissa:  # YAML 1.1 (PyYAML) reads 1e-05 as a string
            text = f"{mantissa}.0e{exponent}"
        return text
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    text = str(v)
    return json.dumps(text) if re.search(r"[:#{}\[\],&*?|<>=!%@`'\"]|^\s|\s$", text) \
        or text.lower() in ("true", "false", "null", "yes", "no", "on", "off", "") else text


def _representative_config(records, run_ids: set[str]) -> dict:
    from util.config import merged_with_defaults
    configs = [merged_with_defaults(r.config) for r in records if r.run_id in run_ids]
    if not configs:
        raise ValueError("internal: the condition's runs have no config")
    first = configs[0]
    for key in (("general", "num_epochs"), ("optimizer", "lr"), ("data", "batch_size")):
        values = {c[key[0]].get(key[1]) for c in configs}
        if len(values) > 1:
            log.warning("the measured runs differ in %s (%s); the plan uses %r",
                        ".".join(key), sorted(map(str, values)), first[key[0]][key[1]])
    return first


def _global_sigma_mid(table: pd.DataFrame, cond: dict) -> float | None:
    rows = table[table["placement"] == "default"]
    for col in ("dataset", "conf_name", "noise_type", "enable_in_training", "weight_clamping"):
        rows = rows[rows[col] == cond[col]]
    if not pd.isna(cond.get("std_ratio")):
        rows = rows[rows["std_ratio"] == cond["std_ratio"]]
    rows = rows[rows["repetition"] == 1]
    if len(rows) == 1:
        return float(rows["sigma_mid"].iat[0])
    return None


def build_plan_yaml(*, config: dict, sigma_mid: Sequence[float], kinds: Sequence[str],
                    site_names: Sequence[str], condition: dict, budgets: Sequence[float],
                    scalings: Sequence[str], sigmas: Sequence[float], repeats: int,
                    source: str, out_path: Path, uniform: bool = True,
                    sigma_note: str = "") -> str:
    """The text of a ``multi_run_layers`` seml YAML: one sub-experiment per scaling × budget
    with ``model.<class>.repetition_config.layer_wise_mapped`` (one R per site, in site
    order), noise at every site at ``sigmas`` (the global σ_mid), ``repeats`` repeats."""
    from .repetition import repetition_plan

    g, opt, data, model = config["general"], config["optimizer"], config["data"], config["model"]
    mc = model["model_class"]
    conf = model[mc]["conf_name"]
    dataset = condition["dataset"]
    noise_type = condition["noise_type"]
    sigma_key = _sigma_key(noise_type)
    training = bool(condition["enable_in_training"])
    base_name = f"{dataset}_{conf}_multi_run_tailored"
    rel_root = os.path.relpath(REPO_ROOT, out_path.resolve().parent)
    n = len(site_names)
    plans = []
    for budget in budgets:
        for scaling in scalings:
            plans.append((f"{scaling}_b{budget:g}".replace(".", "p"), scaling, budget,
                          repetition_plan(sigma_mid, budget, scaling)))
        if uniform and float(budget).is_integer():
            plans.append((f"uniform_b{budget:g}", "uniform", budget, [int(budget)] * n))
    n_sigma = len(sigmas)
    total = len(plans) * repeats * n_sigma
    mid_text = ", ".join(f"{name} {s:.3g}" + ("" if k == "crossing" else f" ({k})")
                         for name, s, k in zip(site_names, sigma_mid, kinds))
    lines = [
        f"# Multi-run layers, tailored part: {dataset} · {conf} ({n} sites).",
        "#",
        f"# Written by `python -m analysis plan` from {source} on "
        f"{_dt.date.today().isoformat()}.",
        f"# {'Noisy-training' if training else 'Eval-only'} {noise_type} at every site at "
        f"σ = {', '.join(f'{s:.3g}' for s in sigmas)}; site l repeated R_l times (R_l noise "
        "draws averaged),",
        "# R_l from the measured σ_mid per site by each scaling of analysis.repetition_plan, "
        "sum R_l = budget × sites.",
        f"# Measured condition: {condition_label(condition)}.",
        f"# σ_mid per site: {mid_text}.",
        f"# {len(plans)} plans x {n_sigma} σ x {repeats} repeats = {total} experiments.",
        "",
        "seml:",
        "  executable: train.py",
        f"  name: {_fmt(f'wn_multi_run_{dataset}_{conf}_tailored')}",
        f"  description: {_fmt(f'{dataset} {conf} per-site repetition plans from measured sigma_mid, {noise_type}')}",
        "  output_dir: logs",
        f"  project_root_dir: {_fmt(rel_root)}",
        "",
        "slurm:",
        "  # Without experiments_per_job and GPU options: both come from seml's settings.",
        "  - sbatch_options:",
        "      time: 1-00:00",
        "",
        "fixed:",
        f"  general.num_epochs: {_fmt(int(g['num_epochs']))}",
        f"  general.experiment_name: {_fmt(base_name)}",
    ]
    if not training:
        # evaluation repeats share one trained model (repeat 0's), as in multi_run_layers
        lines.append("  general.train_repeat_number: 0")
    wc = g.get("weight_clamping") or {}
    for bound in ("min", "max"):
        if wc.get(bound) is not None:
            lines.append(f"  general.weight_clamping.{bound}: {_fmt(float(wc[bound]))}")
    for k in ("optimizer_type", "lr_scheduler", "lr"):
        if opt.get(k) is not None:
            lines.append(f"  optimizer.{k}: {_fmt(opt[k])}")
    lines += [f"  data.dataset: {_fmt(dataset)}",
              f"  data.batch_size: {_fmt(int(data['batch_size']))}"]
    if data.get("val_split") is not None:
        lines.append(f"  data.val_split: {_fmt(float(data['val_split']))}")
    lines += [f"  model.model_class: {_fmt(mc)}",
              f"  model.criterion: {_fmt(model.get('criterion', 'CrossEntropyLoss'))}",
              f"  model.weight_criterion: {_fmt(bool(model.get('weight_criterion', False)))}",
              f"  model.{mc}.conf_name: {_fmt(conf)}",
              f"  model.{mc}.repetition_config.global: 1",
              f"  noise_settings.default.noise_type: {_fmt(noise_type)}"]
    if not pd.isna(condition.get("std_ratio")):
        lines.append(f"  noise_settings.default.StdRatio: {_fmt(float(condition['std_ratio']))}")
    if condition.get("order") in ("mul_add", "add_mul"):
        lines.append(f"  noise_settings.default.FirstMulThenAdd: "
                     f"{1 if condition['order'] == 'mul_add' else 0}")
    if n_sigma == 1:
        lines.append(f"  noise_settings.default.{sigma_key}: {_fmt(float(sigmas[0]))}"
                     + (f"   # {sigma_note}" if sigma_note else ""))
    lines += [f"  noise_settings.default.enable_in_training: {int(training)}",
              "  noise_settings.default.enable_in_eval: 1",
              "",
              "grid:",
              f"  general.repeat_number:   # repeats 0..{repeats - 1}",
              "    type: range", "    min: 0", f"    max: {repeats}", "    step: 1"]
    if n_sigma > 1:
        lines += [f"  noise_settings.default.{sigma_key}:",
                  "    type: choice",
                  f"    options: [{', '.join(_fmt(float(s)) for s in sigmas)}]"]
    for name, scaling, budget, plan in plans:
        lines += ["",
                  f"{name}:   # {scaling}, budget {budget:g} x {n} = {sum(plan)} repetitions",
                  "  fixed:",
                  f"    general.experiment_name: {_fmt(f'{base_name}_{name}')}",
                  f"    model.{mc}.repetition_config.layer_wise_mapped: "
                  f"[{', '.join(str(r) for r in plan)}]"]
    lines.append(f"# sites: {', '.join(site_names)}")
    return "\n".join(line for line in lines if line is not None) + "\n"


def cmd_plan(args) -> int:
    from models import model_site_names

    from .repetition import SCALINGS
    from .results import sigma_mid_per_site

    unknown = [s for s in args.scaling or () if s not in SCALINGS]
    if unknown:
        raise ValueError(f"unknown scaling(s) {unknown}; known: {sorted(SCALINGS)}")
    budgets = args.budget or [2.0, 3.0]
    bad = [b for b in budgets if not b >= 1]
    if bad:
        raise ValueError(f"--budget must be >= 1 (mean repetitions per site), got {bad}")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    df, records = _load_with_runs(args)
    table = sigma_mid_per_site(df, clean_accuracy=args.clean_accuracy)
    sites = table[table["site"] >= 0]
    conditions = list(iter_conditions(sites))
    if not conditions:
        raise ValueError("no σ_mid per site: the results hold no curves with noise at a single "
                         "site (layer_wise placement)")
    if len(conditions) > 1:
        listed = "\n  ".join(condition_label(k) for k, _ in conditions)
        raise ValueError(f"the results hold {len(conditions)} conditions; a plan is for one. "
                         f"Narrow them with --where (e.g. --where conf_name=... --where "
                         f"enable_in_training=false --where noise_type=GaussAdd):\n  {listed}")
    cond, rows = conditions[0]
    rows = rows.sort_values("site")
    run_ids = set(df[(df["site"] >= 0) & (df["conf_name"] == cond["conf_name"])
                     & (df["dataset"] == cond["dataset"])]["run_id"])
    config = _representative_config(records, run_ids)
    names = model_site_names(config["model"])
    have = set(int(s) for s in rows["site"])
    missing = [names[i] for i in range(len(names)) if i not in have]
    if missing:
        raise ValueError(f"σ_mid is missing at site(s) {missing} of {cond['conf_name']} "
                         f"({len(names)} sites); a plan needs every site")
    bounds = rows[rows["kind"] != "crossing"]
    for _, b in bounds.iterrows():
        log.warning("σ_mid at %s is only a %s (%.3g); the plan uses the bound",
                    b["site_name"], b["kind"].replace("_", " "), b["sigma_mid"])
    sigmas, note = args.sigma, "given with --sigma"
    if not sigmas:
        note = "measured global σ_mid"
        g = _global_sigma_mid(table, cond)
        if g is None:
            raise ValueError("the results hold no global curve (noise at every site, "
                             "placement 'default') for this condition to take its σ_mid as "
                             "the plan's noise level; pass --sigma")
        sigmas = [g]
    scalings = args.scaling or list(SCALINGS)
    out = Path(args.out) if args.out else (
        _out_dir(args) / f"{cond['dataset']}_{_slug(cond['conf_name'])}_tailored.yaml")
    text = build_plan_yaml(config=config, sigma_mid=rows["sigma_mid"].tolist(),
                           kinds=rows["kind"].tolist(), site_names=names, condition=cond,
                           budgets=budgets, scalings=scalings, sigmas=sigmas,
                           repeats=args.repeats, source=str(args.source), out_path=out,
                           uniform=not args.no_uniform, sigma_note=note)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    from .repetition import repetition_plan
    _say(f"σ_mid per site ({condition_label(cond)}):")
    for name, s, k in zip(names, rows["sigma_mid"], rows["kind"]):
        _say(f"  {name:>12}  {s:.4g}" + ("" if k == "crossing" else f"  ({k})"))
    for budget in budgets:
        for scaling in scalings:
            plan = repetition_plan(rows["sigma_mid"].tolist(), budget, scaling)
            _say(f"  budget {budget:g} {scaling:>26}: {plan}")
    _say(f"wrote {out}")
    return 0


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Walking-noise analysis: results table, σ_mid per site, plots, weight "
                    "statistics, repetition plans. SOURCE: a run store folder, "
                    "mongodb:<collection>, or a seml collection name.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="-v: progress messages, -vv: debug messages (default: warnings)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("source", help="run store folder, mongodb:<collection> or collection")
        p.add_argument("--filter", help="MongoDB query on the run documents, as JSON, e.g. "
                       "'{\"config.data.dataset\": \"MNIST\"}'")
        p.add_argument("--where", action="append", metavar="COLUMN=VALUE",
                       help="keep rows whose COLUMN is one of VALUE[,VALUE...] (or "
                       "COLUMN!=VALUE); repeatable")
        p.add_argument("--states", nargs="+", default=["COMPLETED"],
                       help="run statuses to read (default COMPLETED; 'all' for every run)")
        p.add_argument("--strict", action="store_true",
                       help="fail on the first run that lacks a needed field (default: leave "
                       "such runs out, with a warning naming each)")
        # the default now; accepted so that older command lines keep working
        p.add_argument("--skip-bad-runs", action="store_true", help=argparse.SUPPRESS)
        p.add_argument("--timeout", type=float, default=10.0,
                       help="seconds to wait for the MongoDB server (default 10)")
        p.add_argument("--out-dir", help="output folder (default analysis_output/<source>/)")

    def midpoint_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--clean-accuracy", type=float,
                       help="noise-free accuracy (percent) for every curve, instead of the "
                       "matching noise-free runs")

    p = sub.add_parser("results", help="the tidy results table as CSV")
    common(p)
    p.add_argument("--out", help="CSV path (default <out-dir>/results.csv)")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("table", help="σ_mid per site and condition (CSV, printed)")
    common(p)
    midpoint_options(p)
    p.add_argument("--by", nargs="+", metavar="COLUMN",
                   help="columns that name one curve (default: analysis.results.CURVE_COLUMNS)")
    p.add_argument("--out", help="CSV path (default <out-dir>/sigma_mid.csv)")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("plot", help="walking-noise curves per condition and σ_mid per site "
                       "(PNG and PDF)")
    common(p)
    midpoint_options(p)
    p.set_defaults(func=cmd_plot, by=None)

    p = sub.add_parser("weights", help="weight statistics per layer from the checkpoints, "
                       "clean vs noise-trained (CSV, histograms)")
    common(p)
    p.add_argument("--max-models", type=int, default=4,
                   help="models per histogram figure (default 4)")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("plan", help="repetition plans from measured σ_mid, written as a "
                       "multi_run_layers seml YAML")
    common(p)
    midpoint_options(p)
    p.add_argument("--budget", type=float, action="append",
                   help="mean repetitions per site (sum R = budget x sites); repeatable "
                   "(default 2 and 3)")
    p.add_argument("--scaling", action="append",
                   help="a scaling of analysis.repetition.SCALINGS; repeatable (default all)")
    p.add_argument("--sigma", type=float, action="append",
                   help="σ of the evaluation noise at every site; repeatable (default: the "
                   "measured global σ_mid of the condition)")
    p.add_argument("--repeats", type=int, default=100, help="repeats per plan (default 100)")
    p.add_argument("--no-uniform", action="store_true",
                   help="leave out the uniform R = budget baseline plans")
    p.add_argument("--out", help="YAML path (default <out-dir>/<dataset>_<conf>_tailored.yaml; "
                   "e.g. experiment_configs/multi_run_layers/...)")
    p.set_defaults(func=cmd_plan, by=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # sacred imports pkg_resources, which warns on every start; nothing for a user to act on
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated",
                            category=UserWarning)
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        return args.func(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
