"""Bad values are refused at the door: non-finite or float32-overflowing numbers anywhere in the
config and the walk settings, wrong types, a walk on a test split the dataset lacks; the
bisection stops by itself when it has no new σ; the offline validator reports every file; and
numerically equal values hash equally."""
import dataclasses
import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data import DATASETS, get_dataset
from data_fixtures import write_idx_dataset
from util import validate_configs as vcf
from noise.config import noise_config_to_dict
from util.config import (ConfigError, config_hash, eval_noise_hash, merged_with_defaults,
                         parse_walk, strip_bookkeeping, to_plain, training_hash, validate_config)
from util.engine.walk import bisect_midpoint

pytestmark = pytest.mark.filterwarnings("ignore:pkg_resources is deprecated")

ROOT = Path(__file__).resolve().parent.parent
INF, NAN = math.inf, math.nan


def config(**updates):
    base = {"data": {"dataset": "MNIST", "root": "/nonexistent", "download": False},
            "device": "cpu"}
    for section, values in updates.items():
        if isinstance(values, dict) and isinstance(base.get(section), dict):
            base[section] = {**base[section], **values}
        else:
            base[section] = values
    return merged_with_defaults(base)


def gauss_add(**params):
    return {"default": {"noise_type": "GaussAdd", **params}}


# ---- numbers: finite and fitting float32 ----------------------------------------------------

@pytest.mark.parametrize("updates, key", [
    ({"noise_settings": gauss_add(GaussStd=INF)}, "GaussStd"),
    ({"noise_settings": gauss_add(GaussStd=1e300)}, "GaussStd"),
    ({"noise_settings": gauss_add(GaussStd=0.1, GaussMean=INF)}, "GaussMean"),
    ({"noise_settings": gauss_add(GaussStd=0.1, GaussMean=-1e39)}, "GaussMean"),
    ({"noise_settings": {"default": {"noise_type": "GaussCombined", "StdAmplitude": 1e300}}},
     "StdAmplitude"),
    ({"noise_settings": {"default": {"noise_type": "GaussCombined_direct",
                                     "GaussStdMul": 1e39}}}, "GaussStdMul"),
    ({"noise_settings": {"layer_mapped": {"std_map": {1: 0.1},
                                          "std_multiplication_factor": INF}}},
     "std_multiplication_factor"),
    ({"noise_settings": {"layer_mapped": {"std_map": {1: 0.1},
                                          "std_multiplication_factor": NAN}}},
     "std_multiplication_factor"),
    ({"noise_settings": {"layer_mapped": {"std_map": {1: INF}}}}, r"std_map\[1\]"),
    ({"noise_settings": {"layer_mapped": {"std_map": {1: NAN}}}}, r"std_map\[1\]"),
    ({"noise_settings": {"layer_mapped": {"std_map": {1: 1e30},
                                          "std_multiplication_factor": 1e10}}},
     r"std_map\[1\] × std_multiplication_factor .*float32"),
    ({"general": {"weight_clamping": {"min": NAN, "max": 1.0}}}, "weight_clamping.min"),
    ({"general": {"weight_clamping": {"min": -1.0, "max": NAN}}}, "weight_clamping.max"),
    ({"general": {"weight_clamping": {"min": -INF, "max": 1.0}}}, "weight_clamping.min"),
    ({"general": {"weight_clamping": {"min": -1.0, "max": 1e39}}}, "weight_clamping.max"),
    ({"optimizer": {"lr": NAN}}, "optimizer.lr"),
    ({"optimizer": {"lr": INF}}, "optimizer.lr"),
    ({"optimizer": {"lr": 1e300}}, "optimizer.lr"),
    ({"general": {"num_epochs": INF}}, "general.num_epochs"),
    ({"general": {"num_epochs": NAN}}, "general.num_epochs"),
    ({"data": {"batch_size": INF}}, "data.batch_size"),
    ({"data": {"batch_size": NAN}}, "data.batch_size"),
    ({"data": {"val_split": NAN}}, "data.val_split"),
])
def test_non_finite_or_float32_overflowing_numbers_are_config_errors_naming_the_key(updates,
                                                                                   key):
    with pytest.raises(ConfigError, match=key):
        validate_config(config(**updates))


def test_float32_limit_is_torchs_and_the_max_noise_sigma_stays_valid():
    from noise.config import FLOAT32_MAX
    assert FLOAT32_MAX == torch.finfo(torch.float32).max
    vc = validate_config(config(noise_settings=gauss_add(GaussStd=1e10),
                                general={"weight_clamping": {"min": -FLOAT32_MAX,
                                                             "max": FLOAT32_MAX}}))
    assert vc.site_configs[0].GaussStd == 1e10
    with pytest.raises(ConfigError, match="GaussStd"):
        validate_config(config(noise_settings=gauss_add(GaussStd=float(
            torch.finfo(torch.float64).max))))


def test_integral_float_counts_are_validated_as_ints():
    raw = config(general={"num_epochs": 2.0, "seed": 3.0}, data={"batch_size": 64.0})
    vc = validate_config(raw)
    g, d = vc.config["general"], vc.config["data"]
    assert (g["num_epochs"], g["seed"], d["batch_size"]) == (2, 3, 64)
    assert all(type(v) is int for v in (g["num_epochs"], g["seed"], d["batch_size"]))
    assert raw["data"]["batch_size"] == 64.0 and type(raw["data"]["batch_size"]) is float
    with pytest.raises(ConfigError, match="general.num_epochs must be an integer"):
        validate_config(config(general={"num_epochs": 1.5}))


def test_std_map_sigma_times_factor_is_checked_after_scaling():
    ok = config(noise_settings={"layer_mapped": {"std_map": {1: 1e30},
                                                 "std_multiplication_factor": 1e5}})
    assert validate_config(ok).site_configs[1].GaussStd == pytest.approx(1e35)


@pytest.mark.parametrize("noise_settings, key", [
    ([1, 2], "noise_settings must be a dict"),
    ({"layer_wise": [1, 2]}, "noise_settings.layer_wise must be a dict"),
    ({"layer_mapped": [0.1]}, "noise_settings.layer_mapped must be a dict"),
    ({"layer_mapped": {"std_map": {1: 0.1}, "noise_op_kwargs": [1]}}, "noise_op_kwargs"),
    ({"default": 5}, "noise_settings.default"),
    ({"default": {"noise_type": ["GaussAdd"]}}, "noise_type"),
])
def test_wrongly_typed_noise_settings_are_config_errors(noise_settings, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        validate_config(config(noise_settings=noise_settings))


# ---- the walk settings ----------------------------------------------------------------------

@pytest.mark.parametrize("walk, key", [
    ({"sigma_range": ["a", 1]}, r"walk\.sigma_range"),
    ({"sigma_range": [0.01, INF]}, r"walk\.sigma_range"),
    ({"sigma_range": [NAN, 1.0]}, r"walk\.sigma_range"),
    ({"sigma_range": [0.01, 1e300]}, r"walk\.sigma_range"),
    ({"sigma_range": 5}, r"walk\.sigma_range"),
    ({"sigmas": [0.1, 1e300]}, r"walk\.sigmas\[1\]"),
    ({"sigmas": [0.1, INF]}, r"walk\.sigmas\[1\]"),
    ({"sigmas": [NAN]}, r"walk\.sigmas\[0\]"),
    ({"sigmas": ["1"]}, r"walk\.sigmas\[0\]"),
    ({"params": [1, 2]}, r"walk\.params must be a dict"),
    ({"params": "StdRatio"}, r"walk\.params must be a dict"),
    ({"noise_type": "GaussCombined", "params": {"StdRatio": INF}}, "StdRatio"),
    ({"tolerance_decades": "x"}, r"walk\.tolerance_decades"),
    ({"tolerance_decades": -1}, r"walk\.tolerance_decades must be > 0"),
    ({"tolerance_decades": 0}, r"walk\.tolerance_decades must be > 0"),
    ({"tolerance_decades": NAN}, r"walk\.tolerance_decades"),
    ({"tolerance_decades": INF}, r"walk\.tolerance_decades"),
    ({"noise_type": "Gaussian"}, r"walk\.noise_type 'Gaussian'.*allowed: .*GaussAdd"),
    ({"noise_type": ["GaussAdd"]}, r"walk\.noise_type"),
    ({"sigma_key": 3}, r"walk\.sigma_key"),
    ({"sites": [5, 5]}, r"walk\.sites"),
    ({"enabled": "yes"}, r"walk\.enabled"),
])
def test_bad_walk_values_are_config_errors_naming_the_key(walk, key):
    with pytest.raises(ConfigError, match=key):
        validate_config(config(walk=walk), walk=True)


def test_a_walk_section_that_is_not_a_dict_is_a_config_error():
    with pytest.raises(ConfigError, match="walk must be a dict"):
        validate_config(config(walk=[1, 2]))


@pytest.mark.parametrize("dataset", ["MNIST", "FashionMNIST", "CIFAR10", "SVHN"])
def test_walk_on_the_test_split_of_a_dataset_without_one_is_refused_at_validation(dataset):
    with pytest.raises(ConfigError, match=rf"walk\.eval_split 'test'.*{dataset}.*'validation'"):
        validate_config(config(data={"dataset": dataset}, walk={"eval_split": "test"}),
                        walk=True)
    with_split = config(data={"dataset": dataset, "val_split": 0.1},
                        walk={"eval_split": "test"})
    assert validate_config(with_split, walk=True).walk.eval_split == "test"


def test_walk_on_the_test_split_of_speech_commands_is_allowed():
    cfg = config(data={"dataset": "GSC2_PyTorch"},
                 model={"model_class": "CNN_HE", "CNN_HE": {"conf_name": "CNN-S"}},
                 walk={"eval_split": "test"})
    assert validate_config(cfg, walk=True).walk.eval_split == "test"


@pytest.mark.parametrize("val_split", [None, 0.25])
def test_has_test_split_agrees_with_the_test_loader(val_split, tmp_path):
    write_idx_dataset(tmp_path / "MNIST" / "raw", n_train=40, n_test=10)
    ds = get_dataset("MNIST", tmp_path, batch_size=8, download=False, val_split=val_split)
    assert DATASETS["MNIST"].has_test_split(val_split) is (ds.test_loader() is not None)
    assert DATASETS["GSC2"].has_test_split(None) is True


# ---- the bisection guard --------------------------------------------------------------------

class Evaluations:
    """A step from 100 % to 0 % at σ = 1; fails the test instead of hanging after ``limit``."""

    def __init__(self, limit):
        self.limit, self.sigmas = limit, []

    def __call__(self, sigma):
        self.sigmas.append(sigma)
        if len(self.sigmas) > self.limit:
            raise AssertionError(f"bisection did not stop: {len(self.sigmas)} evaluations")
        return 100.0 if sigma < 1.0 else 0.0


@pytest.mark.parametrize("changes", [
    {"sigma_range": (0.01, INF)},
    {"sigma_range": (0.01, 1e10), "tolerance_decades": -1.0},
    {"sigma_range": (0.01, 1e10), "tolerance_decades": NAN},
    {"sigma_range": (1e-300, 1e300), "tolerance_decades": 0.0},
], ids=["infinite_high", "negative_tolerance", "nan_tolerance", "zero_tolerance"])
def test_bisection_stops_when_it_has_no_new_sigma(changes):
    settings = dataclasses.replace(parse_walk({"search": "midpoint"}, 12),
                                   max_evals=200, **changes)
    evaluate = Evaluations(limit=250)
    curve = bisect_midpoint(evaluate, settings, level=50.0)
    assert len(evaluate.sigmas) == len(set(evaluate.sigmas)) == len(curve) < 200
    lo, hi = settings.sigma_range
    assert all(lo <= s <= hi for s in curve)
    if math.isfinite(hi):  # bisected down to float resolution around the step at σ = 1
        below = max(s for s in curve if s < 1.0)
        above = min(s for s in curve if s >= 1.0)
        assert math.log10(above) - math.log10(below) < 1e-12


def test_bisection_with_valid_settings_is_unchanged():
    settings = parse_walk({"search": "midpoint", "sigma_range": [0.01, 100.0],
                           "tolerance_decades": 0.1, "max_evals": 50}, 12)
    curve = bisect_midpoint(Evaluations(limit=50), settings, level=50.0)
    # 4 decades halved until the bracket is <= 0.1 decade: 6 midpoints plus the two ends
    assert len(curve) == 8
    assert sorted(curve)[0] == 0.01 and sorted(curve)[-1] == 100.0


# ---- hashes: 1 and 1.0 ----------------------------------------------------------------------

def old_hash(obj):
    """The hash as it was before integral floats were canonicalised."""
    text = json.dumps(to_plain(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def test_integral_floats_hash_like_ints():
    one = validate_config(config(general={"num_epochs": 1}))
    one_float = validate_config(config(general={"num_epochs": 1.0}))
    assert training_hash(one) == training_hash(one_float)
    assert config_hash(one.config) == config_hash(one_float.config)
    clamp = validate_config(config(general={"weight_clamping": {"min": -1, "max": 1}}))
    clamp_float = validate_config(config(general={"weight_clamping": {"min": -1.0,
                                                                      "max": 1.0}}))
    assert training_hash(clamp) == training_hash(clamp_float)
    noisy = validate_config(config(noise_settings=gauss_add(GaussStd=2)))
    noisy_float = validate_config(config(noise_settings=gauss_add(GaussStd=2.0)))
    assert eval_noise_hash(noisy) == eval_noise_hash(noisy_float)
    assert training_hash(noisy) == training_hash(noisy_float)
    # different values still differ, and a bool is not the number 1
    assert training_hash(one) != training_hash(validate_config(config(general={"num_epochs": 2})))
    assert config_hash({"a": True}) != config_hash({"a": 1})
    assert config_hash({"a": 0.5}) != config_hash({"a": 1})


def test_hashes_without_integral_floats_are_unchanged():
    """A noise-free config holds ints, bools, strings and non-integral floats only: its stored
    training hash (the checkpoint folder) must stay what it was."""
    vc = validate_config(config(general={"num_epochs": 3}, optimizer={"lr": 5e-4}))
    cfg = vc.config
    g = {k: v for k, v in cfg["general"].items()
         if k not in ("experiment_name", "repeat_number", "seed", "train_repeat_number")}
    g["train_seed"] = vc.train_seed
    expected = old_hash({"general": g, "optimizer": cfg["optimizer"],
                         "data": {k: cfg["data"].get(k)
                                  for k in ("dataset", "batch_size", "val_split")},
                         "model": {"model_class": vc.model_class, "conf_name": vc.conf_name,
                                   "criterion": "CrossEntropyLoss", "weight_criterion": False},
                         "training_noise": None})
    assert training_hash(vc) == expected
    plain = strip_bookkeeping({k: v for k, v in cfg.items()
                               if k not in ("walk", "cohort", "weight_noise")})
    assert config_hash(plain) == old_hash(plain)
    # the cohort and weight-noise sections at their defaults (in every config since they
    # exist) change nothing
    assert config_hash({**plain, "cohort": cfg["cohort"]}) == old_hash(plain)
    assert config_hash({**plain, "weight_noise": cfg["weight_noise"]}) == old_hash(plain)


def test_noisy_training_and_eval_noise_hashes_are_unchanged():
    """Noise configs hold floats such as GaussMean 0.0 and GaussStd 1.0: canonicalising them
    would move every noisy-trained checkpoint and every evaluation-noise hash; it must not."""
    vc = validate_config(config(noise_settings=gauss_add(GaussStd=1.0)))
    assert vc.noisy_training
    cfg = vc.config
    g = {k: v for k, v in cfg["general"].items()
         if k not in ("experiment_name", "repeat_number", "seed", "train_repeat_number")}
    g["train_seed"] = vc.train_seed
    noise = []
    for c, r in zip(vc.site_configs, vc.repetitions):
        d = noise_config_to_dict(c)
        d.pop("enable_in_eval")
        noise.append([d, r] if c.active(training=True) else None)
    expected = old_hash({"general": g, "optimizer": cfg["optimizer"],
                         "data": {k: cfg["data"].get(k)
                                  for k in ("dataset", "batch_size", "val_split")},
                         "model": {"model_class": vc.model_class, "conf_name": vc.conf_name,
                                   "criterion": "CrossEntropyLoss", "weight_criterion": False},
                         "training_noise": noise})
    assert training_hash(vc) == expected
    assert eval_noise_hash(vc) == old_hash(
        [[noise_config_to_dict(c), r] for c, r in zip(vc.site_configs, vc.repetitions)])


# ---- the offline validator: every file gets its report ---------------------------------------

def write_yaml(path: Path, fixed: str) -> Path:
    path.write_text(f"seml:\n  executable: train.py\n  name: t\n  description: test\n"
                    f"  output_dir: logs\n  project_root_dir: {ROOT}\nslurm:\n"
                    f"  - sbatch_options: {{}}\nfixed:\n  data.dataset: MNIST\n"
                    f"  model.model_class: LeNet\n  model.LeNet.conf_name: LeNet5\n{fixed}")
    return path


@pytest.fixture
def three_files(tmp_path, monkeypatch):
    good = write_yaml(tmp_path / "good.yaml", "  general.num_epochs: 2\n")
    nan = write_yaml(tmp_path / "nan.yaml", "  general.num_epochs: .nan\n")
    boom = write_yaml(tmp_path / "boom.yaml", "  general.num_epochs: 3\n")
    real_check = vcf.check

    def check(exp):  # a bug in the checks, hit by one file only (inherited by forked workers)
        if exp.file.name == "boom.yaml":
            raise RuntimeError("a bug in a check")
        return real_check(exp)

    monkeypatch.setattr(vcf, "check", check)
    return [nan, good, boom]


@pytest.mark.parametrize("jobs", [1, 2])
def test_validator_reports_every_file_when_one_is_broken(three_files, jobs):
    nan, good, boom = three_files
    reports = vcf.validate_files(three_files, jobs=jobs)
    assert [r.file for r in reports] == three_files
    assert reports[1].ok and reports[1].n_experiments == 1
    assert len(reports[0].problems) == 1
    assert "general.num_epochs must be an integer, got nan" in str(reports[0].problems[0])
    assert len(reports[2].problems) == 1
    message = str(reports[2].problems[0])
    assert "boom.yaml" in message and "RuntimeError: a bug in a check" in message


def test_validator_cli_prints_each_file_and_exits_1(three_files, capsys):
    code = vcf.main([str(f) for f in three_files] + ["-j", "2"])
    out = capsys.readouterr().out
    assert code == 1
    assert re.search(r"good\.yaml: 1 experiments\s+OK", out), out
    assert re.search(r"nan\.yaml: 1 experiments\s+1 error", out), out
    assert re.search(r"ERROR .*boom\.yaml: .*RuntimeError: a bug in a check", out), out
    assert "2 error(s) in 2 file(s)" in out


# ---- end to end through train.py: clean message, nothing written ----------------------------

@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_idx_dataset(root / "MNIST" / "raw", n_train=64, n_test=32)
    return root


@pytest.mark.parametrize("command, updates, key", [
    ([], ["general.num_epochs=1e999"], "general.num_epochs"),
    ([], ["noise_settings.default={'noise_type': 'GaussAdd', 'GaussStd': 1e300}"], "GaussStd"),
    (["walk"], ["walk.eval_split=test"], "walk.eval_split"),
    (["walk"], ["walk.sigma_range=[0.01, 1e999]", "walk.search=midpoint", "walk.sites=[5]"],
     "walk.sigma_range"),
], ids=["epochs_inf", "sigma_1e300", "walk_test_split", "walk_infinite_range"])
def test_train_py_refuses_the_config_cleanly_and_writes_nothing(command, updates, key,
                                                                mnist_root, tmp_path):
    store, art = tmp_path / "runs", tmp_path / "art"
    args = [sys.executable, "train.py", *command, "-F", str(store), "with", *updates,
            "data.dataset=MNIST", f"data.root={mnist_root}", "data.download=False",
            "data.batch_size=32", "general.num_epochs=1" if "num_epochs" not in key else "",
            f"artifact_root={art}", "device=cpu"]
    proc = subprocess.run([a for a in args if a], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert "invalid config" in proc.stderr and key in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not store.exists() and not art.exists()


def test_val_split_on_a_dataset_with_official_splits_is_rejected_at_validation():
    """GSC2 refused val_split only when the dataset object was built (after validation)."""
    with pytest.raises(ConfigError, match=r"data\.val_split.*GSC2.*allowed: null"):
        validate_config(config(data={"dataset": "GSC2", "val_split": 0.1},
                               model={"model_class": "CNN_HE",
                                      "CNN_HE": {"conf_name": "CNN-S"}}))
    validate_config(config(data={"dataset": "MNIST", "val_split": 0.1}))
