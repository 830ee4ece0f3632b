"""Noise configs, the operator's formulas, enable flags, repetition and placement."""
import math

import pytest
import torch

from noise import (GaussAdd, GaussCombined, GaussCombined_direct, GaussMul, NoiseOperator,
                   NoNoise, apply_noise, parse_noise_config, resolve_repetitions,
                   resolve_site_configs)

N = 1_000_000  # elements per statistical check: relative s.e. of a variance ~0.3 %


def moments(config, x_value=2.0, repetition=1, shape=(N,)):
    x = torch.full(shape, x_value, dtype=torch.float64)
    y = apply_noise(x, parse_noise_config(config), repetition)
    return y.mean().item(), y.var().item()


@pytest.mark.parametrize("config, mean, var", [
    ({"noise_type": "GaussAdd", "GaussStd": 0.5}, 2.0, 0.25),
    ({"noise_type": "GaussAdd", "GaussStd": 0.5, "GaussMean": 0.2}, 2.2, 0.25),
    ({"noise_type": "GaussMul", "GaussStd": 0.5}, 2.0, 4 * 0.25),
    ({"noise_type": "GaussMul", "GaussStd": 0.5, "GaussMean": 1.5}, 3.0, 4 * 0.25),
    # mul-then-add: x·(1 + 0.7 z1) + 0.5 + 0.3 z2  ->  mean 2.5, var 4·0.49 + 0.09
    ({"noise_type": "GaussCombined", "StdAmplitude": 1.0, "StdRatio": 0.3,
      "GaussMeanAdd": 0.5}, 2.5, 4 * 0.49 + 0.09),
    # add-then-mul: (x + 0.5 + 0.3 z2)·(1 + 0.7 z1)  ->  var E[(2.5+a)²]·E[m²] − 2.5²
    ({"noise_type": "GaussCombined", "StdAmplitude": 1.0, "StdRatio": 0.3,
      "GaussMeanAdd": 0.5, "FirstMulThenAdd": False}, 2.5, (6.25 + 0.09) * 1.49 - 6.25),
    ({"noise_type": "GaussCombined_direct", "GaussStdMul": 0.4, "GaussStdAdd": 0.3},
     2.0, 4 * 0.16 + 0.09),
    ({"noise_type": "GaussCombined_direct", "GaussStdMul": 0.4, "GaussStdAdd": 0.3,
      "FirstMulThenAdd": False}, 2.0, (4 + 0.09) * 1.16 - 4),
    ({"noise_type": "NoNoise"}, 2.0, 0.0),
])
def test_noise_moments_on_constant_input(config, mean, var):
    m, v = moments(config)
    assert m == pytest.approx(mean, abs=5e-3 * max(1.0, math.sqrt(var)))
    assert v == pytest.approx(var, rel=2e-2, abs=1e-12)


def test_combined_orders_differ_in_variance():
    cfg = {"noise_type": "GaussCombined", "StdAmplitude": 1.0, "StdRatio": 0.3, "GaussMeanAdd": 0.5}
    _, v_mul_first = moments(cfg)
    _, v_add_first = moments({**cfg, "FirstMulThenAdd": False})
    assert v_add_first - v_mul_first == pytest.approx(3.1966 - 2.05, rel=0.1)


def test_combined_ratio_splits_amplitude():
    cfg = GaussCombined(StdAmplitude=2.0, StdRatio=0.25)
    assert cfg.std_pair() == (0.5, 1.5)
    assert GaussCombined(StdAmplitude=2.0, StdRatio=0.0).std_pair() == (0.0, 2.0)


def test_normalize_to_input_size_divides_sigma_by_sample_size():
    # 20 elements per sample: σ 20 becomes 1
    _, v = moments({"noise_type": "GaussAdd", "GaussStd": 20.0, "normalize_to_input_size": True},
                   shape=(50_000, 4, 5))
    assert v == pytest.approx(1.0, rel=2e-2)


@pytest.mark.parametrize("config, var1", [
    ({"noise_type": "GaussAdd", "GaussStd": 1.0}, 1.0),
    ({"noise_type": "GaussMul", "GaussStd": 0.5}, 1.0),
    ({"noise_type": "GaussCombined", "StdAmplitude": 1.0, "StdRatio": 0.3, "GaussMeanAdd": 0.5},
     2.05),
    ({"noise_type": "GaussCombined", "StdAmplitude": 1.0, "StdRatio": 0.3, "GaussMeanAdd": 0.5,
      "FirstMulThenAdd": False}, 3.1966),
])
@pytest.mark.parametrize("repetition", [2, 5])
def test_repetition_divides_variance(config, var1, repetition):
    m, v = moments(config, repetition=repetition)
    assert v == pytest.approx(var1 / repetition, rel=2.5e-2)


def test_add_then_mul_repetition_averages_real_draws():
    # the product form is not Gaussian: averaged draws keep E[y] and shrink the variance
    cfg = {"noise_type": "GaussCombined_direct", "GaussStdMul": 1.0, "GaussStdAdd": 1.0,
           "FirstMulThenAdd": False}
    m, v = moments(cfg, x_value=0.0, repetition=3)
    assert m == pytest.approx(0.0, abs=5e-3)
    assert v == pytest.approx((0 + 1) * 2 / 3, rel=2.5e-2)  # E[a²]E[m²]/R = 1·2/3


@pytest.mark.parametrize("training, enable_train, enable_eval, noisy", [
    (True, True, True, True), (True, False, True, False),
    (False, True, True, True), (False, True, False, False),
])
def test_enable_flags_follow_module_mode(training, enable_train, enable_eval, noisy):
    op = NoiseOperator({"noise_type": "GaussAdd", "GaussStd": 1.0,
                        "enable_in_training": enable_train, "enable_in_eval": enable_eval})
    op.train(training)
    x = torch.zeros(1000)
    y = op(x)
    assert (not torch.equal(x, y)) == noisy
    if not noisy:
        assert y is x


def test_flags_accept_yaml_zero_one():
    cfg = parse_noise_config({"noise_type": "GaussAdd", "GaussStd": 1, "enable_in_training": 0})
    assert cfg.enable_in_training is False and cfg.enable_in_eval is True
    assert isinstance(cfg.GaussStd, float)


def test_noise_follows_input_dtype_and_device():
    op = NoiseOperator({"noise_type": "GaussMul", "GaussStd": 0.1})
    x = torch.ones(10, dtype=torch.float16)
    assert op(x).dtype == torch.float16


def test_operator_config_can_be_swapped_without_rebuilding():
    op = NoiseOperator()
    x = torch.zeros(10_000)
    assert torch.equal(op(x), x)
    op.config = {"noise_type": "GaussAdd", "GaussStd": 3.0}
    assert op(x).std().item() == pytest.approx(3.0, rel=0.05)


@pytest.mark.parametrize("d, key", [
    ({"noise_type": "GaussAddd", "GaussStd": 1.0}, "GaussAddd"),
    ({"noise_type": "GaussAdd", "GausStd": 1.0}, "GausStd"),
    ({"noise_type": "GaussAdd", "GaussStd": -0.1}, "GaussStd"),
    ({"noise_type": "GaussMul", "GaussStd": -1}, "GaussStd"),
    ({"noise_type": "GaussCombined", "StdAmplitude": -1.0}, "StdAmplitude"),
    ({"noise_type": "GaussCombined", "StdAmplitude": 1.0, "StdRatio": 1.5}, "StdRatio"),
    ({"noise_type": "GaussCombined", "StdAmplitude": 1.0, "StdRatio": -0.01}, "StdRatio"),
    ({"noise_type": "GaussCombined_direct", "GaussStdAdd": -2.0}, "GaussStdAdd"),
    ({"noise_type": "GaussAdd", "GaussStd": "0.5"}, "GaussStd"),
    ({"noise_type": "GaussAdd", "GaussStd": float("nan")}, "GaussStd"),
    ({"noise_type": "GaussAdd", "enable_in_eval": "yes"}, "enable_in_eval"),
    ({"GaussStd": 1.0}, "noise_type"),
])
def test_bad_noise_config_names_key(d, key):
    with pytest.raises(ValueError, match=key):
        parse_noise_config(d)


def test_unknown_noise_type_lists_known_ones():
    with pytest.raises(ValueError) as err:
        parse_noise_config({"noise_type": "Gauss"})
    for name in ("GaussAdd", "GaussMul", "GaussCombined", "GaussCombined_direct", "NoNoise"):
        assert name in str(err.value)


@pytest.mark.parametrize("rep", [0, -1, 1.5, "2", True])
def test_bad_repetition_raises(rep):
    with pytest.raises(ValueError, match="repetition_config.global"):
        resolve_repetitions({"global": rep}, 4)


def test_repetition_list_of_wrong_length_names_site_count():
    with pytest.raises(ValueError, match="4 sites, got 3"):
        resolve_repetitions({"layer_wise_mapped": [1, 2, 3]}, 4)
    assert resolve_repetitions({"global": 2, "layer_wise_mapped": {"1": 5}}, 3) == [2, 5, 2]
    assert resolve_repetitions({"layer_wise_mapped": [1, 2, 3]}, 3) == [1, 2, 3]


def test_placement_default_layer_wise_and_layer_mapped():
    settings = {
        "default": {"noise_type": "GaussAdd", "GaussStd": 0.1},
        "layer_mapped": {"noise_type": "GaussAdd", "std_map": {1: 2.0, "3": 6.0},
                         "std_multiplication_factor": 0.5, "re_normalize_mapping": True,
                         "std_key_name": "GaussStd", "noise_op_kwargs": {"enable_in_eval": False}},
        "layer_wise": {"layer_index": 3, "noise_type": "GaussMul", "GaussStd": 0.7},
    }
    configs = resolve_site_configs(settings, 5)
    assert configs[0] == GaussAdd(GaussStd=0.1)
    assert configs[1] == GaussAdd(GaussStd=2.0 * 0.5 / 8.0, enable_in_eval=False)
    assert configs[3] == GaussMul(GaussStd=0.7)  # layer_wise wins over layer_mapped
    assert configs[4] == GaussAdd(GaussStd=0.1)


def test_layer_mapped_without_renormalisation_scales_by_factor():
    settings = {"layer_mapped": {"noise_type": "GaussCombined", "std_key_name": "StdAmplitude",
                                 "std_map": [0.0, 2.0, 6.0], "std_multiplication_factor": 0.5,
                                 "re_normalize_mapping": False,
                                 "noise_op_kwargs": {"StdRatio": 0.2}}}
    configs = resolve_site_configs(settings, 3)
    assert configs[2] == GaussCombined(StdAmplitude=3.0, StdRatio=0.2)
    assert configs[1].StdAmplitude == 1.0


@pytest.mark.parametrize("settings, key", [
    ({"layer_wise": {"layer_index": 12, "noise_type": "GaussAdd", "GaussStd": 1.0}},
     r"0\.\.11"),
    ({"layer_wise": {"layer_index": -1, "noise_type": "GaussAdd", "GaussStd": 1.0}}, "layer_index"),
    ({"layer_wise": {"noise_type": "GaussAdd", "GaussStd": 1.0}}, "layer_index"),
    ({"layer_mapped": {"std_map": {20: 1.0}}}, "std_map"),
    ({"layer_mapped": {"std_map": {1: -1.0}}}, "std_map"),
    ({"layer_mapped": {"std_map": {1: 1.0}, "std_mult_factor": 2}}, "std_mult_factor"),
    ({"defaults": {}}, "defaults"),
    ({"default": {"noise_type": "GaussAdd", "GaussStdd": 1.0}}, "GaussStdd"),
])
def test_bad_placement_names_key(settings, key):
    with pytest.raises(ValueError, match=key):
        resolve_site_configs(settings, 12)


def test_noiseless_configs_are_identity():
    x = torch.randn(100)
    for cfg in (NoNoise(), GaussAdd(), GaussMul(), GaussCombined(), GaussCombined_direct()):
        assert apply_noise(x, cfg) is x
