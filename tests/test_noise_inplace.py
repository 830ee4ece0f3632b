"""Noise written in place during training, and a ReLU fused with the noise site after it.

Both are speed measures (benchmarks/bench_noise_overhead.py): they must change neither values
nor gradients, nor touch a tensor that autograd, the data or the walk's prefix cache still
need.
"""
import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from models import build_model
from noise import GaussAdd, NoiseOperator, fast_rng, inject, speed

NOISY = {"default": {"noise_type": "GaussAdd", "GaussStd": 0.3, "GaussMean": 0.05}}


def _model(family, conf, noise=NOISY, shape=(1, 28, 28)):
    torch.manual_seed(0)
    return build_model({"model_class": family, family: {"conf_name": conf}}, noise, shape, 10)


def _step(net, x, y, seed=7):
    """Loss, logits and parameter gradients of one training step from a fixed generator."""
    net.train()
    net.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = net(x)
    loss = F.cross_entropy(out, y)
    loss.backward()
    return out.detach(), {k: p.grad.clone() for k, p in net.named_parameters()}


def _the_plain_way(monkeypatch, net):
    """No in-place noise and no fusion: every noise op gets its own output tensor."""
    monkeypatch.setattr(speed, "overwritable", lambda x: False)
    for m in net.modules():
        if isinstance(m, nn.ReLU):   # a hook turns the fusion off (and sees the relu output)
            m.register_forward_hook(lambda *a: None)


@pytest.mark.parametrize("family,conf,shape", [
    ("LeNet", "LeNet5-BN", (1, 28, 28)), ("LeNet", "LeNet5", (1, 28, 28)),
    ("VGG", "VGG11", (3, 32, 32)), ("MLP", "RL_TFC", (1, 28, 28)),
    ("CNN_HE", "CNN-S-BN", (1, 10, 49))])
def test_same_values_and_gradients_as_the_plain_way(monkeypatch, family, conf, shape):
    x = torch.randn(16, *shape)
    y = torch.randint(0, 10, (16,))
    fast = _model(family, conf, shape=shape)
    out_fast, grads_fast = _step(fast, x, y)
    plain = _model(family, conf, shape=shape)
    _the_plain_way(monkeypatch, plain)
    out_plain, grads_plain = _step(plain, x, y)
    assert torch.equal(out_fast, out_plain)
    assert grads_fast.keys() == grads_plain.keys()
    for k in grads_fast:
        assert torch.equal(grads_fast[k], grads_plain[k]), k
    # ...and the noise really is there: a clean model gives other logits.
    clean = _model(family, conf, noise=None, shape=shape)
    assert not torch.allclose(_step(clean, x, y)[0], out_fast, atol=1e-3)


def test_resnet18_injected_same_gradients_as_the_plain_way(monkeypatch):
    """Skip connections and torchvision's in-place ReLUs: the plain and fast paths agree."""
    x = torch.randn(4, 3, 32, 32)
    y = torch.randint(0, 10, (4,))
    results = []
    for plain in (False, True):
        torch.manual_seed(0)
        net = inject(torchvision.models.resnet18(num_classes=10), NOISY,
                     example_input=x[:1])
        if plain:
            monkeypatch.setattr(speed, "overwritable", lambda x: False)
        results.append(_step(net, x, y))
    (o1, g1), (o2, g2) = results
    assert torch.equal(o1, o2)
    for k in g1:
        assert torch.equal(g1[k], g2[k]), k


@pytest.mark.parametrize("name", sorted(speed.OUTPUT_NOT_SAVED))
def test_allowed_nodes_really_do_not_keep_their_output(name):
    """For every node the in-place path trusts, an in-place change of its output that autograd
    sees (version counter) must not break backward; a node that kept it would raise."""
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    makers = {
        "ConvolutionBackward0": lambda: nn.Conv2d(3, 2, 3)(x),
        "AddmmBackward0": lambda: nn.Linear(192, 5)(x.flatten(1)),
        "MmBackward0": lambda: nn.Linear(192, 5, bias=False)(x.flatten(1)),
        "NativeBatchNormBackward0": lambda: nn.BatchNorm2d(3).train()(x),
        "MaxPool2DWithIndicesBackward0": lambda: nn.MaxPool2d(2)(x),
        "ThresholdBackward0": lambda: F.threshold(x, 0.0, 0.0),
    }
    y = makers[name]()
    assert type(y.grad_fn).__name__ == name
    y.add_(1.0)
    (y * y).sum().backward()   # raises "modified by an inplace operation" if y was kept
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_a_node_that_keeps_its_output_is_not_trusted():
    """relu keeps its output for backward: noise after a plain relu gets a tensor of its own."""
    x = torch.randn(64, 64, requires_grad=True)
    r = torch.relu(x)
    kept = r.detach().clone()
    y = NoiseOperator(GaussAdd(GaussStd=1.0)).train()(r)
    assert y is not r and torch.equal(r, kept)
    y.sum().backward()
    assert torch.equal(x.grad, (x > 0).float())


@pytest.mark.skipif(not speed.enabled(), reason="WN_FAST=0: no in-place noise (plain torch)")
def test_training_noise_goes_into_a_fresh_conv_output():
    conv = nn.Conv2d(1, 4, 3)
    h = conv(torch.randn(8, 1, 20, 20))
    y = NoiseOperator(GaussAdd(GaussStd=1.0)).train()(h)
    assert y is h or not fast_rng.available()


@pytest.mark.parametrize("grad", [True, False])
def test_inputs_and_evaluation_are_never_overwritten(grad):
    """The data batch (a leaf), and anything under no_grad (the walk's cached prefix
    activations, an evaluation): the noise always makes a new tensor."""
    op = NoiseOperator(GaussAdd(GaussStd=1.0, enable_in_eval=True))
    leaf = torch.randn(32, 1, 28, 28)
    with torch.set_grad_enabled(grad):
        conv_out = nn.Conv2d(1, 2, 3)(leaf)
    for t in (leaf, conv_out):
        kept = t.detach().clone()
        for mode in (op.train(), op.eval()):
            with torch.set_grad_enabled(grad):
                if not grad or t is leaf:
                    out = mode(t)
                    assert out is not t and torch.equal(t, kept)
                    assert not torch.equal(out, kept)


def test_relu_hooks_see_the_clean_relu_output():
    """With a hook on a ReLU, the network runs unfused, so the hook sees relu's own output."""
    net = _model("LeNet", "LeNet5-BN")
    seen = []
    net.relu1.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    net.train()(torch.randn(8, 1, 28, 28))
    assert len(seen) == 1 and (seen[0] >= 0).all() and (seen[0] == 0).any()


def test_fused_relu_noise_without_autograd_matches_unfused():
    op = NoiseOperator(GaussAdd(GaussStd=0.5, GaussMean=0.1, enable_in_eval=True)).eval()
    x = torch.randn(64, 6, 12, 12)
    with torch.no_grad():
        torch.manual_seed(3)
        fused = op.relu_then(x)
        torch.manual_seed(3)
        plain = op(torch.relu(x))
    assert torch.equal(fused, plain)
    assert not torch.equal(fused, torch.relu(x))


@pytest.mark.skipif(not fast_rng.available(), reason="the compiled kernel's draw order "
                    "(WN_FAST=0 or WN_FAST_RNG=0: torch.randn_like follows the memory format)")
def test_fused_relu_noise_channels_last_takes_the_same_draw():
    """channels_last (not contiguous): the kernel's draw, value for value (to float rounding)."""
    op = NoiseOperator(GaussAdd(GaussStd=0.5, GaussMean=0.1, enable_in_eval=True)).eval()
    x = torch.randn(64, 6, 12, 12)
    with torch.no_grad():
        torch.manual_seed(3)
        plain = op(torch.relu(x))
    xl = x.to(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.manual_seed(3)
        fused_l = op.relu_then(xl)
    assert torch.allclose(fused_l, plain, atol=1e-6, rtol=0)


def test_seed_draws_work_in_and_out_of_inference_mode():
    """The noise seeds come from a reused scalar; first use inside inference_mode must not
    make it an inference tensor that later training cannot update."""
    code = ("import torch\nfrom noise import GaussAdd, apply_noise\n"
            "x = torch.zeros(50_000)\n"
            "with torch.inference_mode():\n    a = apply_noise(x, GaussAdd(GaussStd=1.0))\n"
            "b = apply_noise(x, GaussAdd(GaussStd=1.0))\n"
            "with torch.no_grad():\n    c = apply_noise(x, GaussAdd(GaussStd=1.0))\n"
            "print(round(a.std().item(), 1), round(b.std().item(), 1), round(c.std().item(), 1))")
    import subprocess
    import sys
    from pathlib import Path
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1.0", "1.0", "1.0"]


def test_a_hook_that_keeps_a_layer_output_keeps_it_clean():
    """Built models and injected ones: a forward hook on a conv keeps its clean output even
    though training noise after a conv is otherwise written in place."""
    x = torch.randn(8, 1, 28, 28)
    net = _model("LeNet", "LeNet5-BN")
    kept = []
    net.conv1.register_forward_hook(lambda m, i, o: kept.append((o, o.detach().clone())))
    net.train()(x)
    (o, copy), = kept
    assert torch.equal(o, copy)

    resnet = inject(torchvision.models.resnet18(num_classes=10), NOISY, input_shape=(3, 32, 32))
    kept.clear()
    resnet.conv1.register_forward_hook(lambda m, i, o: kept.append((o, o.detach().clone())))
    resnet.train()(torch.randn(2, 3, 32, 32))
    (o, copy), = kept
    assert torch.equal(o, copy)
    # without the extra hook, the injected conv output does take its noise in place
    resnet2 = inject(torchvision.models.resnet18(num_classes=10), NOISY, input_shape=(3, 32, 32))
    seen = []
    orig = fast_rng._kernel_add
    try:
        fast_rng._kernel_add = lambda out, x, s, m: (seen.append(out is x), orig(out, x, s, m))[1]
        resnet2.train()(torch.randn(2, 3, 32, 32))
    finally:
        fast_rng._kernel_add = orig
    assert any(seen) or not fast_rng.available()
