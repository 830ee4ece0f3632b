"""Write the fixtures that pin what the config schema must keep finding (run with the code of
the commit the fixtures record; tests/test_config_schema.py reads them):

- ``config_hashes.json``: about 30 full configs (every section, every model family, integral
  floats, walk settings) with their ``config_hash``, ``training_hash`` and ``eval_noise_hash``,
  and the embedded defaults (``DEFAULT_CONFIG``) as they were;
- ``checkpoint_mlp/``: one real trained model (``checkpoints/<training hash>/final.pt``: 1 epoch
  of the smallest MLP on the tiny MNIST of tests/data_fixtures.py, trained by
  ``run_experiment``) and ``result.json``, the config and the final metrics of that run.

    cd <checkout of that commit> && python tests/data/make_fixtures.py tests/data
"""
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(Path.cwd()), str(Path.cwd() / "tests")]

from util.config import (DEFAULT_CONFIG, config_hash, eval_noise_hash,  # noqa: E402
                         merged_with_defaults, training_hash, validate_config)

MNIST = {"dataset": "MNIST", "root": "/nonexistent", "download": False}
MLP = {"model_class": "MLP", "MLP": {"conf_name": "RL_TFC"}}
GAUSS = {"noise_type": "GaussAdd", "GaussStd": 0.1}

#: name -> updates of DEFAULT_CONFIG (the full config is what sacred and the local runner pass)
CASES = {
    "defaults": {},
    "mnist_lenet5_lr": {"data": MNIST, "model": {"LeNet": {"conf_name": "LeNet5"}},
                        "general": {"num_epochs": 3}, "optimizer": {"lr": 5e-4}},
    "lr_int_1": {"optimizer": {"lr": 1}},
    "lr_float_1": {"optimizer": {"lr": 1.0}},
    "scheduler_string_none": {"optimizer": {"lr_scheduler": "None"}},
    "scheduler_null": {"optimizer": {"lr_scheduler": None}},
    "epochs_and_batch_as_floats": {"general": {"num_epochs": 2.0}, "data": {"batch_size": 64.0}},
    "clamping_both": {"general": {"weight_clamping": {"min": -1, "max": 1}}},
    "clamping_min_only": {"general": {"weight_clamping": {"min": -0.5, "max": None}}},
    "clamping_null": {"general": {"weight_clamping": None}},
    "seed": {"general": {"seed": 7}},
    "repeat_number": {"general": {"repeat_number": 3}},
    "train_repeat_number": {"general": {"repeat_number": 5, "train_repeat_number": 2}},
    "experiment_name": {"general": {"experiment_name": "other"}},
    "val_split": {"data": {**MNIST, "val_split": 0.1}},
    "cifar10_vgg_val_split": {"data": {"dataset": "CIFAR10", "val_split": 0.2},
                              "model": {"model_class": "VGG", "VGG": {"conf_name": "VGG11"}}},
    "svhn_lenet": {"data": {"dataset": "SVHN", "batch_size": 32}},
    "locations": {"data": {**MNIST, "root": "/tmp/wn-data"}, "artifact_root": "/tmp/wn-art",
                  "device": "cpu"},
    "noise_default_noisy_training": {"noise_settings": {"default": GAUSS}},
    "noise_default_eval_only": {"noise_settings": {"default": {**GAUSS,
                                                               "enable_in_training": False}}},
    "noise_sigma_1e10_eval_only": {"noise_settings": {"default": {
        "noise_type": "GaussAdd", "GaussStd": 1e10, "enable_in_training": False}}},
    "noise_layer_wise": {"noise_settings": {"layer_wise": {
        "layer_index": 3, "noise_type": "GaussMul", "GaussStd": 0.5}}},
    "noise_layer_mapped": {"noise_settings": {"layer_mapped": {
        "noise_type": "GaussAdd", "std_map": {"1": 0.1, "4": 0.2},
        "std_multiplication_factor": 2.0}}},
    "noise_combined": {"noise_settings": {"default": {
        "noise_type": "GaussCombined", "StdAmplitude": 0.3, "StdRatio": 0.5}}},
    "noise_combined_direct": {"noise_settings": {"default": {
        "noise_type": "GaussCombined_direct", "GaussStdAdd": 0.1, "GaussStdMul": 0.2}}},
    "repetitions_global": {"model": {"LeNet": {"repetition_config": {"global": 4}}},
                           "noise_settings": {"default": GAUSS}},
    "repetitions_list": {"model": {"LeNet": {"conf_name": "LeNet5", "repetition_config": {
        "global": 1, "layer_wise_mapped": [1, 2, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1]}}}},
    "repetitions_map_noisy": {"model": {"LeNet": {"repetition_config": {
        "global": 2, "layer_wise_mapped": {"3": 7}}}},
        "noise_settings": {"default": {**GAUSS, "enable_in_training": False},
                           "layer_wise": {"layer_index": 3, "noise_type": "GaussAdd",
                                          "GaussStd": 0.2}}},
    "mlp": {"data": MNIST, "model": MLP},
    "mlp1br_noisy": {"data": MNIST, "model": {"model_class": "MLP", "MLP": {"conf_name": "mlp1br"}},
                     "noise_settings": {"default": {"noise_type": "GaussMul", "GaussStd": 0.05}}},
    "cnn_he_gsc2": {"data": {"dataset": "GSC2_PyTorch", "batch_size": 100},
                    "model": {"model_class": "CNN_HE", "weight_criterion": True,
                              "CNN_HE": {"conf_name": "CNN-S-BN"}}},
    "vgg_mnist": {"data": MNIST, "model": {"model_class": "VGG",
                                           "VGG": {"conf_name": "VGG11_mnist"}}},
    "walk_midpoint": {"walk": {"enabled": True, "search": "midpoint",
                               "sigma_range": [1e-2, 1e10], "max_evals": 8}},
    "walk_grid": {"walk": {"noise_type": "GaussMul", "sigmas": [0.1, 1, 10], "sites": [0, 2],
                           "repeats": 2, "chunk_size": 128, "batch_evals": 2}},
    "walk_combined": {"walk": {"noise_type": "GaussCombined", "params": {"StdRatio": 0.5},
                               "tolerance_decades": 0.05, "eval_split": "test"},
                      "data": {**MNIST, "val_split": 0.1}},
}


def hashes_fixture() -> dict:
    cases = {}
    for name, updates in CASES.items():
        config = json.loads(json.dumps(merged_with_defaults(updates)))  # as the test reads it
        vc = validate_config(config, walk=True)
        cases[name] = {"config": config, "config_hash": config_hash(config),
                       "training_hash": training_hash(vc), "eval_noise_hash": eval_noise_hash(vc)}
    return {"commit": commit(), "default_config": DEFAULT_CONFIG, "cases": cases}


def checkpoint_fixture(out: Path) -> None:
    from data_fixtures import write_idx_dataset
    from util.engine.experiment import run_experiment
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_idx_dataset(tmp / "data" / "MNIST" / "raw", n_train=64, n_test=32)
        updates = {"data": {"dataset": "MNIST", "root": "DATA_ROOT", "download": False,
                            "batch_size": 32},
                   "general": {"num_epochs": 1}, "artifact_root": "ARTIFACT_ROOT",
                   "device": "cpu", "model": {"model_class": "MLP",
                                              "MLP": {"conf_name": "RL_TFC_8-noBN"}}}
        config = merged_with_defaults(updates)
        config["data"]["root"], config["artifact_root"] = str(tmp / "data"), str(tmp / "art")
        result = run_experiment(config, progress=False)
        assert result["trained"] is True
        folder = Path(result["checkpoint_used"]).parent
        target = out / "checkpoint_mlp"
        shutil.rmtree(target, ignore_errors=True)
        (target / "checkpoints" / folder.name).mkdir(parents=True)
        for name in ("final.pt", "final.pt.sha256"):  # what reuse reads (epochs: resume only)
            shutil.copy(folder / name, target / "checkpoints" / folder.name / name)
        (target / "result.json").write_text(json.dumps({
            "commit": commit(), "updates": updates, "training_hash": result["training_hash"],
            "final": result["final"], "history": {k: result[k] for k in ("training",
                                                                          "validation")}},
            indent=1) + "\n")


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


if __name__ == "__main__":
    out = Path(sys.argv[1])
    (out / "config_hashes.json").write_text(json.dumps(hashes_fixture(), indent=1) + "\n")
    checkpoint_fixture(out)
