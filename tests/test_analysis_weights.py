"""Weight statistics: binarisation index, per-layer table, state_dict/checkpoint loading."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from analysis.weights import (TABLE_COLUMNS, binarisation_index, conv_linear_weights,
                              layer_weight_table, layer_weight_table_or_nan, layer_weights,
                              load_state_dict, mean_abs_bn_gamma, same_state, weight_tables)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 6 * 6, 10), nn.BatchNorm1d(10), nn.Linear(10, 3))


def test_binary_tensor_has_index_one():
    w = torch.tensor([0.3, -0.3, 0.3, -0.3, -0.3])
    assert binarisation_index(w) == 1.0


def test_gaussian_tensor_has_a_small_index():
    w = np.random.default_rng(0).normal(0, 1, 10_000)
    assert binarisation_index(w) < 0.005


def test_uniform_tensor_has_about_one_minus_threshold():
    w = np.random.default_rng(0).uniform(-1, 1, 100_000)
    assert binarisation_index(w) == pytest.approx(0.1, abs=0.01)


def test_index_counts_weights_within_ten_percent_of_the_max():
    # max 1: |w| ≥ 0.9 are -1, 0.95, 0.9 → 3 of 6
    assert binarisation_index([-1.0, 0.95, 0.9, 0.89, 0.0, 0.5]) == pytest.approx(0.5)
    assert binarisation_index([-1.0, 0.95, 0.9, 0.89, 0.0, 0.5], threshold=0.5) == \
        pytest.approx(5 / 6)  # 0.5 itself counts: the bound is inclusive


def test_index_of_zero_layer_is_nan_and_bad_input_raises():
    assert math.isnan(binarisation_index(np.zeros(5)))
    with pytest.raises(ValueError, match="empty"):
        binarisation_index([])
    with pytest.raises(ValueError, match="NaN"):
        binarisation_index([1.0, float("nan")])
    with pytest.raises(ValueError, match="threshold"):
        binarisation_index([1.0], threshold=0.0)


def test_table_has_conv_and_linear_layers_only_and_skips_batch_norm():
    net = small_net()
    table = layer_weight_table(net.state_dict())
    assert list(table.columns) == TABLE_COLUMNS
    assert list(table["layer"]) == ["0", "4", "6"]
    assert list(table["kind"]) == ["conv", "linear", "linear"]
    assert list(table["n_weights"]) == [4 * 1 * 3 * 3, 144 * 10, 10 * 3]
    assert table["shape"].iloc[0] == (4, 1, 3, 3)


def test_table_statistics_match_the_tensors():
    net = small_net()
    table = layer_weight_table(net.state_dict()).set_index("layer")
    w = net[4].weight.detach().double().numpy().ravel()
    row = table.loc["4"]
    assert row["mean_abs"] == pytest.approx(np.abs(w).mean())
    assert row["std"] == pytest.approx(w.std())
    assert row["max_abs"] == pytest.approx(np.abs(w).max())
    assert row["binarisation_index"] == pytest.approx(binarisation_index(w))


def test_a_binarised_layer_stands_out_in_the_table():
    net = small_net()
    with torch.no_grad():
        net[6].weight.copy_(torch.sign(net[6].weight) * 0.5)
    table = layer_weight_table(net.state_dict()).set_index("layer")
    assert table.loc["6", "binarisation_index"] == 1.0
    assert table.loc["4", "binarisation_index"] < 0.2


def test_checkpoint_dict_and_file_give_the_same_table(tmp_path):
    state = small_net().state_dict()
    ckpt = {"model_state": state, "epoch": 3, "optimizer_state": {}}
    path = tmp_path / "ckpt.pt"
    torch.save(ckpt, path)
    plain = layer_weight_table(state)
    assert layer_weight_table(ckpt).equals(plain)
    assert layer_weight_table(path).equals(plain)
    assert layer_weight_table(str(path)).equals(plain)


def test_layer_weights_are_flat_arrays_per_layer():
    net = small_net()
    weights = layer_weights(net.state_dict())
    assert list(weights) == ["0", "4", "6"]
    np.testing.assert_allclose(weights["6"], net[6].weight.detach().numpy().ravel(), rtol=1e-6)


def test_weight_tables_stack_models_with_their_labels():
    a, b = small_net().state_dict(), small_net().state_dict()
    table = weight_tables({"clean training": a, "noisy training": b})
    assert list(table.columns) == ["model"] + TABLE_COLUMNS
    assert list(table["model"]) == ["clean training"] * 3 + ["noisy training"] * 3


def test_bad_sources_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_state_dict(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="not tensors"):
        load_state_dict({"epoch": 3, "model": {}})
    with pytest.raises(ValueError, match="'model_state' is a"):
        load_state_dict({"model_state": 5})
    with pytest.raises(ValueError, match="expected a state_dict"):
        load_state_dict(42)
    bn_only = nn.BatchNorm1d(3).state_dict()
    with pytest.raises(ValueError, match="no conv/linear weights"):
        layer_weight_table(bn_only)
    with pytest.raises(ValueError, match="at least one model"):
        weight_tables({})


def test_conv_linear_weights_skip_batch_norm_and_biases():
    state = small_net().state_dict()
    assert [(layer, kind) for layer, kind, _ in conv_linear_weights(state)] == \
        [("0", "conv"), ("4", "linear"), ("6", "linear")]


def test_a_diverged_model_gives_a_table_of_nans_with_its_layers():
    state = small_net().state_dict()
    assert layer_weight_table_or_nan(state)["mean_abs"].notna().all()
    state["4.weight"][0, 0] = float("nan")
    with pytest.raises(ValueError):
        layer_weight_table(state)
    table = layer_weight_table_or_nan(state)
    assert list(table["layer"]) == ["0", "4", "6"]
    assert table[["mean_abs", "max_abs", "binarisation_index"]].isna().all().all()


def test_mean_abs_bn_gamma_and_same_state():
    net = small_net()
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([1.0, -2.0, 3.0, -4.0]))
        net[5].weight.fill_(-0.5)
    state = net.state_dict()
    assert mean_abs_bn_gamma(state) == pytest.approx((1 + 2 + 3 + 4 + 10 * 0.5) / 14)
    assert math.isnan(mean_abs_bn_gamma(nn.Linear(2, 2).state_dict()))
    other = {k: v.clone() for k, v in state.items()}
    assert same_state(state, other)
    other["1.running_mean"][0] += 1e-6  # a buffer counts too
    assert not same_state(state, other)
