"""Model families: site tables of DESIGN.md, noise locality, repetition in every family."""
import copy
from collections import OrderedDict

import pytest
import torch
import torchvision
from torch import nn

import noise
from models import MODEL_FAMILIES, build_model, model_site_kinds, model_site_names
from noise import speed
from noise.operator import NoiseOperator
from noise.placement import SITE_KINDS

LENET5 = ["0:input", "1:conv1", "2:relu1", "3:pool1", "4:conv2", "5:relu2", "6:pool2", "7:fc1",
          "8:relu3", "9:fc2", "10:relu4", "11:logits"]
LENET5_BN = ["0:input", "1:conv1", "2:bn1", "3:relu1", "4:pool1", "5:conv2", "6:bn2", "7:relu2",
             "8:pool2", "9:fc1", "10:bn3", "11:relu3", "12:fc2", "13:bn4", "14:relu4",
             "15:logits"]
MLP_NOBN = ["0:input", "1:fc1", "2:relu1", "3:fc2", "4:relu2", "5:fc3", "6:relu3", "7:logits"]
MLP_BN = ["0:input", "1:fc1", "2:bn1", "3:relu1", "4:fc2", "5:bn2", "6:relu2", "7:fc3", "8:bn3",
          "9:relu3", "10:logits"]
CNN_S = ["0:input", "1:conv1", "2:relu1", "3:conv2", "4:relu2", "5:fc1", "6:relu3", "7:logits"]


def cfg(model_class, conf_name, repetition_config=None):
    sub = {"conf_name": conf_name}
    if repetition_config is not None:
        sub["repetition_config"] = repetition_config
    return {"model_class": model_class, model_class: sub}


def input_shape(model_class, conf_name):
    if model_class == "CNN_HE":
        return (1, 10, 49)
    if model_class == "VGG" and "_mnist" not in conf_name:
        return (3, 32, 32)
    return (1, 28, 28)


@pytest.mark.parametrize("model_class, conf_name, names", [
    ("LeNet", "LeNet5", LENET5), ("LeNet", "LeNet5-BN", LENET5_BN),
    ("LeNet", "LeNet5-BN-noNoise", LENET5),
    ("MLP", "RL_TFC-noBN", MLP_NOBN), ("MLP", "RL_TFC", MLP_BN), ("MLP", "RL_LFC", MLP_BN),
    ("MLP", "RL_TFC-BN-noNoise", MLP_NOBN), ("MLP", "RL_TFC_8-noBN", MLP_NOBN),
    ("CNN_HE", "CNN-S", CNN_S), ("CNN_HE", "CNN-M-BN", None), ("CNN_HE", "CNN-L-BN", None),
])
def test_site_tables_match_design(model_class, conf_name, names):
    net = build_model(cfg(model_class, conf_name), None, input_shape(model_class, conf_name), 10)
    got = [s.name for s in net.noise_sites]
    if names is not None:
        assert got == names
    assert [s.index for s in net.noise_sites] == list(range(len(got)))
    assert model_site_names(cfg(model_class, conf_name)) == got


def test_site_kinds_follow_the_site_table_without_a_regex():
    assert model_site_kinds(cfg("LeNet", "LeNet5-BN")) == [
        "input", "conv", "bn", "relu", "maxpool", "conv", "bn", "relu", "maxpool",
        "fc", "bn", "relu", "fc", "bn", "relu", "logits"]
    # a silent BN has no site, so no kind either
    assert model_site_kinds(cfg("LeNet", "LeNet5-BN-noNoise")) == [
        "input", "conv", "relu", "maxpool", "conv", "relu", "maxpool", "fc", "relu", "fc",
        "relu", "logits"]
    for model_class, confs in MODEL_FAMILIES.items():
        for conf_name in confs:
            kinds = model_site_kinds(cfg(model_class, conf_name))
            assert len(kinds) == len(model_site_names(cfg(model_class, conf_name))), conf_name
            assert kinds[0] == "input" and kinds[-1] == "logits", conf_name
            assert set(kinds) <= set(SITE_KINDS), conf_name


def _as_plain_sequential(net):
    """The layers of a built network without its noise operators, as a plain nn.Sequential of
    torch's own layer types (the builder's max-pool is a subclass with a fast path)."""
    layers = OrderedDict()
    for name, layer in net.named_children():
        if isinstance(layer, NoiseOperator):
            continue
        if isinstance(layer, nn.MaxPool2d):
            layer = nn.MaxPool2d(layer.kernel_size)
        layers[name] = copy.deepcopy(layer)
    return nn.Sequential(layers)


@pytest.mark.parametrize("model_class, conf_name", [
    ("LeNet", "LeNet5"), ("LeNet", "LeNet5-BN"), ("MLP", "RL_TFC"), ("MLP", "RL_TFC-noBN"),
    ("CNN_HE", "CNN-S-BN")])
def test_a_built_network_and_its_layers_injected_get_the_same_sites(model_class, conf_name):
    shape = input_shape(model_class, conf_name)
    built = build_model(cfg(model_class, conf_name), None, shape, 10).eval()
    injected = noise.inject(_as_plain_sequential(built), input_shape=shape).eval()
    assert [s.name for s in injected.noise_sites] == [s.name for s in built.noise_sites]
    assert [s.kind for s in injected.noise_sites] == [s.kind for s in built.noise_sites] \
        == model_site_kinds(cfg(model_class, conf_name))
    assert len(injected.noise_sites) == len(model_site_names(cfg(model_class, conf_name)))
    x = torch.randn(3, *shape)
    with torch.no_grad():
        clean = built(x)
        assert torch.equal(injected(x), clean)
    # the same noise placed by site index lands at the same layer: the same output
    settings = {"layer_wise": {"layer_index": 3, "noise_type": "GaussMul", "GaussStd": 0.0,
                               "GaussMean": 2.0}}
    noise.configure(built, settings), noise.configure(injected, settings)
    with torch.no_grad():
        assert not torch.allclose(built(x), clean)
        assert torch.allclose(injected(x), built(x))


def test_cnn_he_bn_has_eleven_sites_and_expected_shapes():
    net = build_model(cfg("CNN_HE", "CNN-S-BN"), None, (1, 10, 49), 12)
    assert len(net.noise_sites) == 11
    assert net.conv1.out_channels == 28 and net.conv2.out_channels == 30
    assert net.conv1.kernel_size == (4, 10) and net.conv1.stride == (1, 2)
    assert net.fc1.out_features == 128 and net.logits.out_features == 12
    assert build_model(cfg("CNN_HE", "CNN-M-BN"), None, (1, 10, 49), 12).conv2.out_channels == 48
    assert build_model(cfg("CNN_HE", "CNN-L-BN"), None, (1, 10, 49), 12).conv1.out_channels == 60


def test_lenet5_architecture():
    net = build_model(cfg("LeNet", "LeNet5"), None, (3, 32, 32), 10)
    assert (net.conv1.out_channels, net.conv2.out_channels) == (6, 16)
    assert net.conv1.kernel_size == (5, 5) and net.conv1.padding == (0, 0)
    assert (net.fc1.in_features, net.fc1.out_features, net.fc2.out_features) == (400, 120, 84)


def test_mlp_widths():
    assert build_model(cfg("MLP", "RL_SFC"), None, (1, 28, 28), 10).fc2.out_features == 256
    assert build_model(cfg("MLP", "RL_LFC"), None, (1, 28, 28), 10).fc3.out_features == 1024
    net = build_model(cfg("MLP", "mlp1br"), None, (1, 28, 28), 10)
    assert (net.fc1.out_features, net.fc2.out_features) == (2048, 512)


@pytest.mark.parametrize("conf_name, n_sites", [
    ("VGG11", 31), ("VGG11-noBN", 23), ("VGG11-BN-noNoise", 23), ("VGG16", 1 + 13 * 3 + 5 + 1),
    ("VGG19-noBN", 1 + 16 * 2 + 5 + 1), ("VGG13_mnist", 1 + 10 * 3 + 4 + 1),
])
def test_vgg_site_counts_and_forward(conf_name, n_sites):
    shape = input_shape("VGG", conf_name)
    net = build_model(cfg("VGG", conf_name), None, shape, 10)
    assert len(net.noise_sites) == n_sites
    assert net(torch.randn(2, *shape)).shape == (2, 10)


def test_every_registered_conf_builds_and_runs():
    for model_class, confs in MODEL_FAMILIES.items():
        for conf_name in confs:
            if model_class == "VGG" and not conf_name.startswith("VGG11"):
                continue  # the deep VGGs are covered above; keep this test quick
            shape = input_shape(model_class, conf_name)
            net = build_model(cfg(model_class, conf_name),
                              {"default": {"noise_type": "GaussAdd", "GaussStd": 0.1}}, shape, 10)
            assert net(torch.randn(2, *shape)).shape == (2, 10), conf_name


def _activations(net, x):
    acts = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=name: acts.__setitem__(n, o.clone()))
             for name, m in net.named_children()]
    net(x)
    for h in hooks:
        h.remove()
    return acts


@pytest.mark.parametrize("site", [0, 3, 7, 15])
def test_noise_at_site_k_leaves_earlier_activations_unchanged(site):
    clean = build_model(cfg("LeNet", "LeNet5-BN"), None, (1, 28, 28), 10).eval()
    noisy = copy.deepcopy(clean)
    noise.configure(noisy, {"layer_wise": {"layer_index": site, "noise_type": "GaussAdd",
                                           "GaussStd": 1.0}})
    x = torch.randn(4, 1, 28, 28)
    a, b = _activations(clean, x), _activations(noisy, x)
    names = list(a)
    noise_module = f"{noisy.noise_sites[site].label}_noise"
    k = names.index(noise_module)
    for name in names[:k]:
        assert torch.equal(a[name], b[name]), name
    for name in names[k:]:
        if not name.startswith("relu") and not name.startswith("pool"):
            assert not torch.equal(a[name], b[name]), name


FAMILIES = [("LeNet", "LeNet5-BN"), ("MLP", "RL_TFC"), ("CNN_HE", "CNN-S-BN"),
            ("VGG", "VGG11_mnist")]


@pytest.mark.parametrize("model_class, conf_name", FAMILIES)
@pytest.mark.parametrize("repetition", [1, 4])
def test_repetition_divides_noise_variance_in_every_family(model_class, conf_name, repetition):
    shape = input_shape(model_class, conf_name)
    n_sites = len(model_site_names(cfg(model_class, conf_name)))
    # noise on the logits only, so the output variance is the noise variance
    net = build_model(cfg(model_class, conf_name, {"global": repetition}),
                      {"layer_wise": {"layer_index": n_sites - 1, "noise_type": "GaussAdd",
                                      "GaussStd": 1.0}}, shape, 10).eval()
    assert net.noise_sites[-1].repetition == repetition
    x = torch.randn(1, *shape).expand(400, *shape)
    with torch.no_grad():
        out = net(x)
    assert out.var(dim=0).mean().item() == pytest.approx(1.0 / repetition, rel=0.1)


def test_repetition_map_per_site():
    net = build_model(cfg("LeNet", "LeNet5", {"global": 2, "layer_wise_mapped": {3: 7}}),
                      None, (1, 28, 28), 10)
    assert [s.repetition for s in net.noise_sites] == [2, 2, 2, 7] + [2] * 8


@pytest.mark.parametrize("model, settings, key", [
    ({"model_class": "ResNet", "ResNet": {"conf_name": "x"}}, None, "model_class"),
    (cfg("LeNet", "LeNet7"), None, "LeNet5-BN"),
    ({"model_class": "LeNet", "LeNet": {"conf_name": "LeNet5", "repetition": 2}}, None,
     "repetition"),
    (cfg("LeNet", "LeNet5"), {"layer_wise": {"layer_index": 12, "noise_type": "GaussAdd",
                                            "GaussStd": 1.0}}, r"0\.\.11"),
    (cfg("LeNet", "LeNet5-BN", {"layer_wise_mapped": [1] * 12}), None, "16 sites, got 12"),
])
def test_bad_model_config_fails_with_key(model, settings, key):
    with pytest.raises(ValueError, match=key):
        build_model(model, settings, (1, 28, 28), 10)


def test_state_dict_has_readable_layer_names_and_no_noise_state():
    net = build_model(cfg("LeNet", "LeNet5-BN"), {"default": {"noise_type": "GaussAdd",
                                                              "GaussStd": 0.5}}, (1, 28, 28), 10)
    keys = set(net.state_dict())
    assert {"conv1.weight", "bn1.running_mean", "logits.bias"} <= keys
    assert not any("noise" in k for k in keys)


# --- noise.inject on any torch model --------------------------------------------------------

def _resnet():
    torch.manual_seed(1)
    return torchvision.models.resnet18(num_classes=10)


def test_resnet18_injection_site_list_is_forward_ordered_and_deterministic():
    a = noise.inject(_resnet(), input_shape=(3, 32, 32))
    b = noise.inject(_resnet(), input_shape=(3, 32, 32))
    names = [s.name for s in a.noise_sites]
    assert names == [s.name for s in b.noise_sites]
    # 20 convs + 20 BNs + 17 ReLU calls + 1 max-pool + fc + input
    assert len(names) == 60
    assert names[:8] == ["0:input", "1:conv1", "2:bn1", "3:relu", "4:maxpool",
                         "5:layer1.0.conv1", "6:layer1.0.bn1", "7:layer1.0.relu"]
    # the block's ReLU runs twice: a second site, after bn2 (forward order, not registration)
    assert names[8:11] == ["8:layer1.0.conv2", "9:layer1.0.bn2", "10:layer1.0.relu#2"]
    # the downsample path of layer2.0 runs after its conv2/bn2
    assert names[21:24] == ["21:layer2.0.bn2", "22:layer2.0.downsample.0",
                            "23:layer2.0.downsample.1"]
    assert names[-1] == "59:fc"


def test_injected_sites_have_the_kind_of_their_layer_type_and_the_last_fc_is_the_logits():
    kinds = [s.kind for s in noise.inject(_resnet(), input_shape=(3, 32, 32)).noise_sites]
    assert kinds[:5] == ["input", "conv", "bn", "relu", "maxpool"] and kinds[-1] == "logits"
    assert [kinds.count(k) for k in ("conv", "bn", "relu", "maxpool", "fc")] == [20, 20, 17, 1, 0]
    # a layer type given in layer_types beyond the site rule: its class name
    net = noise.inject(nn.Sequential(nn.Linear(4, 4), nn.Dropout(), nn.ReLU()), input_shape=(4,),
                       layer_types=(nn.Linear, nn.Dropout))
    assert [s.kind for s in net.noise_sites] == ["input", "fc", "dropout"]
    assert [s.name for s in net.noise_sites] == ["0:input", "1:0", "2:1"]


def test_resnet18_injection_with_no_noise_is_bit_identical_and_keeps_parameters():
    ref = _resnet().eval()
    injected = noise.inject(copy.deepcopy(ref), input_shape=(3, 32, 32)).eval()
    assert list(ref.state_dict()) == list(injected.state_dict())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ref(x), injected(x))
        assert torch.equal(ref(x), injected(x))  # call counting restarts per forward
    injected.train()
    ref.train()
    assert torch.equal(ref(x), injected(x))


def test_resnet18_injected_copy_owns_its_operators():
    net = noise.inject(_resnet(), input_shape=(3, 32, 32)).eval()
    twin = copy.deepcopy(net)
    noise.configure(twin, {"default": {"noise_type": "GaussAdd", "GaussStd": 1.0}})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), _resnet().eval()(x))  # the original stays noise-free
        assert not torch.equal(twin(x), net(x))


def test_resnet18_injection_applies_noise_at_chosen_site_and_repetition():
    net = noise.inject(_resnet(), {"layer_wise": {"layer_index": 59, "noise_type": "GaussAdd",
                                                  "GaussStd": 2.0}},
                       input_shape=(3, 32, 32), repetition_config={"global": 4}).eval()
    ref = copy.deepcopy(net)
    noise.configure(ref, None)
    x = torch.randn(1, 3, 32, 32).expand(300, 3, 32, 32)
    with torch.no_grad():
        diff = net(x) - ref(x)
    assert diff.var().item() == pytest.approx(4.0 / 4, rel=0.1)
    with pytest.raises(ValueError, match=r"0\.\.59"):
        noise.configure(net, {"layer_wise": {"layer_index": 60, "noise_type": "GaussAdd",
                                             "GaussStd": 1.0}})


@pytest.mark.skipif(not speed.enabled(), reason="WN_FAST=0: torch's max-pool (plain torch)")
@pytest.mark.parametrize("k,shape", [(2, (3, 6, 24, 24)), (2, (2, 4, 25, 23)), (3, (2, 5, 13, 9)),
                                     (4, (1, 2, 8, 8))])
def test_fast_inference_maxpool_is_bit_identical(k, shape):
    from models.builder import MaxPool2d
    torch.manual_seed(0)
    x = torch.randn(shape)
    x[0, 0, 0, 0] = float("nan")
    x[-1, -1, 1, 1] = float("-inf")
    x[0, 1, :4, :4] = 0.0                     # ties
    pool = MaxPool2d(k)
    with torch.inference_mode():
        assert speed.strided_max_pool_applies(pool, x)
        got = pool(x)
    ref = torch.nn.functional.max_pool2d(x, k)
    assert got.shape == ref.shape and got.is_contiguous()
    assert torch.equal(torch.nan_to_num(got, nan=123.0), torch.nan_to_num(ref, nan=123.0))
    assert torch.isnan(got[0, 0, 0, 0])


def test_maxpool_keeps_torch_kernel_when_recording_gradients():
    from models.builder import MaxPool2d
    x = torch.zeros(1, 1, 4, 4, requires_grad=True)   # all ties
    pool = MaxPool2d(2)
    assert not speed.strided_max_pool_applies(pool, x)
    pool(x).sum().backward()
    ref = torch.zeros(1, 1, 4, 4, requires_grad=True)
    torch.nn.functional.max_pool2d(ref, 2).sum().backward()
    assert torch.equal(x.grad, ref.grad)              # one winner per window, as torch picks
    assert not speed.strided_max_pool_applies(MaxPool2d(2, stride=1), x.detach())
    assert not speed.strided_max_pool_applies(MaxPool2d(1), x.detach())
