"""The walking sweep: one process, prefix reuse, σ_mid per site, adaptive midpoint search."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from learnable_fixtures import write_learnable_mnist
from noise import GaussAdd
from analysis.plots import plot_walk
from util.config import ConfigError, merged_with_defaults, validate_config
from util.engine.seeding import seed_torch
from util.engine.walk import SiteEvaluator, gather, run_walk

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def learnable(tmp_path_factory):
    root = tmp_path_factory.mktemp("learnable")
    write_learnable_mnist(root / "MNIST" / "raw", n_train=2000, n_test=500)
    return root


def walk_config(data_root, art, conf="RL_TFC", **walk):
    return merged_with_defaults({
        "data": {"dataset": "MNIST", "root": str(data_root), "download": False,
                 "batch_size": 64},
        "model": {"model_class": "MLP", "MLP": {"conf_name": conf}},
        "general": {"num_epochs": 2}, "artifact_root": str(art), "device": "cpu",
        "walk": walk})


def test_grid_walk_evaluates_every_site_sigma_repeat_and_finds_midpoints(learnable, tmp_path):
    sigmas = [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]
    res = run_walk(walk_config(learnable, tmp_path, sigmas=sigmas, repeats=2), progress=False)
    n_sites = len(res["sites"])
    assert n_sites == 11
    assert len(res["evaluations"]) == n_sites * len(sigmas) * 2
    assert res["clean_accuracy"] > 90.0  # the toy task is learnable
    assert set(res["sigma_mid"]) == set(res["sites"])
    for name, entry in res["sigma_mid"].items():
        assert entry["n_evals"] == len(sigmas)
        if entry["kind"] == "crossing":
            assert sigmas[0] < entry["sigma_mid"] < sigmas[-1]
    # huge noise destroys the model at every site: each curve crosses the midpoint
    assert all(e["kind"] == "crossing" for e in res["sigma_mid"].values())
    first = res["evaluations"][0]
    assert first["noise"]["noise_type"] == "GaussAdd" and first["noise"]["enable_in_eval"]
    assert Path(res["artifacts"]["evaluations"]).is_file()
    assert "walk_plot_png" not in res["artifacts"]  # the engine draws nothing (analysis does)
    plots = plot_walk(res)
    assert Path(plots["walk_plot_png"]).stat().st_size > 1000
    assert Path(plots["walk_plot_png"]).parent == Path(res["artifacts"]["evaluations"]).parent
    # the walk reused nothing here, so it trained; a second walk reuses that model
    again = run_walk(walk_config(learnable, tmp_path, sigmas=[1.0]), progress=False)
    assert again["trained"] is False and again["checkpoint_used"] == res["checkpoint_used"]


def test_prefix_reuse_gives_the_same_accuracy_as_a_full_forward(learnable, tmp_path):
    from util.engine.experiment import obtain_trained_model, prepare
    p = prepare(walk_config(learnable, tmp_path, conf="RL_TFC"))
    obtain_trained_model(p, progress=False)
    x, y = gather(p.dataset.val_loader("cpu"), "cpu")
    fast = SiteEvaluator(p.model, x, y, p.criterion, chunk_size=128)
    full = SiteEvaluator(p.model, x, y, p.criterion, chunk_size=128)
    full._children = None  # force the generic path: every evaluation a full forward
    for site in (0, 3, 7, 10):
        seed_torch(0, site)
        a = fast.evaluate(site, GaussAdd(GaussStd=0.5))
        seed_torch(0, site)
        b = full.evaluate(site, GaussAdd(GaussStd=0.5))
        assert a == pytest.approx(b, abs=1e-9)
    assert fast.evaluate(None) == full.evaluate(None)


def test_batched_evaluations_equal_one_by_one(learnable, tmp_path):
    """Several σ and repeats in one suffix forward: each keeps its own seeded noise."""
    sigmas = [0.3, 1.0, 3.0, 10.0, 30.0]
    kw = dict(sigmas=sigmas, repeats=2, sites=[1, 4, 8])
    one = run_walk(walk_config(learnable, tmp_path, batch_evals=1, **kw), progress=False)
    many = run_walk(walk_config(learnable, tmp_path, batch_evals=4, **kw), progress=False)
    assert len(one["evaluations"]) == len(many["evaluations"]) == 3 * 5 * 2
    accs = [e["accuracy"] for e in one["evaluations"]]
    assert len(set(accs)) > 10  # the noise really differs between σ and repeats
    for a, b in zip(one["evaluations"], many["evaluations"]):
        assert (a["site"], a["sigma"], a["repeat"]) == (b["site"], b["sigma"], b["repeat"])
        assert a["accuracy"] == b["accuracy"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert one["sigma_mid"] == many["sigma_mid"]


def test_midpoint_search_agrees_with_dense_grid_within_005_decade(learnable, tmp_path):
    dense = [10 ** (e / 4) for e in range(-8, 41)]  # 49 points, 1e-2..1e10
    assert len(dense) == 49
    sites = [0, 2, 6, 10]
    grid = run_walk(walk_config(learnable, tmp_path, sigmas=dense, sites=sites, repeats=3),
                    progress=False)
    search = run_walk(walk_config(learnable, tmp_path, search="midpoint", sites=sites, repeats=3),
                      progress=False)
    for name, g in grid["sigma_mid"].items():
        s = search["sigma_mid"][name]
        assert g["kind"] == s["kind"] == "crossing", (name, g, s)
        assert s["n_evals"] <= 12
        assert abs(math.log10(s["sigma_mid"]) - math.log10(g["sigma_mid"])) <= 0.05, (name, g, s)


@pytest.mark.parametrize("walk, key", [
    ({"sites": [11]}, "walk.sites"), ({"search": "binary"}, "walk.search"),
    ({"sigmas": [-1.0]}, "walk.sigmas"), ({"noise_type": "Gauss"}, "noise_type"),
    ({"repeats": 0}, "walk.repeats"), ({"sigmaz": [1.0]}, "sigmaz"),
    ({"batch_evals": 0}, "walk.batch_evals"), ({"batch_evals": "many"}, "walk.batch_evals"),
])
def test_bad_walk_settings_name_the_key(walk, key, tmp_path):
    with pytest.raises(ConfigError, match=key):
        validate_config(walk_config(tmp_path, tmp_path, **walk), walk=True)


def test_walk_cli_rejects_bad_site_before_writing_anything(tmp_path):
    store = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "train.py", "walk", "-F", str(store), "with",
                           "walk.sites=[16]", f"artifact_root={tmp_path / 'art'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "walk.sites" in proc.stderr
    assert not store.exists()


def test_site_evaluator_walks_an_injected_sequential_with_full_forwards():
    """inject() keeps the operators outside an nn.Sequential; the evaluator must not look for
    them among its children (it raised StopIteration) and must restore the clean model."""
    from torch import nn
    from noise import inject
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x, y = torch.randn(300, 8), torch.randint(0, 4, (300,))
    with torch.no_grad():
        plain = 100.0 * (model(x).argmax(1) == y).float().mean().item()
    inject(model, input_shape=(8,))
    ev = SiteEvaluator(model, x, y, nn.CrossEntropyLoss(), chunk_size=64)
    clean, _ = ev.evaluate(None)
    assert clean == pytest.approx(plain)
    seed_torch(0, "t")
    noisy, _ = ev.evaluate(2, GaussAdd(GaussStd=100.0, enable_in_training=False))
    assert noisy != clean
    assert ev.evaluate(None)[0] == pytest.approx(plain)


def test_a_fresh_evaluator_evaluates_the_clean_model_even_if_noise_was_left_on():
    """evaluate(None) on a new evaluator must not keep noise an earlier user left on the
    model's operators (it reported that noisy accuracy as 'clean')."""
    from torch import nn
    from noise import configure
    from models import build_model
    torch.manual_seed(0)
    model = build_model({"model_class": "MLP", "MLP": {"conf_name": "RL_TFC-noBN"}}, None,
                        (1, 28, 28), 10).eval()
    x, y = torch.randn(200, 1, 28, 28), torch.randint(0, 10, (200,))
    with torch.no_grad():
        plain = 100.0 * (model(x).argmax(1) == y).float().mean().item()
    configure(model, {"default": {"noise_type": "GaussAdd", "GaussStd": 50.0}})
    ev = SiteEvaluator(model, x, y, nn.CrossEntropyLoss())
    assert ev.evaluate(None)[0] == pytest.approx(plain)
