"""train.py end to end on tiny on-disk data: every family, validation, determinism, resume
after SIGKILL, eval-only reuse, weight clamping, print_config."""
import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from data_fixtures import write_idx_dataset, write_speech_commands
from util.artifacts import load_torch
from util.config import merged_with_defaults
from util.engine.checkpoints import latest_checkpoint

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_idx_dataset(root / "MNIST" / "raw", n_train=256, n_test=64)
    return root


def base_updates(root, art, **extra):
    upd = {"data": {"dataset": "MNIST", "root": str(root), "download": False, "batch_size": 64},
           "general": {"num_epochs": 2}, "artifact_root": str(art), "device": "cpu"}
    for k, v in extra.items():
        upd[k] = v
    return upd


def flatten(d, prefix=""):
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += flatten(v, key + ".")
        else:
            out.append(f"{key}={json.dumps(v) if not isinstance(v, str) else v}")
    return out


def run_cli(args, cwd=ROOT, timeout=300, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([PY, "train.py", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **kw)


def stored_runs(store: Path):
    if not store.is_dir():
        return []
    return [d for d in store.iterdir() if d.is_dir() and d.name != "_sources"]


MODELS = {
    "LeNet": {"model_class": "LeNet", "LeNet": {"conf_name": "LeNet5-BN"}},
    "MLP": {"model_class": "MLP", "MLP": {"conf_name": "RL_TFC"}},
    "VGG": {"model_class": "VGG", "VGG": {"conf_name": "VGG11_mnist"}},
}


@pytest.mark.parametrize("family", sorted(MODELS))
def test_cli_trains_every_image_family_and_stores_the_run(family, mnist_root, tmp_path):
    upd = base_updates(mnist_root, tmp_path / "art", model=MODELS[family])
    store = tmp_path / "runs"
    proc = run_cli(["-F", str(store), "with", *flatten(upd)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = stored_runs(store)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "COMPLETED"
    result = run["result"]
    assert len(result["training"]["accuracy"]) == 2 and len(result["validation"]["loss"]) == 2
    assert 0.0 <= result["validation"]["accuracy"][-1] <= 100.0
    assert result["trained"] is True
    ckpt = Path(result["artifacts"]["checkpoint"])
    assert ckpt.is_file() and (tmp_path / "art") in ckpt.parents
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["validation.accuracy"]["values"] == result["validation"]["accuracy"]


def test_cli_trains_cnn_he_on_speech_commands_with_weighted_criterion(tmp_path):
    data = tmp_path / "data"
    write_speech_commands(data)
    upd = base_updates(data, tmp_path / "art",
                       model={"model_class": "CNN_HE", "weight_criterion": True,
                              "CNN_HE": {"conf_name": "CNN-S-BN"}})
    upd["data"].update({"dataset": "GSC2_PyTorch", "batch_size": 16})
    upd["general"]["num_epochs"] = 1
    store = tmp_path / "runs"
    proc = run_cli(["-F", str(store), "with", *flatten(upd)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = stored_runs(store)
    result = json.loads((run_dir / "run.json").read_text())["result"]
    assert len(result["sites"]) == 11 and result["num_classes"] == 12
    assert len(result["test"]["accuracy"]) == 1  # GSC2 has a separate test split


@pytest.mark.parametrize("update, key", [
    ("data.dataset=CIFAR100", "data.dataset"),
    ("model.LeNet.conf_name=LeNet7", "conf_name"),
    ("model.model_class=ResNet", "model_class"),
    ("noise_settings.layer_wise={'layer_index': 16, 'noise_type': 'GaussAdd', 'GaussStd': 1.0}",
     r"0..15"),
    ("noise_settings.default={'noise_type': 'GaussAdd', 'GaussStd': -1.0}", "GaussStd"),
    ("noise_settings.default={'noise_type': 'GaussAdd', 'GausStd': 1.0}", "GausStd"),
    ("model.LeNet.repetition_config={'global': 1, 'layer_wise_mapped': [1, 2, 3]}", "16 sites"),
    ("general.weight_clamping={'min': 1.0, 'max': -1.0}", "weight_clamping"),
    ("general.num_epochs=0", "num_epochs"),
    ("optimizer.lr=-0.1", "optimizer.lr"),
])
def test_invalid_config_exits_nonzero_naming_the_key_and_writes_nothing(update, key, tmp_path):
    store = tmp_path / "runs"
    art = tmp_path / "art"
    proc = run_cli(["-F", str(store), "with", update, f"artifact_root={art}"], timeout=120)
    assert proc.returncode != 0
    assert key.replace("..", ".") .split(".")[-1] in proc.stderr or key in proc.stderr, \
        proc.stderr[-2000:]
    assert "invalid config" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not store.exists() and not art.exists()


def test_print_config_shows_the_embedded_default():
    proc = run_cli(["print_config"], timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LeNet5-BN" in proc.stdout and "FashionMNIST" in proc.stdout
    assert "num_epochs = 5" in proc.stdout


# ---- in-process runs (faster) -------------------------------------------------------------

def run_inprocess(updates, run_store=None, **kw):
    from util.engine.experiment import run_experiment
    return run_experiment(merged_with_defaults(updates), run_store=run_store, progress=False, **kw)


def test_two_cpu_runs_of_the_same_config_give_identical_metrics(mnist_root, tmp_path):
    noisy = {"default": {"noise_type": "GaussAdd", "GaussStd": 0.2}}
    a = run_inprocess(base_updates(mnist_root, tmp_path / "a", noise_settings=noisy))
    b = run_inprocess(base_updates(mnist_root, tmp_path / "b", noise_settings=noisy))
    for section in ("training", "validation"):
        assert a[section] == b[section]
    c = run_inprocess(base_updates(mnist_root, tmp_path / "c", noise_settings=noisy,
                                   general={"num_epochs": 2, "repeat_number": 1}))
    assert c["training"] != a["training"]  # another repeat is another seed


def test_eval_only_config_reuses_the_noise_free_model_without_training(mnist_root, tmp_path,
                                                                       monkeypatch):
    art, store = tmp_path / "art", tmp_path / "runs"
    clean = run_inprocess(base_updates(mnist_root, art))
    assert clean["trained"]
    # the local store holds that run, as train.py's FileStorageObserver would write it
    (store / "1").mkdir(parents=True)
    (store / "1" / "run.json").write_text(json.dumps({"status": "COMPLETED", "result": clean}))
    (store / "1" / "config.json").write_text("{}")

    def no_step(*_a, **_k):
        raise AssertionError("an optimizer step was taken by an eval-only run")
    monkeypatch.setattr(torch.optim.Adam, "step", no_step)
    eval_noise = {"default": {"noise_type": "GaussAdd", "GaussStd": 2.0,
                              "enable_in_training": False, "enable_in_eval": True}}
    res = run_inprocess(base_updates(mnist_root, art, noise_settings=eval_noise), run_store=store)
    assert res["trained"] is False and res["checkpoint_source"] == "run_store"
    assert res["checkpoint_used"] == clean["checkpoint_used"]
    assert res["training"] == clean["training"]
    assert res["training_hash"] == clean["training_hash"]
    assert res["validation"]["accuracy"] != clean["validation"]["accuracy"][-1:]


def test_weight_clamping_holds_after_training(mnist_root, tmp_path):
    upd = base_updates(mnist_root, tmp_path / "art",
                       general={"num_epochs": 1, "weight_clamping": {"min": -0.05, "max": 0.05}})
    res = run_inprocess(upd)
    state = load_torch(res["checkpoint_used"])["model_state"]
    clamped = [v for k, v in state.items() if k.split(".")[0].startswith(("conv", "fc", "logits"))]
    assert clamped and all(v.abs().max().item() <= 0.05 + 1e-7 for v in clamped)
    assert any(v.abs().max().item() == pytest.approx(0.05) for v in clamped)
    bn = [v for k, v in state.items() if k.startswith("bn") and k.endswith("weight")]
    assert any(v.abs().max().item() > 0.05 for v in bn)  # BN is not clamped


def test_sigkill_mid_training_then_rerun_gives_identical_final_metrics(tmp_path):
    data = tmp_path / "data"
    write_idx_dataset(data / "MNIST" / "raw", n_train=4000, n_test=200)
    epochs = 3
    # an MLP keeps the epochs short; noise at every site keeps the noise RNG in the check
    upd = base_updates(data, tmp_path / "killed", general={"num_epochs": epochs},
                       model={"model_class": "MLP", "MLP": {"conf_name": "RL_TFC"}},
                       noise_settings={"default": {"noise_type": "GaussAdd", "GaussStd": 0.1}})
    upd["data"]["batch_size"] = 32
    args = ["-F", str(tmp_path / "runs_killed"), "with", *flatten(upd)]
    proc = subprocess.Popen([PY, "train.py", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if list(ckpts.glob("*/epoch_*.pt")):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (ckpt_dir,) = list(ckpts.iterdir())
    latest = latest_checkpoint(ckpt_dir)  # a kill at any moment leaves a verified checkpoint
    assert latest is not None and 1 <= load_torch(latest)["epoch"] < epochs
    assert not list(ckpts.glob("*/final.pt"))

    rerun = run_cli(args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    runs = sorted(stored_runs(tmp_path / "runs_killed"), key=lambda d: int(d.name))
    resumed = json.loads((runs[-1] / "run.json").read_text())["result"]
    assert resumed["resumed_from_epoch"] >= 1 and resumed["trained"]

    upd["artifact_root"] = str(tmp_path / "uninterrupted")
    whole = run_cli(["-F", str(tmp_path / "runs_whole"), "with", *flatten(upd)])
    assert whole.returncode == 0, whole.stderr[-3000:]
    (run_dir,) = stored_runs(tmp_path / "runs_whole")
    reference = json.loads((run_dir / "run.json").read_text())["result"]
    for section in ("training", "validation"):
        assert resumed[section] == reference[section]


def test_config_finishing_a_model_another_config_trained_evaluates_under_its_own_noise(
        mnist_root, tmp_path):
    """Eval-only jobs next to their noise-free run: one finds the other's complete last.pt
    (final.pt not yet written) and must not report the other's validation history."""
    art = tmp_path / "art"
    eval_a = {"default": {"noise_type": "GaussAdd", "GaussStd": 0.01, "enable_in_training": 0}}
    eval_b = {"default": {"noise_type": "GaussAdd", "GaussStd": 5.0, "enable_in_training": 0}}
    a = run_inprocess(base_updates(mnist_root, art, noise_settings=eval_a))
    assert a["trained"] and len(a["validation"]["accuracy"]) == 2
    final = Path(a["checkpoint_used"])
    final.unlink()
    Path(f"{final}.sha256").unlink()
    b = run_inprocess(base_updates(mnist_root, art, noise_settings=eval_b))
    assert b["training_hash"] == a["training_hash"] and b["epochs_run"] == 0
    assert b["training"] == a["training"]
    assert len(b["validation"]["accuracy"]) == 1  # evaluated once, under its own noise
    assert b["validation"]["loss"][0] != a["validation"]["loss"][-1]


def test_training_lock_makes_a_second_job_wait(tmp_path):
    import threading
    from util.engine.checkpoints import training_lock
    order = []

    def holder():
        with training_lock(tmp_path / "ck"):
            order.append("first in")
            time.sleep(0.5)
            order.append("first out")

    t = threading.Thread(target=holder)
    t.start()
    time.sleep(0.1)
    with training_lock(tmp_path / "ck"):
        order.append("second in")
    t.join()
    assert order == ["first in", "first out", "second in"]
