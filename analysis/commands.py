"""The commands of ``python -m analysis`` (:mod:`analysis.cli` parses the arguments): read the
runs, assemble the table (:mod:`analysis.tables`), write and print it, plot, or write a plan
(:mod:`analysis.plan_yaml`). Each takes the parsed arguments and returns the exit status."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pandas as pd

from models import model_site_names

from .plan_yaml import build_plan_yaml, global_sigma_mid, representative_config
from .plots import plot_sigma_mid, plot_walking_noise, plot_weight_histograms
from .repetition import SCALINGS, repetition_plan
from .results import (CONDITION_COLUMNS, condition_label, curve_points, describe_source,
                      iter_conditions, load_runs, parse_source, records_to_frame,
                      sigma_mid_per_site)
from .tables import (apply_where, interval_note, printed_sigma_mid, run_weight_tables,
                     sigma_mid_notes, weight_summary)

log = logging.getLogger("analysis")

__all__ = ["cmd_results", "cmd_table", "cmd_plot", "cmd_weights", "cmd_plan"]

DEFAULT_OUT_ROOT = Path("analysis_output")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", str(text)).strip("_") or "results"


def _out_dir(args) -> Path:
    if args.out_dir:
        out = Path(args.out_dir)
    else:
        kind, where = parse_source(args.source)
        name = Path(where).resolve().name if kind == "run_store" else where
        out = DEFAULT_OUT_ROOT / _slug(name)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _load_with_runs(args) -> tuple[pd.DataFrame, list]:
    """The tidy table (after ``--where``) and the raw runs it came from."""
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
    if not getattr(args, "ci", False):
        return sigma_mid_per_site(df, args.by or None, clean_accuracy=args.clean_accuracy)
    if not 0 < args.ci_level < 1:
        raise ValueError(f"--ci-level must be in (0, 1), e.g. 0.95; got {args.ci_level}")
    if args.n_boot < 1:
        raise ValueError(f"--n-boot must be >= 1, got {args.n_boot}")
    return sigma_mid_per_site(df, args.by or None, clean_accuracy=args.clean_accuracy,
                              ci=args.ci_level, n_boot=args.n_boot, ci_seed=args.ci_seed)


def cmd_table(args) -> int:
    df = _load(args)
    table = _sigma_mid_table(df, args)
    out = Path(args.out) if args.out else _out_dir(args) / "sigma_mid.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    with pd.option_context("display.max_rows", 500, "display.width", 200,
                           "display.float_format", "{:.4g}".format):
        _say(printed_sigma_mid(table).to_string(index=False))
    notes = sigma_mid_notes(df, table)
    if getattr(args, "ci", False):
        notes.append(interval_note(table, args.ci_level, args.n_boot))
    _say(*notes, f"wrote {out}")
    return 0


def cmd_plot(args) -> int:
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


def cmd_weights(args) -> int:
    df = _load(args)
    out = _out_dir(args)
    table, histograms = run_weight_tables(df, args.max_models)
    written, used = [], set()
    for key, models in histograms:
        written += plot_weight_histograms(
            models,
            _unique_stem(out, "weights_" + _slug(f"{key['dataset']}_{key['conf_name']}"), used),
            title=f"weights: {key['dataset']} {key['conf_name']}")
    csv = out / "weights.csv"
    table.to_csv(csv, index=False)
    with pd.option_context("display.width", 200, "display.max_rows", 200,
                           "display.float_format", "{:.4g}".format):
        _say("mean over conv/linear layers (per layer in weights.csv):",
             weight_summary(table).to_string(index=False))
    for p in [csv, *written]:
        _say(f"wrote {p}")
    return 0


def cmd_plan(args) -> int:
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
    config = representative_config(records, run_ids)
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
        g = global_sigma_mid(table, cond)
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
    _say(f"σ_mid per site ({condition_label(cond)}):")
    for name, s, k in zip(names, rows["sigma_mid"], rows["kind"]):
        _say(f"  {name:>12}  {s:.4g}" + ("" if k == "crossing" else f"  ({k})"))
    for budget in budgets:
        for scaling in scalings:
            plan = repetition_plan(rows["sigma_mid"].tolist(), budget, scaling)
            _say(f"  budget {budget:g} {scaling:>26}: {plan}")
    _say(f"wrote {out}")
    return 0
