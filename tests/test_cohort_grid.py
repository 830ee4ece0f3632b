"""``cohort.grid``: sites × σ of one noise type as cohort members (after ``cohort.members``),
expanded by the pure :func:`util.config.grid_members`; bad grids refused naming the key before
anything is written; a grid cohort trains exactly its members."""
import subprocess
import sys
from pathlib import Path

import pytest

from data_fixtures import write_idx_dataset
from util.config import ConfigError, grid_members, member_configs, merged_with_defaults
from util.engine.cohort import run_cohort

ROOT = Path(__file__).resolve().parent.parent
MLP = {"model_class": "MLP", "MLP": {"conf_name": "RL_TFC"}}  # 11 sites


def config(grid, members=None, **extra):
    return merged_with_defaults({"model": MLP, "cohort": {"members": members, "grid": grid},
                                 **extra})


def test_grid_members_are_sites_times_sigmas_with_those_layer_wise_settings():
    got = grid_members({"noise_type": "GaussMul", "params": {"GaussMean": 0.9},
                        "sites": [4, 2], "sigmas": [0.5, 0.0, 3.0],
                        "enable_in_eval": False}, 11)
    expected = [{"noise_settings": {"layer_wise": {
        "layer_index": site, "noise_type": "GaussMul", "GaussMean": 0.9, "GaussStd": sigma,
        "enable_in_training": True, "enable_in_eval": False}}}
        for site in (4, 2) for sigma in (0.5, 0.0, 3.0)]
    assert got == expected


def test_sigma_key_defaults_to_the_walks_and_sites_null_is_every_site():
    combined = grid_members({"noise_type": "GaussCombined", "params": {"StdRatio": 0.25},
                             "sigmas": [2.0]}, 5)
    assert [m["noise_settings"]["layer_wise"]["layer_index"] for m in combined] == [0, 1, 2, 3, 4]
    assert combined[0]["noise_settings"]["layer_wise"]["StdAmplitude"] == 2.0
    named = grid_members({"noise_type": "GaussCombined_direct", "sigma_key": "GaussStdMul",
                          "params": {"GaussStdAdd": 0.1}, "sites": [1], "sigmas": [0.3]}, 5)
    assert named[0]["noise_settings"]["layer_wise"]["GaussStdMul"] == 0.3


def test_member_configs_put_the_members_first_then_the_grids():
    c = config({"sites": None, "sigmas": [0.1, 1.0]},
               members=[{"general": {"weight_clamping": {"min": -1.0, "max": 1.0}}}])
    configs = member_configs(c)
    assert len(configs) == 1 + 11 * 2
    assert configs[0]["general"]["weight_clamping"] == {"min": -1.0, "max": 1.0}
    assert configs[0]["noise_settings"]["layer_wise"] is None
    lw = [(m["noise_settings"]["layer_wise"]["layer_index"],
           m["noise_settings"]["layer_wise"]["GaussStd"]) for m in configs[1:]]
    assert lw == [(s, g) for s in range(11) for g in (0.1, 1.0)]
    assert all("cohort" not in m for m in configs)
    # only a grid: its members alone; explicit members: those alone
    assert len(member_configs(config({"sites": [0, 10], "sigmas": [1.0]}))) == 2
    assert member_configs(c, [{}]) == [{k: v for k, v in c.items() if k != "cohort"}]


@pytest.mark.parametrize("grid, message", [
    ({"sigmas": [0.1, 1.0, -2.0]}, r"cohort.grid.sigmas\[2\] must be a σ >= 0, got -2.0"),
    ({"sigmas": [0.1, float("nan")]}, r"cohort.grid.sigmas\[1\] must be a finite number"),
    ({"sigmas": [1.0], "sites": [3, 11]},
     r"cohort.grid.sites: site 11 is out of range; this model has 11 sites \(valid: 0..10\)"),
    ({"sites": [1]}, r"cohort.grid.sigmas is required"),
    ({"sigmas": [1.0, 1.0]}, r"cohort.grid.sigmas lists a σ twice"),
    ({"sigmas": [1.0], "noise_type": "NoNoise"}, r"cohort.grid.noise_type 'NoNoise'"),
    ({"sigmas": [1.0], "bogus": 1}, r"cohort.grid: unknown key 'bogus'"),
    ({"sigmas": [1.0], "params": {"StdRatio": 0.5}},
     r"cohort.grid \(noise_type, sigma_key, params\): unknown key 'StdRatio'"),
    ({"sigmas": [1.0], "enable_in_training": "sometimes"},
     r"cohort.grid.enable_in_training must be true or false"),
    ([1.0], r"cohort.grid must be a dict"),
])
def test_a_bad_grid_is_refused_naming_the_key(grid, message):
    with pytest.raises(ConfigError, match=message):
        member_configs(config(grid))


def test_the_cli_refuses_a_grid_site_out_of_range_before_writing_anything(tmp_path):
    store, art = tmp_path / "runs", tmp_path / "art"
    proc = subprocess.run([sys.executable, "train.py", "cohort", "-F", str(store), "with",
                           "model.model_class=MLP", "model.MLP.conf_name=RL_TFC",
                           'cohort.grid={"sites": [11], "sigmas": [0.1]}',
                           f"artifact_root={art}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "cohort.grid.sites: site 11 is out of range; this model has 11 sites" in proc.stderr
    assert not store.exists() and not art.exists()


def test_a_grid_cohort_trains_one_model_per_site_and_sigma(tmp_path):
    write_idx_dataset(tmp_path / "data" / "MNIST" / "raw", n_train=128, n_test=32)
    c = config({"sites": [1, 3], "sigmas": [0.1, 1.0]},
               data={"dataset": "MNIST", "root": str(tmp_path / "data"), "download": False,
                     "batch_size": 64},
               general={"num_epochs": 1}, artifact_root=str(tmp_path / "art"), device="cpu")
    result = run_cohort(c, progress=False)
    assert len(result["members"]) == 4 and all(r["trained"] for r in result["members"])
    hashes = [r["training_hash"] for r in result["members"]]
    assert len(set(hashes)) == 4  # each (site, σ) its own trained model
    for h in hashes:
        assert (tmp_path / "art" / "checkpoints" / h / "final.pt").is_file()
