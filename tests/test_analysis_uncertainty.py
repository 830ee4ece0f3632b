"""Bootstrap intervals of σ_mid on synthetic curve families whose true σ_mid is known:
accuracy logistic in log10 σ, each evaluation a binomial draw of a test set."""
import math

import numpy as np
import pandas as pd
import pytest

from analysis.midpoint import midpoint
from analysis.results import sigma_mid_per_site
from analysis.uncertainty import compare_sigma_mid, sigma_mid_interval

CLEAN, CHANCE = 90.0, 10.0
GRID = np.logspace(-2, 2, 17)          # 4 per decade
#: Halfway (in log σ) between two grid points: the interpolation of a logistic that is
#: symmetric about its midpoint is then unbiased, so misses are the interval's own.
TRUE_MID = 10 ** -0.375


def accuracy(sigma, mid, slope=4.0):
    return CHANCE + (CLEAN - CHANCE) / (1.0 + np.exp(slope * np.log10(sigma / mid)))


def curve(rng, mid=TRUE_MID, draws=4, seeds=1, n_test=500, seed_spread=0.0):
    """Rows (sigma, accuracy, clean, seed): per training seed (its own midpoint, spread by
    ``seed_spread`` decades) and σ, ``draws`` evaluations of ``n_test`` samples."""
    rows = []
    for k in range(seeds):
        m = mid * 10 ** (seed_spread * (k - (seeds - 1) / 2))
        for s in GRID:
            p = accuracy(s, m) / 100
            rows += [(s, 100 * rng.binomial(n_test, p) / n_test, CLEAN, k)
                     for _ in range(draws)]
    return tuple(np.array(c) for c in zip(*rows))


def interval(data, **kw):
    s, a, c, k = data
    kw.setdefault("n_boot", 200)
    return sigma_mid_interval(s, a, c, CHANCE, seeds=k, **kw)


def test_the_95_percent_interval_covers_the_true_midpoint_in_most_datasets():
    rng = np.random.default_rng(7)
    hits = [interval(curve(rng, draws=4, seeds=3), seed=i) for i in range(40)]
    covered = sum(iv.low <= TRUE_MID <= iv.high for iv in hits)
    assert covered >= 36, f"covered the true σ_mid in {covered} of 40"
    # and not by being vacuous: the typical interval spans well under a tenth of a decade
    assert np.median([math.log10(iv.high / iv.low) for iv in hits]) < 0.06


def test_one_seed_with_many_draws_also_covers_the_true_midpoint():
    rng = np.random.default_rng(3)
    hits = [interval(curve(rng, draws=10, seeds=1), seed=i) for i in range(40)]
    assert sum(iv.low <= TRUE_MID <= iv.high for iv in hits) >= 36


def test_the_interval_shrinks_as_draws_grow():
    rng = np.random.default_rng(0)
    widths = {}
    for draws in (2, 8, 32):
        ivs = [interval(curve(rng, draws=draws), seed=i) for i in range(8)]
        widths[draws] = np.median([math.log10(iv.high / iv.low) for iv in ivs])
    assert widths[2] > widths[8] > widths[32] > 0
    # a mean of n draws: width ∝ 1/sqrt(n), so 16x the draws give about a quarter
    assert widths[32] / widths[2] == pytest.approx(0.25, rel=0.4)


def test_point_estimate_is_the_midpoint_of_all_rows_and_lies_inside():
    s, a, c, k = curve(np.random.default_rng(1), draws=3, seeds=2)
    iv = sigma_mid_interval(s, a, c, CHANCE, seeds=k, n_boot=100)
    assert iv.sigma_mid == midpoint(s, a, CLEAN, CHANCE).sigma_mid
    assert iv.low < iv.sigma_mid < iv.high
    assert (iv.n_seeds, iv.min_draws, iv.n_boot, iv.level) == (2, 3, 100, 0.95)


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    data = curve(np.random.default_rng(2), draws=3)
    a, b, c = interval(data, seed=5), interval(data, seed=5), interval(data, seed=6)
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)


def test_a_narrower_level_gives_a_narrower_interval():
    data = curve(np.random.default_rng(4), draws=4)
    wide, narrow = interval(data, level=0.95), interval(data, level=0.5)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_training_seeds_that_differ_widen_the_interval():
    rng = np.random.default_rng(5)
    same = interval(curve(rng, draws=4, seeds=4, seed_spread=0.0))
    spread = interval(curve(rng, draws=4, seeds=4, seed_spread=0.2))
    assert math.log10(spread.high / spread.low) > 3 * math.log10(same.high / same.low)


def test_nothing_to_resample_gives_the_point_itself():
    s = GRID
    a = accuracy(s, TRUE_MID)
    iv = sigma_mid_interval(s, a, CLEAN, CHANCE, n_boot=20)
    assert iv.low == pytest.approx(iv.sigma_mid) and iv.high == pytest.approx(iv.sigma_mid)
    assert not iv.resampled


def test_replicates_beyond_the_grid_open_the_interval():
    # the draws at the largest σ straddle the level: many replicates never reach it
    level = (CLEAN + CHANCE) / 2
    s = np.repeat(GRID, 3)
    a = np.repeat(accuracy(GRID, GRID[-1] * 10), 3)
    a[-3:] = [level + 3, level + 1, level - 5]          # mean just below the level
    iv = sigma_mid_interval(s, a, CLEAN, CHANCE, n_boot=200)
    assert iv.kind == "crossing" and 0.2 < iv.bound_share < 0.8
    assert iv.high == math.inf and math.isfinite(iv.low) and 50 < iv.low < GRID[-1]


def test_bad_arguments_are_errors():
    data = curve(np.random.default_rng(0), draws=2)
    with pytest.raises(ValueError, match="level"):
        interval(data, level=95)
    with pytest.raises(ValueError, match="n_boot"):
        interval(data, n_boot=0)
    with pytest.raises(ValueError, match="differ in length"):
        sigma_mid_interval([0.1, 1.0], [50.0, 20.0], CLEAN, CHANCE, seeds=[0])


def test_one_true_midpoint_is_no_difference_and_a_decade_apart_is_a_difference():
    rng = np.random.default_rng(11)
    a = interval(curve(rng, draws=4, seeds=3), seed=1)
    b = interval(curve(rng, draws=4, seeds=3), seed=2)
    far = interval(curve(rng, mid=TRUE_MID * 10, draws=4, seeds=3), seed=3)
    same = compare_sigma_mid(a, b)
    assert same.verdict == "no difference" and same.low < 1 < same.high
    up, down = compare_sigma_mid(far, a), compare_sigma_mid(a, far)
    assert up.verdict == "higher" and up.low > 1 and up.ratio == pytest.approx(10, rel=0.1)
    assert down.verdict == "lower" and down.high < 1
    assert up.describe("noisy", "clean").startswith("noisy/clean = ")


def test_a_bound_against_a_crossing_above_it_is_higher_with_an_open_end():
    rng = np.random.default_rng(0)
    beyond = interval(curve(rng, mid=1000.0, draws=3))   # never reaches the level
    assert beyond.kind == "lower_bound" and beyond.low == pytest.approx(GRID[-1])
    cmp = compare_sigma_mid(beyond, interval(curve(rng, draws=3)))
    assert cmp.verdict == "higher" and cmp.high == math.inf


def test_sigma_mid_per_site_adds_the_interval_columns():
    rng = np.random.default_rng(9)
    frames = []
    for site, mid in ((0, TRUE_MID), (1, TRUE_MID * 10)):
        s, a, c, k = curve(rng, mid=mid, draws=3, seeds=2)
        frames.append(pd.DataFrame({
            "site": site, "site_name": f"{site}:x", "placement": "layer_wise", "sigma": s,
            "accuracy": a, "clean_accuracy": c, "chance": CHANCE, "repeat_number": k,
            "eval_repeat": np.tile(np.arange(3), len(s) // 3)}))
    df = pd.concat(frames, ignore_index=True)
    table = sigma_mid_per_site(df, ci=0.9, n_boot=100).set_index("site")
    for site, mid in ((0, TRUE_MID), (1, TRUE_MID * 10)):
        row = table.loc[site]
        assert row["sigma_mid_low"] < row["sigma_mid"] < row["sigma_mid_high"]
        assert row["sigma_mid_low"] < mid < row["sigma_mid_high"]
        rows = df[df["site"] == site]
        direct = sigma_mid_interval(rows["sigma"], rows["accuracy"], rows["clean_accuracy"],
                                    CHANCE, seeds=rows["repeat_number"], level=0.9,
                                    n_boot=100)
        assert direct.sigma_mid == row["sigma_mid"]
    again = sigma_mid_per_site(df, ci=0.9, n_boot=100).set_index("site")
    pd.testing.assert_frame_equal(table, again)
    assert "sigma_mid_low" not in sigma_mid_per_site(df).columns


def test_analysis_table_ci_adds_the_interval_through_the_command_line(tmp_path, capsys):
    import analysis_fixtures as F
    from analysis.cli import main
    F.build_walk_store(tmp_path / "runs", tmp_path / "art")  # two draws per σ, ±1 around
    tables = []
    for out in ("a", "b"):
        code = main(["table", str(tmp_path / "runs"), "--ci", "--n-boot", "100",
                     "--ci-level", "0.9", "--out-dir", str(tmp_path / out)])
        printed = capsys.readouterr().out
        assert code == 0
        tables.append(pd.read_csv(tmp_path / out / "sigma_mid.csv").sort_values("site"))
    table = tables[0]
    pd.testing.assert_frame_equal(table, tables[1])          # seeded: the same table
    true_mid = 10.0 ** np.array(F.LOG_MID_WALK)
    assert (table["sigma_mid"].to_numpy() == pytest.approx(true_mid, rel=1e-9))
    assert (table["sigma_mid_low"] < table["sigma_mid"]).all()
    assert (table["sigma_mid"] < table["sigma_mid_high"]).all()
    assert "sigma_mid_low" in printed and "90 % bootstrap interval (100 replicates)" in printed
    code = main(["table", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "c")])
    assert code == 0 and "sigma_mid_low" not in capsys.readouterr().out
    code = main(["table", str(tmp_path / "runs"), "--ci", "--ci-level", "95",
                 "--out-dir", str(tmp_path / "d")])
    assert code == 2 and "--ci-level must be in (0, 1)" in capsys.readouterr().err
