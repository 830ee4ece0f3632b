"""Analysis of walking-noise results: loading runs into one tidy DataFrame, midpoint noise
levels and their confidence intervals, repetition plans, weight and activation statistics
and plots. CLI: ``python -m analysis --help``.
"""
from .midpoint import MidpointResult, midpoint, midpoint_table
from .plots import (plot_combined_noise, plot_sigma_mid, plot_walking_noise,
                    plot_weight_histograms)
from .repetition import SCALINGS, repetition_plan, total_repetitions
from .results import (ALL_SITES, COLUMNS, CONDITION_COLUMNS, CURVE_COLUMNS, RunRecord,
                      condition_label, iter_conditions, load_results, load_runs,
                      records_to_frame, sigma_mid_per_site)
from .weights import binarisation_index, layer_weight_table, load_state_dict, weight_tables
from .activations import activation_statistics, activation_tables, sigma_mid_snr
from .distribution import bimodality_coefficient
from .uncertainty import compare_sigma_mid, sigma_mid_interval

__all__ = ["midpoint", "MidpointResult", "midpoint_table", "repetition_plan", "SCALINGS",
           "total_repetitions", "binarisation_index", "layer_weight_table", "load_state_dict",
           "weight_tables", "plot_walking_noise", "plot_sigma_mid", "plot_combined_noise",
           "plot_weight_histograms", "load_results", "load_runs", "records_to_frame",
           "sigma_mid_per_site", "iter_conditions", "condition_label", "RunRecord", "COLUMNS",
           "CONDITION_COLUMNS", "CURVE_COLUMNS", "ALL_SITES", "activation_statistics",
           "activation_tables", "sigma_mid_snr", "bimodality_coefficient",
           "sigma_mid_interval", "compare_sigma_mid"]
