"""Two defects of the noise API: ``inject`` on an ``nn.Sequential``, and ``configure`` dropping
the repetitions it was not given."""
import copy

import pytest
import torch
from torch import nn

import noise
from models import build_model
from noise import GaussAdd, NoNoise

GAUSS = {"noise_type": "GaussAdd", "GaussStd": 1.0, "enable_in_training": True,
         "enable_in_eval": True}


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 3 * 3, 5))


# --- inject on nn.Sequential -------------------------------------------------------------------

@pytest.mark.parametrize("make,shape,names", [
    (_mlp, (8,), ["0:input", "1:0", "2:1", "3:2", "4:3"]),
    (_cnn, (3, 8, 8), ["0:input", "1:0", "2:1", "3:2", "4:3", "5:5"]),
])
def test_injected_sequential_with_no_noise_runs_and_is_bit_identical(make, shape, names):
    ref = make()
    net = noise.inject(make(), input_shape=shape)
    assert [s.name for s in net.noise_sites] == names
    x = torch.randn(32, *shape)
    for mode in ("eval", "train"):
        getattr(net, mode)(), getattr(ref, mode)()
        with torch.no_grad():
            out = net(x)
            assert out.shape == ref(x).shape
            assert torch.equal(out, ref(x))
            assert torch.equal(net(x), ref(x))  # call counting restarts per forward
    # the model's own modules are untouched: nothing for Sequential.forward to call as a layer
    assert [n for n, _ in net.named_modules()] == [n for n, _ in ref.named_modules()]
    assert list(net.state_dict()) == list(ref.state_dict())


def _record(net, x):
    """The input of the first layer and every layer's output, as the next layer sees them."""
    seen = {}
    hooks = [net[0].register_forward_pre_hook(lambda _m, a: seen.__setitem__("in", a[0].clone()))]
    hooks += [m.register_forward_hook(lambda _m, _i, o, j=j: seen.__setitem__(j, o.clone()))
              for j, m in enumerate(net)]
    with torch.no_grad():
        out = net(x)
    for h in hooks:
        h.remove()
    return out, seen


@pytest.mark.parametrize("make,shape,site", [
    (_mlp, (8,), 0), (_mlp, (8,), 3), (_mlp, (8,), 4), (_cnn, (3, 8, 8), 2),
    (_cnn, (3, 8, 8), 4)])
def test_injected_sequential_noise_at_one_site_appears_only_there(make, shape, site):
    """Noise at site k: every layer's output is exactly the clean layer applied to what the
    layer before passed on, except the output of the layer that carries site k (site 0: the
    input), which differs by N(0, 1) noise."""
    ref = make().eval()
    net = noise.inject(make(), {"layer_wise": {"layer_index": site, **GAUSS}},
                       input_shape=shape).eval()
    x = torch.randn(256, *shape)
    out, seen = _record(net, x)
    noisy_layer = int(net.noise_sites[site].label) if site else None
    with torch.no_grad():
        diffs = {"in": seen["in"] - x}
        prev = seen["in"]
        for j, layer in enumerate(ref):
            diffs[j] = seen[j] - layer(prev)
            prev = seen[j]
    assert torch.equal(out, seen[len(ref) - 1])
    noisy_key = "in" if site == 0 else noisy_layer
    for key, d in diffs.items():
        if key == noisy_key:
            assert d.std().item() == pytest.approx(1.0, rel=0.1)
            assert d.abs().mean().item() == pytest.approx((2 / torch.pi) ** 0.5, rel=0.1)
        else:
            assert torch.equal(d, torch.zeros_like(d)), key


def test_injected_sequential_noise_follows_train_and_eval_mode():
    ref = _mlp()
    net = noise.inject(_mlp(), {"default": {**GAUSS, "enable_in_eval": False}},
                       input_shape=(8,))
    x = torch.randn(16, 8)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), ref.eval()(x))
        assert not torch.allclose(net.train()(x), ref.train()(x), atol=1e-2)
        assert torch.equal(net.eval()(x), ref.eval()(x))


def test_injected_sequential_copy_owns_its_operators():
    net = noise.inject(_mlp(), input_shape=(8,)).eval()
    twin = copy.deepcopy(net)
    noise.configure(twin, {"default": GAUSS})
    x = torch.randn(16, 8)
    with torch.no_grad():
        assert torch.equal(net(x), _mlp().eval()(x))
        assert not torch.allclose(twin(x), net(x), atol=1e-2)


# --- configure keeps the repetitions it was not given ------------------------------------------

def _lenet(reps):
    return build_model({"model_class": "LeNet", "LeNet": {
        "conf_name": "LeNet5-BN", "repetition_config": {"layer_wise_mapped": reps}}},
        None, (1, 28, 28), 10)


def _injected(reps):
    return noise.inject(_mlp(), input_shape=(8,),
                        repetition_config={"layer_wise_mapped": reps})


def _noise_std(op) -> float:
    """The std of the noise ``op`` adds to zeros (σ/√R for GaussAdd σ)."""
    op.eval()
    with torch.no_grad():
        return op(torch.zeros(200_000)).std().item()


@pytest.mark.parametrize("make,n_sites", [(_lenet, 16), (_injected, 5)])
def test_configure_keeps_repetitions_it_is_not_given(make, n_sites):
    reps = [2 + i % 4 for i in range(n_sites)]          # 2, 3, 4, 5, 2, ...
    net = make(reps)
    assert [s.repetition for s in net.noise_sites] == reps
    noise.configure(net, configs=[GaussAdd(GaussStd=1.0)] * n_sites)
    assert [s.repetition for s in net.noise_sites] == reps
    for s in net.noise_sites[:4]:   # and they act: σ/√R
        assert _noise_std(s.operator) == pytest.approx(s.repetition ** -0.5, rel=0.02)
    noise.configure(net, {"layer_mapped": {"noise_type": "GaussAdd", "std_map": {1: 0.2}}})
    assert [s.repetition for s in net.noise_sites] == reps
    noise.configure(net, None)
    assert [s.repetition for s in net.noise_sites] == reps
    assert all(s.config == NoNoise() for s in net.noise_sites)


@pytest.mark.parametrize("make,n_sites", [(_lenet, 16), (_injected, 5)])
def test_configure_still_changes_repetitions_it_is_given(make, n_sites):
    net = make([2] * n_sites)
    noise.configure(net, configs=[GaussAdd(GaussStd=1.0)] * n_sites,
                    repetitions=[4] + [3] * (n_sites - 1))
    assert [s.repetition for s in net.noise_sites] == [4] + [3] * (n_sites - 1)
    assert _noise_std(net.noise_sites[0].operator) == pytest.approx(0.5, rel=0.02)
    noise.configure(net, {"default": GAUSS}, {"global": 5})
    assert [s.repetition for s in net.noise_sites] == [5] * n_sites
    # a repetition_config is a whole one: sites it does not list get global (default 1)
    noise.configure(net, None, {"layer_wise_mapped": {1: 7}})
    assert [s.repetition for s in net.noise_sites] == [1, 7] + [1] * (n_sites - 2)
    with pytest.raises(ValueError, match="repetitions: one per site"):
        noise.configure(net, None, repetitions=[2])
    assert [s.repetition for s in net.noise_sites] == [1, 7] + [1] * (n_sites - 2)
