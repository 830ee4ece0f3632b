"""``python -m analysis``: walking-noise results from a run store or a seml collection.

    python -m analysis results runs/                      # the tidy table as CSV
    python -m analysis table   my_collection              # σ_mid per site (CSV + printed)
    python -m analysis table   runs/ --ci                 # ... with 95 % bootstrap intervals
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
import logging
import os
import sys
import warnings
from typing import Sequence

from .commands import cmd_plan, cmd_plot, cmd_results, cmd_table, cmd_weights
from .uncertainty import DEFAULT_LEVEL, DEFAULT_N_BOOT

__all__ = ["build_parser", "main"]


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
    p.add_argument("--ci", action="store_true",
                   help="add a bootstrap confidence interval of σ_mid (columns sigma_mid_low, "
                   "sigma_mid_high), resampling evaluation draws and training seeds")
    p.add_argument("--ci-level", type=float, default=DEFAULT_LEVEL,
                   help=f"coverage of the interval (default {DEFAULT_LEVEL})")
    p.add_argument("--n-boot", type=int, default=DEFAULT_N_BOOT,
                   help=f"bootstrap replicates per curve (default {DEFAULT_N_BOOT})")
    p.add_argument("--ci-seed", type=int, default=0,
                   help="seed of the resampling (default 0; the same seed, the same table)")
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
