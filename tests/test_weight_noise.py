"""Weight noise (noise/weights.py, the weight_noise section, walk.target: weights): the moments
of a layer's effective weights, the stored weights never changed, read noise redrawn every
forward, programming noise fixed within a pass (or an instance) and redrawn across passes,
enable flags by mode, gradients reaching the stored weights, the walk over weight layers, the
checks of the section, cohorts falling back to member-serial, the analysis' target column."""
import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from analysis.results import RunRecord, records_to_frame
from data_fixtures import IDX_NAMES, write_idx
from models import build_model
from noise.weights import (WeightNoise, attach_weight_noise, effective_weight, has_weight_noise,
                           new_programming_draw, parse_weight_noise, remove_weight_noise,
                           weight_layer_names, weight_layers)
from util.config import (ConfigError, config_hash, eval_noise_hash, merged_with_defaults,
                         training_hash, validate_config)
from util.engine.cohort import run_cohort
from util.engine.experiment import prepare, run_experiment
from util.engine.loops import evaluate
from util.engine.stacked import NotStackable, StackedNetwork
from util.engine.walk import run_walk

ROOT = Path(__file__).resolve().parent.parent
MLP = {"model_class": "MLP", "MLP": {"conf_name": "RL_TFC-noBN"}}
LENET = {"model_class": "LeNet", "LeNet": {"conf_name": "LeNet5"}}


def lenet():
    torch.manual_seed(0)
    return build_model(LENET, None, (1, 28, 28), 10)


def noisy(noise_type="GaussAdd", **kw):
    return parse_weight_noise({"noise_type": noise_type, **kw})


def only_at(model, index, config, seed=0):
    configs = [None] * len(weight_layers(model))
    configs[index] = config
    return attach_weight_noise(model, configs, seed=seed)


def effective(layer, x_shape):
    """The weight the layer computes with, read back from its output on one-hot inputs."""
    if isinstance(layer, nn.Linear):
        out = layer(torch.eye(layer.in_features)) - (layer.bias if layer.bias is not None else 0)
        return out.T.detach()
    raise TypeError


# ---- the formulas and their moments ---------------------------------------------------------

def test_relative_additive_noise_has_std_sigma_times_max_abs_w():
    w = torch.randn(400, 500) * 0.3
    z = torch.randn_like(w)
    cfg = noisy(GaussStd=0.05, sigma_relative_to_max_w=True)
    d = effective_weight(w, cfg, z) - w
    assert torch.allclose(d, z * 0.05 * w.abs().max(), atol=1e-6)
    assert d.std().item() == pytest.approx(0.05 * w.abs().max().item(), rel=0.01)
    assert abs(d.mean().item()) < 0.01 * d.std().item() * 5


def test_absolute_additive_and_multiplicative_noise_moments_on_a_conv_layer():
    net = lenet()
    conv = net.conv2
    w = conv.weight.detach().clone()
    x = torch.randn(1, 6, 5, 5)  # one output pixel: the conv is a dot product with its weight
    only_at(net, 1, noisy(GaussStd=0.2, weight_noise_kind="programming_pass"))
    net.eval()
    new_programming_draw(net)
    conv(x)
    d = net.conv2.weight_noise.draw * 0.2  # the held draw: W_eff - W
    w_eff = w + d
    assert torch.allclose(conv(x), torch.nn.functional.conv2d(x, w_eff, conv.bias), atol=1e-5)
    assert d.std().item() == pytest.approx(0.2, rel=0.05)
    only_at(net, 1, noisy("GaussMul", GaussStd=0.3, weight_noise_kind="programming_pass"))
    new_programming_draw(net)
    conv(x)
    factor = 1 + 0.3 * net.conv2.weight_noise.draw
    assert torch.allclose(conv(x), torch.nn.functional.conv2d(x, w * factor, conv.bias),
                          atol=1e-5)
    ratio = (w * factor) / w
    assert ratio.mean().item() == pytest.approx(1.0, abs=0.03)
    assert ratio.std().item() == pytest.approx(0.3, rel=0.07)


def test_a_linear_layers_effective_weights_have_the_configured_moments():
    torch.manual_seed(1)
    layer = nn.Linear(300, 200)
    model = nn.Sequential(layer)
    attach_weight_noise(model, [noisy(GaussStd=0.1, GaussMean=0.02,
                                      sigma_relative_to_max_w=True)], seed=0)
    model.eval()
    d = effective(layer, None) - layer.weight.detach()
    scale = layer.weight.detach().abs().max().item()
    assert d.mean().item() == pytest.approx(0.02 * scale, rel=0.05)
    assert d.std().item() == pytest.approx(0.1 * scale, rel=0.02)


# ---- stored weights, draws, flags, gradients ------------------------------------------------

def test_stored_weights_are_bit_identical_after_noisy_evaluation_and_training_forward():
    net = lenet()
    before = copy.deepcopy(net.state_dict())
    params = [id(p) for p in net.parameters()]
    attach_weight_noise(net, [noisy(GaussStd=0.5)] * 5, seed=0)
    assert [id(p) for p in net.parameters()] == params
    assert list(net.state_dict()) == list(before)
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8)
    evaluate(net, [(x, y)], nn.CrossEntropyLoss())
    net.train()
    loss = nn.functional.cross_entropy(net(x), y)
    loss.backward()
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    remove_weight_noise(net)
    assert not has_weight_noise(net)


def test_read_noise_differs_between_forwards_programming_noise_only_between_passes():
    torch.manual_seed(0)
    layer = nn.Linear(20, 10)
    model = nn.Sequential(layer).eval()
    attach_weight_noise(model, [noisy(GaussStd=0.1)], seed=0)
    assert not torch.equal(effective(layer, None), effective(layer, None))
    attach_weight_noise(model, [noisy(GaussStd=0.1, weight_noise_kind="programming_pass")],
                        seed=0)
    new_programming_draw(model)
    first = effective(layer, None)
    assert torch.equal(first, effective(layer, None))  # within a pass
    new_programming_draw(model)
    second = effective(layer, None)
    assert not torch.equal(first, second)  # the next pass
    assert (first - layer.weight.detach()).std().item() == pytest.approx(0.1, rel=0.3)


def test_instance_noise_is_fixed_across_passes_and_set_by_the_seed():
    torch.manual_seed(0)
    layer = nn.Linear(20, 10)
    model = nn.Sequential(layer).eval()
    cfg = noisy(GaussStd=0.1, weight_noise_kind="programming_instance")
    attach_weight_noise(model, [cfg], seed=5)
    first = effective(layer, None)
    new_programming_draw(model)
    torch.manual_seed(123)  # the draw does not depend on torch's generator
    assert torch.equal(first, effective(layer, None))
    attach_weight_noise(model, [cfg], seed=5)
    assert torch.equal(first, effective(layer, None))
    attach_weight_noise(model, [cfg], seed=6)
    assert not torch.equal(first, effective(layer, None))


def test_enable_flags_decide_by_mode_and_train_mode_draws_anew_for_every_kind():
    torch.manual_seed(0)
    layer = nn.Linear(20, 10)
    model = nn.Sequential(layer)
    w = layer.weight.detach()
    attach_weight_noise(model, [noisy(GaussStd=0.1, enable_in_training=False)], seed=0)
    model.train()
    assert torch.allclose(effective(layer, None), w, atol=1e-6)
    model.eval()
    assert not torch.allclose(effective(layer, None), w, atol=1e-3)
    attach_weight_noise(model, [noisy(GaussStd=0.1, enable_in_eval=False,
                                      weight_noise_kind="programming_instance")], seed=0)
    assert torch.allclose(effective(layer, None), w, atol=1e-6)
    model.train()
    a, b = effective(layer, None), effective(layer, None)
    assert not torch.allclose(a, w, atol=1e-3) and not torch.equal(a, b)


def test_the_gradient_reaches_the_stored_weight_through_the_noise():
    torch.manual_seed(0)
    layer = nn.Linear(5, 3)
    model = nn.Sequential(layer).train()
    attach_weight_noise(model, [noisy("GaussMul", GaussStd=0.5)], seed=0)
    x = torch.randn(4, 5)
    torch.manual_seed(7)
    model(x).sum().backward()
    torch.manual_seed(7)  # the same draw, by hand: d/dW sum(x (W·f)^T) = f · colsum
    factor = 1 + 0.5 * torch.randn(3, 5)
    expected = factor * x.sum(0).expand(3, 5)
    assert torch.allclose(layer.weight.grad, expected, atol=1e-5)
    layer.weight.grad = None
    attach_weight_noise(model, [noisy(GaussStd=0.5)], seed=0)
    model(x).sum().backward()  # additive: straight through
    assert torch.allclose(layer.weight.grad, x.sum(0).expand(3, 5), atol=1e-5)


def test_weight_layers_are_the_conv_and_linear_layers_named_like_sites():
    net = lenet()
    assert weight_layer_names(net) == ["0:conv1", "1:conv2", "2:fc1", "3:fc2", "4:logits"]
    assert validate_config(merged_with_defaults({"model": LENET})).model.weight_layer_names == \
        tuple(weight_layer_names(net))


# ---- the config section ---------------------------------------------------------------------

@pytest.mark.parametrize("section, message", [
    ({"bogus": 1}, "weight_noise: unknown key 'bogus'"),
    ({"layer_wise": {"layer_index": 5, "noise_type": "GaussAdd", "GaussStd": 0.1}},
     "weight_noise.layer_wise.layer_index: layer index 5 is out of range"),
    ({"default": {"noise_type": "GaussCombined", "StdAmplitude": 0.1}},
     "weight_noise.default: .*'GaussCombined' is not supported on weights"),
    ({"default": {"noise_type": "GaussAdd", "weight_noise_kind": "drift"}},
     "weight_noise.default: .*'weight_noise_kind' must be one of"),
    ({"default": {"noise_type": "GaussMul", "sigma_relative_to_max_w": True}},
     "'sigma_relative_to_max_w' must be false for GaussMul"),
    ({"layer_mapped": {"noise_type": "GaussAdd", "std_map": {"1": -0.1}}},
     r"weight_noise.layer_mapped.std_map\['1'\] must be a σ >= 0"),
    ({"default": {"noise_type": "GaussAdd", "GausStd": 0.1}}, "unknown key 'GausStd'"),
])
def test_bad_weight_noise_keys_are_refused_naming_the_key(section, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(merged_with_defaults({"model": LENET, "weight_noise": section}))


def test_bad_keys_are_refused_by_the_cli_before_anything_is_written(tmp_path):
    store = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "train.py", "-F", str(store), "with",
                           "weight_noise.layer_wise={'layer_index': 9, 'noise_type': "
                           "'GaussAdd', 'GaussStd': 0.1}", f"artifact_root={tmp_path / 'art'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "weight_noise.layer_wise.layer_index: layer index 9 is out of range" in proc.stderr
    assert not store.exists() and not (tmp_path / "art").exists()


def test_hashes_without_weight_noise_are_unchanged_and_training_noise_enters_the_training_hash():
    plain = merged_with_defaults({})
    without = {k: v for k, v in plain.items() if k != "weight_noise"}
    vc, vc_without = validate_config(plain), validate_config(without)
    assert config_hash(plain) == config_hash(without)
    assert training_hash(vc) == training_hash(vc_without) == "c27621a41286364a3ca2"
    assert eval_noise_hash(vc) == eval_noise_hash(vc_without)
    wn = {"layer_wise": {"layer_index": 2, "noise_type": "GaussAdd", "GaussStd": 0.1}}
    eval_only = merged_with_defaults({"weight_noise": {"layer_wise": {
        **wn["layer_wise"], "enable_in_training": False}}})
    in_training = merged_with_defaults({"weight_noise": wn})
    vc_eval, vc_train = validate_config(eval_only), validate_config(in_training)
    assert training_hash(vc_eval) == training_hash(vc)  # shares the clean model
    assert eval_noise_hash(vc_eval) != eval_noise_hash(vc)
    assert training_hash(vc_train) != training_hash(vc)
    assert config_hash(eval_only) != config_hash(plain)


# ---- the engine: runs, walks, cohorts, analysis ---------------------------------------------

@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    """A learnable MNIST-format set: class c is a bright 7x7 block at its own place."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for split, n in (("train", 400), ("test", 200)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            r, col = divmod(int(c), 4)
            images[i, 7 * r:7 * r + 7, 7 * col:7 * col + 7] = 255
        write_idx(root / "MNIST" / "raw" / IDX_NAMES[split][0], images)
        write_idx(root / "MNIST" / "raw" / IDX_NAMES[split][1], labels.astype(np.uint8))
    return root


def base(root, art, **extra):
    return merged_with_defaults({
        "data": {"dataset": "MNIST", "root": str(root), "download": False, "batch_size": 50},
        "general": {"num_epochs": 2}, "optimizer": {"lr": 0.01}, "artifact_root": str(art),
        "device": "cpu", "model": MLP, **extra})


def test_a_run_under_eval_weight_noise_reuses_the_clean_model_and_loses_accuracy(mnist_root,
                                                                                tmp_path):
    clean = run_experiment(base(mnist_root, tmp_path), progress=False)
    assert clean["final"]["validation_accuracy"] > 90
    p = prepare(base(mnist_root, tmp_path))
    noisy_cfg = base(mnist_root, tmp_path, weight_noise={"default": {
        "noise_type": "GaussAdd", "GaussStd": 2.0, "sigma_relative_to_max_w": True,
        "enable_in_training": False, "weight_noise_kind": "programming_pass"}})
    result = run_experiment(noisy_cfg, progress=False)
    assert result["trained"] is False and result["training_hash"] == clean["training_hash"]
    assert result["final"]["validation_accuracy"] < 50
    # the reused model's stored weights are the clean ones
    state = torch.load(result["checkpoint_used"], weights_only=False)["model_state"]
    again = prepare(noisy_cfg)
    again.model.load_state_dict(state)
    before = copy.deepcopy(again.model.state_dict())
    evaluate(again.model, again.dataset.val_loader(again.device), again.criterion)
    assert all(torch.equal(v, before[k]) for k, v in again.model.state_dict().items())
    assert has_weight_noise(again.model) and not has_weight_noise(p.model)


def test_a_walk_over_weight_layers_gives_sigma_mid_per_layer(mnist_root, tmp_path):
    config = base(mnist_root, tmp_path, walk={
        "target": "weights", "sigmas": [0.01, 0.3, 1.0, 3.0, 10.0, 100.0],
        "params": {"sigma_relative_to_max_w": True, "weight_noise_kind": "programming_pass"}})
    result = run_walk(config, progress=False)
    assert result["clean_accuracy"] > 90 and result["walk"]["target"] == "weights"
    assert list(result["sigma_mid"]) == ["0:fc1", "1:fc2", "2:fc3", "3:logits"]
    assert all(e["sigma_mid"] is not None for e in result["sigma_mid"].values())
    for layer in range(4):
        accs = [r["accuracy"] for r in result["evaluations"] if r["site"] == layer]
        assert accs[0] > 85 and accs[-1] < 40, (layer, accs)
    assert result["evaluations"][0]["noise"]["sigma_relative_to_max_w"] is True
    frame = records_to_frame([RunRecord("w", "COMPLETED", config, result)])
    assert set(frame["target"]) == {"weights"}
    assert list(frame["site_name"].unique()) == ["0:fc1", "1:fc2", "2:fc3", "3:logits"]
    # the same σ on one layer, evaluated again alone, gives the same accuracy
    again = run_walk({**config, "walk": {**config["walk"], "sites": [2], "sigmas": [1.0]}},
                     progress=False)
    first = [r for r in result["evaluations"] if r["site"] == 2 and r["sigma"] == 1.0]
    assert again["evaluations"][0]["accuracy"] == first[0]["accuracy"]


def test_walk_target_weights_checks_its_layer_range_and_refuses_noisy_training(mnist_root,
                                                                               tmp_path):
    with pytest.raises(ConfigError, match="walk.sites: layer 4 is out of range; with "
                                          "walk.target 'weights' the sites are the model's 4"):
        validate_config(base(mnist_root, tmp_path, walk={"target": "weights", "sites": [4]}),
                        walk=True)
    validate_config(base(mnist_root, tmp_path, walk={"target": "activations", "sites": [4]}),
                    walk=True)
    with pytest.raises(ConfigError, match="walk.target 'weights' cannot be used with "
                                          "walk.train"):
        validate_config(base(mnist_root, tmp_path, walk={"target": "weights", "train": True,
                                                          "sigmas": [0.1]}), walk=True)
    with pytest.raises(ConfigError, match="not supported on weights"):
        validate_config(base(mnist_root, tmp_path, walk={"target": "weights",
                                                          "noise_type": "GaussCombined"}),
                        walk=True)


def test_weight_noise_members_are_not_stackable_and_train_member_serial(mnist_root, tmp_path):
    training_noise = {"weight_noise": {"default": {"noise_type": "GaussAdd", "GaussStd": 0.05,
                                                   "sigma_relative_to_max_w": True}}}
    config = base(mnist_root, tmp_path, general={"num_epochs": 1},
                  cohort={"strategy": "auto"})
    members = [{}, training_noise]
    with pytest.raises(NotStackable, match="weight noise"):
        StackedNetwork([prepare(merged_with_defaults({**config, **m})).model for m in members])
    result = run_cohort(config, members, progress=False)
    assert result["cohort"]["strategy"] == "member-serial"
    assert "weight noise" in result["cohort"]["strategy_reason"]
    single = run_experiment(merged_with_defaults({**config, **training_noise,
                                                  "artifact_root": str(tmp_path / "alone")}),
                            progress=False)
    assert single["training_hash"] == result["members"][1]["training_hash"]
    assert single["training"] == result["members"][1]["training"]
    with pytest.raises(ConfigError, match="cohort.strategy 'vectorised': weight noise"):
        run_cohort({**config, "cohort": {"strategy": "vectorised"},
                    "artifact_root": str(tmp_path / "vectorised")}, members, progress=False)


def test_analysis_target_column_of_plain_runs(mnist_root, tmp_path):
    plain = base(mnist_root, tmp_path)
    weights = base(mnist_root, tmp_path, weight_noise={"layer_wise": {
        "layer_index": 1, "noise_type": "GaussMul", "GaussStd": 0.2}})
    result = {"final": {"validation_accuracy": 50.0}, "num_classes": 10}
    frame = records_to_frame([RunRecord("a", "COMPLETED", plain, result),
                              RunRecord("b", "COMPLETED", weights, result)])
    assert list(frame["target"]) == ["activations", "weights"]
    row = frame.iloc[1]
    assert (row["placement"], row["site"], row["site_name"], row["noise_type"], row["sigma"]) \
        == ("layer_wise", 1, "1:fc2", "GaussMul", 0.2)
    assert row["enable_in_training"]
    # the weight-noise run's clean reference is the noise-free run
    assert frame.iloc[1]["clean_accuracy"] == 50.0
