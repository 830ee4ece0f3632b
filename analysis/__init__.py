"""Analysis of walking-noise results: midpoint noise levels, repetition plans, weight
statistics and plots (and, in ``analysis.results``, loading runs into one tidy DataFrame).
"""
from .midpoint import MidpointResult, midpoint, midpoint_table
from .plots import (plot_combined_noise, plot_sigma_mid, plot_walking_noise,
                    plot_weight_histograms)
from .repetition import SCALINGS, repetition_plan, total_repetitions
from .weights import binarisation_index, layer_weight_table, load_state_dict, weight_tables

__all__ = ["midpoint", "MidpointResult", "midpoint_table", "repetition_plan", "SCALINGS",
           "total_repetitions", "binarisation_index", "layer_weight_table", "load_state_dict",
           "weight_tables", "plot_walking_noise", "plot_sigma_mid", "plot_combined_noise",
           "plot_weight_histograms"]
