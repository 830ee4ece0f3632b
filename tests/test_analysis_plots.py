"""Plots: files are written, and each figure shows what its docstring promises.

analysis.plots builds matplotlib Figures without pyplot, so no backend (and no display) is
involved; the files are rendered by the Agg/PDF canvases directly.
"""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from analysis.plots import (combined_noise_figure, plot_combined_noise,
                            plot_sigma_mid, plot_walking_noise, plot_weight_histograms,
                            save_figure, sigma_mid_figure, walking_noise_figure,
                            weight_histogram_figure)

CLEAN, CHANCE = 98.0, 10.0
LENET = ["input", "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "fc1", "relu3", "fc2",
         "relu4", "logits"]
LENET_BN = ["input", "conv1", "bn1", "relu1", "pool1", "conv2", "bn2", "relu2", "pool2", "fc1",
            "bn3", "relu3", "fc2", "bn4", "relu4", "logits"]


def curves(names=LENET, repeats=2):
    grid = np.logspace(-3, 1, 9)
    rows = []
    for site, name in enumerate(names):
        mid = 10 ** (-2 + 2 * site / len(names))
        for rep in range(repeats):
            acc = CHANCE + (CLEAN - CHANCE) / (1 + (grid / mid) ** 3) + rep
            rows += [dict(site=site, site_name=f"{site}:{name}", sigma=s, accuracy=a,
                          repeat_number=rep, enable_in_training=False, conf_name="LeNet5",
                          noise_type="GaussAdd") for s, a in zip(grid, acc)]
    return pd.DataFrame(rows)


def gid_lines(ax, gid):
    return [l for l in ax.get_lines() if l.get_gid() == gid]


def assert_written(paths):
    png, pdf = paths
    assert png.suffix == ".png" and pdf.suffix == ".pdf"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.read_bytes()[:5] == b"%PDF-"


# --------------------------------------------------------------------------- walking noise


def test_walking_noise_has_one_line_per_site_named_in_site_order():
    fig = walking_noise_figure(curves(), chance=CHANCE, clean_accuracy=CLEAN)
    ax = fig.axes[0]
    lines = gid_lines(ax, "site")
    assert len(lines) == len(LENET)
    assert [l.get_label() for l in lines] == [f"{i}:{n}" for i, n in enumerate(LENET)]
    legend_texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend_texts[:len(LENET)] == [f"{i}:{n}" for i, n in enumerate(LENET)]
    assert ax.get_xscale() == "log"


def test_walking_noise_lines_are_the_mean_over_repeats_and_reference_levels_are_drawn():
    df = curves()
    fig = walking_noise_figure(df, chance=CHANCE, clean_accuracy=CLEAN)
    ax = fig.axes[0]
    line = gid_lines(ax, "site")[3]
    expected = df[df["site"] == 3].groupby("sigma")["accuracy"].mean()
    np.testing.assert_allclose(line.get_xdata(), expected.index)
    np.testing.assert_allclose(line.get_ydata(), expected.to_numpy())
    assert gid_lines(ax, "chance")[0].get_ydata()[0] == CHANCE
    assert gid_lines(ax, "midpoint_level")[0].get_ydata()[0] == (CLEAN + CHANCE) / 2
    assert gid_lines(ax, "clean")[0].get_ydata()[0] == CLEAN
    assert sum(c.get_gid() == "spread" for c in ax.collections) == len(LENET)


def test_walking_noise_without_reference_levels_draws_only_sites_and_drops_sigma_zero():
    df = pd.concat([curves(repeats=1),
                    pd.DataFrame(dict(site=0, site_name="0:input", sigma=[0.0], accuracy=CLEAN,
                                      repeat_number=0, enable_in_training=False,
                                      conf_name="LeNet5", noise_type="GaussAdd"))])
    ax = walking_noise_figure(df).axes[0]
    assert len(ax.get_lines()) == len(LENET)
    assert min(gid_lines(ax, "site")[0].get_xdata()) > 0
    assert not ax.collections  # one run per σ: no spread bands


def test_walking_noise_refuses_mixed_conditions_and_bad_tables():
    mixed = pd.concat([curves(), curves().assign(enable_in_training=True)])
    with pytest.raises(ValueError, match="mixes enable_in_training"):
        walking_noise_figure(mixed)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['accuracy'\]"):
        walking_noise_figure(curves().drop(columns="accuracy"))
    with pytest.raises(ValueError, match="empty"):
        walking_noise_figure(curves().iloc[:0])


def test_plot_walking_noise_writes_png_and_pdf(tmp_path):
    paths = plot_walking_noise(curves(), tmp_path / "sub" / "walk", chance=CHANCE,
                               clean_accuracy=CLEAN, title="LeNet5, GaussAdd")
    assert paths == (tmp_path / "sub" / "walk.png", tmp_path / "sub" / "walk.pdf")
    assert_written(paths)


def test_save_figure_replaces_a_given_suffix(tmp_path):
    fig = walking_noise_figure(curves(repeats=1))
    assert save_figure(fig, tmp_path / "x.pdf") == (tmp_path / "x.png", tmp_path / "x.pdf")


# --------------------------------------------------------------------------- σ_mid per site


def mid_table(names, conf, training, bounds=()):
    rows = []
    for site, name in enumerate(names):
        kind = bounds[site] if site < len(bounds) else "crossing"
        rows.append(dict(site=site, site_name=f"{site}:{name}", conf_name=conf,
                         enable_in_training=training, sigma_mid=0.01 * (site + 1), kind=kind,
                         log10_sigma_mid_mean=np.log10(0.01 * (site + 1)),
                         log10_sigma_mid_std=0.1))
    return pd.DataFrame(rows)


def test_sigma_mid_one_series_per_condition_with_site_names_on_the_axis():
    table = pd.concat([mid_table(LENET, "LeNet5", False), mid_table(LENET, "LeNet5", True)])
    ax = sigma_mid_figure(table).axes[0]
    series = gid_lines(ax, "series")
    assert [l.get_label() for l in series] == ["clean training, LeNet5", "noisy training, LeNet5"]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == [f"{i}:{n}" for i, n in enumerate(LENET)]
    assert ax.get_yscale() == "log"
    np.testing.assert_allclose(series[0].get_ydata(), 0.01 * np.arange(1, 13))
    assert sum(c.get_gid() == "spread" for c in ax.collections) == 2


def test_sigma_mid_draws_bounds_with_their_own_markers():
    bounds = ["upper_bound", "crossing", "lower_bound", "lower_bound"]
    ax = sigma_mid_figure(mid_table(LENET, "LeNet5", False, bounds)).axes[0]
    n_points = {gid: sum(len(c.get_offsets()) for c in ax.collections if c.get_gid() == gid)
                for gid in ("crossing", "lower_bound", "upper_bound")}
    assert n_points == {"crossing": len(LENET) - 3, "lower_bound": 2, "upper_bound": 1}
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("lower bound") for t in legend)
    assert any(t.startswith("upper bound") for t in legend)


def test_sigma_mid_aligns_models_with_and_without_batch_norm_by_layer_name():
    table = pd.concat([mid_table(LENET, "LeNet5", False), mid_table(LENET_BN, "LeNet5-BN", False)])
    ax = sigma_mid_figure(table).axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == LENET_BN  # every LeNet5 layer is in LeNet5-BN, in the same order
    plain, bn = gid_lines(ax, "series")
    # conv2 is site 4 in LeNet5 and site 5 in LeNet5-BN, but sits at one x (up to the offset)
    conv2 = LENET_BN.index("conv2")
    assert round(plain.get_xdata()[4]) == conv2 and round(bn.get_xdata()[5]) == conv2


def test_sigma_mid_refuses_a_site_twice_in_one_series(tmp_path):
    table = pd.concat([mid_table(LENET, "LeNet5", False)] * 2)
    with pytest.raises(ValueError, match="more than once"):
        sigma_mid_figure(table)
    assert_written(plot_sigma_mid(mid_table(LENET, "LeNet5", False), tmp_path / "mid"))


# --------------------------------------------------------------------------- combined noise


def combined(n_amp=4, n_ratio=5, repeats=2):
    rows = []
    for amp in np.logspace(-2, 0, n_amp):
        for r in np.linspace(0, 1, n_ratio):
            for rep in range(repeats):
                rows.append(dict(sigma=amp, std_ratio=r, sigma_add=amp * r,
                                 sigma_mul=amp * (1 - r), accuracy=90 - 50 * amp * r + rep,
                                 repeat_number=rep, site=3, noise_type="GaussCombined"))
    return pd.DataFrame(rows)


def test_heatmap_cells_are_means_over_repeats_on_an_amplitude_by_ratio_grid():
    df = combined()
    fig = combined_noise_figure(df)
    ax = fig.axes[0]
    image = ax.get_images()[0]
    data = image.get_array()
    assert data.shape == (4, 5)
    expected = df.groupby(["sigma", "std_ratio"])["accuracy"].mean().unstack().to_numpy()
    np.testing.assert_allclose(np.ma.filled(data, np.nan), expected)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "0.25", "0.5", "0.75", "1"]
    assert "ratio" in ax.get_xlabel()
    assert ax.get_ylabel() == "amplitude A"
    assert len(fig.axes) == 2  # heatmap and colorbar


def test_heatmap_mul_by_add_leaves_missing_cells_blank(tmp_path):
    df = combined(repeats=1)
    ax = combined_noise_figure(df, x_col="sigma_add", y_col="sigma_mul").axes[0]
    data = ax.get_images()[0].get_array()
    # σ_add × σ_mul pairs come from A·r and A·(1−r): most cells of their grid have no run.
    assert np.ma.count_masked(data) > 0
    assert np.ma.count(data) == df.groupby(["sigma_add", "sigma_mul"]).ngroups
    assert ax.get_xlabel() == "σ_add" and ax.get_ylabel() == "σ_mul"
    assert_written(plot_combined_noise(df, tmp_path / "heat"))


def test_heatmap_refuses_several_sites():
    with pytest.raises(ValueError, match="mixes site"):
        combined_noise_figure(pd.concat([combined(), combined().assign(site=4)]))


# --------------------------------------------------------------------------- weights


def net_state(seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(),
                        nn.Linear(16, 8), nn.Linear(8, 3))
    return net.state_dict()


def test_weight_histograms_one_panel_per_layer_titled_with_its_name():
    fig = weight_histogram_figure(net_state(0))
    assert [ax.get_title() for ax in fig.axes] == ["0", "3", "4"]
    assert all(len(ax.patches) == 1 for ax in fig.axes)


def test_weight_histograms_overlay_models_and_pick_layers(tmp_path):
    torch.save({"model_state": net_state(1)}, tmp_path / "noisy.pt")
    fig = weight_histogram_figure({"clean": net_state(0), "noisy": tmp_path / "noisy.pt"},
                                  layers=["4", "0"])
    assert [ax.get_title() for ax in fig.axes] == ["4", "0"]
    assert all(len(ax.patches) == 2 for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["clean", "noisy"]
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['fc9'\]"):
        weight_histogram_figure(net_state(0), layers=["fc9"])
    assert_written(plot_weight_histograms(net_state(0), tmp_path / "w"))
