"""model_class 'torchvision' (issue 18, part 3): any classification network of
torchvision.models built from a config, its sites traced by noise.inject (sites inside the
residual branches of a ResNet), its site range checked against the traced network, trained,
walked and trained in a cohort through the engine, its rows in the analysis."""
import copy

import pytest
import torch
import torchvision

from data_fixtures import write_cifar10
from models import build_model, model_site_kinds, model_site_names
from noise import configure
from util.artifacts import load_torch
from util.config import (ConfigError, deep_update, merged_with_defaults, training_hash,
                         validate_config)
from util.engine.cohort import run_cohort
from util.engine.experiment import prepare, run_experiment
from util.engine.walk import run_walk

RESNET18 = {"model_class": "torchvision", "torchvision": {"name": "resnet18"}}
CIFAR = ((3, 32, 32), 10)
#: ResNet-18 on 3x32x32: the input, the stem (conv, bn, relu, maxpool), 8 basic blocks of
#: conv, bn, relu, conv, bn, relu (the second ReLU after the residual sum), 3 downsample
#: branches (conv, bn) and the logits
RESNET18_SITES = 1 + 4 + 8 * 6 + 3 * 2 + 1
BRANCH_CONV, POST_SUM_RELU = 5, 10   # layer1.0.conv1 (in the residual branch), layer1.0.relu#2


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    """10 training and 8 validation images in CIFAR-10's format, classes learnable."""
    root = tmp_path_factory.mktemp("data")
    write_cifar10(root, per_batch=2, n_test=8, learnable=True)
    return root


def config(root, art, epochs=1, model=RESNET18, **extra):
    upd = {"data": {"dataset": "CIFAR10", "root": str(root), "download": False,
                    "batch_size": 10},
           "general": {"num_epochs": epochs}, "optimizer": {"lr_scheduler": "None"},
           "artifact_root": str(art), "device": "cpu", "model": model}
    upd.update(extra)
    return merged_with_defaults(upd)


def layer_wise(site, sigma, training=True):
    return {"layer_wise": {"layer_index": site, "noise_type": "GaussAdd", "GaussStd": sigma,
                           "enable_in_training": training, "enable_in_eval": True}}


# ---- building and sites ---------------------------------------------------------------------

def test_resnet18_has_named_sites_in_its_residual_branches_and_the_datasets_classes():
    net = build_model(RESNET18, None, *CIFAR)
    names = [s.name for s in net.noise_sites]
    assert len(names) == RESNET18_SITES == len(model_site_names(RESNET18, *CIFAR))
    assert names == model_site_names(RESNET18, *CIFAR)   # the trace equals the real network
    assert names[:5] == ["0:input", "1:conv1", "2:bn1", "3:relu", "4:maxpool"]
    assert names[BRANCH_CONV] == "5:layer1.0.conv1"
    assert names[POST_SUM_RELU] == "10:layer1.0.relu#2"  # the block's ReLU, called twice
    assert "22:layer2.0.downsample.0" in names and names[-1] == "59:fc"
    kinds = model_site_kinds(RESNET18, *CIFAR)
    assert kinds[:5] == ["input", "conv", "bn", "relu", "maxpool"] and kinds[-1] == "logits"
    assert [s.kind for s in net.noise_sites] == kinds
    assert net.fc.out_features == 10 and (net.model_class, net.conf_name) == \
        ("torchvision", "resnet18")


def test_the_network_is_torchvisions_own_same_modules_keys_and_initial_weights():
    torch.manual_seed(3)
    ours = build_model(RESNET18, None, *CIFAR)
    torch.manual_seed(3)
    theirs = torchvision.models.resnet18(num_classes=10)
    assert type(ours) is type(theirs)
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)   # no module, parameter or buffer added
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(ours.eval()(x), theirs.eval()(x))  # NoNoise: the very same outputs


def test_noise_in_the_residual_branch_acts_there_only_and_only_when_enabled_in_eval():
    torch.manual_seed(0)
    net = build_model(RESNET18, None, *CIFAR).eval()
    block = net.layer1[0]
    seen = {}
    block.conv1.register_forward_pre_hook(lambda m, a: seen.__setitem__("conv_in", a[0]))
    block.bn1.register_forward_pre_hook(lambda m, a: seen.__setitem__("bn_in", a[0]))
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        clean = net(x)
        clean_seen = dict(seen)
        configure(net, layer_wise(BRANCH_CONV, 0.5))
        noisy = net(x)
    # before the site: untouched; after it: the conv's output plus N(0, 0.5²)
    assert torch.equal(seen["conv_in"], clean_seen["conv_in"])
    added = seen["bn_in"] - clean_seen["bn_in"]
    assert added.std().item() == pytest.approx(0.5, rel=0.03)
    assert abs(added.mean().item()) < 0.02
    assert not torch.allclose(noisy, clean)
    # the same noise enabled in training only: the evaluation is the clean network's
    configure(net, {"layer_wise": {**layer_wise(BRANCH_CONV, 0.5)["layer_wise"],
                                   "enable_in_training": True, "enable_in_eval": False}})
    with torch.no_grad():
        assert torch.equal(net(x), clean)


def test_one_channel_images_are_repeated_after_the_input_sites_noise():
    torch.manual_seed(0)
    net = build_model(RESNET18, layer_wise(0, 0.3), (1, 28, 28), 10).eval()
    stem = {}
    net.conv1.register_forward_pre_hook(lambda m, a: stem.__setitem__("x", a[0]))
    x = torch.zeros(2, 1, 28, 28)
    with torch.no_grad():
        net(x)
    assert stem["x"].shape == (2, 3, 28, 28)
    # one draw per pixel of the dataset's image, the same in all three channels
    assert torch.equal(stem["x"][:, 0], stem["x"][:, 2]) and stem["x"].std() > 0.2
    assert [s.name for s in net.noise_sites] == model_site_names(RESNET18, (1, 28, 28), 10)


# ---- the config ---------------------------------------------------------------------------

@pytest.mark.parametrize("update, message", [
    ({"noise_settings": layer_wise(RESNET18_SITES, 0.1)},
     f"site index {RESNET18_SITES} is out of range for this model, which has "
     f"{RESNET18_SITES} sites"),
    ({"noise_settings": {"layer_mapped": {"noise_type": "GaussAdd",
                                          "std_map": {RESNET18_SITES: 0.1}}}},
     f"has {RESNET18_SITES} sites"),
    ({"model": {"torchvision": {"repetition_config": {
        "layer_wise_mapped": {RESNET18_SITES: 2}}}}}, f"has {RESNET18_SITES} sites"),
    ({"walk": {"enabled": True, "sites": [RESNET18_SITES]}}, f"{RESNET18_SITES} sites"),
])
def test_the_site_range_is_checked_against_the_traced_network(tmp_path, update, message):
    base = config(tmp_path, tmp_path)
    with pytest.raises(ConfigError, match=message):
        validate_config(deep_update(copy.deepcopy(base), update))
    last = deep_update(copy.deepcopy(base),
                       {"noise_settings": layer_wise(RESNET18_SITES - 1, 0.1)})
    assert len(validate_config(last).site_names) == RESNET18_SITES


@pytest.mark.parametrize("sub, message", [
    ({"name": "resnet1"}, r"unknown model.torchvision.name 'resnet1'; available: \[.*'resnet18'"),
    ({"name": "resnet18", "kwargs": {"weights": "DEFAULT"}},
     "model.torchvision.kwargs.weights is not allowed: networks are randomly initialised"),
    ({"name": "resnet18", "kwargs": {"num_classes": 100}},
     "model.torchvision.kwargs.num_classes is not allowed: it comes from the dataset"),
    ({"name": "resnet18", "kwargs": {"depth": 3}}, "unexpected keyword argument 'depth'"),
    ({"name": "resnet18", "conf_name": "resnet18"},
     r"model.torchvision: unknown key 'conf_name'; allowed: \['name', 'kwargs'"),
    ({"name": "vit_b_16"}, r"vit_b_16 cannot run on the dataset's inputs of shape \[3, 32, 32\]"),
])
def test_a_bad_torchvision_section_is_refused_naming_the_key(tmp_path, sub, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(config(tmp_path, tmp_path,
                               model={"model_class": "torchvision", "torchvision": sub}))


def test_the_training_hash_holds_the_constructor_and_its_kwargs(tmp_path):
    def h(sub):
        return training_hash(validate_config(config(
            tmp_path, tmp_path, model={"model_class": "torchvision", "torchvision": sub})))
    plain = h({"name": "resnet18"})
    assert plain == h({"name": "resnet18", "kwargs": {}}) == h({"name": "resnet18",
                                                                 "kwargs": None})
    assert len({plain, h({"name": "resnet18", "kwargs": {"zero_init_residual": True}}),
                h({"name": "resnet34"})}) == 3


# ---- the engine ---------------------------------------------------------------------------

def test_one_training_step_through_the_engine_trains_torchvisions_network(cifar_root, tmp_path):
    cfg = config(cifar_root, tmp_path, noise_settings=layer_wise(BRANCH_CONV, 0.1))
    before = {k: v.clone() for k, v in prepare(cfg).model.state_dict().items()}
    result = run_experiment(cfg, progress=False)
    assert result["trained"] is True and result["epochs_run"] == 1
    assert result["sites"][BRANCH_CONV] == "5:layer1.0.conv1" and \
        len(result["sites"]) == RESNET18_SITES
    after = load_torch(result["checkpoint_used"], map_location="cpu")["model_state"]
    assert list(after) == list(torchvision.models.resnet18(num_classes=10).state_dict())
    assert not torch.equal(after["layer1.0.conv1.weight"], before["layer1.0.conv1.weight"])
    assert not torch.equal(after["bn1.running_mean"], before["bn1.running_mean"])
    assert after["bn1.num_batches_tracked"].item() == 1
    # a second run reuses the model trained under the same hash
    again = run_experiment(cfg, progress=False)
    assert (again["trained"], again["training_hash"]) == (False, result["training_hash"])


def test_a_cohort_with_strategy_auto_trains_torchvision_members_one_after_another(cifar_root,
                                                                                 tmp_path):
    cfg = config(cifar_root, tmp_path / "cohort", cohort={"strategy": "auto"})
    members = [{}, {"noise_settings": layer_wise(BRANCH_CONV, 0.2)}]
    result = run_cohort(cfg, members, progress=False)
    assert result["cohort"]["strategy"] == "member-serial"
    assert "not stackable" in result["cohort"]["strategy_reason"]
    assert result["cohort"]["members_trained"] == [0, 1]
    finals = []
    for i, (member, r) in enumerate(zip(members, result["members"])):
        alone = run_experiment(merged_with_defaults({**config(
            cifar_root, tmp_path / f"single{i}"), **member}), progress=False)
        a = load_torch(r["checkpoint_used"], map_location="cpu")["model_state"]
        b = load_torch(alone["checkpoint_used"], map_location="cpu")["model_state"]
        assert all(torch.equal(a[k], b[k]) for k in b), f"member {i} is its single run"
        assert r["training_hash"] == alone["training_hash"]
        finals.append(a["fc.weight"])
    assert not torch.equal(*finals)   # the member trained under noise trained another model


def test_a_walk_over_two_sites_of_resnet18_gives_sigma_mid_per_site(tmp_path):
    # 40 training images, 10 steps of 4: enough to learn the grey levels above chance
    write_cifar10(tmp_path / "data", per_batch=8, n_test=20, learnable=True)
    cfg = config(tmp_path / "data", tmp_path, epochs=2,
                 walk={"enabled": True, "sites": [BRANCH_CONV, POST_SUM_RELU], "search": "grid",
                       "sigmas": [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]})
    cfg["data"]["batch_size"] = 4
    result = run_walk(cfg, progress=False)
    assert result["clean_accuracy"] >= 25.0   # learned: chance is 10%
    assert list(result["sigma_mid"]) == ["5:layer1.0.conv1", "10:layer1.0.relu#2"]
    assert len(result["evaluations"]) == 2 * 6
    for name, entry in result["sigma_mid"].items():
        assert entry["kind"] == "crossing", name
        assert 0.01 < entry["sigma_mid"] < 1000.0, name
    by_site = {}
    for ev in result["evaluations"]:
        by_site.setdefault(ev["site_name"], []).append(ev["accuracy"])
    for accs in by_site.values():   # accuracy falls from clean to chance along σ
        assert accs[0] >= accs[-1] and accs[-1] <= 30.0
