"""Synthetic walking-noise results with known midpoints, stored as sacred stores them.

The model is ``MLP``/``RL_TFC-noBN`` on FashionMNIST (8 sites, 10 classes, chance 10 %).
Every curve is linear in log10 σ near its midpoint, clipped to [chance, clean]:

    accuracy(σ) = level - SLOPE · (log10 σ - log10 σ_mid),   level = (clean + chance) / 2

so that interpolation in log10 σ between grid points recovers σ_mid exactly. Two training
repeats have different clean accuracies (90 and 86); their mean curve crosses its mean level
at the same σ_mid.

``write_run`` writes ``<store>/<id>/{config.json, run.json, metrics.json, cout.txt}`` with the
fields sacred's FileStorageObserver writes (tests check it against a run sacred itself wrote).
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import torch

from util.config import config_hash, merged_with_defaults, training_hash, validate_config

MODEL = {"model_class": "MLP", "MLP": {"conf_name": "RL_TFC-noBN",
                                       "repetition_config": {"global": 1}}}
SITE_NAMES = ['0:input', '1:fc1', '2:relu1', '3:fc2', '4:relu2', '5:fc3', '6:relu3', '7:logits']
CHANCE = 10.0
CLEAN = {0: 90.0, 1: 86.0}          # clean accuracy per training repeat
SLOPE = 15.0                        # accuracy points per decade of σ
SIGMAS = [0.01, 0.1, 1.0, 10.0, 100.0]
#: log10 σ_mid per site, clean training with additive noise (eval-only).
LOG_MID_CLEAN = [-1.2, 0.3, 0.5, -0.4, 0.1, 1.1, 0.8, -0.9]
#: Noisy training (GaussAdd in training and evaluation) at two sites: more robust.
NOISY_SITES = {1: 0.9, 5: 1.4}
EXPERIMENT = "walking_noise_test"


def curve_accuracy(sigma: float, log_mid: float, clean: float) -> float:
    level = (clean + CHANCE) / 2
    acc = level - SLOPE * (math.log10(sigma) - log_mid)
    return float(min(clean, max(CHANCE, acc)))


def make_config(*, repeat: int = 0, site: int | None = None, sigma: float | None = None,
                training: bool = False, seed: int = 1, dataset: str = "FashionMNIST",
                model=None, walk=None, everywhere: bool = False) -> dict:
    """The full config of one run as sacred stores it (defaults merged, seed, seml keys).
    ``site``: additive noise σ at that site only; ``everywhere``: at every site."""
    noise = {"default": {"noise_type": "NoNoise", "enable_in_training": True,
                         "enable_in_eval": True}, "layer_wise": None, "layer_mapped": None}
    if everywhere:
        noise["default"] = {"noise_type": "GaussAdd", "GaussStd": sigma,
                            "enable_in_training": training, "enable_in_eval": True}
    elif site is not None:
        noise["layer_wise"] = {"layer_index": site, "noise_type": "GaussAdd", "GaussStd": sigma,
                               "enable_in_training": training, "enable_in_eval": True}
    cfg = merged_with_defaults({
        "general": {"num_epochs": 2, "repeat_number": repeat, "experiment_name": EXPERIMENT},
        "data": {"dataset": dataset, "batch_size": 64},
        "model": copy.deepcopy(model or MODEL),
        "noise_settings": noise, "device": "cpu"})
    if walk is not None:
        cfg["walk"] = walk
    cfg["seed"] = seed
    cfg["db_collection"] = None
    cfg["overwrite"] = None
    return cfg


def make_result(config: dict, accuracy: float, *, trained: bool, checkpoint: str,
                num_classes: int = 10) -> dict:
    """A result dict shaped like util.engine.experiment.run_experiment's."""
    vc = validate_config({k: v for k, v in config.items() if k not in ("walk",)})
    epochs = config["general"]["num_epochs"] if trained else 1
    val_acc = [accuracy - 5.0] * (epochs - 1) + [accuracy]
    test_acc = [a - 1.0 for a in val_acc]
    result = {
        "training": {"loss": [1.0] * epochs, "accuracy": [accuracy] * epochs} if trained
        else {"loss": [1.0, 0.9], "accuracy": [80.0, 85.0]},
        "validation": {"loss": [0.5] * epochs, "accuracy": val_acc},
        "test": {"loss": [0.6] * epochs, "accuracy": test_acc},
    }
    result["final"] = {"validation_accuracy": val_acc[-1], "validation_loss": 0.5,
                       "test_accuracy": test_acc[-1], "test_loss": 0.6}
    result.update({
        "artifacts": {"checkpoint": checkpoint}, "checkpoint_used": checkpoint,
        "checkpoint_source": "trained" if trained else "run_store", "trained": trained,
        "resumed_from_epoch": 0, "epochs_run": epochs if trained else 0,
        "epoch_seconds": [0.1] * (epochs if trained else 0), "seconds": 0.5,
        "training_hash": training_hash(vc), "config_hash": config_hash(config),
        "sites": list(vc.site_names), "num_classes": num_classes, "device": "cpu",
    })
    return result


def write_run(store: Path, run_id: int, config: dict, result, status: str = "COMPLETED"):
    """Write one run the way sacred's FileStorageObserver does."""
    d = Path(store) / str(run_id)
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(config, sort_keys=True, indent=2))
    run = {
        "artifacts": [], "command": "main",
        "experiment": {"base_dir": str(Path(__file__).parent.parent),
                       "dependencies": ["numpy==2.0", "sacred==0.8.7", "torch==2.14.1"],
                       "mainfile": "train.py", "name": "walking-noise", "repositories": [],
                       "sources": [["train.py", "_sources/train_0.py"]]},
        "heartbeat": "2025-01-01T00:00:01.000000",
        "host": {"ENV": {}, "cpu": "synthetic", "hostname": "test", "os": ["Linux", "Linux"],
                 "python_version": "3.11.7"},
        "meta": {"command": "main", "config_updates": {}, "named_configs": [],
                 "options": {"--unobserved": False, "--file_storage": str(store)}},
        "resources": [], "result": result, "start_time": "2025-01-01T00:00:00.000000",
        "status": status, "stop_time": "2025-01-01T00:00:02.000000",
    }
    if status != "COMPLETED":
        run.pop("stop_time")
        if status == "FAILED":
            run["fail_trace"] = ["Traceback (most recent call last):\n", "RuntimeError: x\n"]
            run["result"] = None
    (d / "run.json").write_text(json.dumps(run, sort_keys=True, indent=2))
    (d / "metrics.json").write_text("{}")
    (d / "cout.txt").write_text("")
    return d


def write_checkpoint(path: Path, binarised: bool, seed: int) -> str:
    """A small checkpoint of RL_TFC-noBN: Gaussian weights, or ±0.5 ones for noisy training."""
    from models import build_model
    torch.manual_seed(seed)
    net = build_model(MODEL, None, (1, 28, 28), 10)
    state = net.state_dict()
    if binarised:
        for k, v in state.items():
            if k.endswith(".weight"):
                state[k] = torch.sign(torch.randn_like(v)) * 0.5
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 2, "model_state": state, "history": {}}, path)
    return str(path)


#: log10 σ_mid of the global curve (additive noise at every site, clean training).
LOG_MID_GLOBAL = -1.3


def build_sweep_store(store: Path, artifacts: Path, repeats=(0, 1), noisy: bool = True,
                      global_curve: bool = True) -> dict:
    """The walking-noise sweep: clean runs, clean-training walks over every site (``repeats``),
    noisy-training curves at two sites (repeat 0), the global curve (noise at every site,
    repeat 0). Returns {run_id: (config, result)}."""
    runs: dict[int, tuple[dict, dict]] = {}
    rid = 0

    def add(config, result):
        nonlocal rid
        rid += 1
        write_run(store, rid, config, result)
        runs[rid] = (config, result)

    clean_ckpt = {r: write_checkpoint(artifacts / f"clean{r}" / "final.pt", False, r)
                  for r in repeats}
    for r in repeats:
        cfg = make_config(repeat=r, seed=100 + r)
        add(cfg, make_result(cfg, CLEAN[r], trained=True, checkpoint=clean_ckpt[r]))
    for r in repeats:
        clean = CLEAN[r]
        for site, m in enumerate(LOG_MID_CLEAN):
            for s in SIGMAS:
                cfg = make_config(repeat=r, site=site, sigma=s, seed=rid)
                add(cfg, make_result(cfg, curve_accuracy(s, m, clean), trained=False,
                                     checkpoint=clean_ckpt[r]))
    for s in SIGMAS if global_curve else ():
        cfg = make_config(repeat=0, sigma=s, everywhere=True, seed=rid)
        add(cfg, make_result(cfg, curve_accuracy(s, LOG_MID_GLOBAL, CLEAN[0]), trained=False,
                             checkpoint=clean_ckpt[0]))
    for site, m in NOISY_SITES.items() if noisy else ():
        for s in SIGMAS:
            cfg = make_config(repeat=0, site=site, sigma=s, training=True, seed=rid)
            ckpt = write_checkpoint(artifacts / f"noisy_{site}_{s:g}" / "final.pt", True, rid)
            add(cfg, make_result(cfg, curve_accuracy(s, m, CLEAN[0]), trained=True,
                                 checkpoint=ckpt))
    return runs


#: log10 σ_mid per site of the walk run (a different trained model than the sweep's).
LOG_MID_WALK = [-0.5, 0.0, 0.2, -0.3, 0.4, 0.9, 0.6, -1.0]
WALK_CLEAN = 88.0


def build_walk_store(store: Path, artifacts: Path) -> dict:
    """One walk run (util.engine.walk's result shape): every site × SIGMAS × 2 evaluation repeats
    whose accuracies differ by ±1 around the curve (their mean is on it)."""
    ckpt = write_checkpoint(artifacts / "walked" / "final.pt", False, 7)
    walk = {"enabled": True, "noise_type": "GaussAdd", "sigmas": SIGMAS, "repeats": 2}
    cfg = make_config(repeat=0, seed=3, walk=walk)
    result = make_result(cfg, WALK_CLEAN, trained=False, checkpoint=ckpt)
    evaluations = []
    for site, m in enumerate(LOG_MID_WALK):
        for s in SIGMAS:
            base = curve_accuracy(s, m, WALK_CLEAN)
            for rep, delta in ((0, 1.0), (1, -1.0)):
                noise = {"noise_type": "GaussAdd", "GaussStd": s, "GaussMean": 0.0,
                         "enable_in_training": False, "enable_in_eval": True,
                         "normalize_to_input_size": False}
                evaluations.append({"site": site, "site_name": SITE_NAMES[site],
                                    "noise": noise, "sigma": s, "repeat": rep,
                                    "accuracy": base + delta, "loss": 1.0})
    result.update({"clean_accuracy": WALK_CLEAN, "clean_loss": 0.4, "chance": CHANCE,
                   "evaluations": evaluations, "sigma_mid": {}, "n_evaluations":
                   len(evaluations), "walk_seconds": 1.0})
    write_run(store, 1, cfg, result)
    return {1: (cfg, result)}


def mongo_documents(runs: dict) -> list[dict]:
    """The runs as seml stores them in MongoDB."""
    docs = []
    for rid, (cfg, result) in runs.items():
        docs.append({"_id": rid, "status": "COMPLETED", "config": cfg, "result": result,
                     "seml": {"executable": "train.py", "working_dir": "/tmp",
                              "description": "analysis test"},
                     "batch_id": 1, "config_hash": f"h{rid}",
                     "slurm": [{"array_id": 1, "task_id": rid}]})
    return docs
