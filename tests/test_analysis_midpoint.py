"""Midpoint noise level σ_mid: synthetic curves with known midpoints, and every edge case."""
import math

import numpy as np
import pandas as pd
import pytest

from analysis.midpoint import MidpointResult, midpoint, midpoint_table

CLEAN, CHANCE = 98.0, 10.0
LEVEL = (CLEAN + CHANCE) / 2


def logistic_curve(sigmas, sigma_mid, slope=4.0, clean=CLEAN, chance=CHANCE):
    """Accuracy that falls from clean to chance, logistic in log10 σ, exactly at the midpoint
    level at σ = sigma_mid."""
    x = np.log10(np.asarray(sigmas, dtype=float) / sigma_mid)
    return chance + (clean - chance) / (1.0 + np.exp(slope * x))


def test_grid_point_at_the_midpoint_is_returned_exactly():
    sigmas = np.logspace(-3, 1, 9)  # contains 10**-1 exactly up to rounding
    acc = logistic_curve(sigmas, sigma_mid=sigmas[4])
    res = midpoint(sigmas, acc, CLEAN, CHANCE)
    assert res.kind == "crossing"
    assert res.sigma_mid == pytest.approx(sigmas[4], rel=1e-12)
    assert res.level == LEVEL
    assert res.n_sigmas == 9
    assert not res.non_monotone


def test_crossing_between_grid_points_is_linear_in_log_sigma():
    # Two points bracketing the level symmetrically in accuracy → geometric mean of their σ.
    res = midpoint([0.01, 0.1], [LEVEL + 10, LEVEL - 10], CLEAN, CHANCE)
    assert res.sigma_mid == pytest.approx(math.sqrt(0.01 * 0.1))
    # A quarter of the way down in accuracy → a quarter of the way in log10 σ.
    res = midpoint([1.0, 100.0], [LEVEL + 5, LEVEL - 15], CLEAN, CHANCE)
    assert res.sigma_mid == pytest.approx(10 ** 0.5)


@pytest.mark.parametrize("true_mid", [3e-3, 0.042, 0.5, 2.7])
def test_logistic_curve_on_a_fine_grid_recovers_its_midpoint(true_mid):
    sigmas = np.logspace(-4, 1.5, 56)
    res = midpoint(sigmas, logistic_curve(sigmas, true_mid), CLEAN, CHANCE)
    assert res.kind == "crossing"
    # The logistic is nearly linear around its midpoint: tiny interpolation error.
    assert math.log10(res.sigma_mid) == pytest.approx(math.log10(true_mid), abs=2e-3)


def test_noisy_repeated_runs_are_averaged_and_recover_the_midpoint():
    rng = np.random.default_rng(0)
    grid = np.logspace(-3, 1, 25)
    true_mid = 0.08
    sigmas = np.repeat(grid, 20)
    acc = logistic_curve(sigmas, true_mid) + rng.normal(0, 1.5, sigmas.size)
    res = midpoint(sigmas, acc, CLEAN, CHANCE)
    assert res.kind == "crossing"
    assert res.n_sigmas == 25
    assert math.log10(res.sigma_mid) == pytest.approx(math.log10(true_mid), abs=0.03)


def test_equal_sigma_runs_are_averaged_before_interpolating():
    # Runs at σ=0.1: 70 and 50 → mean 60 (above 54); at σ=1: 40 and 60 → mean 50.
    sigmas = [0.1, 1.0, 0.1, 1.0]
    acc = [70.0, 40.0, 50.0, 60.0]
    res = midpoint(sigmas, acc, CLEAN, CHANCE)
    t = (60 - LEVEL) / (60 - 50)
    assert res.sigma_mid == pytest.approx(10 ** (-1 + t))
    assert res.n_sigmas == 2


def test_order_of_runs_does_not_matter():
    sigmas = np.logspace(-2, 0, 7)
    acc = logistic_curve(sigmas, 0.1)
    perm = np.random.default_rng(1).permutation(7)
    assert midpoint(sigmas[perm], acc[perm], CLEAN, CHANCE) == midpoint(sigmas, acc, CLEAN, CHANCE)


def test_curve_that_never_falls_to_the_level_is_a_lower_bound_at_the_largest_sigma():
    res = midpoint([0.01, 0.1, 1.0], [97.0, 90.0, 60.0], CLEAN, CHANCE)
    assert res.kind == "lower_bound" and res.is_bound
    assert res.sigma_mid == 1.0
    assert not res.non_monotone


def test_curve_that_starts_below_the_level_is_an_upper_bound_at_the_smallest_sigma():
    res = midpoint([0.5, 1.0, 2.0], [30.0, 12.0, 10.0], CLEAN, CHANCE)
    assert res.kind == "upper_bound" and res.is_bound
    assert res.sigma_mid == 0.5
    assert not res.non_monotone


def test_upper_bound_that_rises_above_the_level_again_is_non_monotone():
    res = midpoint([0.5, 1.0, 2.0], [30.0, 80.0, 10.0], CLEAN, CHANCE)
    assert res.kind == "upper_bound"
    assert res.non_monotone


def test_non_monotone_curve_takes_the_first_crossing_and_says_so():
    # Falls below at σ=0.1, recovers at σ=1, falls again at σ=10.
    res = midpoint([0.01, 0.1, 1.0, 10.0], [LEVEL + 10, LEVEL - 10, LEVEL + 5, 11.0],
                   CLEAN, CHANCE)
    assert res.kind == "crossing"
    assert res.non_monotone
    assert res.sigma_mid == pytest.approx(math.sqrt(0.01 * 0.1))


def test_wiggle_that_stays_on_one_side_is_not_non_monotone():
    res = midpoint([0.01, 0.1, 1.0, 10.0], [90.0, 95.0, 40.0, 45.0], CLEAN, CHANCE)
    assert res.kind == "crossing" and not res.non_monotone


def test_point_exactly_at_the_level_counts_as_reached():
    res = midpoint([0.1, 1.0, 10.0], [90.0, LEVEL, 20.0], CLEAN, CHANCE)
    assert res.kind == "crossing" and res.sigma_mid == pytest.approx(1.0)
    res = midpoint([0.1, 1.0], [LEVEL, 20.0], CLEAN, CHANCE)
    assert res.kind == "crossing" and res.sigma_mid == pytest.approx(0.1)


def test_sigma_zero_runs_are_the_clean_point_and_left_out():
    with_zero = midpoint([0.0, 0.0, 0.1, 1.0], [98.0, 97.0, 70.0, 30.0], CLEAN, CHANCE)
    without = midpoint([0.1, 1.0], [70.0, 30.0], CLEAN, CHANCE)
    assert with_zero == without
    assert with_zero.n_sigmas == 2


def test_fractions_work_like_percent():
    pct = midpoint([0.1, 1.0], [70.0, 30.0], 98.0, 10.0)
    frac = midpoint([0.1, 1.0], [0.70, 0.30], 0.98, 0.10)
    assert frac.sigma_mid == pytest.approx(pct.sigma_mid)


def test_result_is_frozen():
    res = midpoint([0.1, 1.0], [70.0, 30.0], CLEAN, CHANCE)
    assert isinstance(res, MidpointResult)
    with pytest.raises(AttributeError):
        res.sigma_mid = 1.0


@pytest.mark.parametrize("sigmas, accs, match", [
    ([], [], "empty"),
    ([0.1, 1.0], [70.0], "differ in length"),
    ([0.1], [70.0], "two distinct"),
    ([0.1, 0.1, 0.1], [70.0, 60.0, 50.0], "two distinct"),
    ([0.0, 0.1], [98.0, 70.0], "two distinct"),
    ([0.1, float("nan")], [70.0, 30.0], "sigmas contain NaN"),
    ([0.1, 1.0], [70.0, float("nan")], "accuracies contain NaN"),
    ([0.1, float("inf")], [70.0, 30.0], "sigmas contain NaN or infinite"),
    ([-0.1, 1.0], [70.0, 30.0], "negative"),
    ([[0.1, 1.0]], [[70.0, 30.0]], "one-dimensional"),
    (["a", "b"], [70.0, 30.0], "must be numbers"),
])
def test_bad_curves_raise_a_clear_value_error(sigmas, accs, match):
    with pytest.raises(ValueError, match=match):
        midpoint(sigmas, accs, CLEAN, CHANCE)


@pytest.mark.parametrize("clean, chance, match", [
    (10.0, 10.0, "must exceed chance"),
    (5.0, 10.0, "must exceed chance"),
    (float("nan"), 10.0, "clean_accuracy must be finite"),
    (98.0, None, "chance must be a number"),
])
def test_bad_reference_levels_raise(clean, chance, match):
    with pytest.raises(ValueError, match=match):
        midpoint([0.1, 1.0], [70.0, 30.0], clean, chance)


# --------------------------------------------------------------------------- midpoint_table


def synthetic_results(mids_per_site, n_repeats=3, noise=0.0, seed=0, clean=CLEAN):
    """Tidy table: one row per (site, repeat, σ); repeat r's curve is centred at
    mid · 10**(0.05·(r − 1)), so log10 σ_mid over repeats has mean log10(mid) and std 0.05."""
    rng = np.random.default_rng(seed)
    grid = np.logspace(-3, 1, 41)
    rows = []
    for site, mid in enumerate(mids_per_site):
        for rep in range(n_repeats):
            rep_mid = mid * 10 ** (0.05 * (rep - (n_repeats - 1) / 2))
            acc = logistic_curve(grid, rep_mid, clean=clean) + rng.normal(0, noise, grid.size)
            for s, a in zip(grid, acc):
                rows.append(dict(site=site, site_name=f"{site}:layer{site}", sigma=s,
                                 accuracy=a, repeat_number=rep, clean_accuracy=clean,
                                 conf_name="LeNet5", std_ratio=np.nan))
    return pd.DataFrame(rows)


def test_table_gives_one_row_per_group_with_known_midpoints_and_spread():
    mids = [0.01, 0.2, 3.0]
    df = synthetic_results(mids)
    table = midpoint_table(df, ["site", "site_name"], chance=CHANCE)
    assert list(table["site"]) == [0, 1, 2]
    assert list(table["site_name"]) == ["0:layer0", "1:layer1", "2:layer2"]
    assert (table["kind"] == "crossing").all()
    assert (table["n_repeats"] == 3).all()
    assert (table["n_repeat_bounds"] == 0).all()
    np.testing.assert_allclose(table["log10_sigma_mid_mean"], np.log10(mids), atol=5e-3)
    np.testing.assert_allclose(table["log10_sigma_mid_std"], 0.05, atol=5e-3)
    np.testing.assert_allclose(np.log10(table["sigma_mid"]), np.log10(mids), atol=5e-3)
    assert (table["clean_accuracy"] == CLEAN).all() and (table["chance"] == CHANCE).all()


def test_table_keeps_groups_whose_key_is_nan():
    df = synthetic_results([0.1])
    table = midpoint_table(df, ["site", "std_ratio"], chance=CHANCE)
    assert len(table) == 1 and np.isnan(table["std_ratio"].iloc[0])


def test_table_counts_bound_repeats():
    # Repeat midpoints 10**0.58, 10**0.63, 10**0.68; the grid, cut at σ ≤ 4, ends at 10**0.6:
    # only repeat 0 crosses, repeats 1 and 2 (and the mean curve) end above the level.
    df = synthetic_results([10 ** 0.63])
    df = df[df["sigma"] <= 4.0]
    table = midpoint_table(df, "site", chance=CHANCE)
    assert table["n_repeat_bounds"].iloc[0] == 2
    assert table["kind"].iloc[0] == "lower_bound"


def test_table_with_clean_accuracy_from_sigma_zero_rows():
    df = synthetic_results([0.1], n_repeats=2).drop(columns="clean_accuracy")
    zero = pd.DataFrame(dict(site=0, site_name="0:layer0", sigma=0.0, accuracy=CLEAN,
                             repeat_number=[0, 1], conf_name="LeNet5", std_ratio=np.nan))
    table = midpoint_table(pd.concat([df, zero]), "site", clean_col=None, chance=CHANCE)
    assert table["clean_accuracy"].iloc[0] == CLEAN
    assert math.log10(table["sigma_mid"].iloc[0]) == pytest.approx(-1, abs=5e-3)


def test_table_chance_from_a_column():
    df = synthetic_results([0.1], n_repeats=1).assign(chance_pct=CHANCE)
    table = midpoint_table(df, "site", chance="chance_pct", repeat_col=None)
    assert table["chance"].iloc[0] == CHANCE
    assert table["n_repeats"].iloc[0] == 0
    assert np.isnan(table["log10_sigma_mid_std"].iloc[0])


def test_table_bad_input_raises_with_names():
    df = synthetic_results([0.1], n_repeats=1)
    with pytest.raises(ValueError, match="empty"):
        midpoint_table(df.iloc[:0], "site", chance=CHANCE)
    with pytest.raises(ValueError, match=r"lack column\(s\) \['nope'\]"):
        midpoint_table(df, ["nope"], chance=CHANCE)
    one_sigma = df[df["sigma"] == df["sigma"].iloc[0]]
    with pytest.raises(ValueError, match=r"group \(0,\).*two distinct"):
        midpoint_table(one_sigma, "site", chance=CHANCE)
    with pytest.raises(ValueError, match="needs runs at σ = 0"):
        midpoint_table(df, "site", clean_col=None, chance=CHANCE)
    with pytest.raises(TypeError):
        midpoint_table(df, "site")  # chance is required: it depends on the dataset
