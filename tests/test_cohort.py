"""Cohort training (issue 16, first slice): every member of a cohort is bit for bit its own
single run (initial weights, final weights, metrics), writes the checkpoints its single run
writes (reused by a later single run, resumed after a kill), and a cohort that cannot run is
refused before anything is written."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data_fixtures import write_idx_dataset
from util.artifacts import load_torch
from util.config import ConfigError, config_hash, merged_with_defaults, validate_config
from util.engine import cohort as cohort_module
from util.engine.cohort import run_cohort, validate_members
from util.engine.experiment import prepare, run_experiment

ROOT = Path(__file__).resolve().parent.parent
MLP = {"model_class": "MLP", "MLP": {"conf_name": "RL_TFC"}}

#: members differing in training noise (two sites and σ), eval-only noise, weight clamping
MEMBERS = [
    {},
    {"noise_settings": {"layer_wise": {"layer_index": 1, "noise_type": "GaussAdd",
                                       "GaussStd": 0.3}}},
    {"noise_settings": {"layer_wise": {"layer_index": 3, "noise_type": "GaussAdd",
                                       "GaussStd": 0.05}}},
    {"noise_settings": {"default": {"noise_type": "GaussAdd", "GaussStd": 0.2,
                                    "enable_in_training": False}}},
    {"general": {"weight_clamping": {"min": -0.05, "max": 0.05}}},
]
#: what may differ between a cohort member's result and its single run's (timings, where the
#: model came from, its path, the config hash of another artifact root)
RUN_KEYS = {"config_hash", "seconds", "epoch_seconds", "artifacts", "checkpoint_used",
            "checkpoint_source", "trained", "resumed_from_epoch", "epochs_run",
            "replaced_corrupt_checkpoint"}


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_idx_dataset(root / "MNIST" / "raw", n_train=192, n_test=64)
    return root


def base(root, art, epochs=2, strategy="member-serial", **extra):
    """A cohort's base config; member-serial (bit for bit single runs) unless asked otherwise
    (tests/test_cohort_vectorised.py)."""
    upd = {"data": {"dataset": "MNIST", "root": str(root), "download": False, "batch_size": 64},
           "general": {"num_epochs": epochs}, "artifact_root": str(art), "device": "cpu",
           "model": MLP, "cohort": {"strategy": strategy}}
    upd.update(extra)
    return merged_with_defaults(upd)


def single(config, art):
    config = json.loads(json.dumps(config))
    config["artifact_root"] = str(art)
    return run_experiment(config, progress=False)


def comparable(result):
    return {k: v for k, v in result.items() if k not in RUN_KEYS}


def final_state(result):
    return load_torch(result["checkpoint_used"], map_location="cpu")["model_state"]


def assert_same_state(a, b):
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_initial_weights_of_every_member_are_its_single_runs(mnist_root, tmp_path,
                                                             monkeypatch):
    config = base(mnist_root, tmp_path / "art", epochs=1)
    seen = []
    begin = cohort_module.begin_training

    def recording(p, **kw):
        seen.append({k: v.clone() for k, v in p.model.state_dict().items()})
        return begin(p, **kw)
    monkeypatch.setattr(cohort_module, "begin_training", recording)
    members = [MEMBERS[1], MEMBERS[2], {"general": {"weight_clamping": {"min": None,
                                                                        "max": None}},
                                        "noise_settings": {"default": {
                                            "noise_type": "GaussMul", "GaussStd": 0.1}}}]
    drawn = []
    load = cohort_module.load_dataset

    def counting(vc):
        dataset = load(vc)
        loader = dataset.train_loader
        dataset.train_loader = lambda *a, **kw: drawn.append(kw["epoch"]) or loader(*a, **kw)
        return dataset
    monkeypatch.setattr(cohort_module, "load_dataset", counting)
    run_cohort(config, members, progress=False)
    assert len(seen) == 3
    assert drawn == [0]  # the epoch's batches drawn once for all members
    for vc, state in zip(validate_members(config, members), seen):
        assert_same_state(state, prepare(vc.config).model.state_dict())


def test_every_member_ends_as_its_single_run_and_a_later_single_run_reuses_it(mnist_root,
                                                                              tmp_path):
    config = base(mnist_root, tmp_path / "cohort")
    result = run_cohort(config, MEMBERS, progress=False)
    assert result["cohort"]["n_members"] == 5 and result["cohort"]["strategy"] == "member-serial"
    # member 3 differs from member 0 only in evaluation noise: one model, trained once
    assert result["cohort"]["members_trained"] == [0, 1, 2, 4]
    assert [r["trained"] for r in result["members"]] == [True, True, True, False, True]
    configs = [vc.config for vc in validate_members(config, MEMBERS)]
    finals = set()
    for i, (member, r) in enumerate(zip(configs, result["members"])):
        alone = single(member, tmp_path / f"single{i}")
        assert alone["trained"] is True
        if r["trained"]:
            assert comparable(r) == comparable(alone), f"member {i}"
        else:  # reused (member 0's model): evaluated once, under its own noise, as a reuse is
            keep = {k: v for k, v in comparable(alone).items() if k not in ("validation", "test")}
            assert {k: v for k, v in comparable(r).items() if k not in ("validation", "test")} \
                == keep
            assert r["validation"] == {m: v[-1:] for m, v in alone["validation"].items()}
        assert r["config_hash"] == config_hash(member)
        assert_same_state(final_state(r), final_state(alone))
        finals.add(r["final"]["validation_loss"])
        # the single run after the cohort, in the cohort's artifact root, reuses its model
        again = run_experiment(member, progress=False)
        assert (again["trained"], again["checkpoint_source"]) == (False, "artifact_root")
        assert again["checkpoint_used"] == r["checkpoint_used"]
        assert again["final"] == r["final"]
    assert len(finals) == 5  # the members did differ
    # the clamped member's weights stayed clamped
    clamped = final_state(result["members"][4])
    assert max(v.abs().max().item() for k, v in clamped.items()
               if "weight" in k and "bn" not in k and v.dim() > 1) <= 0.05 + 1e-7


def test_a_cohort_killed_mid_epoch_resumes_each_member_from_its_own_epoch(mnist_root, tmp_path,
                                                                        monkeypatch):
    members = MEMBERS[:3]
    whole = run_cohort(base(mnist_root, tmp_path / "whole"), members, progress=False)
    config = base(mnist_root, tmp_path / "killed")
    calls = []
    run_epoch = cohort_module.run_epoch

    def dying(t, epoch, batches, **kw):
        if len(calls) == 4:  # epoch 2 of members 0 done, of members 1 and 2 not
            raise KeyboardInterrupt("kill")
        calls.append(epoch)
        return run_epoch(t, epoch, batches, **kw)
    monkeypatch.setattr(cohort_module, "run_epoch", dying)
    with pytest.raises(KeyboardInterrupt):
        run_cohort(config, members, progress=False)
    monkeypatch.setattr(cohort_module, "run_epoch", run_epoch)
    resumed = run_cohort(config, members, progress=False)
    assert [r["resumed_from_epoch"] for r in resumed["members"]] == [2, 1, 1]
    assert [r["epochs_run"] for r in resumed["members"]] == [0, 1, 1]
    for i, (a, b) in enumerate(zip(whole["members"], resumed["members"])):
        if i == 0:  # complete before the kill, no final.pt yet: evaluated once, as a single
            # run that finds a complete epoch checkpoint is
            assert (b["checkpoint_source"], b["validation"]["loss"]) == \
                ("epoch_checkpoint", a["validation"]["loss"][-1:])
            assert (a["final"], a["training"]) == (b["final"], b["training"])
        else:
            assert comparable(a) == comparable(b)
        assert_same_state(final_state(a), final_state(b))


def test_a_member_that_cannot_share_the_batches_is_refused_before_anything_is_written(
        mnist_root, tmp_path):
    art = tmp_path / "art"
    config = base(mnist_root, art)
    for member, key, mine, first in [
            ({"general": {"num_epochs": 3}}, "general.num_epochs", 3, 2),
            ({"data": {"batch_size": 32}}, "data.batch_size", 32, 64),
            ({"general": {"repeat_number": 1}}, "training seed", 1, 0),
            ({"model": {"MLP": {"conf_name": "RL_TFC-noBN"}}}, "model conf_name",
             "'RL_TFC-noBN'", "'RL_TFC'"),
            ({"optimizer": {"lr": 0.01}}, "optimizer.lr", 0.01, 0.001)]:
        with pytest.raises(ConfigError) as err:
            run_cohort(config, [{}, MEMBERS[1], member], progress=False)
        assert str(err.value).startswith("cohort.members[2] cannot share")
        assert f"{key} is {mine} there, {first} in cohort.members[0]" in str(err.value)
    # what may differ: evaluation seeds (with the training seed kept), noise, clamping
    validate_members(config, [{}, {"general": {"seed": 5, "train_repeat_number": 0}}])
    assert not art.exists()


def test_an_invalid_member_names_its_index_and_key_and_nothing_is_written(mnist_root, tmp_path):
    art = tmp_path / "art"
    config = base(mnist_root, art)
    cases = [([{}, {"general": {"bogus": 1}}], r"cohort.members\[1\]: general: unknown key "
                                              r"'bogus'"),
             ([{}, {}, {}, {"optimizer": {"lr": -1}}], r"cohort.members\[3\]: optimizer.lr "
                                                        r"must be > 0"),
             ([{}, 3], r"cohort.members\[1\] must be a dict"),
             ([], r"cohort.members must be a non-empty list")]
    for members, message in cases:
        with pytest.raises(ConfigError, match=message):
            run_cohort(config, members, progress=False)
    assert not art.exists()


def test_the_cohort_section_keeps_config_hashes_and_is_checked(mnist_root, tmp_path):
    config = base(mnist_root, tmp_path)
    del config["cohort"]
    with_section = json.loads(json.dumps(config))
    with_section["cohort"] = {"enabled": False, "members": None}
    assert config_hash(with_section) == config_hash(config)
    with_section["cohort"]["members"] = [{}]
    assert config_hash(with_section) != config_hash(config)
    with_section["cohort"]["bogus"] = 1
    with pytest.raises(ConfigError, match="cohort: unknown key 'bogus'"):
        validate_config(with_section)


def test_cli_cohort_command_trains_every_member_and_prints_a_line_each(mnist_root, tmp_path):
    members = json.dumps([{}, MEMBERS[1]])
    args = ["cohort", "-F", str(tmp_path / "runs"), "with", "data.dataset=MNIST",
            f"data.root={mnist_root}", "data.download=false", "data.batch_size=64",
            "general.num_epochs=1", f"artifact_root={tmp_path / 'art'}", "device=cpu",
            "model.model_class=MLP", "model.MLP.conf_name=RL_TFC", f"cohort.members={members}"]
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cohort of 2 members (member-serial, 2 trained" in proc.stdout
    assert "member 0: base noise: validation accuracy" in proc.stdout
    assert "member 1: {'noise_settings'" in proc.stdout and ", trained" in proc.stdout
    run = json.loads((tmp_path / "runs" / "1" / "run.json").read_text())
    assert run["status"] == "COMPLETED"
    assert len(run["result"]["members"]) == 2
    # the same members again: both reused
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "0 trained" in proc.stdout and proc.stdout.count("reused (") == 2
