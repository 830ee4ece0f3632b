"""The speed layer's one switch (noise.speed, ``WN_FAST``): every fast path against plain torch.

The same noise, model and walk behaviour is run with the fast paths on and off
(``speed.fast_paths``) and compared: bit for bit wherever the generator is the same, in
distribution where it is not (the compiled kernel and ``torch.randn`` draw other values).
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.nn import functional as F

from learnable_fixtures import learnable_images
from models import build_model
from noise import (GaussAdd, GaussMul, NoiseOperator, NoNoise, apply_noise, configure,
                   fast_rng, speed)
from util.engine.seeding import seed_torch
from util.engine.walk import SiteEvaluator

ROOT = Path(__file__).resolve().parent.parent
NOISY = {"default": {"noise_type": "GaussAdd", "GaussStd": 0.3, "GaussMean": 0.05}}
MODELS = [("LeNet", "LeNet5-BN"), ("MLP", "RL_TFC")]


def _model(family, conf, noise=NOISY):
    torch.manual_seed(0)
    return build_model({"model_class": family, family: {"conf_name": conf}}, noise,
                       (1, 28, 28), 10)


def _step(net, x, y, seed=7):
    """Logits and parameter gradients of one forward/backward from a fixed generator."""
    net.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = net(x)
    F.cross_entropy(out, y).backward()
    return out.detach(), {k: p.grad.clone() for k, p in net.named_parameters()}


def _assert_same_step(a, b):
    (out_a, grads_a), (out_b, grads_b) = a, b
    assert torch.equal(out_a, out_b)
    assert grads_a.keys() == grads_b.keys()
    for k in grads_a:
        assert torch.equal(grads_a[k], grads_b[k]), k


def _count_calls(monkeypatch, owner, name):
    """Count the calls of ``owner.name`` (still calling it)."""
    calls = []
    orig = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return orig(*args, **kwargs)
    monkeypatch.setattr(owner, name, counted)
    return calls


PROBE = """
import torch
from models import build_model
from noise import GaussAdd, apply_noise, fast_rng, speed
net = build_model({"model_class": "LeNet", "LeNet": {"conf_name": "LeNet5"}},
                  {"default": {"noise_type": "GaussAdd", "GaussStd": 0.1}}, (1, 28, 28), 10)
net(torch.randn(4, 1, 28, 28)).sum().backward()
torch.manual_seed(3)
y = apply_noise(torch.zeros(100_000), GaussAdd(GaussStd=2.0))
torch.manual_seed(3)
ref = 2.0 * torch.randn(100_000)
print(speed.enabled(), fast_rng.generator_name("cpu"), bool(torch.equal(y, ref)))
"""


@pytest.mark.parametrize("env,expected", [
    ({"WN_FAST": "0"}, ["False", "torch.randn", "True"]),
    ({"WN_FAST": "off"}, ["False", "torch.randn", "True"]),
    ({"WN_FAST": "1", "WN_FAST_RNG": "0"}, ["True", "torch.randn", "True"]),
])
def test_the_environment_switches_the_fast_paths(tmp_path, env, expected):
    """WN_FAST=0: plain torch everywhere, torch.randn's very values, and nothing compiled;
    WN_FAST_RNG=0 is the finer switch: only the generator is off."""
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True,
                         text=True, timeout=300,
                         env={**os.environ, "WN_CACHE_DIR": str(tmp_path), **env})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == expected
    assert not list(tmp_path.iterdir())   # no kernel built


def test_fast_paths_flips_the_switch_for_a_block_and_restores_it():
    before = speed.enabled()
    with speed.fast_paths(False):
        assert not speed.enabled() and fast_rng.generator_name("cpu") == "torch.randn"
        with speed.fast_paths(True):
            assert speed.enabled()
        assert not speed.enabled()
    assert speed.enabled() == before
    with pytest.raises(RuntimeError):
        with speed.fast_paths(not before):
            raise RuntimeError("inside")
    assert speed.enabled() == before


@pytest.mark.parametrize("family,conf", MODELS)
def test_noise_free_model_is_bit_identical_fast_and_plain(monkeypatch, family, conf):
    """Clean models: inference (strided max-pool), eval and training forward/backward."""
    pooled = _count_calls(monkeypatch, speed, "strided_max_pool2d")
    x = torch.randn(32, 1, 28, 28)
    y = torch.randint(0, 10, (32,))
    results = {}
    for on in (True, False):
        with speed.fast_paths(on):
            net = _model(family, conf, noise=None)
            with torch.inference_mode():
                infer = net.eval()(x)
            results[on] = (infer, _step(net.eval(), x, y), _step(net.train(), x, y))
        if on:   # the fast max-pool really ran (LeNet has two pools, MLPs none)
            assert len(pooled) == (2 if family == "LeNet" else 0)
            pooled.clear()
    assert not pooled   # ...and not with the fast paths off
    assert torch.equal(results[True][0], results[False][0])
    _assert_same_step(results[True][1], results[False][1])
    _assert_same_step(results[True][2], results[False][2])


@pytest.mark.parametrize("family,conf", MODELS)
def test_noisy_training_step_with_torch_generator_is_bit_identical(monkeypatch, family, conf):
    """With the same generator (torch.randn), the fast layer (fused ReLU + noise, hook
    checks) gives the plain network's logits and gradients bit for bit."""
    fused = _count_calls(monkeypatch, NoiseOperator, "relu_then")
    x = torch.randn(16, 1, 28, 28)
    y = torch.randint(0, 10, (16,))
    with speed.fast_paths(True), fast_rng.use_torch_generator():
        fast = _step(_model(family, conf).train(), x, y)
    assert len(fused) == (4 if family == "LeNet" else 3)   # every relu fused with its site
    fused.clear()
    with speed.fast_paths(False):
        plain = _step(_model(family, conf).train(), x, y)
    assert not fused
    _assert_same_step(fast, plain)
    with speed.fast_paths(False):   # the noise is really there
        clean = _step(_model(family, conf, noise=None).train(), x, y)
    assert not torch.allclose(clean[0], plain[0], atol=1e-3)


@pytest.mark.parametrize("family,conf", MODELS)
def test_kernel_in_place_and_fused_equal_out_of_place_and_unfused(monkeypatch, family, conf):
    """With the compiled generator (even where WN_FAST=0 is set: the fast paths are forced
    on here), noise in place and fused with the ReLU equals noise in a tensor of its own."""
    x = torch.randn(16, 1, 28, 28)
    y = torch.randint(0, 10, (16,))
    with speed.fast_paths(True):
        if not fast_rng.available():
            pytest.skip("no compiled kernel")
        in_place = _step(_model(family, conf).train(), x, y)
        monkeypatch.setattr(speed, "overwritable", lambda t: False)
        monkeypatch.setattr(NoiseOperator, "relu_then", lambda op, t: op(torch.relu(t)))
        out_of_place = _step(_model(family, conf).train(), x, y)
    _assert_same_step(in_place, out_of_place)


@pytest.mark.parametrize("config", [GaussAdd(GaussStd=0.7, GaussMean=0.2),
                                    GaussMul(GaussStd=0.3, GaussMean=1.0)],
                         ids=["GaussAdd", "GaussMul"])
def test_noise_has_the_same_distribution_fast_and_plain(config):
    x = torch.full((200_000,), 2.0)
    draws = {}
    for on in (True, False):
        with speed.fast_paths(on):
            torch.manual_seed(11)
            draws[on] = apply_noise(x, config).double()
    torch.manual_seed(11)
    z = torch.randn(200_000).double()
    ref = (2.0 + 0.7 * z + 0.2) if isinstance(config, GaussAdd) else 2.0 * (1.0 + 0.3 * z)
    assert torch.allclose(draws[False], ref, atol=1e-6)   # plain: torch.randn's very values
    mean, std = float(ref.mean()), float(ref.std())
    for d in draws.values():
        assert abs(float(d.mean()) - mean) < 0.01 and abs(float(d.std()) - std) < 0.01
    assert stats.ks_2samp(draws[True].numpy(), draws[False].numpy()).pvalue > 1e-3
    with speed.fast_paths(True):
        kernel = fast_rng.available()
    if kernel:   # the kernel draws other values
        assert not torch.allclose(draws[True], draws[False])


@pytest.fixture(scope="module")
def trained_lenet():
    """LeNet5 (two max-pools) trained briefly on the toy task, and 2000 validation images."""
    def tensors(n, seed):
        images, labels = learnable_images(n, seed)
        return (torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1),
                torch.from_numpy(labels.astype(np.int64)))
    x, y = tensors(2000, 0)
    torch.manual_seed(0)
    net = build_model({"model_class": "LeNet", "LeNet": {"conf_name": "LeNet5"}}, None,
                      (1, 28, 28), 10).train()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(2):
        for i in range(0, 2000, 64):
            opt.zero_grad()
            F.cross_entropy(net(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
    return net.eval(), *tensors(2000, 1)


def test_walk_clean_accuracy_identical_noisy_close(trained_lenet):
    net, x, y = trained_lenet
    sigmas = (0.3, 1.0, 3.0, 10.0)
    results = {}
    for on in (True, False):
        with speed.fast_paths(on):
            configure(net, configs=[NoNoise()] * len(net.noise_sites))   # undo the last run's
            ev = SiteEvaluator(net, x, y, nn.CrossEntropyLoss(), chunk_size=500)
            clean = ev.evaluate(None)
            noisy = {}
            for site in (0, 3, 6):   # input, pool1, pool2
                for s in sigmas:
                    accs = []
                    for rep in range(2):
                        seed_torch(0, site, s, rep)
                        accs.append(ev.evaluate(site, GaussAdd(GaussStd=s,
                                                               enable_in_eval=True))[0])
                    noisy[site, s] = sum(accs) / len(accs)
            results[on] = clean, noisy
    (clean_fast, noisy_fast), (clean_plain, noisy_plain) = results[True], results[False]
    assert clean_fast == clean_plain and clean_fast[0] > 90.0
    for key in noisy_fast:
        assert abs(noisy_fast[key] - noisy_plain[key]) < 6.0, (key, noisy_fast, noisy_plain)
    # the sweep covers the curve: at least one evaluation is far from both ends
    assert any(20.0 < a < 80.0 for a in noisy_plain.values()), noisy_plain
