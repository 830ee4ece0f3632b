"""Activation statistics per site on models whose activations are known by hand, σ_mid as a
signal-to-noise ratio, and the bimodality coefficient on known distributions."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from analysis.activations import (STAT_COLUMNS, activation_statistics, activation_tables,
                                  sigma_mid_snr, site_layers)
from analysis.distribution import bimodality_coefficient, bimodality_from_moments
from analysis.weights import layer_weight_table, near_zero_share
from models import build_model
from noise import inject
from noise.config import GaussAdd

X = torch.tensor([[1.0, 2.0], [3.0, -4.0]])
#   fc (W = [[1, 0], [0, -1]], no bias): [[1, -2], [3, 4]];  relu: [[1, 0], [3, 4]]


def one_layer_net() -> nn.Module:
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
    return inject(net, None, input_shape=(2,))


def by_site(table, at="site"):
    return table[table["at"] == at].set_index("site")


def test_statistics_of_a_one_layer_network_are_the_hand_computed_ones():
    table = activation_statistics(one_layer_net(), X)
    assert list(table.columns) == STAT_COLUMNS
    t = by_site(table)
    assert list(t["name"]) == ["0:input", "1:0", "2:1"]
    assert list(t["kind"]) == ["input", "fc", "relu"]
    assert t.loc[0, "rms"] == pytest.approx(math.sqrt(30 / 4))       # 1, 2, 3, -4
    assert t.loc[0, "mean"] == pytest.approx(0.5)
    assert t.loc[1, "rms"] == pytest.approx(math.sqrt(30 / 4))       # 1, -2, 3, 4
    assert t.loc[1, "mean"] == pytest.approx(1.5)
    relu = t.loc[2]                                                  # 1, 0, 3, 4
    assert relu["rms"] == pytest.approx(math.sqrt(26 / 4))
    assert relu["mean"] == pytest.approx(2.0)
    assert relu["std"] == pytest.approx(math.sqrt(10 / 4))
    assert (relu["min"], relu["max"], relu["n"]) == (0.0, 4.0, 4)
    assert relu["zero_share"] == 0.25 and t.loc[1, "zero_share"] == 0.0


def test_near_zero_and_saturated_shares_are_relative_to_the_rms_or_given_bounds():
    net = one_layer_net()
    relu = by_site(activation_statistics(net, X, eps=0.5, k=1.5)).loc[2]
    # rms 2.55: near zero |x| < 1.27 → 0 and 1; saturated |x| > 3.82 → 4
    assert relu["near_zero_share"] == 0.5 and relu["saturated_share"] == 0.25
    relu = by_site(activation_statistics(net, X, bounds=(0.0, 4.0))).loc[2]
    assert relu["saturated_share"] == 0.5                          # 0 and 4 sit on the bounds


def test_layer_input_is_what_enters_the_layer_before_the_site():
    table = activation_statistics(one_layer_net(), X, at=("site", "layer_input"))
    inputs = by_site(table, "layer_input")
    assert list(inputs.index) == [1, 2]                 # the input site has no layer
    sites = by_site(table)
    for col in ("rms", "mean", "min", "max", "zero_share"):
        assert inputs.loc[1, col] == sites.loc[0, col]  # the fc takes the input
        assert inputs.loc[2, col] == sites.loc[1, col]  # the relu takes the fc output


def test_histograms_use_the_given_edges_and_count_what_falls_outside():
    net = one_layer_net()
    relu = by_site(activation_statistics(net, X, bins=[0, 1, 2, 3, 4, 5])).loc[2]
    assert list(relu["hist_counts"]) == [1, 1, 0, 1, 1] and relu["hist_outside"] == 0
    relu = by_site(activation_statistics(net, X, bins=[0.5, 3.5])).loc[2]
    assert list(relu["hist_counts"]) == [2] and relu["hist_outside"] == 2
    relu = by_site(activation_statistics(net, X, bins=4)).loc[2]
    np.testing.assert_allclose(relu["hist_edges"], [0, 1, 2, 3, 4])
    assert relu["hist_counts"].sum() == 4


def test_noise_is_off_while_measuring_and_the_model_is_left_as_it_was():
    net = one_layer_net()
    noisy = GaussAdd(GaussStd=100.0)
    net.noise_sites[1].operator.config = noisy
    net.train()
    t = by_site(activation_statistics(net, [X[:1], (X[1:], torch.tensor([0]))]))
    assert t.loc[2, "rms"] == pytest.approx(math.sqrt(26 / 4))   # batches add up, no noise
    assert net.training and net.noise_sites[1].operator.config == noisy


def test_a_built_network_and_a_layer_called_twice_find_their_layers():
    mlp = build_model({"model_class": "MLP", "MLP": {"conf_name": "RL_TFC-noBN"}}, None,
                      (1, 28, 28), 10)
    layers = site_layers(mlp)
    assert layers[0] is None and layers[1][0] is mlp.fc1 and layers[2][0] is mlp.relu1

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.act = nn.Linear(3, 3), nn.Linear(3, 3), nn.Tanh()

        def forward(self, x):
            return self.act(self.b(self.act(self.a(x))))

    torch.manual_seed(0)
    net = inject(Twice(), None, input_shape=(3,), layer_types=(nn.Linear, nn.Tanh))
    assert [s.name for s in net.noise_sites] == ["0:input", "1:a", "2:act", "3:b", "4:act#2"]
    assert site_layers(net)[4] == (net.act, 1)
    table = activation_statistics(net, torch.randn(64, 3), at=("site", "layer_input"))
    inputs, sites = by_site(table, "layer_input"), by_site(table)
    assert inputs.loc[4, "rms"] == sites.loc[3, "rms"]     # the second tanh takes b's output
    assert inputs.loc[2, "rms"] == sites.loc[1, "rms"]


def test_activation_tables_label_each_model():
    a, b = one_layer_net(), one_layer_net()
    with torch.no_grad():
        b[0].weight.mul_(2.0)
    table = activation_tables({"clean": a, "doubled": b}, [X], sites=[2])
    assert list(table["model"]) == ["clean", "doubled"]
    assert table["rms"].iloc[1] == pytest.approx(2 * table["rms"].iloc[0])


def test_bad_requests_are_errors_that_say_why():
    net = one_layer_net()
    with pytest.raises(ValueError, match="noise_sites"):
        activation_statistics(nn.Linear(2, 2), X)
    with pytest.raises(ValueError, match="sites \\[7\\] do not exist"):
        activation_statistics(net, X, sites=[7])
    with pytest.raises(ValueError, match="unknown position"):
        activation_statistics(net, X, at="output")
    with pytest.raises(ValueError, match="at least one input batch"):
        activation_statistics(net, [])


def test_snr_is_sigma_mid_over_the_site_rms():
    acts = activation_statistics(one_layer_net(), X, at=("site", "layer_input"))
    sm = pd.DataFrame({"site": [1, 2], "sigma_mid": [0.5, 2.0], "kind": "crossing",
                       "sigma_mid_low": [0.4, 1.0], "sigma_mid_high": [0.6, 3.0]})
    out = sigma_mid_snr(sm, acts).set_index("site")
    assert out.loc[2, "snr"] == pytest.approx(2.0 / math.sqrt(26 / 4))
    assert out.loc[1, "snr"] == pytest.approx(0.5 / math.sqrt(30 / 4))
    assert out.loc[2, "snr_high"] == pytest.approx(3.0 / math.sqrt(26 / 4))
    twice = pd.concat([acts.assign(model="a"), acts.assign(model="b")])
    with pytest.raises(ValueError, match="several rows"):
        sigma_mid_snr(sm, twice)
    both = sigma_mid_snr(sm.assign(model="b"), twice, on=["model", "site"])
    assert list(both["snr"]) == list(out["snr"])


# --------------------------------------------------------------------------- bimodality


def test_bimodality_of_known_distributions():
    rng = np.random.default_rng(0)
    assert bimodality_coefficient(rng.normal(3, 2, 200_000)) == pytest.approx(1 / 3, abs=0.01)
    assert bimodality_coefficient(rng.uniform(-1, 1, 200_000)) == pytest.approx(5 / 9, abs=0.01)
    n = 1000
    two_point = np.tile([-1.0, 1.0], n // 2)
    # exactly (n−2)(n−3)/((n−1)(n+1)) with the small-sample corrections, → 1
    assert bimodality_coefficient(two_point) == pytest.approx(
        (n - 2) * (n - 3) / ((n - 1) * (n + 1)), rel=1e-12)
    assert bimodality_coefficient(5 + 0.1 * two_point) == pytest.approx(
        bimodality_coefficient(two_point), rel=1e-9)        # shift and scale free
    mixture = np.concatenate([rng.normal(-3, 0.5, 50_000), rng.normal(3, 0.5, 50_000)])
    assert bimodality_coefficient(mixture) > 0.85
    assert math.isnan(bimodality_coefficient(np.ones(10)))
    assert math.isnan(bimodality_coefficient([1.0, 2.0, 3.0]))


def test_bimodality_from_moments_matches_the_values():
    x = np.random.default_rng(1).exponential(size=500)
    d = x - x.mean()
    assert bimodality_from_moments(x.size, (d ** 2).mean(), (d ** 3).mean(), (d ** 4).mean()) \
        == pytest.approx(bimodality_coefficient(x), rel=1e-12)


def test_activation_bimodality_is_that_of_the_values():
    x = torch.tensor([[1.0, -1.0, 1.0, -1.0, 1.0, -1.0]])
    net = inject(nn.Sequential(nn.Identity()), None, input_shape=(6,))
    row = by_site(activation_statistics(net, x)).loc[0]
    assert row["bimodality"] == pytest.approx(bimodality_coefficient(x.numpy()), rel=1e-12)


def test_weight_table_has_bimodality_and_near_zero_share():
    torch.manual_seed(0)
    gauss = {"a.weight": torch.randn(100, 100)}
    binary = {"a.weight": torch.sign(torch.randn(100, 100)) * 0.5}
    g, b = layer_weight_table(gauss).iloc[0], layer_weight_table(binary).iloc[0]
    assert g["bimodality"] == pytest.approx(1 / 3, abs=0.02) and b["bimodality"] > 0.99
    assert b["near_zero_share"] == 0.0 and 0.2 < g["near_zero_share"] < 0.4
    assert near_zero_share([0.0, 0.05, 0.1, 1.0]) == 0.5     # |w| < 0.1: 0 and 0.05


def test_the_python_examples_of_docs_analysis_md_run(capsys):
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parent.parent / "docs" / "analysis.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/analysis.md example {i}", "exec"), {})
    out = capsys.readouterr().out
    assert "noisy/clean = " in out and out.count("higher") == 1 and "snr" in out
