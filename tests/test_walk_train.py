"""The noisy-training walk (``train.py walk with walk.train=true``): one model per site × σ
trained as a cohort, each its own single run to the float, all reused by a second walk; σ from
factors of the clean σ_mid; both curves in one panel per site; bad keys refused before anything
is written; the shipped YAML trains exactly the noisy-training configs of the layer-wise files."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.plots import walk_figure
from data_fixtures import write_idx_dataset
from learnable_fixtures import write_learnable_mnist
from util import validate_configs as vcf
from util.config import (ConfigError, grid_members, merged_with_defaults, training_hash,
                         validate_config)
from util.engine.experiment import run_experiment
from util.engine.noisy_walk import member_base, run_noisy_training_walk
from util.engine.walk import run_walk

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "experiment_configs"
SITES, SIGMAS = [1, 3], [0.1, 1.0]


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_idx_dataset(root / "MNIST" / "raw", n_train=192, n_test=64)
    return root


@pytest.fixture(scope="module")
def learnable(tmp_path_factory):
    root = tmp_path_factory.mktemp("learnable")
    write_learnable_mnist(root / "MNIST" / "raw", n_train=600, n_test=200)
    return root


def updates(root, art, **walk):
    return {"data": {"dataset": "MNIST", "root": str(root), "download": False,
                     "batch_size": 64},
            "model": {"model_class": "MLP", "MLP": {"conf_name": "RL_TFC"}},
            "general": {"num_epochs": 1}, "artifact_root": str(art), "device": "cpu",
            "walk": {"train": True, **walk}}


def walk_config(root, art, cohort=None, **walk):
    return merged_with_defaults({**updates(root, art, **walk), "cohort": cohort or {}})


@pytest.fixture(scope="module")
def walked(mnist_root, tmp_path_factory):
    """A walk of 2 sites x 2 σ with 2 evaluation repeats, then the same walk again; the cohort
    member-serial (every member bit for bit its single run)."""
    art = tmp_path_factory.mktemp("art")
    config = walk_config(mnist_root, art, {"strategy": "member-serial"}, sites=SITES,
                         sigmas=SIGMAS, repeats=2)
    return (run_noisy_training_walk(config, progress=False),
            run_noisy_training_walk(config, progress=False))


def noisy(result):
    return [e for e in result["evaluations"] if e["enable_in_training"]]


def test_every_member_is_its_single_run_to_the_float(walked, mnist_root, tmp_path):
    first, _ = walked
    for site in SITES:
        for sigma in SIGMAS:
            config = merged_with_defaults({
                **{k: v for k, v in updates(mnist_root, tmp_path / "single").items()
                   if k != "walk"},
                "noise_settings": {"layer_wise": {
                    "layer_index": site, "noise_type": "GaussAdd", "GaussStd": sigma,
                    "enable_in_training": True, "enable_in_eval": True}}})
            single = run_experiment(config, progress=False)
            assert single["trained"] is True  # its own training, nothing reused
            (mine,) = [e for e in noisy(first)
                       if (e["site"], e["sigma"], e["repeat"]) == (site, sigma, 0)]
            assert mine["accuracy"] == single["final"]["validation_accuracy"]
            assert mine["loss"] == single["final"]["validation_loss"]
            (line,) = [m for m in first["noisy_training"]["members"]
                       if (m["site"], m["sigma"]) == (site, sigma)]
            assert line["training_hash"] == single["training_hash"]
            assert mine["noise"]["enable_in_training"] and mine["noise"]["GaussStd"] == sigma


def test_the_walk_holds_both_curves_every_repeat_and_a_csv_saying_which(walked):
    first, _ = walked
    evals = first["evaluations"]
    assert len(evals) == first["n_evaluations"] == 2 * len(SITES) * len(SIGMAS) * 2
    for trained in (False, True):
        keys = sorted((e["site"], e["sigma"], e["repeat"]) for e in evals
                      if e["enable_in_training"] is trained)
        assert keys == sorted((s, g, r) for s in SITES for g in SIGMAS for r in (0, 1))
    # repeat 1 redraws the evaluation noise on the same trained model
    by = {(e["site"], e["sigma"], e["repeat"]): e["loss"] for e in noisy(first)}
    assert all(by[(s, g, 0)] != by[(s, g, 1)] for s in SITES for g in SIGMAS)
    with open(first["artifacts"]["evaluations"]) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["site", "site_name", "sigma", "repeat", "accuracy", "loss",
                             "enable_in_training"]
    assert sum(r["enable_in_training"] == "True" for r in rows) == len(rows) // 2
    assert set(first["sigma_mid"]) == set(first["sigma_mid_clean"]) == {"1:fc1", "3:relu1"}
    assert first["walk"]["train"] is True


def test_the_analysis_reads_which_training_each_evaluation_had(walked):
    from analysis.results import RunRecord, records_to_frame
    first, _ = walked
    config = walk_config("/unused", "/unused", sites=SITES, sigmas=SIGMAS, repeats=2)
    df = records_to_frame([RunRecord("1", "COMPLETED", config, first)])
    assert len(df) == len(first["evaluations"])
    assert list(df["enable_in_training"]) == [e["enable_in_training"]
                                              for e in first["evaluations"]]
    assert (df["clean_accuracy"] == first["clean_accuracy"]).all()


def test_a_second_walk_trains_nothing(walked):
    first, again = walked
    assert all(m["trained"] for m in first["noisy_training"]["members"])
    assert len(first["noisy_training"]["cohort"]["members_trained"]) == 4
    assert not any(m["trained"] for m in again["noisy_training"]["members"])
    assert again["noisy_training"]["cohort"]["members_trained"] == []
    assert again["trained"] is False  # the clean model too
    assert [e["accuracy"] for e in noisy(again)] == [e["accuracy"] for e in noisy(first)]


def test_sigma_factors_scale_the_clean_sigma_mid_of_each_site(learnable, tmp_path):
    factors = [0.5, 2.0]
    res = run_noisy_training_walk(walk_config(learnable, tmp_path, sites=[0, 4],
                                              sigma_factors=factors, max_evals=6),
                                  progress=False)
    assert res["walk"]["clean_search"] == "midpoint"
    for name, site in (("0:input", 0), ("4:fc2", 4)):
        clean = res["sigma_mid_clean"][name]
        assert clean["kind"] == "crossing"
        got = sorted(m["sigma"] for m in res["noisy_training"]["members"] if m["site"] == site)
        assert got == [f * clean["sigma_mid"] for f in factors]
    assert len(res["noisy_training"]["members"]) == 4


def test_the_plot_has_a_clean_and_a_noisy_curve_per_site(walked):
    first, _ = walked
    fig = walk_figure(first)
    panels = [ax for ax in fig.axes if ax.get_lines()]
    assert [ax.get_title() for ax in panels] == ["1:fc1", "3:relu1"]
    for ax, site in zip(panels, SITES):
        curves = {ln.get_gid(): ln for ln in ax.get_lines()
                  if ln.get_gid() in ("clean_training", "noisy_training")}
        assert set(curves) == {"clean_training", "noisy_training"}
        for gid, trained in (("clean_training", False), ("noisy_training", True)):
            mean = {g: sum(e["accuracy"] for e in first["evaluations"]
                           if (e["site"], e["sigma"], e["enable_in_training"])
                           == (site, g, trained)) / 2 for g in SIGMAS}
            assert list(curves[gid].get_xdata()) == SIGMAS
            assert list(curves[gid].get_ydata()) == pytest.approx([mean[g] for g in SIGMAS])


@pytest.mark.parametrize("walk, key", [
    ({"search": "midpoint"}, r"walk.search 'midpoint' cannot be used with walk.train"),
    ({"sigmas": [1.0], "sigma_factors": [1.0]}, r"walk.sigma_factors and walk.sigmas"),
    ({"sigma_factors": [1.0, 0.0]}, r"walk.sigma_factors\[1\] must be a factor > 0"),
    ({"sigma_factors": [1.0], "train": False}, r"walk.sigma_factors needs walk.train"),
    ({"train": "yes"}, r"walk.train must be true or false"),
    ({"sigmas": [0.1, -1.0]}, r"walk.sigmas\[1\] must be a σ >= 0"),
    ({"sites": [11]}, r"walk.sites: site 11 is out of range; this model has 11 sites"),
    ({"params": {"StdRatio": 0.5}}, r"walk \(noise_type, sigma_key, params\)"),
])
def test_bad_keys_are_refused_naming_the_key_before_anything_is_written(walk, key, tmp_path):
    art = tmp_path / "art"
    with pytest.raises(ConfigError, match=key):
        run_noisy_training_walk(walk_config(tmp_path / "nodata", art, **walk), progress=False)
    assert not art.exists()


def test_the_cli_refuses_a_bad_key_before_the_run_store_or_artifacts_exist(tmp_path):
    store, art = tmp_path / "runs", tmp_path / "art"
    proc = subprocess.run([sys.executable, "train.py", "walk", "-F", str(store), "with",
                           "walk.train=true", "walk.search=midpoint", f"artifact_root={art}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "walk.search" in proc.stderr
    assert not store.exists() and not art.exists()


def test_run_walk_refuses_walk_train(tmp_path):
    with pytest.raises(ConfigError, match="walk.train: true is the noisy-training walk"):
        run_walk(walk_config(tmp_path, tmp_path, sigmas=[1.0]), progress=False)


# ---- the shipped YAML ------------------------------------------------------------------------

def _point(config, site, noise):
    """(model, site, noise type, σ, other noise keys, clamping, epochs, repeat) of a model."""
    sigma_key = "StdAmplitude" if noise["noise_type"] == "GaussCombined" else "GaussStd"
    rest = tuple(sorted((k, float(v)) for k, v in noise.items()
                        if k not in ("noise_type", sigma_key, "layer_index",
                                     "enable_in_training", "enable_in_eval")))
    clamp = config["general"]["weight_clamping"]
    family = config["model"]["model_class"]
    return (config["model"][family]["conf_name"], int(site), noise["noise_type"],
            float(noise[sigma_key]), rest, (clamp["min"], clamp["max"]),
            config["general"]["num_epochs"], config["general"]["repeat_number"])


def test_the_noisy_training_yaml_trains_exactly_the_layer_wise_noisy_training_configs():
    expected, expected_hashes = set(), set()
    for name in ("LeNet5-BN_layer_wise.yaml", "RL_TFC_layer_wise.yaml"):
        for e in vcf.expand_file(CONFIGS / "FashionMNIST" / name).experiments:
            lw = e.config["noise_settings"]["layer_wise"]
            if lw["enable_in_training"] == 1 and lw["enable_in_eval"] == 1:
                expected.add(_point(e.config, lw["layer_index"], lw))
                expected_hashes.add(training_hash(validate_config(e.config)))
    walks = vcf.expand_file(CONFIGS / "walks" / "FashionMNIST_noisy_training.yaml").experiments
    got, got_hashes, n_members = set(), set(), 0
    for e in walks:
        vc = validate_config(e.config)
        w = vc.walk
        assert w.train and w.search == "grid" and w.repeats == 1 and w.sites is None
        members = grid_members({"noise_type": w.noise_type, "sigma_key": w.sigma_key,
                                "params": w.params, "sites": None, "sigmas": list(w.sigmas)},
                               len(vc.site_names))
        n_members += len(members)
        base = member_base(vc.config)
        for m in members:
            lw = m["noise_settings"]["layer_wise"]
            got.add(_point(vc.config, lw["layer_index"], lw))
            config = json.loads(json.dumps(base))
            config["noise_settings"]["layer_wise"] = lw
            got_hashes.add(training_hash(validate_config(config)))
    assert len(walks) == 2 * 3 * 8  # models x repeats x noise conditions: a handful of jobs
    assert n_members == len(got) == len(expected) == (27264 + 18744) // 2
    assert got == expected
    assert got_hashes == expected_hashes  # the same trained models, found both ways
