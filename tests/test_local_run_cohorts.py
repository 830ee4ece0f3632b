"""``python -m util.local_run <yaml> --cohorts`` (issue 16): compatible experiments train as
cohorts and each is stored as its own COMPLETED run, indistinguishable from running them one
by one (config hashes, results, metrics, checkpoints, analysis rows); a rerun skips them;
experiments that cannot share batches go to separate cohorts; claims, a failing cohort and a
SIGKILLed runner leave every experiment COMPLETED exactly once."""
from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from analysis.results import load_results
from data_fixtures import write_idx_dataset
from util import local_run
from util.artifacts import load_torch
from util.config import config_hash, strip_bookkeeping
from util.engine.precomputed import Precomputed, handing_over, take_precomputed
from util.local_run.__main__ import train_experiment
from util.local_run.cohorts import form_cohorts
from util.run_store import iter_runs

ROOT = Path(__file__).resolve().parent.parent
# one thread, so that floats cannot depend on the thread count of a process
ENV = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

#: a noise-free model, an eval-only config on it, and four noisy trainings (two sites x two σ)
LAYER_WISE = """
noise_free:
  fixed:
    noise_settings.layer_wise: null
eval_only:
  fixed:
    noise_settings.layer_wise.noise_type: GaussAdd
    noise_settings.layer_wise.layer_index: 3
    noise_settings.layer_wise.GaussStd: 0.5
    noise_settings.layer_wise.enable_in_training: 0
noisy:
  fixed:
    noise_settings.layer_wise.noise_type: GaussAdd
  grid:
    noise_settings.layer_wise.layer_index:
      type: choice
      options: [1, 4]
    noise_settings.layer_wise.GaussStd:
      type: choice
      options: [0.1, 0.5]
"""
#: what may differ between a stored result of a cohort member and of its own run: timings,
#: paths in another artifact root, where a reused model was found
RUN_KEYS = {"seconds", "epoch_seconds", "artifacts", "checkpoint_used", "checkpoint_source"}


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_idx_dataset(root / "MNIST" / "raw", n_train=256, n_test=64)
    return root


def write_yaml(path: Path, data_root: Path, body: str, *, epochs: int = 2,
               artifact_root: Path | None = None, batch_size: int = 64,
               strategy: str | None = None) -> Path:
    art = f"  artifact_root: {artifact_root}\n" if artifact_root else ""
    if strategy:
        art += f"  cohort.strategy: {strategy}\n"
    path.write_text(f"""seml:
  executable: train.py
  name: test_local_run_cohorts
  description: cohorts of the local runner
  output_dir: logs
  project_root_dir: {ROOT}
slurm:
  - sbatch_options: {{}}
fixed:
  general.num_epochs: {epochs}
  data.dataset: MNIST
  data.root: {data_root}
  data.download: false
  data.batch_size: {batch_size}
  device: cpu
  model.model_class: MLP
  model.MLP.conf_name: RL_TFC
{art}{body}""")
    return path


def run_main(args):
    out = io.StringIO()
    code = local_run.main(["--no-progress", "-q", *args], out=out, experiment=train_experiment)
    return code, out.getvalue()


def stored(store: Path) -> dict[str, dict]:
    """Every run of the store by config hash: status, config, result, metrics (one run per
    hash, asserted)."""
    runs: dict[str, dict] = {}
    for d in sorted(p for p in store.iterdir() if p.name.isdigit()):
        run = json.loads((d / "run.json").read_text())
        run["config"] = json.loads((d / "config.json").read_text())
        metrics = d / "metrics.json"
        run["metrics"] = json.loads(metrics.read_text()) if metrics.exists() else {}
        h = config_hash(run["config"])
        assert h not in runs, f"two runs of {h} in {store}"
        runs[h] = run
    return runs


def comparable(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in RUN_KEYS}


def model_state(result: dict) -> dict:
    return load_torch(result["checkpoint_used"], map_location="cpu")["model_state"]


def test_cohorts_store_exactly_the_runs_of_one_by_one_and_a_rerun_skips_them(
        mnist_root, tmp_path, monkeypatch):
    # member-serial: every member is bit for bit its single run (vectorised is so only up to
    # float rounding and with its own noise draws: docs/cohort.md)
    yaml_file = write_yaml(tmp_path / "layer_wise.yaml", mnist_root, LAYER_WISE,
                           strategy="member-serial")
    # the artifact root from the environment, so that both stores hold the same config hashes
    monkeypatch.setenv("WALKING_NOISE_ARTIFACT_ROOT", str(tmp_path / "art_single"))
    code, out_single = run_main([str(yaml_file), "-F", str(tmp_path / "single")])
    assert code == 0, out_single
    monkeypatch.setenv("WALKING_NOISE_ARTIFACT_ROOT", str(tmp_path / "art_cohort"))
    code, out = run_main([str(yaml_file), "-F", str(tmp_path / "cohort"), "--cohorts"])
    assert code == 0, out
    assert "in 1 cohort(s): 1 trained together (sizes 6), 0 alone" in out
    # five models trained (noise-free, four noisy), the eval-only one reused, both ways
    assert "6 done (5 trained a model, 1 reused one; 6 of them trained or evaluated in " \
           "cohorts)" in out
    assert "6 done (5 trained a model, 1 reused one)" in out_single

    single, cohort = stored(tmp_path / "single"), stored(tmp_path / "cohort")
    assert set(cohort) == set(single) and len(cohort) == 6
    sigmas = set()
    for h, run in cohort.items():
        alone = single[h]
        assert run["status"] == alone["status"] == "COMPLETED"
        assert strip_bookkeeping(run["config"]) == strip_bookkeeping(alone["config"])
        assert run["result"]["config_hash"] == h
        assert comparable(run["result"]) == comparable(alone["result"]), h
        assert run["metrics"].keys() == alone["metrics"].keys()
        for name, series in run["metrics"].items():
            assert (series["steps"], series["values"]) == \
                (alone["metrics"][name]["steps"], alone["metrics"][name]["values"]), name
        a, b = model_state(run["result"]), model_state(alone["result"])
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a), h
        assert run["result"]["checkpoint_used"].startswith(str(tmp_path / "art_cohort"))
        sigmas.add(run["result"]["final"]["validation_loss"])
    assert len(sigmas) >= 5  # the noisy trainings did differ
    trained = {h: r["result"]["trained"] for h, r in cohort.items()}
    assert sorted(trained.values()) == [False, True, True, True, True, True]
    # the noise-free member trained (its history per epoch), as it does one by one
    noise_free = next(r for r in cohort.values()
                      if r["config"]["noise_settings"]["layer_wise"] is None)
    assert noise_free["result"]["trained"] is True
    assert len(noise_free["result"]["training"]["loss"]) == 2

    # the analysis reads the same rows from both stores
    drop = ["run_id", "checkpoint"]
    frames = [load_results(tmp_path / s).drop(columns=drop).sort_values("config_hash")
              .reset_index(drop=True) for s in ("single", "cohort")]
    assert len(frames[1]) == 6
    assert frames[0].equals(frames[1])

    # a rerun finds everything completed and runs nothing
    code, out = run_main([str(yaml_file), "-F", str(tmp_path / "cohort"), "--cohorts"])
    assert code == 0, out
    assert "6 already completed (skipped)" in out and "0 to run" in out
    assert len(list((tmp_path / "cohort").glob("[0-9]*"))) == 6


def test_experiments_that_cannot_share_batches_go_to_separate_cohorts(mnist_root, tmp_path):
    yaml_file = write_yaml(tmp_path / "lr.yaml", mnist_root, """
noisy:
  grid:
    optimizer.lr:
      type: choice
      options: [0.001, 0.01]
    noise_settings.layer_wise.layer_index:
      type: choice
      options: [1, 4, 7]
  fixed:
    noise_settings.layer_wise.noise_type: GaussAdd
    noise_settings.layer_wise.GaussStd: 0.1
walk_alone:
  fixed:
    walk.enabled: true
    walk.sigmas: [0.1]
  grid:
    walk.repeats:
      type: choice
      options: [1, 2]
""")
    p = local_run.plan(yaml_file, store=tmp_path / "runs", cohort_size=64)
    grid = [e for e in p.to_run if e.config["walk"]["enabled"] is not True]
    walks = [e for e in p.to_run if e.config["walk"]["enabled"] is True]
    assert len(grid) == 6 and len(walks) == 2
    cohorts = [c for c in p.cohorts if len(c) > 1]
    assert [len(c) for c in cohorts] == [3, 3]
    assert [{e.config["optimizer"]["lr"] for e in c} for c in cohorts] == [{0.001}, {0.01}]
    assert [{e.config["noise_settings"]["layer_wise"]["layer_index"] for e in c}
            for c in cohorts] == [{1, 4, 7}, {1, 4, 7}]
    # a walk runs alone; every experiment to run is in exactly one cohort
    assert sorted(len(c) for c in p.cohorts) == [1, 1, 3, 3]
    assert sorted(e.index for c in p.cohorts for e in c) == sorted(e.index for e in p.to_run)

    # --cohort-size cuts a group; --max counts experiments, before grouping
    p = local_run.plan(yaml_file, store=tmp_path / "runs", cohort_size=2)
    assert sorted(len(c) for c in p.cohorts) == [1, 1, 1, 1, 2, 2]
    p = local_run.plan(yaml_file, store=tmp_path / "runs", cohort_size=64, max_runs=4)
    assert sum(len(c) for c in p.cohorts) == 4

    code, out = run_main([str(yaml_file), "-F", str(tmp_path / "runs"), "--dry-run",
                          "--cohorts", "--cohort-size", "2"])
    assert code == 0, out
    assert "in 6 cohort(s): 2 trained together (sizes 2 x2), 4 alone" in out
    assert out.count("would run [") == 8
    headers = [line.strip() for line in out.splitlines() if line.strip().startswith("cohort ")]
    assert len(headers) == 6 and headers[0].startswith("cohort 1/6: ")
    assert not (tmp_path / "runs").exists()


def test_form_cohorts_keeps_run_order_and_places_a_group_where_it_starts():
    exps = [SimpleNamespace(index=i) for i in range(7)]
    keys = {0: "a", 1: "b", 2: "a", 3: None, 4: "b", 5: "a", 6: "a"}
    assert [[e.index for e in c] for c in form_cohorts(exps, keys, 3)] == \
        [[0, 2, 5], [6], [1, 4], [3]]
    with pytest.raises(ValueError, match="at least 1"):
        form_cohorts(exps, keys, 0)


def test_cohort_size_without_cohorts_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_main([str(tmp_path / "x.yaml"), "--cohort-size", "4"])
    assert "--cohort-size needs --cohorts" in capsys.readouterr().err


def test_a_result_handed_over_is_taken_once_by_its_config_with_its_metrics():
    config = {"general": {"num_epochs": 1}, "seed": 7}  # sacred's seed is not hashed
    h = config_hash({"general": {"num_epochs": 1}})
    logged = []
    with handing_over({h: Precomputed({"final": {"x": 1.0}}, (("a", 0.5, 0), ("a", 0.25, 1)))}
                      ) as pending:
        assert take_precomputed({"general": {"num_epochs": 2}}) is None
        result = take_precomputed(config, lambda *m: logged.append(m))
        assert result == {"final": {"x": 1.0}} and logged == [("a", 0.5, 0), ("a", 0.25, 1)]
        assert pending == {} and take_precomputed(config) is None
    assert take_precomputed(config) is None


def test_members_claimed_elsewhere_are_left_out_and_a_failing_cohort_runs_one_by_one(
        mnist_root, tmp_path, monkeypatch):
    yaml_file = write_yaml(tmp_path / "three.yaml", mnist_root, """
sweep:
  grid:
    noise_settings.layer_wise.layer_index:
      type: choice
      options: [1, 4, 7]
  fixed:
    noise_settings.layer_wise.noise_type: GaussAdd
    noise_settings.layer_wise.GaussStd: 0.1
""", epochs=1, artifact_root=tmp_path / "art")
    store = tmp_path / "runs"
    first, second, third = local_run.plan(yaml_file, store=store).to_run
    trained_together = []
    train_cohort = local_run.train_cohort

    def recording(members, *a, **kw):
        trained_together.append([e.config_hash for e in members])
        return train_cohort(members, *a, **kw)
    monkeypatch.setattr(local_run, "train_cohort", recording)
    (store / ".claims").mkdir(parents=True)
    with open(store / ".claims" / f"{second.config_hash}.lock", "a+") as f:  # another runner
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, out = run_main([str(yaml_file), "-F", str(store), "--cohorts"])
    assert code == 0, out
    assert "2 done" in out and "1 running elsewhere" in out
    assert trained_together == [[first.config_hash, third.config_hash]]
    runs = stored(store)
    assert set(runs) == {first.config_hash, third.config_hash}
    assert all(r["status"] == "COMPLETED" and r["result"]["trained"] for r in runs.values())
    # every claim was released: another runner can take them now
    for e in (first, third):
        with open(store / ".claims" / f"{e.config_hash}.lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)

    # a cohort that raises: its members run one by one and complete
    yaml_two = write_yaml(tmp_path / "two.yaml", mnist_root, """
sweep:
  grid:
    noise_settings.layer_wise.GaussStd:
      type: choice
      options: [0.2, 0.3]
  fixed:
    noise_settings.layer_wise.noise_type: GaussAdd
    noise_settings.layer_wise.layer_index: 1
""", epochs=1, artifact_root=tmp_path / "art")

    def failing(members, *a, **kw):
        raise RuntimeError("out of memory for two models")
    monkeypatch.setattr(local_run, "train_cohort", failing)
    warnings = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logger = logging.getLogger("util.local_run")  # seml's log setup stops it reaching caplog
    logger.addHandler(handler)
    try:
        code, out = run_main([str(yaml_two), "-F", str(tmp_path / "fallback"), "--cohorts"])
    finally:
        logger.removeHandler(handler)
    assert code == 0, out
    assert "2 done (2 trained a model, 0 reused one; 0 of them trained or evaluated in " \
           "cohorts)" in out
    assert "the cohort of 2 failed (RuntimeError: out of memory for two models); running its " \
           "members one by one" in warnings
    runs = stored(tmp_path / "fallback")
    assert len(runs) == 2 and all(r["status"] == "COMPLETED" for r in runs.values())


def test_a_runner_killed_mid_cohort_then_rerun_completes_every_member_once_as_one_by_one(
        mnist_root, tmp_path):
    art = tmp_path / "art"
    body = """
sweep:
  grid:
    noise_settings.layer_wise.layer_index:
      type: choice
      options: [1, 4, 7]
  fixed:
    noise_settings.layer_wise.noise_type: GaussAdd
    noise_settings.layer_wise.GaussStd: 0.2
"""
    yaml_file = write_yaml(tmp_path / "kill.yaml", mnist_root, body, epochs=3, batch_size=32,
                           strategy="member-serial")
    env = dict(ENV, WALKING_NOISE_ARTIFACT_ROOT=str(art))

    def runner(store: Path, *extra: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "util.local_run", str(yaml_file), "-F", str(store),
             "--no-progress", "-q", *extra], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)

    store = tmp_path / "runs"
    proc = runner(store, "--cohorts", env=env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None \
            and not list(art.glob("checkpoints/*/epoch_*.pt")):
        time.sleep(0.005)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    # killed while training: no member recorded, some epoch checkpoints written
    assert not any(r.status == "COMPLETED" for r in iter_runs(store))
    assert list(art.glob("checkpoints/*/epoch_*.pt"))

    rerun = runner(store, "--cohorts", env=env)
    out = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, out[-3000:]
    assert "3 done (3 trained a model, 0 reused one; 3 of them trained or evaluated in " \
           "cohorts)" in out
    runs = stored(store)  # one run per experiment, asserted there
    planned = {e.config_hash for e in local_run.plan(yaml_file, store=tmp_path / "x").to_run}
    assert set(runs) == planned and all(r["status"] == "COMPLETED" for r in runs.values())
    assert max(r["result"]["resumed_from_epoch"] for r in runs.values()) >= 1

    # the same final models and metrics as running them one by one, uninterrupted
    reference = runner(tmp_path / "single", env=dict(env, WALKING_NOISE_ARTIFACT_ROOT=str(
        tmp_path / "art_single")))
    out = reference.communicate(timeout=300)[0]
    assert reference.returncode == 0, out[-3000:]
    single = stored(tmp_path / "single")
    assert set(single) == planned
    for h, run in runs.items():
        assert run["result"]["final"] == single[h]["result"]["final"], h
        assert run["result"]["training"] == single[h]["result"]["training"], h
        a, b = model_state(run["result"]), model_state(single[h]["result"])
        assert all(torch.equal(a[k], b[k]) for k in a), h


def test_with_the_default_strategy_each_member_is_stored_as_its_own_run_and_reused_later(
        mnist_root, tmp_path, monkeypatch):
    """``auto`` vectorises these five MLP trainings on a CPU: each member's values are its
    single run's only up to float rounding and noise draws, but what is stored per run is the
    same in kind, and a later single run of a member's config reuses the member's model."""
    from util.engine.experiment import run_experiment

    yaml_file = write_yaml(tmp_path / "layer_wise.yaml", mnist_root, LAYER_WISE,
                           artifact_root=tmp_path / "art")
    store = tmp_path / "runs"
    code, out = run_main([str(yaml_file), "-F", str(store), "--cohorts"])
    assert code == 0, out
    assert "6 done (5 trained a model, 1 reused one; 6 of them trained or evaluated in " \
           "cohorts)" in out
    runs = stored(store)
    planned = {e.config_hash for e in local_run.plan(yaml_file, store=tmp_path / "x").to_run}
    assert set(runs) == planned
    for h, run in runs.items():
        r = run["result"]
        assert run["status"] == "COMPLETED" and r["config_hash"] == h
        if r["trained"]:
            assert len(r["training"]["loss"]) == 2
            assert run["metrics"]["training.loss"]["values"] == r["training"]["loss"]
            assert run["metrics"]["training.loss"]["steps"] == [0, 1]
        assert run["metrics"]["validation.accuracy"]["values"][-1] \
            == r["final"]["validation_accuracy"]
        again = run_experiment(strip_bookkeeping(run["config"]), run_store=store,
                               progress=False)
        assert again["trained"] is False
        assert again["training_hash"] == r["training_hash"]
        assert again["final"] == r["final"], h
    assert len(load_results(store)) == 6
