"""Hardening of the engine (issue 14): diverged training is marked, one config gives one answer,
the noise generator is recorded, locations are checked up front, files honour the umask,
SIGTERM interrupts cleanly, stale temporaries are removed, a corrupt final.pt is reported."""
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from data_fixtures import write_idx_dataset
from util.artifacts import atomic_copy, atomic_write_bytes, load_torch, save_torch, verify
from util.cluster import REPO_ROOT, LocationError, artifact_root, data_root
from util.config import ConfigError, merged_with_defaults, validate_config
from util.engine.checkpoints import latest_checkpoint, save_epoch_checkpoint
from util.engine.experiment import run_experiment

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
MLP = {"model_class": "MLP", "MLP": {"conf_name": "RL_TFC-noBN"}}


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_idx_dataset(root / "MNIST" / "raw", n_train=256, n_test=64)
    return root


def updates(root, art, epochs=2, noise=None, **extra):
    upd = {"data": {"dataset": "MNIST", "root": str(root), "download": False, "batch_size": 64},
           "general": {"num_epochs": epochs}, "artifact_root": str(art), "device": "cpu",
           "model": MLP}
    if noise is not None:
        upd["noise_settings"] = {"default": noise}
    upd.update(extra)
    return upd


def run_inprocess(upd, **kw):
    return run_experiment(merged_with_defaults(upd), progress=False, **kw)


def flatten(d, prefix=""):
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += flatten(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}={v if isinstance(v, str) else repr(v)}")
    return out


def run_cli(args, env=None, timeout=300):
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([PY, "train.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def stored_results(store: Path) -> list[dict]:
    runs = sorted((d for d in store.iterdir() if d.is_dir() and d.name.isdigit()),
                  key=lambda d: int(d.name))
    return [json.loads((d / "run.json").read_text()) for d in runs]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---- divergence ----------------------------------------------------------------------------

def test_diverging_training_stops_and_marks_result_and_checkpoints(mnist_root, tmp_path, caplog):
    # σ = 1e10 multiplicative noise at all 8 sites: activations overflow float32 at once
    upd = updates(mnist_root, tmp_path / "art", epochs=3,
                  noise={"noise_type": "GaussMul", "GaussStd": 1e10})
    with caplog.at_level(logging.WARNING):
        res = run_inprocess(upd)
    assert res["diverged"] == {"epoch": 1, "what": "loss"}
    assert len(res["training"]["loss"]) == 1 and res["epochs_run"] == 1  # stopped at once
    assert any("diverged in epoch 1/3" in r.getMessage() for r in caplog.records)
    final = Path(res["checkpoint_used"])
    assert final.name == "final.pt"
    assert load_torch(final)["diverged"] == {"epoch": 1, "what": "loss"}
    assert load_torch(latest_checkpoint(final.parent))["diverged"] == {"epoch": 1, "what": "loss"}
    again = run_inprocess(upd)  # a reuse says so too
    assert again["trained"] is False and again["diverged"] == {"epoch": 1, "what": "loss"}


def test_normal_training_is_not_marked_diverged(mnist_root, tmp_path):
    res = run_inprocess(updates(mnist_root, tmp_path / "art", epochs=1))
    assert res["diverged"] is None
    assert load_torch(res["checkpoint_used"])["diverged"] is None


def test_non_finite_names_the_loss_or_the_weights():
    from util.engine.loops import non_finite
    model = torch.nn.Linear(3, 2)
    assert non_finite(0.5, model) is None
    assert non_finite(float("nan"), model) == "loss"
    assert non_finite(float("inf"), model) == "loss"
    with torch.no_grad():
        model.weight[0, 1] = float("inf")
    assert non_finite(0.5, model) == "weights"
    bn = torch.nn.BatchNorm1d(2)
    bn.running_var[0] = float("nan")  # a buffer counts too
    assert non_finite(0.5, bn) == "weights"


# ---- one config, one answer ----------------------------------------------------------------

@pytest.mark.parametrize("noise", [
    {"noise_type": "GaussAdd", "GaussStd": 0.5},  # noisy training and evaluation
    {"noise_type": "GaussAdd", "GaussStd": 0.5, "enable_in_training": False},  # eval-only
], ids=["noisy_training", "eval_only"])
def test_a_rerun_reusing_the_model_reports_the_final_metrics_of_the_run_that_trained(
        noise, mnist_root, tmp_path):
    upd = updates(mnist_root, tmp_path / "art", noise=noise)
    first = run_inprocess(upd)
    second = run_inprocess(upd)
    assert first["trained"] and not second["trained"]
    assert second["final"] == first["final"]
    assert first["final"]["validation_accuracy"] == first["validation"]["accuracy"][-1]


def test_two_concurrent_runs_of_one_config_report_identical_final_metrics(mnist_root, tmp_path):
    upd = updates(mnist_root, tmp_path / "art", noise={"noise_type": "GaussAdd", "GaussStd": 0.5})
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = [subprocess.Popen([PY, "train.py", "-F", str(tmp_path / f"runs{i}"), "with",
                               *flatten(upd)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    a, b = (stored_results(tmp_path / f"runs{i}")[0]["result"] for i in range(2))
    assert sorted([a["trained"], b["trained"]]) == [False, True]  # one trained, one reused
    assert a["final"] == b["final"]


# ---- noise generator -----------------------------------------------------------------------

def test_fallback_generator_warns_is_recorded_and_a_reuse_names_the_training_generator(
        mnist_root, tmp_path, caplog):
    from noise import fast_rng
    if not fast_rng.available():
        pytest.skip("no C compiler: the compiled kernel cannot be compared with the fallback")
    (tmp_path / "afile").write_text("")
    upd = updates(mnist_root, tmp_path / "art", epochs=1,
                  noise={"noise_type": "GaussAdd", "GaussStd": 0.5})
    proc = run_cli(["-F", str(tmp_path / "runs"), "with", *flatten(upd)],
                   env={"WN_CACHE_DIR": str(tmp_path / "afile" / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = " ".join((proc.stdout + proc.stderr).split())  # the console wraps long lines
    assert err.count("no compiled Gaussian kernel") == 1, err[-3000:]  # once per process
    at = err.index("no compiled Gaussian kernel")
    assert "WARNING" in err[at - 40:at] and "(cannot write to" in err[at:at + 80]
    fallback = stored_results(tmp_path / "runs")[0]["result"]
    assert fallback["noise_generator"] == "torch.randn"
    assert fallback["training_noise_generator"] == "torch.randn"
    assert load_torch(fallback["checkpoint_used"])["noise_generator"] == "torch.randn"

    with caplog.at_level(logging.WARNING):
        reuse = run_inprocess(upd)  # this process has the kernel
    assert reuse["trained"] is False and reuse["noise_generator"] == "fast_rng"
    assert reuse["training_noise_generator"] == "torch.randn"
    assert any("trained with torch.randn noise" in r.getMessage() for r in caplog.records)


# ---- locations -----------------------------------------------------------------------------

def test_relative_roots_resolve_against_the_repository_root_not_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert artifact_root("my_art", environ={}) == REPO_ROOT / "my_art"
    assert artifact_root(None, environ={"WALKING_NOISE_ARTIFACT_ROOT": "a/../b"}) == \
        REPO_ROOT / "b"
    monkeypatch.setenv("WALKING_NOISE_DATA_ROOT", "datasets")
    assert data_root() == REPO_ROOT / "datasets"
    assert data_root("d") == REPO_ROOT / "d"
    assert artifact_root(str(tmp_path / "abs"), environ={}) == tmp_path / "abs"
    for bad in ("../../etc", "a/../../x"):
        with pytest.raises(LocationError, match="artifact_root"):
            artifact_root(bad, environ={})
        with pytest.raises(LocationError, match="data.root"):
            data_root(bad)
        # and validation reports it as the config key's error, before anything runs
        with pytest.raises(ConfigError, match="artifact_root='" + bad):
            validate_config(merged_with_defaults({"artifact_root": bad}))
        with pytest.raises(ConfigError, match="data.root='" + bad):
            validate_config(merged_with_defaults({"data": {"root": bad}}))
    for key, upd in (("artifact_root", {"artifact_root": 5}),
                     ("data.root", {"data": {"root": ["x"]}})):
        with pytest.raises(ConfigError, match=f"{key} must be a folder path"):
            validate_config(merged_with_defaults(upd))


def test_ensure_writable_dir_reports_files_and_unwritable_places_and_leaves_nothing(tmp_path):
    from util.cluster import LocationError, ensure_writable_dir
    (tmp_path / "afile").write_text("x")
    with pytest.raises(LocationError, match=r"artifact_root: .*afile is a file"):
        ensure_writable_dir(tmp_path / "afile", "artifact_root")
    with pytest.raises(LocationError, match=r"data\.root: .*sub cannot be created"):
        ensure_writable_dir(tmp_path / "afile" / "sub", "data.root")
    with pytest.raises(LocationError, match="/proc/1"):  # not writable, even for root
        ensure_writable_dir("/proc/1/art", "artifact_root")
    assert ensure_writable_dir(tmp_path / "new" / "deep", "x") == tmp_path / "new" / "deep"
    assert ensure_writable_dir(tmp_path, "x") == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no probe, no folder


def _bad_location_cases(tmp):
    afile = tmp / "afile"
    return {
        "artifact_root_is_a_file": (["with", f"artifact_root={afile}"], "artifact_root",
                                    str(afile)),
        "artifact_root_under_a_file": (["with", f"artifact_root={afile / 'sub'}"],
                                       "artifact_root", str(afile / "sub")),
        "artifact_root_unwritable": (["with", "artifact_root=/proc/1/art"], "artifact_root",
                                     "/proc/1/art"),
        "artifact_root_climbing_out": (
            ["with", f"artifact_root={os.path.relpath(tmp / 'art', REPO_ROOT)}"],
            "artifact_root", "may not leave it"),
        "data_root_to_download_into": (["with", f"data.root={afile / 'sub'}", "data.download=True"],
                                       "data.root", str(afile / "sub")),
        "run_store_is_a_file": (["-F", str(afile)], "run store", str(afile)),
        "run_store_under_a_file": (["-F", str(afile / "runs")], "run store", str(afile / "runs")),
        "run_store_unwritable": (["-F", "/proc/1"], "run store", "/proc/1"),
    }


@pytest.mark.parametrize("case", sorted(_bad_location_cases(Path("/x"))))
def test_a_bad_location_is_refused_up_front_with_its_key_and_path(case, mnist_root, tmp_path):
    (tmp_path / "afile").write_text("")
    args, key, path = _bad_location_cases(tmp_path)[case]
    base = updates(mnist_root, tmp_path / "art", epochs=1)
    base_args = flatten(base)
    if args[0] == "-F":
        args = [*args, "with", *base_args]
    else:  # the case's settings come after (and override) the base ones
        args = ["-F", str(tmp_path / "runs"), "with", *base_args, *args[1:]]
    proc = run_cli(args, timeout=120)
    assert proc.returncode != 0
    assert key in proc.stderr and path in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no run, no checkpoint


# ---- umask ---------------------------------------------------------------------------------

@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_checkpoints_and_artifacts_honour_the_umask(umask, mode, tmp_path):
    old = os.umask(umask)
    try:
        ckpt_dir = tmp_path / "checkpoints" / "h"
        epoch = save_epoch_checkpoint(ckpt_dir, 1, {"epoch": 1, "w": torch.ones(3)})
        final = save_torch({"epoch": 1}, tmp_path / "checkpoints", "h/final.pt")
        table = atomic_write_bytes(tmp_path / "walks" / "evaluations.csv", b"a,b\n")
        copy = atomic_copy(final, tmp_path / "copies", "final.pt")
    finally:
        os.umask(old)
    for path in (epoch, ckpt_dir / "last.pt", final, table, copy):
        for p in (path, Path(f"{path}.sha256")):
            assert p.stat().st_mode & 0o777 == mode, (p, oct(p.stat().st_mode))


# ---- SIGTERM -------------------------------------------------------------------------------

def test_sigterm_marks_the_run_interrupted_and_a_rerun_resumes_to_the_same_metrics(tmp_path):
    data = tmp_path / "data"
    write_idx_dataset(data / "MNIST" / "raw", n_train=1000, n_test=100)
    epochs = 3
    upd = updates(data, tmp_path / "stopped", epochs=epochs,
                  noise={"noise_type": "GaussAdd", "GaussStd": 0.1})
    upd["data"]["batch_size"] = 32
    args = ["-F", str(tmp_path / "runs_stopped"), "with", *flatten(upd)]
    proc = subprocess.Popen([PY, "train.py", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    ckpts = tmp_path / "stopped" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if list(ckpts.glob("*/epoch_*.pt")):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    (stopped,) = stored_results(tmp_path / "runs_stopped")
    assert stopped["status"] == "INTERRUPTED"
    (ckpt_dir,) = list(ckpts.iterdir())
    latest = latest_checkpoint(ckpt_dir)
    assert latest is not None and 1 <= load_torch(latest)["epoch"] < epochs
    assert not (ckpt_dir / "final.pt").exists()

    rerun = run_cli(args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = stored_results(tmp_path / "runs_stopped")[-1]["result"]
    assert resumed["resumed_from_epoch"] >= 1 and resumed["trained"]
    upd["artifact_root"] = str(tmp_path / "whole")
    whole = run_cli(["-F", str(tmp_path / "runs_whole"), "with", *flatten(upd)])
    assert whole.returncode == 0, whole.stderr[-3000:]
    reference = stored_results(tmp_path / "runs_whole")[0]["result"]
    for section in ("training", "validation", "final"):
        assert resumed[section] == reference[section]


def test_interrupt_on_sigterm_raises_keyboard_interrupt_and_restores_the_handler():
    from util.signals import interrupt_on_sigterm
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with interrupt_on_sigterm():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises first
    assert signal.getsignal(signal.SIGTERM) is before


# ---- stale temporaries ---------------------------------------------------------------------

def test_writers_remove_stale_temporaries_but_never_a_live_writers(tmp_path, monkeypatch):
    from util.artifacts import remove_stale_temporaries
    host = socket.gethostname()
    folder = tmp_path / "checkpoints" / "h"
    folder.mkdir(parents=True)
    dead = folder / f".epoch_0001.pt.{host}.{dead_pid()}.0a1b2c3d.tmp"
    live = folder / f".epoch_0001.pt.{host}.{os.getpid()}.0a1b2c3e.tmp"
    other_fresh = folder / ".final.pt.other-node.cluster.1234.0a1b2c3f.tmp"
    other_old = folder / ".final.pt.other-node.cluster.1235.0a1b2c40.tmp"
    unrelated = folder / "notes.tmp"
    for p in (dead, live, other_fresh, other_old, unrelated):
        p.write_bytes(b"partial")
    day_ago = time.time() - 25 * 3600
    os.utime(other_old, (day_ago, day_ago))
    # a killed epoch write left a hard link to an epoch checkpoint that was deleted later
    kept = folder / "epoch_0000.pt"
    kept.write_bytes(b"old epoch")
    stale_link = folder / f".last.pt.{host}.{dead_pid()}.0a1b2c41.tmp"
    os.link(kept, stale_link)
    kept.unlink()

    links = []
    real_link = os.link

    def recording_link(src, dst, *a, **k):
        links.append(Path(dst).name)
        return real_link(src, dst, *a, **k)
    monkeypatch.setattr(os, "link", recording_link)
    save_epoch_checkpoint(folder, 1, {"epoch": 1})
    left = {p.name for p in folder.iterdir()}
    assert live.name in left and other_fresh.name in left and unrelated.name in left
    assert dead.name not in left and other_old.name not in left and stale_link.name not in left
    assert not [n for n in left if n.endswith(".tmp") and n not in (live.name, other_fresh.name,
                                                                      unrelated.name)]
    # the hard-link temporary follows the pattern too
    assert len(links) == 1 and links[0].startswith(f".last.pt.{host}.{os.getpid()}.")
    assert links[0].endswith(".tmp")
    assert remove_stale_temporaries(folder) == 0  # nothing stale is left


def test_remove_stale_temporaries_counts_what_it_removed(tmp_path):
    from util.artifacts import remove_stale_temporaries
    host = socket.gethostname()
    for i in range(3):
        (tmp_path / f".x.bin.{host}.{dead_pid()}.00{i}.tmp").write_bytes(b"")
    (tmp_path / f".x.bin.{host}.{os.getpid()}.00f.tmp").write_bytes(b"")
    assert remove_stale_temporaries(tmp_path) == 3
    assert remove_stale_temporaries(tmp_path / "missing") == 0


# ---- corrupt final.pt ----------------------------------------------------------------------

def test_a_corrupt_final_checkpoint_is_reported_and_replaced_from_the_epoch_checkpoint(
        mnist_root, tmp_path, caplog):
    upd = updates(mnist_root, tmp_path / "art", noise={"noise_type": "GaussAdd", "GaussStd": 0.3})
    first = run_inprocess(upd)
    final = Path(first["checkpoint_used"])
    data = bytearray(final.read_bytes())
    data[len(data) // 2] ^= 0xFF
    final.write_bytes(bytes(data))
    assert not verify(final)
    with caplog.at_level(logging.WARNING):
        second = run_inprocess(upd)
    assert any(str(final) in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)
    assert second["trained"] is False and second["epochs_run"] == 0
    assert second["checkpoint_source"] == "epoch_checkpoint"
    assert second["replaced_corrupt_checkpoint"] == str(final)
    assert verify(final) and second["final"] == first["final"]
    assert first["replaced_corrupt_checkpoint"] is None


def test_a_zombie_writer_is_dead_so_its_temporary_is_removed(tmp_path):
    """A SIGKILLed writer stays a zombie until its parent reaps it; its files are closed, so a
    job that takes over (the training lock is free at once) must treat it as dead."""
    from util.artifacts import remove_stale_temporaries
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proc.send_signal(signal.SIGKILL)
        deadline = time.time() + 10
        while Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1][0] != "Z":
            assert time.time() < deadline
            time.sleep(0.02)
        stale = tmp_path / f".last.pt.sha256.{socket.gethostname()}.{proc.pid}.00ff00ff.tmp"
        stale.write_bytes(b"x")
        assert remove_stale_temporaries(tmp_path) == 1
        assert not stale.exists()
    finally:
        proc.wait()


def test_last_pt_left_unverifiable_by_a_kill_is_pointed_again_before_final(mnist_root, tmp_path):
    """A kill between last.pt's sidecar rename and its link rename leaves a last.pt that fails
    its checksum; when the resumed run has no epoch left, it must still leave last.pt verified."""
    upd = updates(mnist_root, tmp_path / "art", epochs=1)
    first = run_inprocess(upd)
    ckpt_dir = Path(first["checkpoint_used"]).parent
    Path(f"{ckpt_dir / 'final.pt'}").unlink()  # as if killed before final.pt was written
    Path(f"{ckpt_dir / 'last.pt'}.sha256").write_text("0" * 64)  # the sidecar of a newer epoch
    assert not verify(ckpt_dir / "last.pt")
    again = run_inprocess(upd)
    assert again["epochs_run"] == 0 and again["checkpoint_source"] == "epoch_checkpoint"
    assert verify(ckpt_dir / "last.pt") and verify(ckpt_dir / "final.pt")
    assert again["final"] == first["final"]


def test_a_row_of_non_finite_logits_predicts_nothing_in_every_loop():
    """torch's argmax of a NaN row is the NaN's class; a sample without finite logits must count
    as wrong in training, evaluation and the walk alike (one rule: correct_predictions)."""
    from util.engine.loops import correct_predictions, evaluate
    nan = float("nan")
    logits = torch.tensor([[nan, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, float("inf"), 0.0],
                           [0.0, 0.0, 1.0]])
    y = torch.tensor([0, 0, 1, 2])
    assert int((logits.argmax(1) == y).sum()) == 4  # what a bare argmax counts
    assert int(correct_predictions(logits, y)) == 2

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return logits[x.long()]

    loss, acc = evaluate(Fixed(), [(torch.arange(4), y)], torch.nn.CrossEntropyLoss())
    assert acc == 50.0
